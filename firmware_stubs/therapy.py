"""Therapy programs: their types, their validation against the pump's limits, and the schedule
they produce (basal dose rate as a function of time of day)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from itpump.firmware_stubs.config import FirmwareConfig
from itpump.firmware_stubs.errors import Refusal, check_range
from itpump.protocol.codes import ResultCode

MIN_PER_DAY = 1440
S_PER_DAY = 86400.0
# The Unix epoch fell on a Thursday; weekly patterns start on Monday 00:00 UTC.
_EPOCH_TO_MONDAY_S = 4 * S_PER_DAY
MAX_DAILY_DOSE_CEILING_MCG = 100_000.0


class TherapyMode(StrEnum):
    """Infusion modes a program can select."""

    STOPPED = "stopped"
    CONTINUOUS = "continuous"
    FLEX = "flex"
    PERIODIC_BOLUS = "periodic_bolus"


class FlexPeriod(StrEnum):
    """Length of a flex pattern before it repeats."""

    DAILY = "daily"
    WEEKLY = "weekly"

    @property
    def minutes(self) -> int:
        """Period length in minutes."""
        return MIN_PER_DAY if self is FlexPeriod.DAILY else 7 * MIN_PER_DAY


@dataclass(frozen=True, slots=True)
class FlexStep:
    """From `start_min` after the period start, deliver `dose_mcg_per_day`."""

    start_min: int
    dose_mcg_per_day: float


@dataclass(frozen=True, slots=True)
class PeriodicBolus:
    """A bolus every `interval_min`, the first `first_offset_min` after the program starts."""

    dose_mcg: float
    duration_min: float
    interval_min: float
    first_offset_min: float = 0.0


@dataclass(frozen=True, slots=True)
class PatientBolusSettings:
    """Patient-activated bolus: dose, minimum time between starts, maximum per rolling 24 h."""

    dose_mcg: float
    duration_min: float
    lockout_min: float
    max_per_day: int


@dataclass(frozen=True, slots=True)
class TherapyProgram:
    """Everything a clinician programs about delivery, committed in one step."""

    mode: TherapyMode
    max_daily_dose_mcg: float
    dose_mcg_per_day: float = 0.0  # continuous dose, or the basal of periodic-bolus mode
    flex_period: FlexPeriod = FlexPeriod.DAILY
    flex_steps: tuple[FlexStep, ...] = ()
    periodic: PeriodicBolus | None = None
    patient_bolus: PatientBolusSettings | None = None

    @staticmethod
    def stopped() -> TherapyProgram:
        """The factory program: nothing delivered."""
        return TherapyProgram(mode=TherapyMode.STOPPED, max_daily_dose_mcg=0.0)


@dataclass(frozen=True, slots=True)
class DrugSettings:
    """Drug in the reservoir as entered at the last refill."""

    name: str = ""
    concentration_mcg_per_ml: float = 0.0


@dataclass(frozen=True, slots=True)
class CatheterSettings:
    """Implanted catheter as entered by the clinician."""

    length_cm: float = 0.0
    volume_ul_per_cm: float = 0.0

    @property
    def volume_ml(self) -> float:
        """Internal volume of the implanted catheter."""
        return self.length_cm * self.volume_ul_per_cm / 1000.0


@dataclass(slots=True)
class ScheduleSegment:
    """Basal dose rate from now until `until_rtc_s` (inf = no scheduled change)."""

    dose_mcg_per_day: float
    until_rtc_s: float = field(default=math.inf)


def basal_at(program: TherapyProgram, rtc_s: float) -> ScheduleSegment:
    """Basal dose rate in force at `rtc_s` and when it next changes."""
    if program.mode is TherapyMode.STOPPED:
        return ScheduleSegment(0.0)
    if program.mode is not TherapyMode.FLEX:
        return ScheduleSegment(program.dose_mcg_per_day)
    period_s = program.flex_period.minutes * 60.0
    origin = 0.0 if program.flex_period is FlexPeriod.DAILY else _EPOCH_TO_MONDAY_S
    period_start = math.floor((rtc_s - origin) / period_s) * period_s + origin
    pos_s = rtc_s - period_start
    steps = program.flex_steps
    current = steps[0]
    next_start = period_s
    for i, step in enumerate(steps):
        if step.start_min * 60.0 <= pos_s + 1e-6:
            current = step
            next_start = steps[i + 1].start_min * 60.0 if i + 1 < len(steps) else period_s
    return ScheduleSegment(current.dose_mcg_per_day, period_start + next_start)


def mean_daily_dose_mcg(program: TherapyProgram) -> float:
    """Programmed dose averaged over a day, boluses of periodic mode included."""
    if program.mode is TherapyMode.STOPPED:
        return 0.0
    if program.mode is TherapyMode.CONTINUOUS:
        return program.dose_mcg_per_day
    if program.mode is TherapyMode.FLEX:
        total_min = program.flex_period.minutes
        starts = [s.start_min for s in program.flex_steps] + [total_min]
        return (
            sum(
                s.dose_mcg_per_day * (starts[i + 1] - starts[i])
                for i, s in enumerate(program.flex_steps)
            )
            / total_min
        )
    assert program.periodic is not None
    return program.dose_mcg_per_day + program.periodic.dose_mcg * MIN_PER_DAY / (
        program.periodic.interval_min
    )


def max_24h_dose_mcg(program: TherapyProgram) -> float:
    """Largest dose the program can deliver in any 24 h window, patient boluses included."""
    dose = 0.0
    if program.mode is TherapyMode.CONTINUOUS:
        dose = program.dose_mcg_per_day
    elif program.mode is TherapyMode.FLEX:
        dose = _max_window_flex_mcg(program)
    elif program.mode is TherapyMode.PERIODIC_BOLUS:
        assert program.periodic is not None
        boluses = math.ceil(MIN_PER_DAY / program.periodic.interval_min - 1e-9)
        dose = program.dose_mcg_per_day + boluses * program.periodic.dose_mcg
    if program.patient_bolus is not None:
        dose += program.patient_bolus.max_per_day * program.patient_bolus.dose_mcg
    return dose


def _max_window_flex_mcg(program: TherapyProgram) -> float:
    # The 24 h window integral of a piecewise-constant pattern is piecewise linear in the
    # window start, so its maximum sits where the window start or end meets a step boundary.
    period = program.flex_period.minutes
    steps = program.flex_steps
    starts = [s.start_min for s in steps]

    def integral(a_min: float, b_min: float) -> float:  # mcg over [a, b), a <= b, any span
        total = 0.0
        t = a_min
        while t < b_min - 1e-9:
            pos = t % period
            idx = max(i for i, s in enumerate(starts) if s <= pos + 1e-9)
            seg_end = starts[idx + 1] if idx + 1 < len(starts) else period
            step_len = min(seg_end - pos, b_min - t)
            total += steps[idx].dose_mcg_per_day * step_len / MIN_PER_DAY
            t += step_len
        return total

    candidates = {float(s) for s in starts} | {float((s - MIN_PER_DAY) % period) for s in starts}
    return max(integral(c, c + MIN_PER_DAY) for c in candidates)


def _rate_ml_per_day(dose_mcg_per_day: float, conc_mcg_per_ml: float) -> float:
    return dose_mcg_per_day / conc_mcg_per_ml


def _check_rate(field_name: str, dose_mcg_per_day: float, conc: float, cfg: FirmwareConfig) -> None:
    rate = _rate_ml_per_day(dose_mcg_per_day, conc)
    if not (cfg.min_rate_ml_per_day - 1e-12 <= rate <= cfg.max_rate_ml_per_day + 1e-12):
        raise Refusal(
            ResultCode.RATE_OUT_OF_RANGE,
            f"{field_name}={dose_mcg_per_day:g} mcg/day gives {rate:.4g} mL/day at "
            f"{conc:g} mcg/mL; allowed {cfg.min_rate_ml_per_day:g}..{cfg.max_rate_ml_per_day:g}"
            f" mL/day ({cfg.min_rate_ml_per_day * conc:.4g}..{cfg.max_rate_ml_per_day * conc:.4g}"
            " mcg/day)",
        )


def validate_program(program: TherapyProgram, conc_mcg_per_ml: float, cfg: FirmwareConfig) -> None:
    """Refuse, with the field and its allowed range, anything this pump must not accept."""
    if program.mode is TherapyMode.STOPPED:
        if program.patient_bolus is not None:
            raise Refusal(ResultCode.OUT_OF_RANGE, "patient_bolus must be off when mode is stopped")
        return
    if conc_mcg_per_ml <= 0:
        raise Refusal(ResultCode.INVALID_STATE, "no drug concentration: refill the pump first")
    check_range(
        "max_daily_dose_mcg", program.max_daily_dose_mcg, 1e-3, MAX_DAILY_DOSE_CEILING_MCG, "mcg"
    )
    if program.mode is TherapyMode.CONTINUOUS:
        _check_rate("dose_mcg_per_day", program.dose_mcg_per_day, conc_mcg_per_ml, cfg)
    elif program.mode is TherapyMode.FLEX:
        _validate_flex(program, conc_mcg_per_ml, cfg)
    elif program.mode is TherapyMode.PERIODIC_BOLUS:
        _validate_periodic(program, conc_mcg_per_ml, cfg)
    if program.patient_bolus is not None:
        _validate_patient_bolus(program, conc_mcg_per_ml, cfg)
    max_dose = max_24h_dose_mcg(program)
    if max_dose > program.max_daily_dose_mcg * (1 + 1e-9):
        raise Refusal(
            ResultCode.DAILY_DOSE_EXCEEDED,
            f"program can deliver {max_dose:.4g} mcg in 24 h (patient boluses included); "
            f"max_daily_dose_mcg is {program.max_daily_dose_mcg:g}",
        )


def _validate_flex(program: TherapyProgram, conc: float, cfg: FirmwareConfig) -> None:
    steps = program.flex_steps
    if not 1 <= len(steps) <= cfg.flex_max_steps:
        raise Refusal(
            ResultCode.TOO_MANY_STEPS,
            f"flex_steps has {len(steps)} steps; allowed 1..{cfg.flex_max_steps}",
        )
    if steps[0].start_min != 0:
        raise Refusal(ResultCode.OUT_OF_RANGE, "flex_steps[0].start_min must be 0")
    period = program.flex_period.minutes
    for i, step in enumerate(steps):
        check_range(f"flex_steps[{i}].start_min", step.start_min, 0, period - 1, "min")
        if i and step.start_min <= steps[i - 1].start_min:
            raise Refusal(
                ResultCode.OUT_OF_RANGE,
                f"flex_steps[{i}].start_min={step.start_min} must be after "
                f"flex_steps[{i - 1}].start_min={steps[i - 1].start_min}",
            )
        _check_rate(f"flex_steps[{i}].dose_mcg_per_day", step.dose_mcg_per_day, conc, cfg)


def _validate_bolus_rate(
    field_prefix: str,
    dose_mcg: float,
    duration_min: float,
    basal_mcg_per_day: float,
    conc: float,
    cfg: FirmwareConfig,
) -> None:
    check_range(f"{field_prefix}.dose_mcg", dose_mcg, 1e-3, MAX_DAILY_DOSE_CEILING_MCG, "mcg")
    check_range(f"{field_prefix}.duration_min", duration_min, 1, 7 * MIN_PER_DAY, "min")
    total_ml_per_day = (basal_mcg_per_day + dose_mcg * MIN_PER_DAY / duration_min) / conc
    if total_ml_per_day > cfg.max_rate_ml_per_day + 1e-12:
        shortest = (
            dose_mcg * MIN_PER_DAY / (cfg.max_rate_ml_per_day * conc - basal_mcg_per_day)
            if cfg.max_rate_ml_per_day * conc > basal_mcg_per_day
            else math.inf
        )
        raise Refusal(
            ResultCode.RATE_OUT_OF_RANGE,
            f"{field_prefix}: {dose_mcg:g} mcg over {duration_min:g} min needs "
            f"{total_ml_per_day:.4g} mL/day with basal; max {cfg.max_rate_ml_per_day:g} mL/day "
            f"(duration_min must be >= {shortest:.4g})",
        )


def _validate_periodic(program: TherapyProgram, conc: float, cfg: FirmwareConfig) -> None:
    p = program.periodic
    if p is None:
        raise Refusal(ResultCode.OUT_OF_RANGE, "periodic_bolus mode needs periodic settings")
    _check_rate("dose_mcg_per_day", program.dose_mcg_per_day, conc, cfg)
    _validate_bolus_rate(
        "periodic", p.dose_mcg, p.duration_min, program.dose_mcg_per_day, conc, cfg
    )
    check_range("periodic.interval_min", p.interval_min, p.duration_min, 7 * MIN_PER_DAY, "min")
    check_range("periodic.first_offset_min", p.first_offset_min, 0, 7 * MIN_PER_DAY, "min")


def _validate_patient_bolus(program: TherapyProgram, conc: float, cfg: FirmwareConfig) -> None:
    pb = program.patient_bolus
    assert pb is not None
    peak_basal = max([program.dose_mcg_per_day] + [s.dose_mcg_per_day for s in program.flex_steps])
    _validate_bolus_rate("patient_bolus", pb.dose_mcg, pb.duration_min, peak_basal, conc, cfg)
    check_range("patient_bolus.lockout_min", pb.lockout_min, pb.duration_min, MIN_PER_DAY, "min")
    check_range("patient_bolus.max_per_day", pb.max_per_day, 1, 48)
