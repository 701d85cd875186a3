"""The physical pump: reservoir, drive, fluid path and battery, advanced in closed form.

`advance_to(t_h)` moves the world from the last update to `t_h` under the current drive
command and faults. Inside that gap flows are constant except where a stroke-volume block ends,
the reservoir runs dry or a parcel boundary reaches the tip; each of those splits the gap into
sub-segments with exact times, so the tip mass-rate history handed to listeners is piecewise
constant and exact. Nothing here knows about the firmware.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from itpump.emulator.device_profile import DeviceProfile, Mechanism
from itpump.emulator.faults import Fault, FaultKind
from itpump.emulator.hardware.battery import Battery
from itpump.emulator.hardware.fluid_path import FluidPath
from itpump.emulator.hardware.stroke_model import StrokeVolumeModel

_EPS_H = 1e-12
#: `PumpHardware.reservoir_drug` when a residual of one drug was topped up with another.
MIXED_DRUGS = "mixed"
FloatArray = NDArray[np.float64]


class HardwareListener(Protocol):
    """Receives the truth as it happens (recorder, PK coupling)."""

    def on_tip_segment(
        self,
        t0_h: float,
        t1_h: float,
        csf_mcg_per_h: float,
        tissue_mcg_per_h: float,
        pk_csf_mcg_per_h: float,
        pk_tissue_mcg_per_h: float,
    ) -> None:
        """Drug left the tip (to CSF) or the path (to tissue) at constant rates over [t0, t1];
        `pk_*` the part of those rates that is the PK-modelled drug."""

    def on_tissue_bolus(self, t_h: float, mass_mcg: float, pk_mass_mcg: float) -> None:
        """An instantaneous amount reached tissue (pocket fill), `pk_mass_mcg` of it the
        PK-modelled drug."""

    def on_breakpoint(self, t_h: float) -> None:
        """Rates may change after `t_h`: a good moment to sample state."""


@dataclass(frozen=True, slots=True)
class MassLedger:
    """Where every microgram that entered the pump is now."""

    filled_mcg: float
    in_reservoir_mcg: float
    in_path_mcg: float
    to_csf_mcg: float
    to_tissue_mcg: float
    aspirated_mcg: float
    #: left the body with an explanted catheter (catheter revision)
    explanted_mcg: float = 0.0

    @property
    def imbalance_mcg(self) -> float:
        """filled - (everything accounted for); zero up to rounding."""
        return self.filled_mcg - (
            self.in_reservoir_mcg
            + self.in_path_mcg
            + self.to_csf_mcg
            + self.to_tissue_mcg
            + self.aspirated_mcg
            + self.explanted_mcg
        )


@dataclass(frozen=True, slots=True)
class RefillOutcome:
    """What physically happened at a refill."""

    aspirated_ml: float
    added_to_reservoir_ml: float
    injected_to_pocket_ml: float


class PumpHardware:
    """Reservoir + drive + fluid path + battery. Times in simulated hours."""

    # Class default: a pump state pickled before delayed MRI restarts existed still loads.
    motor_restart_h = -math.inf
    # Stroke rate of the last piece of the stroke track (a class default for hardware
    # pickled before it was kept: its next piece then starts a new point).
    _track_rate: float = math.nan
    # Hardware pickled before the PK-modelled share was tracked: all of it.
    reservoir_pk_conc_mcg_per_ml = math.nan

    def __init__(
        self,
        profile: DeviceProfile,
        catheter_volume_ml: float,
        seed: int,
        listener: HardwareListener | None = None,
        battery_initial_fraction: float = 1.0,
    ) -> None:
        self.profile = profile
        self.listener = listener
        self.strokes = StrokeVolumeModel(
            profile.stroke_volume_ul / 1000.0,
            profile.flow_error_systematic_pct / 100.0,
            profile.flow_error_random_cv_pct / 100.0,
            profile.flow_error_block_strokes,
            seed,
        )
        self.path = FluidPath(catheter_volume_ml + profile.internal_path_volume_ml)
        self.battery = Battery(profile.battery, battery_initial_fraction)
        self.reservoir_ml = 0.0
        self.reservoir_conc_mcg_per_ml = 0.0
        self.reservoir_drug = ""  # the drug truly in the reservoir ("" before the first fill)
        # The PK-modelled drug's share of reservoir_conc_mcg_per_ml (NaN: all of it).
        self.reservoir_pk_conc_mcg_per_ml = math.nan
        self.stroke_position = 0.0  # cumulative strokes since manufacture (fractional)
        self.stroke_rate_per_h = 0.0
        self.faults: dict[FaultKind, Fault] = {}
        self.valve_budget_ml = math.inf  # valve-gated MRI: volume left before the valve shuts
        # Peristaltic MRI with a delayed restart: the drive stays stalled until this time.
        self.motor_restart_h = -math.inf
        self.t_h = 0.0
        # Stroke position is linear in time between these points (constant rate or stalled):
        # enough to regenerate every stroke of any window afterwards.
        self.stroke_track_t_h: list[float] = [0.0]
        self.stroke_track_pos: list[float] = [0.0]
        self._filled_mcg = 0.0
        self._aspirated_mcg = 0.0
        self._csf_mcg = 0.0
        self._tissue_mcg = 0.0
        self._explanted_mcg = 0.0

    # -------------------------------------------------------------- state
    @property
    def dead(self) -> bool:
        """No power: nothing moves and the firmware does not run."""
        # `battery.remaining_fraction <= 0`, inlined: read ~6 times per event.
        battery = self.battery
        return (
            FaultKind.BATTERY_DEAD in self.faults
            or battery.used_mah / battery.capacity_mah >= 1.0
        )

    @property
    def motor_stalled(self) -> bool:
        """Drive cannot turn (stall fault, or MRI on a motor-driven pump)."""
        if FaultKind.MOTOR_STALL in self.faults or self.t_h < self.motor_restart_h - _EPS_H:
            return True
        return FaultKind.MRI in self.faults and self.profile.mechanism is Mechanism.PERISTALTIC

    @property
    def pending_restart_h(self) -> float | None:
        """When a drive held after an MRI scan restarts, if that is still to come."""
        return self.motor_restart_h if self.t_h < self.motor_restart_h - _EPS_H else None

    def ledger(self) -> MassLedger:
        """Mass balance at the last update."""
        return MassLedger(
            self._filled_mcg,
            self.reservoir_ml * self.reservoir_conc_mcg_per_ml,
            self.path.mass_mcg,
            self._csf_mcg,
            self._tissue_mcg,
            self._aspirated_mcg,
            self._explanted_mcg,
        )

    # -------------------------------------------------------------- actions
    def set_stroke_rate(self, t_h: float, strokes_per_h: float) -> None:
        """New drive command from the firmware, effective at `t_h`."""
        if t_h > self.t_h + _EPS_H:  # (the pump has brought the hardware to now already)
            self.advance_to(t_h)
        self.stroke_rate_per_h = max(strokes_per_h, 0.0)

    def refill(
        self,
        t_h: float,
        add_ml: float,
        conc_mcg_per_ml: float,
        aspirate_ml: float | None = None,
        *,
        pocket_fraction: float = 0.0,
        drug: str = "",
        pk_modelled: bool = True,
    ) -> RefillOutcome:
        """Aspirate the residual (all of it by default), then inject `add_ml` of `drug` through
        the septum. A residual left behind mixes with the new drug: the reservoir's true
        concentration is the mass-weighted mean (and its drug is "mixed" if they differ).

        `pocket_fraction` of the injection misses the septum and lands in tissue (a partial
        pocket fill); with a pocket-fill fault armed, all of it does. `pk_modelled`: whether
        `drug` is the one the patient's PK model describes (else its mass reaches the patient
        but not the PK model).
        """
        self.advance_to(t_h)
        take = self.reservoir_ml if aspirate_ml is None else min(aspirate_ml, self.reservoir_ml)
        self._aspirated_mcg += take * self.reservoir_conc_mcg_per_ml
        self.reservoir_ml -= take
        self._filled_mcg += add_ml * conc_mcg_per_ml
        if self.faults.pop(FaultKind.POCKET_FILL, None) is not None:
            pocket_fraction = 1.0
        to_pocket_ml = add_ml * pocket_fraction
        to_reservoir_ml = add_ml - to_pocket_ml
        space = self.profile.reservoir_capacity_ml - self.reservoir_ml
        if to_reservoir_ml > space + 1e-9:
            raise ValueError(f"add_ml={add_ml:g} exceeds free reservoir space {space:g} mL")
        new_pk_conc = conc_mcg_per_ml if pk_modelled else 0.0
        if to_pocket_ml > 0:
            self._tissue_mcg += to_pocket_ml * conc_mcg_per_ml
            if self.listener is not None:
                self.listener.on_tissue_bolus(
                    t_h, to_pocket_ml * conc_mcg_per_ml, to_pocket_ml * new_pk_conc
                )
        if to_reservoir_ml > 0:
            residual_ml = self.reservoir_ml
            total = residual_ml + to_reservoir_ml
            old_pk = self.reservoir_pk_conc_mcg_per_ml
            if not (old_pk != old_pk and pk_modelled):
                # Some drug without a PK model is (or now gets) in the reservoir: track the
                # modelled share apart. (All-modelled fills keep NaN, "all of it", so their
                # arithmetic is exactly what it was.)
                if old_pk != old_pk:
                    old_pk = self.reservoir_conc_mcg_per_ml
                self.reservoir_pk_conc_mcg_per_ml = (
                    residual_ml * old_pk + to_reservoir_ml * new_pk_conc
                ) / total
            self.reservoir_conc_mcg_per_ml = (
                residual_ml * self.reservoir_conc_mcg_per_ml + to_reservoir_ml * conc_mcg_per_ml
            ) / total
            if drug and residual_ml > 1e-9 and self.reservoir_drug not in ("", drug):
                self.reservoir_drug = MIXED_DRUGS
            elif drug:
                self.reservoir_drug = drug
            self.reservoir_ml = total
        outcome = RefillOutcome(take, to_reservoir_ml, to_pocket_ml)
        if self.listener is not None:
            self.listener.on_breakpoint(t_h)
        return outcome

    def revise_catheter(self, t_h: float, catheter_volume_ml: float) -> None:
        """Replace the catheter with an empty one of `catheter_volume_ml` at `t_h`: its drug
        leaves with the explant; the pump tubing keeps its contents."""
        self.advance_to(t_h)
        self._explanted_mcg += self.path.replace_tip_end(
            self.profile.internal_path_volume_ml, catheter_volume_ml
        )
        if self.listener is not None:
            self.listener.on_breakpoint(t_h)

    def inject(self, t_h: float, fault: Fault) -> None:
        """Start a fault at `t_h` (replaces one of the same kind)."""
        self.advance_to(t_h)
        self.faults[fault.kind] = fault
        if fault.kind is FaultKind.BATTERY_DROP:
            self.battery.set_remaining_fraction(fault.value / 100.0)
            del self.faults[fault.kind]  # a one-off event, not a lasting condition
        if fault.kind is FaultKind.MRI and self.profile.mri_valve_shutoff_ul is not None:
            self._arm_valve()
        if self.listener is not None:
            self.listener.on_breakpoint(t_h)

    def clear(self, t_h: float, kind: FaultKind) -> bool:
        """End a fault at `t_h`; returns whether it was active."""
        self.advance_to(t_h)
        fault = self.faults.pop(kind, None)
        removed = fault is not None
        if kind is FaultKind.MRI:
            if self.valve_budget_ml > 0:
                # Out of the field before the valve tripped: nothing latched. A tripped valve
                # stays shut (budget 0) until `reset_valve`, a clinician's telemetry command.
                self.valve_budget_ml = math.inf
            if fault is not None and self.profile.mechanism is Mechanism.PERISTALTIC:
                self.motor_restart_h = t_h + fault.value
        if self.listener is not None:
            self.listener.on_breakpoint(t_h)
        return removed

    def _arm_valve(self) -> None:
        shutoff_ul = self.profile.mri_valve_shutoff_ul
        if shutoff_ul is not None and self.profile.mechanism is Mechanism.VALVE_GATED:
            self.valve_budget_ml = min(self.valve_budget_ml, shutoff_ul / 1000.0)

    @property
    def valve_shut(self) -> bool:
        """The MRI safety valve has tripped and not been reset."""
        return self.valve_budget_ml <= 0

    def reset_valve(self, t_h: float) -> None:
        """Reopen the MRI safety valve (the firmware's reset command); still in the field, it
        arms again and trips after its shut-off volume."""
        self.advance_to(t_h)
        self.valve_budget_ml = math.inf
        if FaultKind.MRI in self.faults:
            self._arm_valve()
        if self.listener is not None:
            self.listener.on_breakpoint(t_h)

    def add_telemetry_time(self, seconds: float) -> None:
        """Charge drawn by a telemetry session."""
        self.battery.draw_telemetry(seconds)

    # -------------------------------------------------------------- closed-form evolution
    def _flow_multiplier(self) -> float:
        mult = 1.0
        bias = self.faults.get(FaultKind.FLOW_BIAS)
        if bias is not None:
            mult *= 1.0 + bias.value / 100.0
        occlusion = self.faults.get(FaultKind.OCCLUSION)
        if occlusion is not None:
            mult *= 1.0 - occlusion.value
        return mult

    def _tissue_fraction(self) -> float:
        if FaultKind.DISCONNECTION in self.faults:
            return 1.0
        leak = self.faults.get(FaultKind.LEAK)
        return leak.value if leak is not None else 0.0

    def advance_to(self, t_h: float) -> None:
        """Evolve everything from the last update to `t_h`."""
        if t_h <= self.t_h + _EPS_H:
            return
        if self.t_h < self.motor_restart_h < t_h - _EPS_H:
            # The drive restarts inside this gap: stalled up to that instant, then it turns.
            self.advance_to(self.motor_restart_h)
            if self.listener is not None:
                self.listener.on_breakpoint(self.t_h)
        if FaultKind.MRI in self.faults and self.profile.dumps_in_mri:
            self._advance_dumping(t_h)
            return
        t0 = self.t_h
        faults = self.faults
        battery = self.battery
        # `dead`, inlined: this runs at every event and every request.
        dead = (
            FaultKind.BATTERY_DEAD in faults or battery.used_mah / battery.capacity_mah >= 1.0
        )
        rate = 0.0 if (dead or self.motor_stalled) else self.stroke_rate_per_h
        t_death = math.inf if dead else self._battery_death_h(t0, rate)
        if t_death < t_h - _EPS_H:
            # The cell runs out inside this gap: evolve to that instant, then nothing moves.
            self.advance_to(t_death)
            battery.set_remaining_fraction(0.0)
            if self.listener is not None:
                self.listener.on_breakpoint(t_death)
            t0, rate = self.t_h, 0.0
        if rate <= 0.0:
            battery.draw_idle(t_h - t0)
            self.t_h = t_h
            self._track(0.0)
            return
        # Without faults (the usual case) the multiplier is 1 and nothing goes to tissue.
        multiplier = self._flow_multiplier() if faults else 1.0
        tissue_frac = self._tissue_fraction() if faults else 0.0
        strokes = self.strokes
        block_len = strokes.block_strokes
        stroke_ml = strokes.stroke_volume_ml
        profile = battery.profile
        idle_ma = profile.idle_current_ua / 1000.0
        charge_per_ml_mah = profile.charge_per_ml_mah
        t = t0
        while t < t_h - _EPS_H:
            s = self.stroke_position
            k = int(s // block_len)
            t_block_end = t + ((k + 1) * block_len - s) / rate
            sub_end = min(t_h, t_block_end)
            flow_ml_per_h = rate * stroke_ml * strokes.factor(k) * multiplier
            if self.valve_budget_ml <= 0:
                flow_ml_per_h = min(flow_ml_per_h, 0.0)
            moving = flow_ml_per_h > 0 and self.reservoir_ml > 0
            # A motor keeps stroking with a dry reservoir: it draws nothing in, so the drug
            # already in tubing and catheter keeps moving to the tip until the path holds
            # none (an accumulator pump has no pressure left to pulse with).
            dry_stroking = (
                not moving
                and flow_ml_per_h > 0
                and self.profile.mechanism is Mechanism.PERISTALTIC
                and self.path.holds_drug
            )
            if moving:
                t_dry = t + self.reservoir_ml / flow_ml_per_h
                t_valve = t + self.valve_budget_ml / flow_ml_per_h
                sub_end = min(sub_end, t_dry, t_valve)
            # Charge is drawn piece by piece so that every recorded breakpoint is exact
            # (`_draw`, inlined: the same operations in the same order).
            hours = sub_end - t
            battery.used_mah += idle_ma * hours
            battery.used_mah += charge_per_ml_mah * (rate * hours * stroke_ml)
            if moving:
                self._move(t, sub_end, flow_ml_per_h, tissue_frac)
            elif dry_stroking:
                self._push_empty(t, sub_end, flow_ml_per_h, tissue_frac)
            self.stroke_position = s + rate * (sub_end - t)
            if sub_end >= t_block_end - _EPS_H:
                # Land exactly on the block boundary so rounding never re-enters the old block.
                self.stroke_position = max(self.stroke_position, float((k + 1) * block_len))
            t = sub_end
            if (self.reservoir_ml <= 0 and not self._dry_stroking_moves()) or (
                self.valve_budget_ml <= 0
            ):
                self.stroke_position += rate * (t_h - t)
                self._draw(t_h - t, rate)
                break
        self.t_h = t_h
        self._track(rate)

    def _advance_dumping(self, t_h: float) -> None:
        """A valve-gated pump without a safety valve in a magnetic field: both valves open and
        the pressurised reservoir empties through the catheter at the profile's dump rate,
        whatever the drive is commanded (and with or without power). Only an occlusion holds
        part of it back."""
        t0 = self.t_h
        dead = self.dead
        rate = 0.0 if dead else self.stroke_rate_per_h
        t_death = math.inf if dead else self._battery_death_h(t0, rate)
        if t_death < t_h - _EPS_H:
            self._advance_dumping(t_death)
            self.battery.set_remaining_fraction(0.0)
            if self.listener is not None:
                self.listener.on_breakpoint(t_death)
            t0, rate = self.t_h, 0.0
        occlusion = self.faults.get(FaultKind.OCCLUSION)
        flow_ml_per_h = self.profile.mri_dump_ml_per_min * 60.0 * (
            1.0 - (occlusion.value if occlusion is not None else 0.0)
        )
        if flow_ml_per_h > 0 and self.reservoir_ml > 0:
            t_dry = t0 + self.reservoir_ml / flow_ml_per_h
            self._move(t0, min(t_h, t_dry), flow_ml_per_h, self._tissue_fraction())
        self._draw(t_h - t0, rate)
        self.stroke_position += rate * (t_h - t0)
        self.t_h = t_h
        self._track(rate)

    def _battery_death_h(self, t0: float, strokes_per_h: float) -> float:
        # Called with the battery known to hold charge.
        battery = self.battery
        current_ma = battery.current_ma(strokes_per_h * self.strokes.stroke_volume_ml)
        remaining_mah = battery.remaining_fraction * battery.capacity_mah
        return t0 + remaining_mah / current_ma if current_ma > 0 else math.inf

    def _draw(self, hours: float, strokes_per_h: float) -> None:
        self.battery.draw_idle(hours)
        self.battery.draw_drive(strokes_per_h * hours * self.strokes.stroke_volume_ml)

    def _track(self, strokes_per_h: float) -> None:
        # The stroke position is linear in time at a constant rate: a piece at the same rate
        # as the last one extends it (a pump read by telemetry advances at every request;
        # one point per request would grow the track for ever). Rate 0: stalled or dead.
        if strokes_per_h == self._track_rate and len(self.stroke_track_t_h) > 1:
            self.stroke_track_t_h[-1] = self.t_h
            self.stroke_track_pos[-1] = self.stroke_position
            return
        self._track_rate = strokes_per_h
        self.stroke_track_t_h.append(self.t_h)
        self.stroke_track_pos.append(self.stroke_position)

    def strokes_in_window(self, t0_h: float, t1_h: float) -> tuple[FloatArray, FloatArray]:
        """Every stroke (pulse) completed in [t0_h, t1_h): its time and mechanism volume.

        Generated from the same stroke-volume model as the closed-form flow, so summing the
        volumes reproduces the delivered volume (faults that divert flow are not applied).
        """
        track_t = np.asarray(self.stroke_track_t_h)
        track_s = np.asarray(self.stroke_track_pos)
        s0, s1 = np.interp([t0_h, t1_h], track_t, track_s)
        first = math.floor(s0) + 1 if s0 != math.floor(s0) or s0 == 0 else int(s0)
        first = max(first, 1)
        last = math.ceil(s1) - 1 if s1 == math.ceil(s1) else math.floor(s1)
        count = max(last - first + 1, 0)
        positions = np.arange(first, first + count, dtype=np.float64)
        # Stroke n completes when the (non-decreasing, piecewise-linear) position first
        # reaches n: find the piece that rises through n and interpolate inside it.
        hi = np.clip(np.searchsorted(track_s, positions, side="left"), 1, len(track_s) - 1)
        lo = hi - 1
        rise = track_s[hi] - track_s[lo]
        frac = np.where(rise > 0, (positions - track_s[lo]) / np.where(rise > 0, rise, 1.0), 0.0)
        times = track_t[lo] + frac * (track_t[hi] - track_t[lo])
        volumes = self.strokes.stroke_volumes_ml(first - 1, count)
        return times, volumes

    def _dry_stroking_moves(self) -> bool:
        # Whether strokes with a dry reservoir still move drug (see advance_to).
        return self.profile.mechanism is Mechanism.PERISTALTIC and self.path.holds_drug

    def _push_empty(self, t0: float, t1: float, flow_ml_per_h: float, tissue_frac: float) -> None:
        """Strokes with a dry reservoir: nothing (air) enters at the pump end and the path's
        contents move to the tip by the same volume. Stops once the path holds no drug."""
        dt = t1 - t0
        volume = flow_ml_per_h * max(dt, 0.0) * (1.0 - tissue_frac)
        # Only up to the last drug parcel: beyond it the path is all empty and nothing
        # changes, so the segments stop there.
        volume = min(volume, self.path.drug_reach_ml)
        listener = self.listener
        if volume <= 0:
            return
        path_flow = flow_ml_per_h * (1.0 - tissue_frac)
        t = t0
        for parcel in self.path.push(volume, 0.0):
            self._csf_mcg += parcel.volume_ml * parcel.conc_mcg_per_ml
            if path_flow <= 0 or dt <= 0:
                continue
            seg_end = min(t + parcel.volume_ml / path_flow, t1)
            if listener is not None:
                listener.on_tip_segment(
                    t,
                    seg_end,
                    path_flow * parcel.conc_mcg_per_ml,
                    0.0,
                    path_flow * parcel.pk_conc,
                    0.0,
                )
            t = seg_end
        if listener is not None:
            listener.on_breakpoint(t1)

    def _move(self, t0: float, t1: float, flow_ml_per_h: float, tissue_frac: float) -> None:
        dt = t1 - t0
        if dt <= 0:
            # A remainder too small to show in float time (t0 + v/q == t0): move it in one
            # go, so the ledger stays exact, with no zero-length segment to report.
            dt = 0.0
        reservoir = self.reservoir_ml
        volume = min(flow_ml_per_h * dt, reservoir)
        if t1 >= t0 + reservoir / flow_ml_per_h - _EPS_H:
            volume = reservoir  # ran dry in this sub-segment: take the last drop exactly
        budget = self.valve_budget_ml
        valve = math.isfinite(budget)
        if valve and t1 >= t0 + budget / flow_ml_per_h - _EPS_H:
            # The valve's budget ends here: let exactly the rest through. A remainder too small
            # to show in float time would otherwise move nothing, and advance_to would loop
            # on it forever (a valve-gated pump in an MRI field after a refill).
            volume = min(budget, reservoir)
        conc = self.reservoir_conc_mcg_per_ml
        pk_share = self.reservoir_pk_conc_mcg_per_ml
        pk_conc = conc if pk_share != pk_share else pk_share
        reservoir -= volume
        self.reservoir_ml = 0.0 if reservoir <= 1e-15 else reservoir
        if valve:
            self.valve_budget_ml = max(budget - volume, 0.0)
        listener = self.listener
        if tissue_frac:
            tissue_rate = tissue_frac * flow_ml_per_h * conc
            pk_tissue_rate = tissue_frac * flow_ml_per_h * pk_conc
            self._tissue_mcg += tissue_frac * volume * conc
            into_path = (1.0 - tissue_frac) * volume
        else:
            # (tissue_frac * ... is an exact 0.0 and 1.0 * volume is volume.)
            tissue_rate = pk_tissue_rate = 0.0
            into_path = volume
        if into_path <= 0:
            if listener is not None:
                listener.on_tip_segment(t0, t1, 0.0, tissue_rate, 0.0, pk_tissue_rate)
                listener.on_breakpoint(t1)
            return
        path_flow = into_path / dt if dt > 0 else 0.0
        t = t0
        for parcel in self.path.push(into_path, conc, pk_share):
            mass = parcel.volume_ml * parcel.conc_mcg_per_ml
            self._csf_mcg += mass
            if path_flow <= 0:
                continue
            seg_end = t + parcel.volume_ml / path_flow
            if listener is not None:
                listener.on_tip_segment(
                    t,
                    seg_end,
                    path_flow * parcel.conc_mcg_per_ml,
                    tissue_rate,
                    path_flow * parcel.pk_conc,
                    pk_tissue_rate,
                )
            t = seg_end
        if listener is not None:
            # Reservoir and ledger are now consistent at t1 (not at the parcel edges above).
            listener.on_breakpoint(t1)
