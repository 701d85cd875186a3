"""One emulated pump: the hardware model and the firmware, coupled through a HAL in SimPy.

The firmware publishes its next deadline; the pump arms a single SimPy timeout for it. Commands
and fault injections run at the current simulated time and re-arm the timer. Simulated time is
in hours (`env.now`); the firmware sees seconds through the HAL.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import simpy

from itpump.emulator.device_profile import DeviceProfile
from itpump.emulator.faults import Fault, FaultKind
from itpump.emulator.hardware.pump_hardware import MassLedger, PumpHardware, RefillOutcome
from itpump.emulator.patient import LivePatient
from itpump.emulator.pk import Concentrations
from itpump.emulator.recorder import Recorder
from itpump.firmware_stubs.errors import Refusal
from itpump.firmware_stubs.firmware import Firmware
from itpump.firmware_stubs.hal import Tone
from itpump.firmware_stubs.nvm import InMemoryNvm, NonVolatileMemory
from itpump.protocol.codes import AlarmId, ResultCode
from itpump.protocol.therapy import Catheter

log = logging.getLogger(__name__)

T = TypeVar("T")
_ALARM_NAMES = {int(a): a.name.lower() for a in AlarmId}


class CountingEnvironment(simpy.Environment):
    """A SimPy environment that counts the events it processes (for benchmarks and reports)."""

    def __init__(self, initial_time: float = 0.0) -> None:
        super().__init__(initial_time)
        self.events_processed = 0

    def step(self) -> None:
        """Process one event."""
        self.events_processed += 1
        super().step()


@dataclass(frozen=True, slots=True)
class Truth:
    """What really is, at one instant (read by the rig, never sent over telemetry)."""

    t_h: float
    reservoir_ml: float
    reservoir_conc_mcg_per_ml: float
    path_volume_ml: float
    path_mass_mcg: float
    tip_conc_mcg_per_ml: float
    battery_remaining_fraction: float
    stroke_position: float
    faults: tuple[str, ...]
    ledger: MassLedger
    #: the drug truly in the reservoir ("mixed": a residual of another drug was topped up)
    reservoir_drug: str = ""


class _EmulatorHal:
    """The HAL the firmware runs on, implemented over the hardware model and SimPy clock."""

    def __init__(self, pump: EmulatedPump, start_epoch_s: float, nvm: NonVolatileMemory) -> None:
        self._pump = pump
        self._rtc_offset_s = start_epoch_s
        self.nvm = nvm
        self.tones: list[tuple[float, Tone]] = []
        # Buzzer timer schedules: (tone, start h, period h, end h or inf). A new entry only
        # when an alarm's state changes, so a year-long alarm costs one entry, no events.
        self.tone_repeats: list[tuple[Tone, float, float, float]] = []

    # `now_h`, inlined: the firmware reads its clocks ~5 times per event.
    def monotonic_s(self) -> float:
        pump = self._pump
        return (pump.env.now - pump.epoch_h) * 3600.0

    def rtc_s(self) -> float:
        pump = self._pump
        return self._rtc_offset_s + (pump.env.now - pump.epoch_h) * 3600.0

    def set_rtc(self, epoch_s: float) -> None:
        self._rtc_offset_s = epoch_s - self._pump.now_h * 3600.0

    def set_stroke_rate(self, strokes_per_h: float) -> None:
        self._pump.hardware.set_stroke_rate(self._pump.now_h, strokes_per_h)

    def motor_stalled(self) -> bool:
        return self._pump.hardware.motor_stalled

    def battery_remaining_fraction(self) -> float:
        return self._pump.hardware.battery.remaining_fraction

    def sound(self, tone: Tone) -> None:
        self.tones.append((self._pump.now_h, tone))

    def reset_valve(self) -> None:
        self._pump.hardware.reset_valve(self._pump.now_h)

    def repeat_tone(self, tone: Tone, every_s: float) -> None:
        now = self._pump.now_h
        for i, (kind, start, period, end) in enumerate(self.tone_repeats):
            if kind is tone and end == math.inf:
                self.tone_repeats[i] = (kind, start, period, now)
        if every_s > 0:
            self.tone_repeats.append((tone, now, every_s / 3600.0, math.inf))


@dataclass(frozen=True, slots=True)
class DrugFill:
    """A drug physically put into the pump (or the pocket) at a refill: what reached the
    patient from then on, and whether the patient model has its PK (a report says which
    drug has no concentration output and from when)."""

    t_h: float
    drug: str
    has_pk: bool


class EmulatedPump:
    """Hardware + firmware + recorder for one implanted pump."""

    # Every physical fill, in time order (a class default: a pump pickled before it was kept
    # still loads). One per refill, so bounded by the refills a pump gets.
    drug_fills: tuple[DrugFill, ...] = ()

    def __init__(
        self,
        env: simpy.Environment,
        profile: DeviceProfile,
        *,
        serial: str,
        seed: int,
        start_epoch_s: float,
        catheter_volume_ml: float,
        battery_initial_fraction: float = 1.0,
        record: bool = True,
        patient: LivePatient | None = None,
        history_window_h: float | None = None,
    ) -> None:
        self.env = env
        # Pump-local time is `env.now - epoch_h`: zero for a pump built with its world; a pump
        # restored from a snapshot (or rebuilt by a reset) into a farm that has run on keeps
        # its own clock, so its state, history and scheduled actions stay consistent.
        self.epoch_h = 0.0
        self.profile = profile
        self.serial = serial
        # `history_window_h`: keep only that much recorded history (a served pump runs for
        # ever); the patient's PK model lets the recorder carry the state across the cut.
        self.recorder: Recorder | None = (
            Recorder(history_window_h, None if patient is None else patient.model)
            if record
            else None
        )
        self.patient = patient  # fed the drug leaving the tip as the simulation runs
        self.hardware = PumpHardware(
            profile,
            catheter_volume_ml,
            seed,
            listener=self,
            battery_initial_fraction=battery_initial_fraction,
        )
        self.hardware.t_h = self.now_h
        self.nvm = InMemoryNvm()
        self.hal = _EmulatorHal(self, start_epoch_s, self.nvm)
        self.firmware = Firmware(profile.firmware_config(), self.hal, serial)
        self._armed_deadline_h = math.nan
        # Bumped when the pump leaves its world: timers scheduled before then fire into nothing.
        self._timer_generation = 0
        # SimPy cannot cancel a Timeout, so a timer superseded by an earlier deadline stays
        # queued. When the deadline comes back to a time that still has a queued timer (a
        # patient bolus interrupts a flex step, then the step's change is due again), that
        # timer is reused instead of queueing a second one for the same instant: ~730 fewer
        # events per simulated year of the benchmark. The deadlines (h) with a queued timer.
        self._queued_timers: set[float] = set()
        self._was_stalled = False
        self._detached = False
        self._reported_dead = False
        # Alarms newly raised since construction (an alarm that clears and comes back counts
        # again); the rig's "advance until the next alarm" watches this through `on_alarm`.
        self.alarms_raised = 0
        self._alarm_mask = 0  # bit i: alarm id i active
        self.on_alarm: Callable[[EmulatedPump, frozenset[int]], None] | None = None
        self._after()

    @property
    def now_h(self) -> float:
        """Pump-local simulated time (hours)."""
        # (epoch_h is a float, so this is one even while a fresh world's clock is int 0.)
        return self.env.now - self.epoch_h

    def detach(self) -> None:
        """Take the pump out of its world: its pending timer fires into nothing from now on.

        Used when a snapshot or a reset replaces the pump; the old object keeps its state for
        reading but no longer acts.
        """
        self._detached = True
        self._timer_generation += 1

    def attach(self, env: simpy.Environment) -> None:
        """Put a detached copy (see `copy_detached`) into `env`, its own clock continuing."""
        self.env = env
        self.epoch_h = float(env.now) - self.hardware.t_h
        self._detached = False
        self._armed_deadline_h = math.nan
        self._queued_timers = set()  # those were queued in the world the pump left
        self._after()

    def copy_detached(self) -> EmulatedPump:
        """A deep copy of the whole pump (hardware, firmware, NVM, recorder, patient) that
        belongs to no world yet; `attach` puts it into one."""
        self._sync()
        memo: dict[int, object] = {id(self.env): None, id(self.on_alarm): None}
        twin = copy.deepcopy(self, memo)
        twin._detached = True
        return twin

    # ------------------------------------------------------------------ listener
    def on_tip_segment(
        self,
        t0_h: float,
        t1_h: float,
        csf: float,
        tissue: float,
        pk_csf: float,
        pk_tissue: float,
    ) -> None:
        """Hardware listener: forward to the recorder (all drug, and the PK-modelled part)
        and to the patient (only the drug its PK model describes)."""
        if t1_h <= t0_h:
            return
        if self.recorder is not None:
            self.recorder.add_segment(t0_h, t1_h, csf, tissue, pk_csf, pk_tissue)
        if self.patient is not None:
            self.patient.on_segment(t0_h, t1_h, pk_csf, pk_tissue)

    def on_tissue_bolus(self, t_h: float, mass_mcg: float, pk_mass_mcg: float) -> None:
        """Hardware listener: pocket fill."""
        if self.recorder is not None:
            self.recorder.add_tissue_bolus(t_h, mass_mcg, pk_mass_mcg)
        if self.patient is not None:
            self.patient.on_bolus(t_h, pk_mass_mcg)

    def on_breakpoint(self, t_h: float) -> None:
        """Hardware listener: sample the truth."""
        if self.recorder is not None:
            hw = self.hardware
            self.recorder.add_truth(t_h, hw.reservoir_ml, hw.battery.remaining_fraction)

    # ------------------------------------------------------------------ running
    def call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Run a firmware command at the current simulated time (refusals propagate)."""
        if self._advance():  # first: the battery may have run out since the last event
            self._record()
            raise PumpSilentError(f"pump {self.serial} has no power")
        try:
            return fn(*args, **kwargs)
        finally:
            # Recorded once, after the command: a point before it at the same instant would
            # be superseded by this one anyway (the history is read "last value at a time").
            self._after(advanced=True)

    def refill(
        self,
        add_ml: float,
        drug: str,
        conc_mcg_per_ml: float,
        *,
        bridge: bool = True,
        aspirate_ml: float | None = None,
        reported_aspirated_ml: float | Literal["measured"] | None = "measured",
        entered_conc_mcg_per_ml: float | None = None,
        entered_volume_ml: float | None = None,
        entered_drug: str | None = None,
        pocket_fraction: float = 0.0,
    ) -> RefillOutcome:
        """A clinic refill: aspirate, inject `add_ml` of `drug` at `conc_mcg_per_ml` through
        the septum, tell the firmware what the clinician enters.

        The firmware is told first so that a refusal (e.g. too much volume) leaves the
        reservoir untouched, as a clinician would not inject a refused refill. What the
        clinician enters, each overridable to model an entry error or a physical fill that
        differs from the entry:
        - the volume now in the reservoir (`entered_volume_ml`; default: the injected volume
          plus the residual left behind when `aspirate_ml` did not take it all);
        - the drug and concentration (`entered_drug`, `entered_conc_mcg_per_ml`; default:
          those injected. A residual left behind mixes with the new drug, so the true
          concentration can differ from the entered one even without an entry error);
        - the aspirated volume (`reported_aspirated_ml`; default the true one, None for
          "not measured").
        `pocket_fraction` (0..1) of the injection misses the septum and goes to the pocket
        (a partial pocket fill); a `pocket_fill` fault makes it all.
        """
        if not 0.0 <= pocket_fraction <= 1.0:
            raise Refusal(
                ResultCode.OUT_OF_RANGE, f"pocket_fraction={pocket_fraction:g} outside 0..1"
            )
        self._sync()
        hw = self.hardware
        measured = hw.reservoir_ml if aspirate_ml is None else min(aspirate_ml, hw.reservoir_ml)
        left_ml = hw.reservoir_ml - measured
        space_ml = self.profile.reservoir_capacity_ml - left_ml
        if add_ml * (1.0 - pocket_fraction) > space_ml + 1e-9:
            # The septum would resist: the clinician cannot inject more than the free space.
            raise Refusal(
                ResultCode.RESERVOIR_CAPACITY_EXCEEDED,
                # No true volumes in the text: it may travel over telemetry to the programmer.
                f"volume_ml={add_ml:g}: the septum resists, the reservoir has no room for it "
                "after aspiration",
            )
        told = measured if reported_aspirated_ml == "measured" else reported_aspirated_ml
        entered = conc_mcg_per_ml if entered_conc_mcg_per_ml is None else entered_conc_mcg_per_ml
        volume_ml = add_ml + left_ml if entered_volume_ml is None else entered_volume_ml
        self.call(
            self.firmware.refill, volume_ml, entered_drug or drug, entered, told, bridge
        )
        entry = self.firmware.cfg.drug_library.find(drug)
        has_pk = entry is not None and entry.has_pk
        outcome = hw.refill(
            self.now_h,
            add_ml,
            conc_mcg_per_ml,
            aspirate_ml,
            pocket_fraction=pocket_fraction,
            drug=drug,
            # The patient model is baclofen's: a drug without one reaches the patient (and
            # the mass balance) but never the PK model, which goes on with baclofen's mass.
            pk_modelled=has_pk,
        )
        self.drug_fills = (*self.drug_fills, DrugFill(self.now_h, drug, has_pk))
        if self.patient is not None and not any(fill.has_pk for fill in self.drug_fills):
            # Only drugs without a PK model so far: no concentrations (truth's are None)
            # rather than a baclofen model reading zero.
            self.patient = None
        self._after()
        return outcome

    def revise_catheter(
        self, length_cm: float, volume_ul_per_cm: float, *, tell_pump: bool = True
    ) -> float:
        """Catheter revision: the implanted catheter is replaced by an empty one of the given
        length (its drug leaves with the explant; the pump tubing keeps its contents), and,
        with `tell_pump`, the clinician records it over telemetry so that the pump allows a
        priming bolus. Returns the volume the pump would now prime (0 when not told).

        The firmware is told first so that a refusal (a length out of range) changes nothing.
        """
        self._sync()
        unprimed_ml = 0.0
        if tell_pump:
            unprimed_ml = self.call(self.firmware.revise_catheter, length_cm, volume_ul_per_cm)
        else:
            self.firmware.check_catheter(length_cm, volume_ul_per_cm)
        self.hardware.revise_catheter(self.now_h, Catheter(length_cm, volume_ul_per_cm).volume_ml)
        self._after()
        return unprimed_ml

    def power_cycle(self) -> None:
        """Power was lost and is back (the host restarted without a clean stop): the firmware
        starts again as after a battery fault, with a power-on reset if the profile says so."""
        self.call(self.firmware.on_power_restored)

    def inject(self, fault: Fault) -> None:
        """Start a hardware fault now."""
        self._sync()
        self.hardware.inject(self.now_h, fault)
        if fault.kind is FaultKind.MEMORY_ERROR:
            self.nvm.corrupt()
        if (
            fault.kind in (FaultKind.MEMORY_ERROR, FaultKind.BATTERY_DROP)
            and not self.hardware.dead
        ):
            self.firmware.run_self_test()  # the firmware notices at its next check: do it now
        self._after()

    def clear(self, kind: FaultKind) -> bool:
        """End a hardware fault now."""
        self._sync()
        was_dead = self.hardware.dead
        removed = self.hardware.clear(self.now_h, kind)
        if was_dead and not self.hardware.dead:
            self.firmware.on_power_restored()
        self._after()
        return removed

    def tones_between(self, t0_h: float, t1_h: float) -> list[tuple[float, Tone]]:
        """Every alarm tone the pump sounded in [t0_h, t1_h) (pump hours), in time order:
        the one at each raise or alarm test, and the repeats of unacknowledged alarms."""
        hal = self.hal
        out = [(t, tone) for t, tone in hal.tones if t0_h <= t < t1_h]
        for tone, start, period, end in hal.tone_repeats:
            last = min(end, t1_h)
            k = max(1, math.ceil((t0_h - start) / period - 1e-9))
            while (t := start + k * period) < last - 1e-12:
                out.append((t, tone))
                k += 1
        return sorted(out, key=lambda item: item[0])

    def truth(self) -> Truth:
        """The true state now."""
        self._sync()
        hw = self.hardware
        return Truth(
            t_h=self.now_h,
            reservoir_ml=hw.reservoir_ml,
            reservoir_conc_mcg_per_ml=hw.reservoir_conc_mcg_per_ml,
            path_volume_ml=hw.path.volume_ml,
            path_mass_mcg=hw.path.mass_mcg,
            tip_conc_mcg_per_ml=hw.path.tip_conc_mcg_per_ml,
            battery_remaining_fraction=hw.battery.remaining_fraction,
            stroke_position=hw.stroke_position,
            faults=tuple(sorted(k.value for k in hw.faults)),
            ledger=hw.ledger(),
            reservoir_drug=hw.reservoir_drug,
        )

    def concentrations(self) -> Concentrations | None:
        """The patient's true concentrations now (None when no patient model is attached)."""
        if self.patient is None:
            return None
        self._sync()
        return self.patient.at(self.now_h)

    def _sync(self) -> None:
        self._advance()
        self._record()

    def _advance(self) -> bool:
        """Bring the hardware to now; returns whether it is dead (no power)."""
        hw = self.hardware
        hw.advance_to(self.env.now - self.epoch_h)
        dead = hw.dead
        if dead != self._reported_dead:
            self._notice_power(dead)
        return dead

    def _notice_power(self, dead: bool) -> None:
        # A served pump without power never answers again; say so once, or a rig only sees
        # time-outs (e.g. `--speed max` ages a pump to its battery's end in seconds).
        if dead and not self._reported_dead:
            self.firmware.on_power_lost()
            log.warning(
                "pump %s has no power at %.1f h simulated (%.1f days): it stops delivering "
                "and no longer answers telemetry",
                self.serial,
                self.now_h,
                self.now_h / 24.0,
            )
        self._reported_dead = dead

    def _after(self, *, advanced: bool = False) -> None:
        # `advanced`: the hardware was brought to now at this same instant and only the
        # firmware ran since (it cannot move time), so advancing again would do nothing.
        hw = self.hardware
        dead = self._advance() if not advanced else hw.dead
        if not dead and self._was_stalled != (stalled := hw.motor_stalled):
            self._was_stalled = stalled
            if stalled:
                self.firmware.on_motor_stall()
            else:
                self.firmware.on_motor_recovered()
        # The active alarms, read once for the history and the rig's alarm watch.
        mask = self.firmware.alarms.mask()
        self._record(mask)
        if mask != self._alarm_mask:
            self._track_alarms(mask)
        if not dead:
            self._arm()

    def _track_alarms(self, mask: int) -> None:
        new = mask & ~self._alarm_mask
        self._alarm_mask = mask
        if new:
            ids = frozenset(i for i in range(new.bit_length()) if new >> i & 1)
            self.alarms_raised += len(ids)
            if self.on_alarm is not None:
                self.on_alarm(self, ids)

    def _record(self, alarm_mask: int | None = None) -> None:
        recorder = self.recorder
        if recorder is None:
            return
        hw = self.hardware
        now = self.env.now - self.epoch_h
        recorder.add_truth(now, hw.reservoir_ml, hw.battery.remaining_fraction)
        fw = self.firmware
        if alarm_mask is None:
            alarm_mask = fw.alarms.mask()
        recorder.add_firmware(
            now,
            fw.reservoir_estimate_ml(),
            fw.commanded_rate_ml_per_h * 24.0,
            alarm_mask,
            _ALARM_NAMES,
        )

    def _arm(self) -> None:
        # Called with power (the caller checked).
        if self._detached:
            return
        deadline_h = self.firmware.next_deadline_s / 3600.0
        restart_h = self.hardware.pending_restart_h
        if restart_h is not None:
            # The firmware cannot know when a held drive turns again: wake it then, so the
            # stall alarm clears and the estimate moves on from that instant.
            deadline_h = min(deadline_h, restart_h)
        if deadline_h == self._armed_deadline_h or not math.isfinite(deadline_h):
            return
        self._armed_deadline_h = deadline_h
        queued = self._queued_timers
        if deadline_h in queued:
            return  # a timer for this very instant is still queued: it becomes the armed one
        queued.add(deadline_h)
        timeout = self.env.timeout(max(deadline_h - (self.env.now - self.epoch_h), 0.0))
        # A weak reference: SimPy cannot take a timeout back, so a pump replaced while time
        # stands still (a stepped rig restoring snapshots) would otherwise stay alive in the
        # world's queue, its whole state with it, until simulated time reached its deadline.
        timeout.callbacks.append(
            functools.partial(_fire_timer, weakref.ref(self), self._timer_generation, deadline_h)
        )

    def _on_timer(self, generation: int, deadline_h: float) -> None:
        if generation != self._timer_generation or self._detached:
            return  # the pump was replaced (snapshot, reset)
        self._queued_timers.remove(deadline_h)
        if deadline_h != self._armed_deadline_h:
            return  # superseded by an earlier deadline (and not needed again)
        self._armed_deadline_h = math.nan
        if self._advance():  # first: the battery may have run out since the last event
            self._record()
            return  # unpowered: re-armed when power comes back
        self.firmware.service()
        self._after(advanced=True)


class PumpSilentError(RuntimeError):
    """The pump does not answer (dead battery)."""


def _fire_timer(
    pump_ref: weakref.ref[EmulatedPump], generation: int, deadline_h: float, _event: object
) -> None:
    """A pump's timer callback; does nothing once the pump is gone."""
    pump = pump_ref()
    if pump is not None:
        pump._on_timer(generation, deadline_h)
