"""The pump firmware: therapy scheduler, dose limits, alarms and event log over the HAL.

It is a reactive program, like firmware on a small RTOS: the host calls `service()` when the
deadline it last published arrives, and calls a command method when a telemetry command (or an
interrupt such as a motor stall) comes in. Between those calls nothing happens, so the firmware
keeps its reservoir estimate in closed form: estimate(t) = estimate(t0) - commanded rate x (t-t0).
It only ever knows what it commanded, never the true reservoir volume.
"""

from __future__ import annotations

import functools
import logging
import math
import operator
from collections import deque
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum

from itpump.firmware_stubs.alarms import ActiveAlarm, AlarmManager, repeating_tones
from itpump.firmware_stubs.config import FirmwareConfig
from itpump.firmware_stubs.errors import Refusal, check_range
from itpump.firmware_stubs.event_log import EventLog, LogEntry
from itpump.firmware_stubs.hal import Hal, Tone
from itpump.firmware_stubs.power import (
    CLOCK_NOT_SET_REFUSAL,
    RESET_CLOCK_EPOCH_S,
    RESET_REFUSAL,
)
from itpump.firmware_stubs.priming import PathEmptied, PathState
from itpump.firmware_stubs.projection import PatientBolusUse, ReservoirProjection, project_reservoir
from itpump.firmware_stubs.refill import aspiration_tolerance_ml
from itpump.firmware_stubs.therapy import (
    DrugSettings,
    ScheduleSegment,
    basal_at,
    validate_program,
)
from itpump.protocol.codes import AlarmId, EventCode, LogBolusKind, LogTherapyMode, ResultCode
from itpump.protocol.therapy import (
    MIN_DOSE_MCG,
    MODES,
    Catheter,
    PeriodicBolus,
    Program,
    Stopped,
    TherapyProgram,
    max_24h_dose_mcg,
    mean_daily_dose_mcg,
)
from itpump.protocol.units import ng_from_mcg

log = logging.getLogger(__name__)

_EPS_S = 1e-6
_DAY_S = 86400.0
CLOCK_MIN_EPOCH_S = 946_684_800  # 2000-01-01T00:00:00Z
CLOCK_MAX_EPOCH_S = 4_102_444_800  # 2100-01-01T00:00:00Z


@functools.lru_cache(maxsize=8)
def _basal_max_24h_mcg(program: TherapyProgram) -> float:
    """Worst 24 h of the program without patient boluses (cached: programs rarely change)."""
    return max_24h_dose_mcg(replace(program, patient_bolus=None))


def _bolus_schedule(periodic: PeriodicBolus | None) -> tuple[float, ...] | None:
    """What decides when periodic boluses come (a new basal alone keeps their schedule)."""
    if periodic is None:
        return None
    return (
        periodic.bolus_mcg,
        periodic.bolus_duration_min,
        periodic.interval_min,
        periodic.first_offset_min,
    )


class BolusKind(StrEnum):
    """Why extra drug is being delivered."""

    CLINICIAN = "clinician"
    PATIENT = "patient"
    PERIODIC = "periodic"
    PRIMING = "priming"
    BRIDGE = "bridge"


class TherapyState(StrEnum):
    """What the pump is doing, as reported at interrogation."""

    RUNNING = "running"
    STOPPED = "stopped"
    BOLUS = "bolus"
    PRIMING = "priming"
    BRIDGING = "bridging"
    MINIMUM_RATE = "minimum_rate"
    DISABLED = "disabled"


# The log's codes for bolus kinds and therapy modes are wire codes (protocol.codes), matched
# by name so that a kind or mode added here without its code fails at import.
_KIND_CODE = {kind: int(LogBolusKind[kind.name]) for kind in BolusKind}
_MODE_CODE = {mode: int(LogTherapyMode[mode.KIND.upper()]) for mode in MODES}


@dataclass(slots=True)
class _DoseBolus:
    kind: BolusKind
    dose_mcg: float
    rate_mcg_per_h: float
    start_s: float
    end_s: float
    resume_after: bool = True


@dataclass(slots=True)
class _VolumeOperation:
    """Priming or bridge bolus: a volume pushed at a fixed rate instead of the basal program."""

    kind: BolusKind
    remaining_ml: float
    rate_ml_per_h: float
    dose_conc_mcg_per_ml: float  # the drug it moves counts in the 24 h dose at this


@dataclass(frozen=True, slots=True)
class PumpIdentity:
    """Answer to identify."""

    serial: str
    model: str
    firmware_version: str


@dataclass(frozen=True, slots=True)
class PumpStatus:
    """Everything the firmware reports at interrogation (its beliefs, not the truth)."""

    rtc_s: float
    patient_id: str
    drug: DrugSettings
    catheter: Catheter
    reservoir_estimate_ml: float
    reservoir_capacity_ml: float
    low_reservoir_threshold_ml: float
    therapy_state: TherapyState
    program: TherapyProgram
    commanded_rate_ml_per_day: float
    dose_last_24h_mcg: float
    patient_boluses_last_24h: int
    alarms: tuple[ActiveAlarm, ...]
    projected_low_reservoir_rtc_s: float | None
    projected_eri_rtc_s: float | None
    battery_remaining_fraction: float
    eri: bool
    eos: bool
    # When the estimate reaches the empty threshold (critical alarm, minimum-rate mode).
    projected_empty_rtc_s: float | None = None
    # Volume of the path the pump believes holds no drug (what a prime may push), and why.
    unprimed_ml: float = 0.0
    path_emptied: PathEmptied = PathEmptied.NONE
    # False from a power-on reset until a clinician sets the clock.
    clock_valid: bool = True


@dataclass(slots=True)
class _Persistent:
    """What survives a power cycle (mirrored to NVM on every change)."""

    serial: str
    program: TherapyProgram = field(default_factory=TherapyProgram)
    drug: DrugSettings = field(default_factory=DrugSettings)
    catheter: Catheter = field(default_factory=Catheter)
    patient_id: str = ""
    low_reservoir_threshold_ml: float = 2.0
    reservoir_estimate_ml: float = 0.0
    therapy_running: bool = True
    eri_at_s: float | None = None
    disabled: str = ""  # "" or why delivery is impossible
    path: PathState = field(default_factory=lambda: PathState.new_implant(0.0))
    refilled_ml: float = 0.0  # the volume entered at the last refill
    # Power-on reset (firmware_stubs/power.py): minimum rate until a program is committed.
    reset_pending: bool = False
    clock_valid: bool = True


# Every field of _Persistent at C speed, in constructor order: `_save` compares and copies
# the state through this tuple (dataclasses.replace cost ~12 us per service).
_persistent_values = operator.attrgetter(*(f.name for f in fields(_Persistent)))

# `basal_at` is recomputed inside this margin of a flex segment's end (float rounding of the
# position in the period must not pick the next step while the cache says the old one).
_BASAL_CACHE_MARGIN_S = 1e-3


class Firmware:
    """The pump's program. All times are HAL monotonic seconds unless named `rtc`."""

    def __init__(self, cfg: FirmwareConfig, hal: Hal, serial: str) -> None:
        self.cfg = cfg
        self.hal = hal
        self.log = EventLog(cfg.event_log_capacity, hal.nvm)
        self.alarms = AlarmManager(self.log)
        self._p = _Persistent(
            serial=serial,
            low_reservoir_threshold_ml=cfg.low_reservoir_alarm_default_ml,
            path=PathState.new_implant(cfg.internal_path_volume_ml),
        )
        self._boluses: list[_DoseBolus] = []
        self._volume_op: _VolumeOperation | None = None
        self._minimum_rate_mode = False
        self._stalled = False
        self._program_anchor_s = 0.0
        self._next_periodic_s = math.inf
        self._patient_bolus_starts: deque[float] = deque()
        self._bolus_use = PatientBolusUse(
            cfg.bolus_use_window_s, hal.monotonic_s(), max_per_day=cfg.patient_bolus_max_per_day
        )
        self._dose_history: deque[tuple[float, float, float]] = deque()  # (t0, t1, mcg)
        self._last_settle_s = hal.monotonic_s()
        self._last_self_test_s = self._last_settle_s
        self._rate_ml_per_h = 0.0
        self.next_deadline_s = math.inf
        # What was last written to NVM, and where: `_save` writes only when either changed.
        self._saved: tuple[object, tuple[object, ...]] | None = None
        # The repeat period last given to the buzzer per tone (changed only on a change).
        self._tone_periods: dict[Tone, float] = {}
        self._tones_at_change = -1  # AlarmManager.changes when the periods were last derived
        # Derived from the configuration for service(), which runs at every event; re-derived
        # there whenever `cfg` is another object (a rig or test may swap it).
        self._derive_from_cfg(cfg)
        # (program, rtc it was computed at, segment): the flex segment in force stays valid
        # until its end, so the two look-ups per service need not recompute it.
        self._basal_cache: tuple[TherapyProgram, float, ScheduleSegment] | None = None
        # The parts active_program() was built from (all immutable, replaced on change) and
        # the result: every interrogation reports it.
        self._active_program: (
            tuple[TherapyProgram, DrugSettings, str, Catheter, Program] | None
        ) = None
        self._save()
        self.log.add(hal.rtc_s(), EventCode.POWER_ON)
        self.service()

    # ------------------------------------------------------------------ reading
    @property
    def commanded_rate_ml_per_h(self) -> float:
        """Rate the drive is commanded to deliver now."""
        return self._rate_ml_per_h

    def reservoir_estimate_ml(self) -> float:
        """The firmware's reservoir estimate at the current time (closed form, no state change)."""
        dt = self.hal.monotonic_s() - self._last_settle_s
        moving = 0.0 if self._stalled else self._rate_ml_per_h
        return max(self._p.reservoir_estimate_ml - moving * dt / 3600.0, 0.0)

    def identify(self) -> PumpIdentity:
        """Serial number, model and firmware version."""
        return PumpIdentity(self._p.serial, self.cfg.model, self.cfg.firmware_version)

    def status(self) -> PumpStatus:
        """Full status for interrogation."""
        self._settle()
        now = self.hal.monotonic_s()
        rtc = self.hal.rtc_s()
        projection = self._projection(now, rtc)
        return PumpStatus(
            rtc_s=rtc,
            patient_id=self._p.patient_id,
            drug=self._p.drug,
            catheter=self._p.catheter,
            reservoir_estimate_ml=max(self._p.reservoir_estimate_ml, 0.0),
            reservoir_capacity_ml=self.cfg.reservoir_capacity_ml,
            low_reservoir_threshold_ml=self._p.low_reservoir_threshold_ml,
            therapy_state=self.therapy_state(),
            program=self._p.program,
            commanded_rate_ml_per_day=self._rate_ml_per_h * 24.0,
            dose_last_24h_mcg=self._dose_last_24h_mcg(now),
            patient_boluses_last_24h=self._patient_boluses_last_24h(now),
            alarms=tuple(self.alarms.active()),
            projected_low_reservoir_rtc_s=projection.low_reservoir_rtc_s,
            projected_eri_rtc_s=self._projected_eri_rtc_s(now, rtc),
            battery_remaining_fraction=self.hal.battery_remaining_fraction(),
            eri=self.alarms.is_active(AlarmId.ELECTIVE_REPLACEMENT),
            eos=self.alarms.is_active(AlarmId.END_OF_SERVICE),
            projected_empty_rtc_s=projection.empty_rtc_s,
            unprimed_ml=self._p.path.unprimed_ml,
            path_emptied=self._p.path.reason,
            clock_valid=self._p.clock_valid,
        )

    def therapy_state(self) -> TherapyState:
        """Summary state for display."""
        if self._p.disabled:
            return TherapyState.DISABLED
        if self._volume_op is not None:
            return (
                TherapyState.PRIMING
                if self._volume_op.kind is BolusKind.PRIMING
                else TherapyState.BRIDGING
            )
        if any(b.kind is not BolusKind.PERIODIC for b in self._boluses):
            return TherapyState.BOLUS
        if not self._p.therapy_running:
            return TherapyState.STOPPED
        if self._minimum_rate_mode or self._p.reset_pending:
            return TherapyState.MINIMUM_RATE
        return TherapyState.RUNNING

    def read_log(self, page: int, page_size: int = 16) -> tuple[list[LogEntry], int]:
        """One page of the log, newest first, and the number of pages."""
        pages = max(1, math.ceil(len(self.log) / page_size))
        if not 0 <= page < pages:
            raise Refusal(ResultCode.LOG_PAGE_OUT_OF_RANGE, f"page={page} outside 0..{pages - 1}")
        return self.log.page(page, page_size), pages

    # ------------------------------------------------------------------ commands
    def set_clock(self, epoch_s: float) -> None:
        """Set the real-time clock (flex schedules follow it; delivery accounting does not)."""
        # Named in full: the generic range text rounds these to 4.10244e+09, which no one
        # can act on. The upper bound keeps the reported clock within its u32 field.
        if not CLOCK_MIN_EPOCH_S <= epoch_s <= CLOCK_MAX_EPOCH_S:
            raise Refusal(
                ResultCode.OUT_OF_RANGE,
                f"epoch_s={epoch_s:.0f} outside {CLOCK_MIN_EPOCH_S}..{CLOCK_MAX_EPOCH_S} "
                "s since epoch (2000-01-01..2100-01-01 UTC)",
            )
        self._settle()
        old = self.hal.rtc_s()
        self.hal.set_rtc(epoch_s)
        self._p.clock_valid = True
        self.log.add(epoch_s, EventCode.CLOCK_SET, old, epoch_s)
        self.service()

    def check_patient_id(self, patient_id: str) -> None:
        """Refuse an identifier the pump cannot store."""
        self.cfg.check_name("patient_id", patient_id)

    def check_catheter(self, length_cm: float, volume_ul_per_cm: float) -> None:
        """Refuse catheter settings outside the pump's ranges."""
        self.cfg.check_catheter(length_cm, volume_ul_per_cm)

    def program_with_settings(
        self,
        program: TherapyProgram,
        patient_id: str | None = None,
        catheter: Catheter | None = None,
    ) -> None:
        """Commit a program and its program-wide settings: all validated first, then applied."""
        self._check_program_settings(program, patient_id, catheter)
        if catheter is not None and catheter != self._p.catheter:
            self.set_catheter(catheter.length_cm, catheter.volume_ul_per_cm)
        if patient_id is not None and patient_id != self._p.patient_id:
            self.set_patient_id(patient_id)
        self.program(program)

    def active_program(self) -> Program:
        """The program in force with its program-wide settings (what INTERROGATE reports).

        The same (immutable) object while none of its parts was replaced, so a caller can
        keep what it derives from it, e.g. the wire form, until this returns another."""
        p = self._p
        cached = self._active_program
        if (
            cached is not None
            and cached[0] is p.program
            and cached[1] is p.drug
            and cached[2] is p.patient_id
            and cached[3] is p.catheter
        ):
            return cached[4]
        program = Program.of(
            p.program,
            drug=p.drug.name,
            concentration_mcg_per_ml=p.drug.concentration_mcg_per_ml,
            patient_id=p.patient_id,
            catheter=p.catheter,
        )
        self._active_program = (p.program, p.drug, p.patient_id, p.catheter, program)
        return program

    def check_program(self, program: Program) -> None:
        """Refuse a program record this pump must not take now (changes nothing): its drug
        must be the reservoir's, to the wire's resolution, and its therapy must fit."""
        drug = self._p.drug
        same_drug = program.drug == drug.name and ng_from_mcg(
            program.concentration_mcg_per_ml
        ) == ng_from_mcg(drug.concentration_mcg_per_ml)
        if not same_drug:
            raise Refusal(
                ResultCode.INVALID_STATE,
                f"program is for {program.drug} {program.concentration_mcg_per_ml:g} "
                f"mcg/mL; reservoir holds {drug.name or 'nothing'} "
                f"{drug.concentration_mcg_per_ml:g} mcg/mL (refill first)",
            )
        self._check_program_settings(program.therapy, program.patient_id or None, program.catheter)
        self._check_drug_dose(program.therapy, drug.name)

    def _check_program_settings(
        self, program: TherapyProgram, patient_id: str | None, catheter: Catheter | None
    ) -> None:
        # One check for VERIFY (check_program) and commit (program_with_settings): a program
        # that verifies must commit.
        self._require_enabled()
        validate_program(program, self._p.drug.concentration_mcg_per_ml, self.cfg)
        if patient_id is not None:
            self.check_patient_id(patient_id)
        if catheter is not None:
            self.check_catheter(catheter.length_cm, catheter.volume_ul_per_cm)

    def _check_drug_dose(self, program: TherapyProgram, drug: str) -> None:
        # The drug library's daily-dose range applies to a running therapy, not to "stopped".
        if not isinstance(program.mode, Stopped):
            self.cfg.drug_library.check_daily_dose(drug, program.max_daily_dose_mcg)

    def commit_program(self, program: Program) -> None:
        """Check a program record, then commit it with its patient id and catheter (an empty
        id and an unset catheter keep the pump's)."""
        self.check_program(program)
        self.program_with_settings(program.therapy, program.patient_id or None, program.catheter)

    def set_patient_id(self, patient_id: str) -> None:
        """Record the patient identifier."""
        self.check_patient_id(patient_id)
        self._p.patient_id = patient_id
        self.log.add(self.hal.rtc_s(), EventCode.PATIENT_ID_SET)
        self._save()

    def set_catheter(self, length_cm: float, volume_ul_per_cm: float) -> None:
        """Record the implanted catheter (used for priming and bridge volumes)."""
        self.check_catheter(length_cm, volume_ul_per_cm)
        self._p.catheter = Catheter(length_cm, volume_ul_per_cm)
        self._p.path = self._p.path.catheter_set(
            self._p.catheter.volume_ml, self.path_volume_ml()
        )
        self.log.add(self.hal.rtc_s(), EventCode.CATHETER_SET, length_cm, volume_ul_per_cm)
        self._save()

    def revise_catheter(self, length_cm: float, volume_ul_per_cm: float) -> float:
        """A new catheter was implanted (revision): record it and mark it empty, so that a
        priming bolus of its volume is allowed. Returns the volume a prime may now push."""
        self.check_catheter(length_cm, volume_ul_per_cm)
        self._settle()
        catheter = Catheter(length_cm, volume_ul_per_cm)
        self._p.catheter = catheter
        self._p.path = self._p.path.catheter_revised(catheter.volume_ml, self.path_volume_ml())
        self.log.add(
            self.hal.rtc_s(),
            EventCode.CATHETER_REVISED,
            length_cm,
            volume_ul_per_cm,
            self._p.path.unprimed_ml,
        )
        self.service()
        return self._p.path.unprimed_ml

    def set_low_reservoir_threshold(self, threshold_ml: float) -> None:
        """Program the low-reservoir alarm volume."""
        check_range(
            "low_reservoir_ml",
            threshold_ml,
            self.cfg.empty_reservoir_alarm_ml,
            self.cfg.reservoir_capacity_ml / 2,
            "mL",
        )
        self._settle()
        self._p.low_reservoir_threshold_ml = threshold_ml
        if self._p.reservoir_estimate_ml > threshold_ml + 1e-12:
            self.alarms.clear(AlarmId.LOW_RESERVOIR, self.hal.rtc_s())
        self.log.add(self.hal.rtc_s(), EventCode.ALARM_THRESHOLD_SET, threshold_ml)
        self.service()

    def reset_mri_valve(self) -> None:
        """Reopen the MRI safety valve after a scan (valve-gated pumps with the valve): it
        latches shut in a strong field and only this command reopens it. The firmware has no
        valve sensor, so the command is accepted whether or not the valve had tripped."""
        if not self.cfg.mri_safety_valve:
            raise Refusal(ResultCode.NOT_SUPPORTED, "this pump has no MRI safety valve to reset")
        self._settle()
        self.hal.reset_valve()
        self.log.add(self.hal.rtc_s(), EventCode.MRI_VALVE_RESET)
        self.service()

    def acknowledge_alarm(self, alarm: AlarmId | None = None) -> int:
        """Silence one alarm or all: its tone stops repeating. The alarm stays active (and
        reported) until its condition is resolved; one raised again sounds again. Returns how
        many were acknowledged."""
        count = self.alarms.acknowledge(alarm, self.hal.rtc_s())
        self._update_tones()
        return count

    def alarm_test(self) -> None:
        """Sound each alarm pattern once, so that clinician and patient know them; logged."""
        self.log.add(self.hal.rtc_s(), EventCode.ALARM_TEST)
        for tone in (Tone.CRITICAL_TWO_TONE_3S, Tone.NON_CRITICAL_SINGLE_1S):
            self.hal.sound(tone)

    def _update_tones(self) -> None:
        # The periods follow from the active set alone: unchanged set, unchanged periods.
        changes = self.alarms.changes
        if changes == self._tones_at_change:
            return
        self._tones_at_change = changes
        periods = repeating_tones(
            self.alarms.active(),
            self.cfg.critical_tone_repeat_s,
            self.cfg.non_critical_tone_repeat_s,
        )
        if periods != self._tone_periods:
            for tone, every_s in periods.items():
                if self._tone_periods.get(tone, 0.0) != every_s:
                    self.hal.repeat_tone(tone, every_s)
            self._tone_periods = periods

    def program(self, program: TherapyProgram) -> None:
        """Validate and commit a therapy program atomically (after a power-on reset, this is
        what ends the reset state: it needs the clock set first)."""
        self._require_enabled()
        validate_program(program, self._p.drug.concentration_mcg_per_ml, self.cfg)
        self._check_drug_dose(program, self._p.drug.name)
        if self._p.reset_pending and not self._p.clock_valid:
            raise Refusal(ResultCode.INVALID_STATE, CLOCK_NOT_SET_REFUSAL)
        self._settle()
        now = self.hal.monotonic_s()
        previous = self._p.program
        self._p.program = program
        if self._p.reset_pending:
            self._p.reset_pending = False
            self.alarms.clear(AlarmId.POWER_ON_RESET, self.hal.rtc_s())
        self._program_anchor_s = now
        if program.patient_bolus is not None and previous.patient_bolus is None:
            self._bolus_use.restart(now)
        if not isinstance(program.mode, Stopped) and not self._p.therapy_running:
            # Committing a delivering program starts it, as a clinician expects.
            self._p.therapy_running = True
            self.log.add(self.hal.rtc_s(), EventCode.THERAPY_RESUMED)
        same_periodic = _bolus_schedule(previous.periodic) == _bolus_schedule(program.periodic)
        if not same_periodic:
            # A re-commit of the same periodic settings keeps its schedule: restarting it would
            # give an extra bolus inside the same 24 h.
            self._boluses = [b for b in self._boluses if b.kind is not BolusKind.PERIODIC]
            self._next_periodic_s = (
                now + program.periodic.first_offset_min * 60.0
                if program.periodic is not None
                else math.inf
            )
        self.log.add(
            self.hal.rtc_s(),
            EventCode.PROGRAM_CHANGED,
            _MODE_CODE[type(program.mode)],
            mean_daily_dose_mcg(program),
        )
        self.service()

    def refill(
        self,
        volume_ml: float,
        drug: str,
        concentration_mcg_per_ml: float,
        aspirated_ml: float | None = None,
        bridge: bool = True,
    ) -> None:
        """Record a refill: the reservoir now holds `volume_ml` of the given drug (what the
        clinician enters: the volume in the reservoir after the refill, injected plus any
        residual left behind).

        `aspirated_ml` is the residual the clinician withdrew and measured; a difference from
        the estimate beyond a tolerance that grows with the volume infused since the last
        refill (`firmware_stubs/refill.py`) is logged (the only way a real pump learns it
        over- or under-infused). A concentration change starts a bridge bolus when `bridge`.
        """
        self._require_enabled()
        if volume_ml > self.cfg.reservoir_capacity_ml:
            raise Refusal(
                ResultCode.RESERVOIR_CAPACITY_EXCEEDED,
                f"volume_ml={volume_ml:g} exceeds reservoir capacity "
                f"{self.cfg.reservoir_capacity_ml:g} mL",
            )
        capacity_ml = self.cfg.reservoir_capacity_ml
        check_range("volume_ml", volume_ml, self.cfg.min_refill_volume_ml, capacity_ml, "mL")
        self.cfg.check_concentration("concentration_mcg_per_ml", concentration_mcg_per_ml)
        self.cfg.check_name("drug", drug)
        self.cfg.drug_library.check_concentration(drug, concentration_mcg_per_ml)
        if aspirated_ml is not None:
            check_range("aspirated_ml", aspirated_ml, 0.0, self.cfg.reservoir_capacity_ml, "mL")
        validate_program(self._p.program, concentration_mcg_per_ml, self.cfg)
        self._check_drug_dose(self._p.program, drug)
        self._settle()
        now = self.hal.monotonic_s()
        rtc = self.hal.rtc_s()
        old = self._p.drug
        expected_ml = max(self._p.reservoir_estimate_ml, 0.0)
        old_rate_ml_per_h = (
            self._basal_mcg_per_h(rtc) / old.concentration_mcg_per_ml
            if old.concentration_mcg_per_ml > 0
            else 0.0
        )
        infused_ml = self._p.refilled_ml - self._p.reservoir_estimate_ml
        tolerance_ml = aspiration_tolerance_ml(self.cfg, infused_ml)
        self._p.reservoir_estimate_ml = volume_ml
        self._p.refilled_ml = volume_ml
        self._p.drug = DrugSettings(drug, concentration_mcg_per_ml)
        self._minimum_rate_mode = False
        if aspirated_ml is not None:
            # The measured residual outweighs the estimate (firmware_stubs/priming.py).
            if aspirated_ml <= self.cfg.dry_aspirate_ml:
                self._p.path = self._p.path.reservoir_emptied(self.cfg.internal_path_volume_ml)
            else:
                self._p.path = self._p.path.reservoir_not_dry()
        self.log.add(
            rtc,
            EventCode.REFILL,
            volume_ml,
            concentration_mcg_per_ml,
            -1.0 if aspirated_ml is None else aspirated_ml,
            expected_ml,
        )
        if aspirated_ml is not None and abs(aspirated_ml - expected_ml) > tolerance_ml:
            self.log.add(
                rtc, EventCode.REFILL_DISCREPANCY, expected_ml, aspirated_ml, tolerance_ml
            )
        for alarm in (AlarmId.LOW_RESERVOIR, AlarmId.EMPTY_RESERVOIR):
            self.alarms.clear(alarm, rtc)
        changed = old.concentration_mcg_per_ml > 0 and not math.isclose(
            old.concentration_mcg_per_ml, concentration_mcg_per_ml
        )
        if changed:
            self.log.add(
                rtc,
                EventCode.CONCENTRATION_CHANGED,
                old.concentration_mcg_per_ml,
                concentration_mcg_per_ml,
            )
        if (
            changed
            and bridge
            and self._p.therapy_running
            and old_rate_ml_per_h > 0
            and self.path_volume_ml() > 0
        ):
            rate = min(
                max(old_rate_ml_per_h, self.cfg.min_rate_ml_per_day / 24.0),
                self.cfg.max_rate_ml_per_day / 24.0,
            )
            self._start_volume_op(
                now, BolusKind.BRIDGE, self.path_volume_ml(), rate, old.concentration_mcg_per_ml
            )
        self.service()

    def prime(self, volume_ml: float | None = None) -> float:
        """Priming bolus: fill the empty part of catheter and pump tubing at the maximum rate.

        Allowed only while the pump knows part of the path is empty (new implant, catheter
        revision, a reservoir believed dry: `firmware_stubs/priming.py`), and for at most that
        volume; the drug it moves counts in the 24 h dose. Returns the volume.
        """
        self._require_enabled()
        self._require_not_reset()
        conc = self._p.drug.concentration_mcg_per_ml
        if conc <= 0:
            raise Refusal(ResultCode.INVALID_STATE, "no drug in reservoir: refill before priming")
        if volume_ml is None and self._p.catheter.volume_ml <= 0:
            raise Refusal(
                ResultCode.INVALID_STATE,
                "catheter not programmed: set length_cm and volume_ul_per_cm first",
            )
        self._settle()
        op = self._volume_op
        if op is not None and op.kind is BolusKind.PRIMING:
            raise Refusal(
                ResultCode.INVALID_STATE,
                f"priming bolus in progress, {op.remaining_ml:.4g} mL to go: cancel it first",
            )
        path = self._p.path
        if not path.primable:
            full_ml = self.path_volume_ml() if volume_ml is None else volume_ml
            raise Refusal(
                ResultCode.INVALID_STATE,
                "path is full of drug (no new implant, catheter revision or dry reservoir "
                f"since it was filled): a prime would push {full_ml:.4g} mL = "
                f"{full_ml * conc:.4g} mcg into the CSF",
            )
        volume = path.unprimed_ml if volume_ml is None else volume_ml
        least_ml = self.cfg.min_priming_volume_ml
        check_range("volume_ml", volume, least_ml, max(path.unprimed_ml, least_ml), "mL")
        self._cancel_boluses(resume=True)
        self._start_volume_op(
            self.hal.monotonic_s(),
            BolusKind.PRIMING,
            volume,
            self.cfg.max_rate_ml_per_day / 24.0,
            conc,
        )
        self.service()
        return volume

    def bridge_bolus(
        self, volume_ml: float | None = None, old_concentration_mcg_per_ml: float | None = None
    ) -> float:
        """Explicit bridge bolus: push the path volume at the old-drug equivalent rate."""
        self._require_enabled()
        self._require_not_reset()
        conc_old = old_concentration_mcg_per_ml or self._p.drug.concentration_mcg_per_ml
        self.cfg.check_concentration("old_concentration_mcg_per_ml", conc_old)
        volume = self.path_volume_ml() if volume_ml is None else volume_ml
        self.cfg.check_priming_volume("volume_ml", volume)
        self._settle()
        rate = self._basal_mcg_per_h(self.hal.rtc_s()) / conc_old
        rate = min(
            max(rate, self.cfg.min_rate_ml_per_day / 24.0), self.cfg.max_rate_ml_per_day / 24.0
        )
        if rate <= 0:
            raise Refusal(ResultCode.INVALID_STATE, "no basal rate to bridge at")
        self._start_volume_op(self.hal.monotonic_s(), BolusKind.BRIDGE, volume, rate, conc_old)
        self.service()
        return volume

    def clinician_bolus(
        self, dose_mcg: float, duration_min: float, resume_after: bool = True
    ) -> None:
        """Single bolus on top of the basal; with `resume_after` false, therapy stops after it."""
        self._require_enabled()
        self._require_no_volume_op()
        conc = self._require_drug()
        max_dose = self._p.program.max_daily_dose_mcg or self.cfg.max_daily_dose_mcg
        check_range("dose_mcg", dose_mcg, MIN_DOSE_MCG, max_dose, "mcg")
        check_range("duration_min", duration_min, 1.0, self.cfg.max_clinician_bolus_min, "min")
        self._settle()
        now = self.hal.monotonic_s()
        self._require_no_manual_bolus(now)
        self._check_bolus_fits(now, dose_mcg, duration_min, conc, "dose_mcg")
        self._start_bolus(now, BolusKind.CLINICIAN, dose_mcg, duration_min, resume_after)
        self.service()

    def patient_bolus(self) -> None:
        """Patient-activated bolus request: lockout, daily count and daily dose enforced."""
        try:
            self._require_enabled()
            pb = self._p.program.patient_bolus
            if pb is None:
                raise Refusal(
                    ResultCode.NOT_SUPPORTED, "patient bolus is not enabled in the program"
                )
            if not self._p.therapy_running:
                raise Refusal(ResultCode.INVALID_STATE, "therapy is stopped")
            self._require_no_volume_op()
            conc = self._require_drug()
            self._settle()
            now = self.hal.monotonic_s()
            self._require_no_manual_bolus(now)
            if self._patient_bolus_starts:
                wait_s = self._patient_bolus_starts[-1] + pb.lockout_min * 60.0 - now
                if wait_s > _EPS_S:
                    raise Refusal(
                        ResultCode.LOCKOUT_ACTIVE,
                        f"lockout_min={pb.lockout_min:g}: next request allowed in "
                        f"{wait_s / 60.0:.1f} min",
                    )
            if self._patient_boluses_last_24h(now) >= pb.max_per_day:
                raise Refusal(
                    ResultCode.PATIENT_BOLUS_DAILY_MAX,
                    f"max_per_day={pb.max_per_day} patient boluses already given in 24 h",
                )
            self._check_bolus_fits(
                now, pb.dose_mcg, pb.duration_min, conc, "patient_bolus.dose_mcg"
            )
        except Refusal as refusal:
            self.log.add(self.hal.rtc_s(), EventCode.PATIENT_BOLUS_DENIED, int(refusal.code))
            raise
        self._patient_bolus_starts.append(now)
        self._bolus_use.record(now, pb.dose_mcg)
        self._start_bolus(now, BolusKind.PATIENT, pb.dose_mcg, pb.duration_min, True)
        self.service()

    def cancel_bolus(self) -> int:
        """Cancel every bolus and priming/bridge in progress; returns how many."""
        self._settle()
        count = self._cancel_boluses(resume=True)
        self.service()
        return count

    def stop_therapy(self) -> None:
        """Stop all delivery until resumed."""
        self._settle()
        self._cancel_boluses(resume=True)
        self._p.therapy_running = False
        self.log.add(self.hal.rtc_s(), EventCode.THERAPY_STOPPED)
        self.service()

    def resume_therapy(self) -> None:
        """Resume the programmed therapy."""
        self._require_enabled()
        if self._p.therapy_running:
            raise Refusal(ResultCode.INVALID_STATE, "therapy is already running")
        self._settle()
        self._p.therapy_running = True
        self.log.add(self.hal.rtc_s(), EventCode.THERAPY_RESUMED)
        self.service()

    # ------------------------------------------------------------------ interrupts
    def on_power_lost(self) -> None:
        """Power is failing: count what the drive delivered up to now. The estimate is settled
        lazily (at the next command or timer), so without this the delivery since the last
        settle, hours of it, would be forgotten along with the unpowered gap. The drive stops
        with the power: the estimate does not fall while the pump is dead (the rate is set
        again at power-on)."""
        self._settle()
        self._save()
        self._rate_ml_per_h = 0.0

    def on_power_restored(self) -> None:
        """The battery came back after a total loss: nothing was delivered meanwhile; with
        the profile's `power_on_reset` the pump comes back in its reset state."""
        self._last_settle_s = self.hal.monotonic_s()  # the unpowered gap delivered nothing
        self.log.add(self.hal.rtc_s(), EventCode.POWER_ON)
        if self.cfg.power_on_reset:
            self.power_on_reset()
        else:
            self.service()

    def power_on_reset(self) -> None:
        """Come back in the safe state after a reset (`firmware_stubs/power.py`): clock and
        program lost, every bolus cancelled, the minimum rate, a critical alarm until a
        clinician sets the clock and commits a program. Drug, reservoir estimate, catheter,
        patient id, thresholds and the log are in NVM and kept."""
        self._settle()
        self._cancel_boluses(resume=True)
        self._boluses.clear()
        self._next_periodic_s = math.inf
        self._patient_bolus_starts.clear()
        self.hal.set_rtc(RESET_CLOCK_EPOCH_S)
        rtc = self.hal.rtc_s()
        self._p.clock_valid = False
        self._p.reset_pending = True
        self._p.program = TherapyProgram()
        self._p.therapy_running = True
        self._program_anchor_s = self.hal.monotonic_s()
        self.log.add(rtc, EventCode.POWER_ON_RESET)
        self._raise(AlarmId.POWER_ON_RESET, rtc)
        self.service()

    def on_motor_stall(self) -> None:
        """Drive position sensor reports a stall."""
        self._settle()
        self._stalled = True
        rtc = self.hal.rtc_s()
        self.log.add(rtc, EventCode.MOTOR_STALL)
        self._raise(AlarmId.MOTOR_STALL, rtc)
        self.service()

    def on_motor_recovered(self) -> None:
        """Drive moves again: the stall alarm clears; the log keeps the stall and recovery."""
        self._settle()
        self._stalled = False
        rtc = self.hal.rtc_s()
        self.log.add(rtc, EventCode.MOTOR_RECOVERED)
        self.alarms.clear(AlarmId.MOTOR_STALL, rtc)
        self.service()

    # ------------------------------------------------------------------ scheduler
    def _derive_from_cfg(self, cfg: FirmwareConfig) -> None:
        self._derived_cfg = cfg
        self._age_limit_s = cfg.service_life_s - cfg.eri_to_eos_s
        self._self_test_due_s = cfg.self_test_interval_s - _EPS_S
        self._max_rate_ml_per_h = cfg.max_rate_ml_per_day / 24.0

    def service(self) -> float:
        """Bring the firmware up to the current time; returns the next deadline (monotonic s)."""
        if self.cfg is not self._derived_cfg:
            self._derive_from_cfg(self.cfg)
        hal = self.hal
        now = hal.monotonic_s()
        self._settle_at(now)
        rtc = hal.rtc_s()
        self._finish_due(now, rtc)
        if now - self._last_self_test_s >= self._self_test_due_s or (
            self._p.eri_at_s is None and now >= self._age_limit_s - _EPS_S
        ):
            self._self_test(now, rtc)
        self._check_reservoir(rtc)
        # The basal segment in force, looked up once for both the rate and the deadline
        # (None: delivery disabled, neither needs it).
        segment = None if self._p.disabled else self._basal_at(rtc)
        self._apply_rate(segment)
        self._update_tones()
        self.next_deadline_s = self._next_deadline(now, rtc, segment)
        self._save()
        return self.next_deadline_s

    def _settle(self) -> None:
        self._settle_at(self.hal.monotonic_s())

    def _settle_at(self, now: float) -> None:
        dt = now - self._last_settle_s
        if dt <= 0:
            return
        self._last_settle_s = now
        if self._stalled or self._rate_ml_per_h <= 0:
            return
        volume_ml = self._rate_ml_per_h * dt / 3600.0
        self._p.reservoir_estimate_ml -= volume_ml
        if self._p.path.unprimed_ml > 0 and not self._minimum_rate_mode:
            # Whatever the drive pushes fills the empty part of the path first.
            self._p.path = self._p.path.filled(volume_ml)
        op = self._volume_op
        if op is not None:
            op.remaining_ml -= volume_ml
            dose = volume_ml * op.dose_conc_mcg_per_ml
        else:
            dose = volume_ml * self._p.drug.concentration_mcg_per_ml
        if dose > 0:
            self._record_dose(now - dt, now, dose)

    def _record_dose(self, t0: float, t1: float, dose_mcg: float) -> None:
        # Every interrogation settles the pump, so on an infusing pump the history would gain
        # an entry per request (and the 24 h sums scan them all). A piece that continues the
        # last one at the same rate extends it instead: one entry per rate change.
        hist = self._dose_history
        if hist:
            last_t0, last_t1, last_dose = hist[-1]
            rate, last_rate = dose_mcg / (t1 - t0), last_dose / (last_t1 - last_t0)
            if last_t1 == t0 and abs(rate - last_rate) <= 1e-12 * last_rate:
                hist[-1] = (last_t0, t1, last_dose + dose_mcg)
                return
        hist.append((t0, t1, dose_mcg))

    def _finish_due(self, now: float, rtc: float) -> None:
        op = self._volume_op
        # "Due" means due within _EPS_S: float time cannot resolve a smaller remainder, and a
        # deadline that never passes would wake the pump forever at the same instant.
        if op is not None and op.remaining_ml <= op.rate_ml_per_h * _EPS_S / 3600.0 + 1e-12:
            self._volume_op = None
            self.log.add(rtc, EventCode.BOLUS_COMPLETED, _KIND_CODE[op.kind])
        if self._boluses:  # most events have none running: no list built for them
            for bolus in [b for b in self._boluses if b.end_s <= now + _EPS_S]:
                self._boluses.remove(bolus)
                self.log.add(
                    rtc, EventCode.BOLUS_COMPLETED, _KIND_CODE[bolus.kind], bolus.dose_mcg
                )
                if not bolus.resume_after:
                    self._p.therapy_running = False
                    self.log.add(rtc, EventCode.THERAPY_STOPPED)
        program = self._p.program
        periodic = program.periodic
        if self._next_periodic_s <= now + _EPS_S and periodic is not None:
            if (
                self._p.therapy_running
                and not self._p.disabled
                and self._volume_op is None
                and not self._minimum_rate_mode
            ):
                try:
                    self._check_bolus_fits(
                        now,
                        periodic.bolus_mcg,
                        periodic.bolus_duration_min,
                        self._p.drug.concentration_mcg_per_ml,
                        "periodic.dose_mcg",
                    )
                    self._start_bolus(
                        now,
                        BolusKind.PERIODIC,
                        periodic.bolus_mcg,
                        periodic.bolus_duration_min,
                        True,
                    )
                except Refusal as refusal:
                    self.log.add(
                        rtc,
                        EventCode.BOLUS_CANCELLED,
                        _KIND_CODE[BolusKind.PERIODIC],
                        int(refusal.code),
                    )
            # Boluses missed (pump unpowered, stopped) are skipped, never stacked.
            interval_s = periodic.interval_min * 60.0
            missed = math.floor((now + _EPS_S - self._next_periodic_s) / interval_s) + 1
            self._next_periodic_s += missed * interval_s
        if (
            self._p.eri_at_s is not None
            and not self._p.disabled
            and now >= self._p.eri_at_s + self.cfg.eri_to_eos_s - _EPS_S
        ):
            self._end_of_service(rtc)

    def _self_test(self, now: float, rtc: float) -> None:
        self._last_self_test_s = now
        if not self.hal.nvm.integrity_ok() and not self.alarms.is_active(AlarmId.MEMORY_ERROR):
            self.log.add(rtc, EventCode.MEMORY_ERROR)
            self._raise(AlarmId.MEMORY_ERROR, rtc)
            self._disable("memory error")
        remaining = self.hal.battery_remaining_fraction()
        if remaining <= 0.0 and not self._p.disabled:
            self._end_of_service(rtc)
        age_limit_s = self.cfg.service_life_s - self.cfg.eri_to_eos_s
        if self._p.eri_at_s is None and (
            remaining <= self.cfg.eri_remaining_fraction or now >= age_limit_s - _EPS_S
        ):
            self._p.eri_at_s = now
            self._raise(AlarmId.ELECTIVE_REPLACEMENT, rtc)
            self._save()

    def run_self_test(self) -> None:
        """Run the periodic self-test now (battery and memory), e.g. after a battery fault."""
        self._settle()
        self._self_test(self.hal.monotonic_s(), self.hal.rtc_s())
        self.service()

    def _check_reservoir(self, rtc: float) -> None:
        if self._p.drug.concentration_mcg_per_ml <= 0:
            return  # never filled (as shipped): nothing to warn about
        est = self._p.reservoir_estimate_ml
        margin = self._rate_ml_per_h * _EPS_S / 3600.0 + 1e-9
        if est <= self._p.low_reservoir_threshold_ml + margin:
            self._raise(AlarmId.LOW_RESERVOIR, rtc)
        if est <= self.cfg.empty_reservoir_alarm_ml + margin and not self._minimum_rate_mode:
            self._raise(AlarmId.EMPTY_RESERVOIR, rtc)
            self._minimum_rate_mode = True
            self.log.add(rtc, EventCode.MINIMUM_RATE_MODE)
        if est <= margin and self._minimum_rate_mode:
            # Not at the empty alarm: by the estimate 0.5 mL is still there and the tubing is
            # full. Only a reservoir run dry by the estimate may have let air in (priming.py).
            # Idempotent: in minimum-rate mode nothing the drive moves counts as filling.
            self._p.path = self._p.path.reservoir_emptied(self.cfg.internal_path_volume_ml)

    def _basal_mcg_per_h(self, rtc: float) -> float:
        return self._basal_at(rtc).dose_mcg_per_day / 24.0

    def _basal_at(self, rtc: float) -> ScheduleSegment:
        program = self._p.program
        cache = self._basal_cache
        if (
            cache is not None
            and cache[0] is program
            and cache[1] <= rtc < cache[2].until_rtc_s - _BASAL_CACHE_MARGIN_S
        ):
            return cache[2]
        segment = basal_at(program, rtc)
        self._basal_cache = (program, rtc, segment)
        return segment

    def _apply_rate(self, segment: ScheduleSegment | None) -> None:
        conc = self._p.drug.concentration_mcg_per_ml
        rate = 0.0
        if segment is None:  # disabled
            rate = 0.0
        elif self._p.reset_pending and self._p.therapy_running and conc > 0:
            rate = self.cfg.minimum_rate_mode_ml_per_day / 24.0
        elif self._volume_op is not None:
            rate = self._volume_op.rate_ml_per_h
        elif conc > 0:
            mcg_per_h = sum(b.rate_mcg_per_h for b in self._boluses)
            if self._p.therapy_running:
                if self._minimum_rate_mode:
                    rate = self.cfg.minimum_rate_mode_ml_per_day / 24.0
                    mcg_per_h = 0.0
                else:
                    mcg_per_h += segment.dose_mcg_per_day / 24.0
            rate += mcg_per_h / conc
        # The drive cannot exceed its maximum: overlapping boluses are delivered more slowly.
        rate = min(rate, self._max_rate_ml_per_h)
        if rate != self._rate_ml_per_h:
            self._rate_ml_per_h = rate
            self.hal.set_stroke_rate(rate / self.cfg.stroke_volume_ml)

    def _next_deadline(self, now: float, rtc: float, segment: ScheduleSegment | None) -> float:
        # Runs at every event: `if x < deadline` is `min` (the first of equals wins) without
        # the call, and the two reservoir thresholds are spelled out rather than looped.
        p = self._p
        cfg = self.cfg
        eri_at_s = p.eri_at_s
        deadline = self._last_self_test_s + cfg.self_test_interval_s
        if eri_at_s is None:
            # The service-life limit is a date, not a measurement: wake for it exactly.
            deadline = min(deadline, max(self._age_limit_s, now))
        if segment is None:  # disabled
            return deadline
        rate = 0.0 if self._stalled else self._rate_ml_per_h
        op = self._volume_op
        if op is not None and rate > 0:
            due = now + op.remaining_ml / rate * 3600.0
            if due < deadline:
                deadline = due
        for bolus in self._boluses:
            if bolus.end_s < deadline:
                deadline = bolus.end_s
        if self._next_periodic_s < deadline:
            deadline = self._next_periodic_s
        # The next step of a time-varying basal (inf for a constant one).
        due = now + segment.until_rtc_s - rtc
        if due < deadline:
            deadline = due
        if rate > 0:
            est = p.reservoir_estimate_ml
            alarms = self.alarms
            threshold = p.low_reservoir_threshold_ml
            if est > threshold and not alarms.is_active(AlarmId.LOW_RESERVOIR):
                due = now + (est - threshold) / rate * 3600.0
                if due < deadline:
                    deadline = due
            threshold = cfg.empty_reservoir_alarm_ml
            if est > threshold and not alarms.is_active(AlarmId.EMPTY_RESERVOIR):
                due = now + (est - threshold) / rate * 3600.0
                if due < deadline:
                    deadline = due
            if self._minimum_rate_mode and est > 0:
                # The estimate reaching 0 makes the tubing primable (priming.py).
                due = now + est / rate * 3600.0
                if due < deadline:
                    deadline = due
        if eri_at_s is not None:
            deadline = min(deadline, eri_at_s + cfg.eri_to_eos_s)
        # Never publish "now" again: whatever is due has just been handled.
        return max(deadline, now + _EPS_S)

    # ------------------------------------------------------------------ helpers
    def _raise(self, alarm: AlarmId, rtc: float) -> None:
        active = self.alarms.raise_(alarm, rtc)
        if active is not None:
            log.info("alarm %s raised", alarm.name)
            self.hal.sound(active.tone)
            self._save()

    def _disable(self, why: str) -> None:
        self._p.disabled = why
        self._boluses.clear()
        self._volume_op = None
        self._save()

    def _end_of_service(self, rtc: float) -> None:
        self.log.add(rtc, EventCode.END_OF_SERVICE)
        self._raise(AlarmId.END_OF_SERVICE, rtc)
        self._disable("end of service")

    def _require_enabled(self) -> None:
        if self._p.disabled:
            raise Refusal(ResultCode.THERAPY_DISABLED, f"delivery disabled: {self._p.disabled}")

    def _require_not_reset(self) -> None:
        if self._p.reset_pending:
            raise Refusal(ResultCode.INVALID_STATE, RESET_REFUSAL)

    def _require_no_volume_op(self) -> None:
        self._require_not_reset()
        if self._minimum_rate_mode:
            raise Refusal(ResultCode.INVALID_STATE, "reservoir empty (minimum-rate mode): refill")
        if self._volume_op is not None:
            raise Refusal(
                ResultCode.INVALID_STATE, f"{self._volume_op.kind.value} bolus in progress"
            )

    def _require_no_manual_bolus(self, now: float) -> None:
        """One clinician or patient bolus at a time, as on real pumps: a second request while
        one runs is refused, naming the running bolus, rather than stacked on top of it
        (two back-to-back commands, e.g. a programmer retrying with a new counter, would
        otherwise double the dose). Cancel the running bolus first to replace it. Periodic
        boluses belong to the program and do not count."""
        for bolus in self._boluses:
            # A bolus ending now is over even if service() has not retired it yet.
            if (
                bolus.kind in (BolusKind.CLINICIAN, BolusKind.PATIENT)
                and bolus.end_s > now + _EPS_S
            ):
                raise Refusal(
                    ResultCode.INVALID_STATE,
                    f"{bolus.kind.value} bolus of {bolus.dose_mcg:g} mcg in progress, ends in "
                    f"{(bolus.end_s - now) / 60.0:.1f} min: cancel it first",
                )

    def _require_drug(self) -> float:
        conc = self._p.drug.concentration_mcg_per_ml
        if conc <= 0:
            raise Refusal(ResultCode.INVALID_STATE, "no drug in reservoir: refill first")
        return conc

    def path_volume_ml(self) -> float:
        """Catheter plus pump tubing: the volume a priming or bridge bolus pushes."""
        return self._p.catheter.volume_ml + self.cfg.internal_path_volume_ml

    def _start_bolus(
        self, now: float, kind: BolusKind, dose_mcg: float, duration_min: float, resume_after: bool
    ) -> None:
        duration_s = duration_min * 60.0
        self._boluses.append(
            _DoseBolus(
                kind, dose_mcg, dose_mcg / duration_s * 3600.0, now, now + duration_s, resume_after
            )
        )
        self.log.add(
            self.hal.rtc_s(), EventCode.BOLUS_STARTED, _KIND_CODE[kind], dose_mcg, duration_min
        )

    def _start_volume_op(
        self, now: float, kind: BolusKind, volume_ml: float, rate_ml_per_h: float, dose_conc: float
    ) -> None:
        # A volume operation replaces all other delivery: a dose bolus that kept "running"
        # would be counted as delivered without any drug moving, so it is cancelled (logged).
        self._cancel_boluses(resume=True)
        self._volume_op = _VolumeOperation(kind, volume_ml, rate_ml_per_h, dose_conc)
        self.log.add(
            self.hal.rtc_s(),
            EventCode.BOLUS_STARTED,
            _KIND_CODE[kind],
            volume_ml,
            volume_ml / rate_ml_per_h * 60.0,
        )

    def _cancel_boluses(self, resume: bool) -> int:
        rtc = self.hal.rtc_s()
        cancelled: list[BolusKind] = [
            b.kind for b in self._boluses if b.kind is not BolusKind.PERIODIC
        ]
        self._boluses = [b for b in self._boluses if b.kind is BolusKind.PERIODIC]
        if self._volume_op is not None:
            cancelled.append(self._volume_op.kind)
            self._volume_op = None
        for kind in cancelled:
            self.log.add(rtc, EventCode.BOLUS_CANCELLED, _KIND_CODE[kind])
        return len(cancelled)

    def _check_bolus_fits(
        self, now: float, dose_mcg: float, duration_min: float, conc: float, field_name: str
    ) -> None:
        basal = self._basal_mcg_per_h(self.hal.rtc_s()) if self._p.therapy_running else 0.0
        extra = sum(b.rate_mcg_per_h for b in self._boluses)
        total_ml_per_day = (basal + extra + dose_mcg / duration_min * 60.0) / conc * 24.0
        if total_ml_per_day > self.cfg.max_rate_ml_per_day + 1e-9:
            raise Refusal(
                ResultCode.RATE_OUT_OF_RANGE,
                f"{field_name}={dose_mcg:g} over {duration_min:g} min needs "
                f"{total_ml_per_day:.4g} mL/day; max {self.cfg.max_rate_ml_per_day:g}",
            )
        limit = self._p.program.max_daily_dose_mcg
        if limit <= 0:
            raise Refusal(
                ResultCode.DAILY_DOSE_EXCEEDED,
                f"{field_name}={dose_mcg:g}: no program (max_daily_dose_mcg is 0)",
            )
        pending = sum(b.rate_mcg_per_h * (b.end_s - now) / 3600.0 for b in self._boluses)
        delivered = self._dose_last_24h_mcg(now)
        duration_h = duration_min / 60.0
        basal_24h = (
            _basal_max_24h_mcg(self._p.program)
            if self._p.therapy_running
            else 0.0
        )
        # Two 24 h windows bound the rest: the one ending when the bolus ends (history plus
        # basal during the bolus) and the one starting now (the next day's basal in full).
        ending_at_bolus = (
            self._dose_between(now - _DAY_S + duration_h * 3600.0, now)
            + basal * duration_h
            + pending
            + dose_mcg
        )
        next_day = basal_24h + pending + dose_mcg
        worst = max(ending_at_bolus, next_day)
        if worst > limit * (1 + 1e-9):
            raise Refusal(
                ResultCode.DAILY_DOSE_EXCEEDED,
                f"{field_name}={dose_mcg:g} would bring a 24 h dose to {worst:.4g} mcg "
                f"({delivered:.4g} delivered in the last 24 h); max_daily_dose_mcg is {limit:g}",
            )

    def _dose_between(self, start: float, now: float) -> float:
        total = 0.0
        for t0, t1, dose in self._dose_history:
            overlap = min(t1, now) - max(t0, start)
            if overlap > 0:
                total += dose * overlap / (t1 - t0)
        return total

    def _dose_last_24h_mcg(self, now: float) -> float:
        start = now - _DAY_S
        hist = self._dose_history
        while hist and hist[0][1] <= start:
            hist.popleft()
        total = 0.0
        for t0, t1, dose in hist:
            if t0 >= start:
                total += dose
            else:
                total += dose * (t1 - start) / (t1 - t0)
        return total

    def _patient_boluses_last_24h(self, now: float) -> int:
        starts = self._patient_bolus_starts
        while starts and starts[0] <= now - _DAY_S:
            starts.popleft()
        return len(starts)

    def projected_daily_dose_mcg(self, now: float) -> float:
        """Daily dose the reservoir projections assume: the programmed mean plus the patient's
        mean patient-bolus use over the rolling window (while patient boluses are enabled)."""
        program = self._p.program
        dose = mean_daily_dose_mcg(program)
        if program.patient_bolus is not None:
            dose += self._bolus_use.mean_mcg_per_day(now)
        return dose

    def _projection(self, now: float, rtc: float) -> ReservoirProjection:
        conc = self._p.drug.concentration_mcg_per_ml
        delivering = self._p.therapy_running and not self._p.disabled
        if conc <= 0 or not delivering or self._minimum_rate_mode:
            return ReservoirProjection(None, None)
        return project_reservoir(
            rtc_s=rtc,
            estimate_ml=self._p.reservoir_estimate_ml,
            daily_ml=self.projected_daily_dose_mcg(now) / conc,
            low_threshold_ml=self._p.low_reservoir_threshold_ml,
            empty_threshold_ml=self.cfg.empty_reservoir_alarm_ml,
        )

    def _projected_eri_rtc_s(self, now: float, rtc: float) -> float | None:
        if self._p.eri_at_s is not None or self._p.disabled:
            return None
        conc = self._p.drug.concentration_mcg_per_ml
        daily_ml = mean_daily_dose_mcg(self._p.program) / conc if conc > 0 else 0.0
        drain_mah_per_s = (
            self.cfg.idle_current_ma + daily_ml / 24.0 * self.cfg.charge_per_ml_mah
        ) / 3600.0
        usable_mah = (
            self.hal.battery_remaining_fraction() - self.cfg.eri_remaining_fraction
        ) * self.cfg.battery_capacity_mah
        by_charge_s = usable_mah / drain_mah_per_s if drain_mah_per_s > 0 else math.inf
        by_age_s = self.cfg.service_life_s - self.cfg.eri_to_eos_s - now
        return rtc + max(0.0, min(by_charge_s, by_age_s))

    def _save(self) -> None:
        # Written only when something changed (or the NVM was swapped): most services of a
        # pump that is not infusing change nothing. The copy is an immutable snapshot: the
        # NVM driver may keep the object as it is.
        nvm = self.hal.nvm
        values: tuple[object, ...] = _persistent_values(self._p)
        saved = self._saved
        if saved is not None and saved[0] is nvm and saved[1] == values:
            return
        self._saved = (nvm, values)
        nvm.write("persistent", _Persistent(*values))  # type: ignore[arg-type]
