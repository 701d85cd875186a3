"""Therapy programs in clinical units: the one model of a program.

A clinician thinks in mcg/day, mcg/mL, minutes and clock times; the wire carries nanograms,
nanolitres and minutes from the period start (:class:`protocol.messages.TherapyProgram`). This
module is the clinical side, used by every layer:

* the firmware schedules a :class:`TherapyProgram` (mode, daily maximum, patient bolus) and
  refuses one outside its device limits (:func:`validate_therapy`, limits from its
  configuration);
* the command handler and the programmer convert a whole :class:`Program` (therapy plus drug,
  patient and catheter) to and from the wire with :meth:`Program.to_wire` /
  :meth:`Program.from_wire`, the only conversion there is;
* scenario files and ``itpump ctl program --file`` share one document format, a TOML table
  read by :class:`ProgramTable` (see docs/programmer.md and docs/scenarios.md)::

      mode = "flex"                 # stopped | continuous | flex | periodic_bolus
      max_daily_dose_mcg = 450
      period = "daily"              # flex: daily or weekly ("tue 07:00" starts)
      steps = [{ start = "00:00", dose_mcg_per_day = 180 },
               { start = "07:00", dose_mcg_per_day = 260 }]
      patient_bolus = { dose_mcg = 20, duration_min = 15, lockout_min = 240, max_per_day = 3 }

Adding a therapy mode: a mode class here (with its wire record, its table keys and its checks)
and its basal in the firmware's scheduler (``firmware_stubs/therapy.py``).

Pure: no I/O, no clock. Errors are :class:`ProgramError`, naming the field path of the
document (``periodic.dose_mcg``) and the allowed range.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, ClassVar, Literal, Protocol, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from itpump.protocol import messages as m
from itpump.protocol.codes import ResultCode
from itpump.protocol.messages import FlexPeriod
from itpump.protocol.units import (
    cm_from_mm,
    mcg_from_ng,
    mm_from_cm,
    ng_from_mcg,
    nl_from_ul,
    parse_duration_h,
    ul_from_nl,
)
from itpump.protocol.wire import IntSpec, ListSpec, StringSpec, WireStruct, struct_fields

__all__ = [
    "Catheter",
    "Continuous",
    "Flex",
    "FlexPeriod",
    "FlexStep",
    "Mode",
    "PatientBolus",
    "PeriodicBolus",
    "Program",
    "ProgramError",
    "ProgramTable",
    "Stopped",
    "TherapyLimits",
    "TherapyProgram",
    "check_text",
    "check_wire_value",
    "field_path",
    "format_start",
    "max_24h_dose_mcg",
    "mean_daily_dose_mcg",
    "parse_start",
    "validate_therapy",
    "wire_range",
]

MIN_PER_DAY = m.MINUTES_PER_DAY
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_START_RE = re.compile(r"^\s*(?:(?P<day>[a-z]{3})[a-z]*\s*)?(?P<h>\d{1,2}):(?P<m>\d{2})\s*$", re.I)
#: Bolus timing the scheduler can represent: a bolus lasts at most a week and repeats at most
#: weekly; a lockout spans at most a day (the patient-bolus count is per rolling 24 h).
_MAX_BOLUS_MIN = m.MINUTES_PER_WEEK
_T = TypeVar("_T")


class ProgramError(ValueError):
    """A program value that cannot be sent or that the pump must refuse.

    ``field`` is the path of the value in the program document (``steps[1].start``,
    ``periodic.dose_mcg``); ``message`` says what is wrong and what is allowed; ``code`` is the
    result code a pump refuses it with.
    """

    def __init__(
        self, field: str, message: str, code: ResultCode = ResultCode.OUT_OF_RANGE
    ) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.code = code


class TherapyLimits(Protocol):
    """The device limits a program is validated against (the firmware's configuration)."""

    @property
    def min_rate_ml_per_day(self) -> float: ...
    @property
    def max_rate_ml_per_day(self) -> float: ...
    @property
    def flex_max_steps(self) -> int: ...
    @property
    def max_daily_dose_mcg(self) -> float: ...
    @property
    def patient_bolus_max_per_day(self) -> int: ...


def field_path(loc: Sequence[int | str]) -> str:
    """A document path as errors name it: ``steps[0].dose_mcg_per_day``, ``periodic.interval``
    (one style for ``ctl program --file`` and scenario files)."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _num(value: float) -> str:
    """A number without a useless ``.0`` (450.0 -> ``450``, 2.6 -> ``2.6``)."""
    return f"{value:g}"


def parse_start(text: str, period: FlexPeriod = FlexPeriod.DAILY) -> int:
    """A flex step start as minutes from the period start.

    Daily: ``"07:30"``. Weekly: ``"Tue 07:30"`` (the week starts on Monday 00:00 UTC); a
    plain ``"07:30"`` means Monday. A bare integer is taken as minutes.
    """
    text = text.strip()
    if text.isdigit():
        return int(text)
    match = _START_RE.match(text)
    if match is None:
        expected = "HH:MM or DAY HH:MM" if period is FlexPeriod.WEEKLY else "HH:MM"
        raise ValueError(f"start {text!r}: expected {expected}")
    hours, minutes = int(match["h"]), int(match["m"])
    if hours > 23 or minutes > 59:
        raise ValueError(f"start {text!r}: not a time of day")
    day = 0
    if match["day"] is not None:
        if period is not FlexPeriod.WEEKLY:
            raise ValueError(f"start {text!r}: a day of the week needs a weekly flex period")
        name = match["day"].lower()
        if name not in _DAYS:
            raise ValueError(f"start {text!r}: unknown day {match['day']!r}")
        day = _DAYS.index(name)
    return day * MIN_PER_DAY + hours * 60 + minutes


def format_start(start_min: int, period: FlexPeriod = FlexPeriod.DAILY) -> str:
    """Minutes from the period start as ``HH:MM`` (daily) or ``Day HH:MM`` (weekly)."""
    day, rest = divmod(start_min, MIN_PER_DAY)
    clock = f"{rest // 60:02d}:{rest % 60:02d}"
    if period is FlexPeriod.WEEKLY:
        return f"{_DAYS[day % 7].capitalize()} {clock}"
    return clock


# --- wire ranges in clinical units ------------------------------------------------------------

#: wire unit -> (clinical unit, wire units per clinical unit)
_CLINICAL_UNITS: dict[str, tuple[str, float]] = {
    "ng": ("mcg", 1000.0),
    "ng/day": ("mcg/day", 1000.0),
    "ng/mL": ("mcg/mL", 1000.0),
    "nL": ("mL", 1_000_000.0),
    "mm": ("cm", 10.0),
    "nL/cm": ("uL/cm", 1000.0),
    "min": ("min", 1.0),
    "s since epoch": ("s since epoch", 1.0),
    "": ("", 1.0),
}


def _spec(struct: type[WireStruct], name: str) -> Any:
    return dict(struct_fields(struct))[name]


def wire_range(
    struct: type[WireStruct], name: str, *, zero_unset: bool = False
) -> tuple[float, float, str]:
    """The range of a wire field in clinical units: ``(low, high, unit)``.

    ``zero_unset``: 0 means "not set" on the wire, so the smallest value is one wire unit.
    """
    spec = _spec(struct, name)
    assert isinstance(spec, IntSpec), (struct, name)
    unit, scale = _CLINICAL_UNITS[spec.unit]
    low = max(spec.min, 1) if zero_unset else spec.min
    return low / scale, spec.max / scale, unit


def check_wire_value(
    path: str,
    value: float,
    struct: type[WireStruct],
    name: str,
    *,
    zero_unset: bool = False,
) -> None:
    """Raise :class:`ProgramError` unless ``value`` (clinical units) fits the wire field."""
    low, high, unit = wire_range(struct, name, zero_unset=zero_unset)
    _check(path, value, low, high, unit, "(wire limit)")


def _check_fields(
    struct: type[WireStruct],
    fields: tuple[tuple[str, float, str], ...],
    *,
    zero_unset: bool = False,
) -> None:
    """:func:`check_wire_value` for each ``(path, value, wire field)`` of one wire record."""
    for path, value, name in fields:
        check_wire_value(path, value, struct, name, zero_unset=zero_unset)


def _check(
    path: str,
    value: float,
    low: float,
    high: float,
    unit: str = "",
    note: str = "",
    code: ResultCode = ResultCode.OUT_OF_RANGE,
) -> None:
    if low <= value <= high:  # False for NaN
        return
    u = f" {unit}" if unit else ""
    tail = f" {note}" if note else ""
    raise ProgramError(path, f"{value:g}{u} outside {low:g}..{high:g}{u}{tail}", code)


def check_text(path: str, text: str, struct: type[WireStruct], name: str) -> None:
    """Raise :class:`ProgramError` unless ``text`` fits the wire string field."""
    spec = _spec(struct, name)
    assert isinstance(spec, StringSpec)
    size = len(text.encode("utf-8"))
    if not spec.min_bytes <= size <= spec.max_bytes:
        raise ProgramError(
            path, f"{size} UTF-8 bytes outside {spec.min_bytes}..{spec.max_bytes} (wire limit)"
        )


#: the smallest dose there is: one wire unit (1 ng)
MIN_DOSE_MCG = wire_range(m.ClinicianBolus, "dose_ng")[0]


# --- modes ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stopped:
    """No basal delivery (boluses only)."""

    KIND: ClassVar[str] = "stopped"
    WIRE: ClassVar[type[WireStruct]] = m.StoppedMode
    #: the document keys of this mode (besides ``mode`` and the program-wide ones)
    TABLE_KEYS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_wire(cls, _wire: m.TherapyModeBlock) -> Stopped:
        """The mode of a wire record."""
        return cls()

    @classmethod
    def from_table(cls, _table: ProgramTable) -> Stopped:
        """The mode of a program document."""
        return cls()

    def to_wire(self) -> m.StoppedMode:
        """The wire mode record."""
        return m.StoppedMode()

    def peak_basal_mcg_per_day(self) -> float:
        """No basal."""
        return 0.0

    def mean_dose_mcg_per_day(self) -> float:
        """Nothing delivered."""
        return 0.0

    def max_24h_dose_mcg(self) -> float:
        """Nothing delivered."""
        return 0.0

    def check_limits(self, _conc_mcg_per_ml: float, _limits: TherapyLimits) -> None:
        """Nothing delivered: nothing to check."""

    def table_items(self) -> dict[str, Any]:
        """The mode's keys in the program document."""
        return {"mode": self.KIND}

    def check_wire(self) -> None:
        """Nothing to check."""

    def __str__(self) -> str:
        return "stopped (no basal delivery)"

    def scaled(self, _factor: float) -> Stopped:
        """Nothing to scale."""
        return self


@dataclass(frozen=True, slots=True)
class Continuous:
    """One dose rate around the clock."""

    KIND: ClassVar[str] = "continuous"
    WIRE: ClassVar[type[WireStruct]] = m.ContinuousMode
    TABLE_KEYS: ClassVar[tuple[str, ...]] = ("dose_mcg_per_day",)
    dose_mcg_per_day: float

    @classmethod
    def from_wire(cls, wire: m.TherapyModeBlock) -> Continuous:
        """The mode of a wire record."""
        assert isinstance(wire, m.ContinuousMode)
        return cls(mcg_from_ng(wire.dose_ng_per_day))

    @classmethod
    def from_table(cls, table: ProgramTable) -> Continuous:
        """The mode of a program document: its dose is required and above zero (no basal
        is mode "stopped"; a dose left out must not read as 0)."""
        dose = _required(
            table.dose_mcg_per_day, "dose_mcg_per_day", cls.KIND, "dose_mcg_per_day > 0 (mcg/day)"
        )
        mode = cls(dose)
        mode.check_positive()
        return mode

    def check_positive(self) -> None:
        """Refuse a dose that is 0 on the wire: a continuous program delivers something (no
        basal is mode "stopped"), whether the dose came from a file, a flag or the wire."""
        if not ng_from_mcg(self.dose_mcg_per_day) >= 1:
            raise ProgramError(
                "dose_mcg_per_day",
                f"{self.dose_mcg_per_day:g} mcg/day: mode 'continuous' needs a dose > 0 "
                f"(at least {mcg_from_ng(1):g} mcg/day, the wire's resolution; "
                'mode "stopped" delivers no basal)',
            )

    def to_wire(self) -> m.ContinuousMode:
        """The wire mode record."""
        return m.ContinuousMode(ng_from_mcg(self.dose_mcg_per_day))

    def peak_basal_mcg_per_day(self) -> float:
        """The dose rate."""
        return self.dose_mcg_per_day

    def mean_dose_mcg_per_day(self) -> float:
        """The dose rate."""
        return self.dose_mcg_per_day

    def max_24h_dose_mcg(self) -> float:
        """A day at the dose rate."""
        return self.dose_mcg_per_day

    def check_limits(self, conc_mcg_per_ml: float, limits: TherapyLimits) -> None:
        """The dose must be above zero and its rate one the drive delivers."""
        self.check_positive()
        _check_rate("dose_mcg_per_day", self.dose_mcg_per_day, conc_mcg_per_ml, limits)

    def table_items(self) -> dict[str, Any]:
        """The mode's keys in the program document."""
        return {"mode": self.KIND, "dose_mcg_per_day": self.dose_mcg_per_day}

    def check_wire(self) -> None:
        """Raise :class:`ProgramError` for a value the wire cannot carry."""
        check_wire_value(
            "dose_mcg_per_day", self.dose_mcg_per_day, m.ContinuousMode, "dose_ng_per_day"
        )
        self.check_positive()

    def __str__(self) -> str:
        return f"continuous {_num(self.dose_mcg_per_day)} mcg/day"

    def scaled(self, factor: float) -> Continuous:
        """The same mode with its dose rate multiplied by ``factor``."""
        return replace(self, dose_mcg_per_day=self.dose_mcg_per_day * factor)


@dataclass(frozen=True, slots=True)
class FlexStep:
    """From ``start_min`` after the period start until the next step, ``dose_mcg_per_day``."""

    start_min: int
    dose_mcg_per_day: float


@dataclass(frozen=True, slots=True)
class Flex:
    """A daily (from 00:00 UTC) or weekly (from Monday 00:00 UTC) pattern of dose rates."""

    KIND: ClassVar[str] = "flex"
    WIRE: ClassVar[type[WireStruct]] = m.FlexMode
    TABLE_KEYS: ClassVar[tuple[str, ...]] = ("period", "steps")
    steps: tuple[FlexStep, ...]
    period: FlexPeriod = FlexPeriod.DAILY

    @classmethod
    def from_wire(cls, wire: m.TherapyModeBlock) -> Flex:
        """The mode of a wire record."""
        assert isinstance(wire, m.FlexMode)
        return cls(
            tuple(FlexStep(s.start_min, mcg_from_ng(s.dose_ng_per_day)) for s in wire.steps),
            wire.period,
        )

    @classmethod
    def from_table(cls, table: ProgramTable) -> Flex:
        """The mode of a program document."""
        table_steps = _required(table.steps, "steps", cls.KIND, "at least one step")
        steps = tuple(FlexStep(step.start, step.dose_mcg_per_day) for step in table_steps)
        return cls(steps, FlexPeriod[(table.period or "daily").upper()])

    def peak_basal_mcg_per_day(self) -> float:
        """The highest rate of the pattern."""
        return max(s.dose_mcg_per_day for s in self.steps)

    def max_24h_dose_mcg(self) -> float:
        """The worst 24 h window of the pattern."""
        return _max_window_flex_mcg(self)

    def check_limits(self, conc_mcg_per_ml: float, limits: TherapyLimits) -> None:
        """Step count, order, and every step's rate."""
        if not 1 <= len(self.steps) <= limits.flex_max_steps:
            raise ProgramError(
                "steps",
                f"{len(self.steps)} steps; allowed 1..{limits.flex_max_steps}",
                ResultCode.TOO_MANY_STEPS,
            )
        self.check_order()
        for i, step in enumerate(self.steps):
            path = f"steps[{i}].dose_mcg_per_day"
            _check_rate(path, step.dose_mcg_per_day, conc_mcg_per_ml, limits)

    @classmethod
    def parse(cls, text: str, period: FlexPeriod | str = FlexPeriod.DAILY) -> Flex:
        """Steps from ``"00:00=180,07:00=260"`` (weekly: ``"Mon 00:00=180,Sat 09:00=220"``)."""
        period = _period(period)
        steps = []
        for item in text.split(","):
            if not item.strip():
                continue
            start, sep, dose = item.partition("=")
            if not sep:
                raise ValueError(f"flex step {item.strip()!r}: expected START=MCG_PER_DAY")
            steps.append(FlexStep(parse_start(start, period), _float(dose, "flex dose")))
        if not steps:
            raise ValueError("flex: at least one step is needed")
        return cls(tuple(steps), period)

    def to_wire(self) -> m.FlexMode:
        """The wire mode record."""
        return m.FlexMode(
            self.period,
            tuple(m.FlexStep(s.start_min, ng_from_mcg(s.dose_mcg_per_day)) for s in self.steps),
        )

    def table_items(self) -> dict[str, Any]:
        """The mode's keys in the program document."""
        return {
            "mode": self.KIND,
            "period": self.period.name.lower(),
            "steps": [
                {
                    "start": format_start(s.start_min, self.period),
                    "dose_mcg_per_day": s.dose_mcg_per_day,
                }
                for s in self.steps
            ],
        }

    def check_wire(self) -> None:
        """Raise :class:`ProgramError` for steps the wire cannot carry (count, order, range)."""
        spec = _spec(m.FlexMode, "steps")
        assert isinstance(spec, ListSpec)
        if self.steps and not spec.min_items <= len(self.steps) <= spec.max_items:
            raise ProgramError(
                "steps",
                f"{len(self.steps)} steps outside {spec.min_items}..{spec.max_items} (wire limit)",
            )
        self.check_order()
        for i, step in enumerate(self.steps):
            check_wire_value(
                f"steps[{i}].dose_mcg_per_day",
                step.dose_mcg_per_day,
                m.FlexStep,
                "dose_ng_per_day",
            )

    def check_order(self) -> None:
        """The first step starts the period; starts increase and stay inside the period."""
        if not self.steps:
            raise ProgramError("steps", "mode 'flex' needs at least one step")
        if self.steps[0].start_min != 0:
            first = format_start(0, self.period)
            raise ProgramError("steps[0].start", f"the first step must start at {first}")
        last_start = self.period.minutes - 1
        for i, step in enumerate(self.steps):
            if not 0 <= step.start_min <= last_start:
                raise ProgramError(
                    f"steps[{i}].start",
                    f"{step.start_min} min outside 0..{last_start} min "
                    f"(the {self.period.name.lower()} period)",
                )
            if i and step.start_min <= self.steps[i - 1].start_min:
                raise ProgramError(
                    f"steps[{i}].start",
                    f"{format_start(step.start_min, self.period)} must be after the step "
                    f"before ({format_start(self.steps[i - 1].start_min, self.period)})",
                )

    def mean_dose_mcg_per_day(self) -> float:
        """Average daily dose over the period."""
        total = self.period.minutes
        ends = [s.start_min for s in self.steps[1:]] + [total]
        pairs = zip(self.steps, ends, strict=True)
        dose = sum(s.dose_mcg_per_day * (end - s.start_min) for s, end in pairs)
        return dose / total

    def __str__(self) -> str:
        steps = ", ".join(
            f"{format_start(s.start_min, self.period)} {_num(s.dose_mcg_per_day)}"
            for s in self.steps
        )
        return f"flex ({self.period.name.lower()}) {steps} mcg/day"

    def scaled(self, factor: float) -> Flex:
        """The same pattern with every step's dose rate multiplied by ``factor``."""
        steps = tuple(replace(s, dose_mcg_per_day=s.dose_mcg_per_day * factor) for s in self.steps)
        return replace(self, steps=steps)


@dataclass(frozen=True, slots=True)
class PeriodicBolus:
    """A basal rate plus a bolus repeated every ``interval_min``, the first
    ``first_offset_min`` after the program is committed."""

    KIND: ClassVar[str] = "periodic_bolus"
    WIRE: ClassVar[type[WireStruct]] = m.PeriodicBolusMode
    TABLE_KEYS: ClassVar[tuple[str, ...]] = ("dose_mcg_per_day", "periodic")
    basal_mcg_per_day: float
    bolus_mcg: float
    bolus_duration_min: int
    interval_min: int
    first_offset_min: int = 0

    @classmethod
    def from_wire(cls, wire: m.TherapyModeBlock) -> PeriodicBolus:
        """The mode of a wire record."""
        assert isinstance(wire, m.PeriodicBolusMode)
        return cls(
            mcg_from_ng(wire.basal_dose_ng_per_day),
            mcg_from_ng(wire.bolus_dose_ng),
            wire.bolus_duration_min,
            wire.interval_min,
            wire.first_offset_min,
        )

    @classmethod
    def from_table(cls, table: ProgramTable) -> PeriodicBolus:
        """The mode of a program document (intervals as durations, in whole minutes)."""
        p = _required(table.periodic, "periodic", cls.KIND, "a 'periodic' table")
        basal = _required(
            table.dose_mcg_per_day, "dose_mcg_per_day", cls.KIND, "dose_mcg_per_day (basal, >= 0)"
        )
        return cls(
            basal,
            p.dose_mcg,
            p.duration_min,
            _whole_minutes("periodic.interval", p.interval),
            _whole_minutes("periodic.first_offset", p.first_offset),
        )

    def peak_basal_mcg_per_day(self) -> float:
        """The basal rate between boluses."""
        return self.basal_mcg_per_day

    def mean_dose_mcg_per_day(self) -> float:
        """Basal plus the boluses of a day."""
        return self.basal_mcg_per_day + self.bolus_mcg * MIN_PER_DAY / self.interval_min

    def max_24h_dose_mcg(self) -> float:
        """Basal plus every bolus that can start in 24 h."""
        boluses = math.ceil(MIN_PER_DAY / self.interval_min - 1e-9)
        return self.basal_mcg_per_day + boluses * self.bolus_mcg

    def check_limits(self, conc_mcg_per_ml: float, limits: TherapyLimits) -> None:
        """The basal rate, the bolus on top of it, and the bolus timing."""
        basal = self.basal_mcg_per_day
        _check_rate("dose_mcg_per_day", basal, conc_mcg_per_ml, limits)
        _check_bolus_rate(
            "periodic",
            self.bolus_mcg,
            self.bolus_duration_min,
            basal,
            conc_mcg_per_ml,
            limits,
        )
        _check(
            "periodic.interval", self.interval_min, self.bolus_duration_min, _MAX_BOLUS_MIN, "min"
        )
        _check("periodic.first_offset", self.first_offset_min, 0, _MAX_BOLUS_MIN, "min")

    @classmethod
    def parse(cls, text: str) -> PeriodicBolus:
        """From ``"BASAL,BOLUS_MCG,DURATION_MIN,INTERVAL_MIN[,FIRST_OFFSET_MIN]"``."""
        parts = [p.strip() for p in text.split(",")]
        if len(parts) not in (4, 5):
            raise ValueError(
                f"periodic {text!r}: expected BASAL,BOLUS_MCG,DURATION_MIN,INTERVAL_MIN"
                "[,FIRST_OFFSET_MIN]"
            )
        return cls(
            _float(parts[0], "periodic basal"),
            _float(parts[1], "periodic bolus dose"),
            _int(parts[2], "periodic bolus duration"),
            _int(parts[3], "periodic interval"),
            _int(parts[4], "periodic first offset") if len(parts) == 5 else 0,
        )

    def to_wire(self) -> m.PeriodicBolusMode:
        """The wire mode record."""
        return m.PeriodicBolusMode(
            ng_from_mcg(self.basal_mcg_per_day),
            ng_from_mcg(self.bolus_mcg),
            self.bolus_duration_min,
            self.interval_min,
            self.first_offset_min,
        )

    def table_items(self) -> dict[str, Any]:
        """The mode's keys in the program document (intervals as durations in hours)."""
        return {
            "mode": self.KIND,
            "dose_mcg_per_day": self.basal_mcg_per_day,
            "periodic": {
                "dose_mcg": self.bolus_mcg,
                "duration_min": self.bolus_duration_min,
                "interval": f"{self.interval_min}m",
                "first_offset": f"{self.first_offset_min}m",
            },
        }

    def check_wire(self) -> None:
        """Raise :class:`ProgramError` for a value the wire cannot carry."""
        _check_fields(
            m.PeriodicBolusMode,
            (
                ("dose_mcg_per_day", self.basal_mcg_per_day, "basal_dose_ng_per_day"),
                ("periodic.dose_mcg", self.bolus_mcg, "bolus_dose_ng"),
                ("periodic.duration_min", self.bolus_duration_min, "bolus_duration_min"),
                ("periodic.interval", self.interval_min, "interval_min"),
                ("periodic.first_offset", self.first_offset_min, "first_offset_min"),
            ),
        )
        if self.bolus_duration_min > self.interval_min:
            raise ProgramError(
                "periodic.duration_min",
                f"{self.bolus_duration_min} min is longer than the interval between "
                f"boluses ({self.interval_min} min)",
            )

    def __str__(self) -> str:
        return (
            f"periodic bolus: basal {_num(self.basal_mcg_per_day)} mcg/day + "
            f"{_num(self.bolus_mcg)} mcg over {self.bolus_duration_min} min "
            f"every {self.interval_min} min"
        )

    def scaled(self, factor: float) -> PeriodicBolus:
        """The same timing with the basal rate and the bolus dose multiplied by ``factor``."""
        return replace(
            self,
            basal_mcg_per_day=self.basal_mcg_per_day * factor,
            bolus_mcg=self.bolus_mcg * factor,
        )


Mode = Stopped | Continuous | Flex | PeriodicBolus
MODES: tuple[type[Mode], ...] = (Stopped, Continuous, Flex, PeriodicBolus)


def _required(value: _T | None, key: str, kind: str, needs: str) -> _T:
    """A mode's key that a program document must give (never taken from the pump, never 0
    by default)."""
    if value is None:
        raise ProgramError(key, f"mode '{kind}' needs {needs}")
    return value


#: every mode's own document keys
_MODE_KEYS = frozenset(key for cls in MODES for key in cls.TABLE_KEYS)

_MODE_OF_WIRE: dict[type[WireStruct], type[Mode]] = {cls.WIRE: cls for cls in MODES}
_MODE_OF_KIND: dict[str, type[Mode]] = {cls.KIND: cls for cls in MODES}


def _mode_from_wire(mode: m.TherapyModeBlock) -> Mode:
    return _MODE_OF_WIRE[type(mode)].from_wire(mode)


# --- program-wide settings --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PatientBolus:
    """Patient-activated bolus: dose, duration, lockout between starts, maximum per 24 h."""

    dose_mcg: float
    duration_min: int
    lockout_min: int
    max_per_day: int

    @classmethod
    def parse(cls, text: str) -> PatientBolus:
        """From ``"DOSE_MCG,DURATION_MIN,LOCKOUT_MIN,MAX_PER_DAY"``, e.g. ``"25,10,180,4"``."""
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 4:
            raise ValueError(
                f"patient bolus {text!r}: expected DOSE_MCG,DURATION_MIN,LOCKOUT_MIN,MAX_PER_DAY"
            )
        return cls(
            _float(parts[0], "patient bolus dose"),
            _int(parts[1], "patient bolus duration"),
            _int(parts[2], "patient bolus lockout"),
            _int(parts[3], "patient bolus max per day"),
        )

    def to_wire(self) -> m.PatientBolusSettings:
        """The wire record."""
        return m.PatientBolusSettings(
            ng_from_mcg(self.dose_mcg), self.duration_min, self.lockout_min, self.max_per_day
        )

    def check_wire(self) -> None:
        """Raise :class:`ProgramError` for a value the wire cannot carry."""
        _check_fields(
            m.PatientBolusSettings,
            (
                ("patient_bolus.dose_mcg", self.dose_mcg, "dose_ng"),
                ("patient_bolus.duration_min", self.duration_min, "duration_min"),
                ("patient_bolus.lockout_min", self.lockout_min, "lockout_min"),
                ("patient_bolus.max_per_day", self.max_per_day, "max_per_day"),
            ),
        )

    def __str__(self) -> str:
        return (
            f"{_num(self.dose_mcg)} mcg over {self.duration_min} min, lockout "
            f"{self.lockout_min} min, max {self.max_per_day}/day"
        )


#: The internal volume of the usual intrathecal catheter: what a revision or a scenario's
#: implant assumes when none is given (not a limit: the device profile sets those).
TYPICAL_CATHETER_VOLUME_UL_PER_CM = 2.6


@dataclass(frozen=True, slots=True)
class Catheter:
    """Implanted catheter: length and internal volume per cm (0, 0: not set)."""

    length_cm: float = 0.0
    volume_ul_per_cm: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Catheter:
        """From ``"LENGTH_CM,UL_PER_CM"``, e.g. ``"110,2.6"``."""
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 2:
            raise ValueError(f"catheter {text!r}: expected LENGTH_CM,UL_PER_CM")
        return cls(_float(parts[0], "catheter length"), _float(parts[1], "catheter volume"))

    @property
    def volume_ml(self) -> float:
        """Internal volume of the whole catheter."""
        return self.length_cm * self.volume_ul_per_cm / 1000

    def check_wire(self) -> None:
        """Raise :class:`ProgramError` for a value the wire cannot carry (0 means unset)."""
        _check_fields(
            m.TherapyProgram,
            (
                ("catheter.length_cm", self.length_cm, "catheter_length_mm"),
                ("catheter.volume_ul_per_cm", self.volume_ul_per_cm, "catheter_volume_nl_per_cm"),
            ),
            zero_unset=True,
        )

    def __str__(self) -> str:
        return (
            f"{_num(self.length_cm)} cm x {_num(self.volume_ul_per_cm)} uL/cm "
            f"= {self.volume_ml * 1000:.0f} uL"
        )


# --- the program ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TherapyProgram:
    """What the pump's scheduler runs: the mode, the daily maximum and the patient bolus."""

    mode: Mode = field(default_factory=Stopped)
    max_daily_dose_mcg: float = 0.0
    patient_bolus: PatientBolus | None = None

    @property
    def periodic(self) -> PeriodicBolus | None:
        """The periodic-bolus settings, if that is the mode."""
        return self.mode if isinstance(self.mode, PeriodicBolus) else None

    def to_mapping(self) -> dict[str, Any]:
        """The therapy's keys of a program document."""
        out: dict[str, Any] = {
            "max_daily_dose_mcg": self.max_daily_dose_mcg,
            **self.mode.table_items(),
        }
        if self.patient_bolus is not None:
            pb = self.patient_bolus
            out["patient_bolus"] = {
                "dose_mcg": pb.dose_mcg,
                "duration_min": pb.duration_min,
                "lockout_min": pb.lockout_min,
                "max_per_day": pb.max_per_day,
            }
        return out

    @property
    def basal_mcg_per_day(self) -> float:
        """The basal rate: constant in continuous and periodic modes, the highest step of a
        flex pattern, 0 when stopped."""
        return self.mode.peak_basal_mcg_per_day()


@dataclass(frozen=True, slots=True)
class Program:
    """A complete therapy program in clinical units (one PROGRAM transfer).

    ``drug`` and ``concentration_mcg_per_ml`` must match what the pump holds (set by a refill);
    the pump refuses the program otherwise. ``max_daily_dose_mcg`` bounds the dose in any
    24 h, patient boluses included. An empty ``patient_id`` and an unset ``catheter`` keep
    the pump's own (:meth:`applied_to`).
    """

    drug: str
    concentration_mcg_per_ml: float
    max_daily_dose_mcg: float
    mode: Mode = field(default_factory=Stopped)
    patient_id: str = ""
    patient_bolus: PatientBolus | None = None
    catheter: Catheter | None = None

    @classmethod
    def of(
        cls,
        therapy: TherapyProgram,
        *,
        drug: str,
        concentration_mcg_per_ml: float,
        patient_id: str = "",
        catheter: Catheter | None = None,
    ) -> Program:
        """A therapy with its program-wide settings (e.g. what a pump reports)."""
        return cls(
            drug=drug,
            concentration_mcg_per_ml=concentration_mcg_per_ml,
            max_daily_dose_mcg=therapy.max_daily_dose_mcg,
            mode=therapy.mode,
            patient_id=patient_id,
            patient_bolus=therapy.patient_bolus,
            catheter=catheter if catheter is not None and _is_set(catheter) else None,
        )

    @property
    def therapy(self) -> TherapyProgram:
        """The part the pump's scheduler runs."""
        return TherapyProgram(self.mode, self.max_daily_dose_mcg, self.patient_bolus)

    def applied_to(self, current: Program) -> Program:
        """The program as a pump holding ``current`` keeps it once committed: an empty
        patient id and an unset catheter leave the pump's own in place."""
        return replace(
            self,
            patient_id=self.patient_id or current.patient_id,
            catheter=self.catheter or current.catheter,
        )

    # -- wire

    def to_wire(self) -> m.TherapyProgram:
        """The wire record; raises :class:`ValueError` naming the wire field when out of range
        (:meth:`check_wire` names the clinical field instead)."""
        catheter = self.catheter or Catheter()
        return m.TherapyProgram(
            max_daily_dose_ng=ng_from_mcg(self.max_daily_dose_mcg),
            concentration_ng_per_ml=ng_from_mcg(self.concentration_mcg_per_ml),
            catheter_length_mm=mm_from_cm(catheter.length_cm),
            catheter_volume_nl_per_cm=nl_from_ul(catheter.volume_ul_per_cm),
            patient_bolus=None if self.patient_bolus is None else self.patient_bolus.to_wire(),
            mode=self.mode.to_wire(),
            drug_name=self.drug,
            patient_id=self.patient_id,
        )

    @classmethod
    def from_wire(cls, wire: m.TherapyProgram) -> Program:
        """The clinical view of a wire record (a program received, or reported by
        INTERROGATE). A catheter with a zero length or volume is unset."""
        pb = wire.patient_bolus
        catheter = Catheter(
            cm_from_mm(wire.catheter_length_mm), ul_from_nl(wire.catheter_volume_nl_per_cm)
        )
        return cls(
            drug=wire.drug_name,
            concentration_mcg_per_ml=mcg_from_ng(wire.concentration_ng_per_ml),
            max_daily_dose_mcg=mcg_from_ng(wire.max_daily_dose_ng),
            mode=_mode_from_wire(wire.mode),
            patient_id=wire.patient_id,
            patient_bolus=(
                None
                if pb is None
                else PatientBolus(
                    mcg_from_ng(pb.dose_ng), pb.duration_min, pb.lockout_min, pb.max_per_day
                )
            ),
            catheter=catheter if _is_set(catheter) else None,
        )

    def check_wire(self) -> None:
        """Raise :class:`ProgramError`, naming the document field in clinical units, for any
        value the wire record cannot carry."""
        self.mode.check_wire()
        _check_fields(
            m.TherapyProgram,
            (
                ("max_daily_dose_mcg", self.max_daily_dose_mcg, "max_daily_dose_ng"),
                (
                    "concentration_mcg_per_ml",
                    self.concentration_mcg_per_ml,
                    "concentration_ng_per_ml",
                ),
            ),
        )
        check_text("drug", self.drug, m.TherapyProgram, "drug_name")
        check_text("patient_id", self.patient_id, m.TherapyProgram, "patient_id")
        if self.patient_bolus is not None:
            self.patient_bolus.check_wire()
        if self.catheter is not None:
            self.catheter.check_wire()

    # -- documents

    def to_mapping(self) -> dict[str, Any]:
        """The program as a document (the format :meth:`from_mapping` reads)."""
        out: dict[str, Any] = {
            "drug": self.drug,
            "concentration_mcg_per_ml": self.concentration_mcg_per_ml,
            "patient_id": self.patient_id,
            **self.therapy.to_mapping(),
        }
        if self.catheter is not None:
            out["catheter"] = {
                "length_cm": self.catheter.length_cm,
                "volume_ul_per_cm": self.catheter.volume_ul_per_cm,
            }
        return out

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base: Program | None = None) -> Program:
        """A program from a parsed TOML/JSON document (:class:`ProgramTable`); keys the
        document leaves out come from ``base``. :class:`ProgramError` names the key."""
        return ProgramTable.read(data).program(base)

    def summary_items(self) -> list[tuple[str, str]]:
        """(label, value) pairs in words (drug, mode, limits), for displays and logs."""
        return [
            ("drug", f"{self.drug or '(none)'} {_num(self.concentration_mcg_per_ml)} mcg/mL"),
            ("mode", str(self.mode)),
            ("max daily dose", f"{_num(self.max_daily_dose_mcg)} mcg"),
            ("patient bolus", str(self.patient_bolus or "off")),
            ("catheter", str(self.catheter or "not set")),
            ("patient id", self.patient_id or "(none)"),
        ]


def _is_set(catheter: Catheter) -> bool:
    # The wire's "not set" is a zero in either field (the pump applies only a whole catheter).
    return bool(mm_from_cm(catheter.length_cm) and nl_from_ul(catheter.volume_ul_per_cm))


# --- the document format ----------------------------------------------------------------------


def _duration_h(value: object) -> object:
    """A duration ("6h", "1d 30m", or hours as a number), at most a week."""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return parse_duration_h(value, max_h=_MAX_BOLUS_MIN / 60.0)
    return value


def _whole_minutes(path: str, hours: float) -> int:
    minutes = hours * 60.0
    if abs(minutes - round(minutes)) > 1e-6:
        raise ProgramError(path, f"{hours:g} h is not a whole number of minutes")
    return round(minutes)


DurationH = Annotated[float, BeforeValidator(_duration_h), Field(ge=0)]


class _Table(BaseModel):
    # allow_inf_nan=False: TOML has inf and nan literals, and `ge=0` lets inf through.
    # strict: a number is a number (an integer is taken where a decimal is allowed), never
    # true/false or a quoted "100", which lax validation would read as 1 and 100.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


class StepTable(_Table):
    """One flex step: ``start`` as "HH:MM", "tue HH:MM" (weekly) or minutes; read as minutes
    from the period start."""

    start: int
    dose_mcg_per_day: float


class PeriodicTable(_Table):
    """Periodic bolus: dose, duration, and how often (a duration: "6h", or hours)."""

    dose_mcg: float
    duration_min: int
    interval: DurationH
    first_offset: DurationH = 0.0


class PatientBolusTable(_Table):
    """Patient-activated bolus settings."""

    dose_mcg: float
    duration_min: int
    lockout_min: int
    max_per_day: int


class CatheterTable(_Table):
    """The implanted catheter."""

    length_cm: float
    volume_ul_per_cm: float


def _known_mode(kind: str) -> str:
    if kind not in _MODE_OF_KIND:
        raise ValueError(f"expected one of {', '.join(_MODE_OF_KIND)}")
    return kind


ModeName = Annotated[str, AfterValidator(_known_mode)]


class ProgramTable(_Table):
    """A program document: a scenario's ``type = "program"`` action or a
    ``itpump ctl program --file``. Validation checks every value against what the wire can
    carry; the device's own limits are the pump's (:func:`validate_therapy`)."""

    mode: ModeName
    max_daily_dose_mcg: float | None = Field(default=None, ge=0)
    dose_mcg_per_day: float | None = None
    #: None: left out (flex: daily); the mode keys are None unless given, so a dumped and
    #: re-read document keeps meaning the same mode
    period: Literal["daily", "weekly"] | None = None
    steps: list[StepTable] | None = None
    periodic: PeriodicTable | None = None
    patient_bolus: PatientBolusTable | None = None
    drug: str | None = None
    concentration_mcg_per_ml: float | None = None
    patient_id: str | None = None
    catheter: CatheterTable | None = None

    @classmethod
    def read(cls, data: Mapping[str, Any]) -> ProgramTable:
        """Validate a parsed document; :class:`ProgramError` names the first bad key."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            cause = err.get("ctx", {}).get("error")
            if isinstance(cause, ProgramError):
                raise cause from None
            path = field_path(err["loc"])
            given = err.get("input")
            shown = "" if isinstance(given, dict | list) or given is None else f" (got {given!r})"
            message = str(err["msg"]).removeprefix("Value error, ")
            raise ProgramError(path or "(program)", f"{message}{shown}") from None

    @model_validator(mode="before")
    @classmethod
    def _starts_in_minutes(cls, data: Any) -> Any:
        # A start's meaning depends on the period ("tue 07:00" needs a weekly one), a sibling
        # key: clock times become minutes here, before the steps are read.
        if not isinstance(data, Mapping) or not isinstance(data.get("steps"), list):
            return data
        period = data.get("period") or "daily"
        if not isinstance(period, str) or period.upper() not in FlexPeriod.__members__:
            return data  # refused by the field itself
        steps = []
        for i, step in enumerate(data["steps"]):
            if isinstance(step, Mapping) and isinstance(step.get("start"), str):
                try:
                    step = {**step, "start": parse_start(step["start"], FlexPeriod[period.upper()])}
                except ValueError as exc:
                    raise ProgramError(f"steps[{i}].start", str(exc)) from None
            steps.append(step)
        return {**data, "steps": steps}

    @model_validator(mode="after")
    def _wire_ranges(self) -> ProgramTable:
        # A key of another mode would be ignored: refuse it rather than commit a program
        # that is not what the document says (e.g. `steps` under mode "continuous").
        own = _MODE_OF_KIND[self.mode].TABLE_KEYS
        given = {key for key in _MODE_KEYS if getattr(self, key) is not None}
        for key in sorted(given - set(own)):
            keys = ", ".join(own) or "none"
            raise ProgramError(key, f"not a key of mode '{self.mode}' (its keys: {keys})")
        # Program-wide keys left out stand for values the base supplies later, which are
        # checked there.
        self.program().check_wire()
        return self

    def _mode(self) -> Mode:
        return _MODE_OF_KIND[self.mode].from_table(self)

    def patient_bolus_settings(self) -> PatientBolus | None:
        """The patient bolus of the document (None: disabled)."""
        pb = self.patient_bolus
        if pb is None:
            return None
        return PatientBolus(pb.dose_mcg, pb.duration_min, pb.lockout_min, pb.max_per_day)

    def program(self, base: Program | None = None) -> Program:
        """The whole program: keys left out of the document come from ``base``."""
        if base is None:
            base = Program(drug="", concentration_mcg_per_ml=0.0, max_daily_dose_mcg=0.0)
        catheter = self.catheter
        return Program(
            drug=base.drug if self.drug is None else self.drug,
            concentration_mcg_per_ml=(
                base.concentration_mcg_per_ml
                if self.concentration_mcg_per_ml is None
                else self.concentration_mcg_per_ml
            ),
            max_daily_dose_mcg=(
                base.max_daily_dose_mcg
                if self.max_daily_dose_mcg is None
                else self.max_daily_dose_mcg
            ),
            mode=self._mode(),
            patient_id=base.patient_id if self.patient_id is None else self.patient_id,
            patient_bolus=self.patient_bolus_settings(),
            catheter=(
                base.catheter
                if catheter is None
                else Catheter(catheter.length_cm, catheter.volume_ul_per_cm)
            ),
        )


# --- doses and device limits -------------------------------------------------------------------


def mean_daily_dose_mcg(therapy: TherapyProgram) -> float:
    """Programmed dose averaged over a day, boluses of periodic mode included."""
    return therapy.mode.mean_dose_mcg_per_day()


def max_24h_dose_mcg(therapy: TherapyProgram) -> float:
    """Largest dose the program can deliver in any 24 h window, patient boluses included."""
    dose = therapy.mode.max_24h_dose_mcg()
    if therapy.patient_bolus is not None:
        dose += therapy.patient_bolus.max_per_day * therapy.patient_bolus.dose_mcg
    return dose


def _max_window_flex_mcg(mode: Flex) -> float:
    # The 24 h window integral of a piecewise-constant pattern is piecewise linear in the
    # window start, so its maximum sits where the window start or end meets a step boundary.
    period = mode.period.minutes
    steps = mode.steps
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


def _check_rate(path: str, dose_mcg_per_day: float, conc: float, limits: TherapyLimits) -> None:
    rate = dose_mcg_per_day / conc
    low, high = limits.min_rate_ml_per_day, limits.max_rate_ml_per_day
    if not (low - 1e-12 <= rate <= high + 1e-12):
        raise ProgramError(
            path,
            f"{dose_mcg_per_day:g} mcg/day gives {rate:.4g} mL/day at {conc:g} mcg/mL; "
            f"allowed {low:g}..{high:g} mL/day ({low * conc:.4g}..{high * conc:.4g} mcg/day)",
            ResultCode.RATE_OUT_OF_RANGE,
        )


def _check_bolus_rate(
    prefix: str,
    dose_mcg: float,
    duration_min: float,
    basal_mcg_per_day: float,
    conc: float,
    limits: TherapyLimits,
) -> None:
    _check(f"{prefix}.dose_mcg", dose_mcg, MIN_DOSE_MCG, limits.max_daily_dose_mcg, "mcg")
    _check(f"{prefix}.duration_min", duration_min, 1, _MAX_BOLUS_MIN, "min")
    max_rate = limits.max_rate_ml_per_day
    total_ml_per_day = (basal_mcg_per_day + dose_mcg * MIN_PER_DAY / duration_min) / conc
    if total_ml_per_day > max_rate + 1e-12:
        shortest = (
            dose_mcg * MIN_PER_DAY / (max_rate * conc - basal_mcg_per_day)
            if max_rate * conc > basal_mcg_per_day
            else math.inf
        )
        raise ProgramError(
            prefix,
            f"{dose_mcg:g} mcg over {duration_min:g} min needs {total_ml_per_day:.4g} mL/day "
            f"with basal; max {max_rate:g} mL/day (duration_min must be >= {shortest:.4g})",
            ResultCode.RATE_OUT_OF_RANGE,
        )


def validate_therapy(
    therapy: TherapyProgram, conc_mcg_per_ml: float, limits: TherapyLimits
) -> None:
    """Raise :class:`ProgramError` (with the code a pump refuses it with) for anything a pump
    with these limits must not accept at this drug concentration."""
    mode = therapy.mode
    pb = therapy.patient_bolus
    if isinstance(mode, Stopped):
        if pb is not None:
            raise ProgramError("patient_bolus", "must be off when mode is stopped")
        return
    if conc_mcg_per_ml <= 0:
        raise ProgramError(
            "concentration_mcg_per_ml",
            "no drug concentration: refill the pump first",
            ResultCode.INVALID_STATE,
        )
    _check(
        "max_daily_dose_mcg",
        therapy.max_daily_dose_mcg,
        MIN_DOSE_MCG,
        limits.max_daily_dose_mcg,
        "mcg",
    )
    mode.check_limits(conc_mcg_per_ml, limits)
    if pb is not None:
        peak_basal = mode.peak_basal_mcg_per_day()
        _check_bolus_rate(
            "patient_bolus", pb.dose_mcg, pb.duration_min, peak_basal, conc_mcg_per_ml, limits
        )
        _check("patient_bolus.lockout_min", pb.lockout_min, pb.duration_min, MIN_PER_DAY, "min")
        _check("patient_bolus.max_per_day", pb.max_per_day, 1, limits.patient_bolus_max_per_day)
    max_dose = max_24h_dose_mcg(therapy)
    if max_dose > therapy.max_daily_dose_mcg * (1 + 1e-9):
        raise ProgramError(
            "max_daily_dose_mcg",
            f"program can deliver {max_dose:.4g} mcg in 24 h (patient boluses included); "
            f"max_daily_dose_mcg is {therapy.max_daily_dose_mcg:g}",
            ResultCode.DAILY_DOSE_EXCEEDED,
        )


# --- flag parsing helpers ---------------------------------------------------------------------


def _period(value: FlexPeriod | str) -> FlexPeriod:
    if isinstance(value, FlexPeriod):
        return value
    try:
        return FlexPeriod[value.strip().upper()]
    except KeyError:
        raise ValueError(f"flex period {value!r}: expected daily or weekly") from None


def _float(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{what} {text.strip()!r}: not a number") from None


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{what} {text.strip()!r}: not a whole number") from None
