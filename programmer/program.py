"""Therapy programs in clinical units, and their conversion to the wire record.

A clinician thinks in mcg/day, mcg/mL, minutes and clock times; the wire carries nanograms,
nanolitres and minutes from the period start (:class:`protocol.messages.TherapyProgram`).
:class:`Program` is the friendly side::

    program = Program(
        drug="baclofen",
        concentration_mcg_per_ml=2000,
        max_daily_dose_mcg=600,
        mode=Flex.parse("00:00=180,07:00=260,22:00=200"),
        patient_id="P-0001",
        patient_bolus=PatientBolusLimits(dose_mcg=25, duration_min=10, lockout_min=180,
                                         max_per_day=4),
        catheter=Catheter(length_cm=110, volume_ul_per_cm=2.6),
    )
    wire = program.to_wire()            # raises ValueError naming the field if out of range

:meth:`Program.from_mapping` reads the same structure from a TOML or JSON document (see
``docs/programmer.md``) and :meth:`Program.to_mapping` writes it back, so a program read from
a pump can be saved, edited and sent again.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from itpump.protocol import messages as m
from itpump.protocol.messages import FlexPeriod
from itpump.protocol.units import cm_from_mm, mcg_from_ng, mm_from_cm, ng_from_mcg, nl_from_ul, ul_from_nl

__all__ = [
    "Catheter",
    "Continuous",
    "Flex",
    "FlexStep",
    "Mode",
    "PatientBolusLimits",
    "PeriodicBolus",
    "Program",
    "Stopped",
    "format_start",
    "parse_start",
]

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_START_RE = re.compile(r"^\s*(?:(?P<day>[a-z]{3})[a-z]*\s*)?(?P<h>\d{1,2}):(?P<m>\d{2})\s*$", re.I)


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
    return day * m.MINUTES_PER_DAY + hours * 60 + minutes


def format_start(start_min: int, period: FlexPeriod = FlexPeriod.DAILY) -> str:
    """Minutes from the period start as ``HH:MM`` (daily) or ``Day HH:MM`` (weekly)."""
    day, rest = divmod(start_min, m.MINUTES_PER_DAY)
    clock = f"{rest // 60:02d}:{rest % 60:02d}"
    if period is FlexPeriod.WEEKLY:
        return f"{_DAYS[day % 7].capitalize()} {clock}"
    return clock


# --- modes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stopped:
    """No basal delivery (boluses only)."""

    KIND: ClassVar[str] = "stopped"

    def to_wire(self) -> m.StoppedMode:
        """The wire mode record."""
        return m.StoppedMode()

    def to_mapping(self) -> dict[str, Any]:
        """The mode as a TOML/JSON table."""
        return {"type": self.KIND}

    def __str__(self) -> str:
        return "stopped (no basal delivery)"


@dataclass(frozen=True)
class Continuous:
    """One dose rate around the clock."""

    KIND: ClassVar[str] = "continuous"
    dose_mcg_per_day: float

    def to_wire(self) -> m.ContinuousMode:
        """The wire mode record."""
        return m.ContinuousMode(ng_from_mcg(self.dose_mcg_per_day))

    def to_mapping(self) -> dict[str, Any]:
        """The mode as a TOML/JSON table."""
        return {"type": self.KIND, "dose_mcg_per_day": self.dose_mcg_per_day}

    def __str__(self) -> str:
        return f"continuous {_num(self.dose_mcg_per_day)} mcg/day"


@dataclass(frozen=True)
class FlexStep:
    """From ``start_min`` after the period start until the next step, ``dose_mcg_per_day``."""

    start_min: int
    dose_mcg_per_day: float


@dataclass(frozen=True)
class Flex:
    """A daily (from 00:00 UTC) or weekly (from Monday 00:00 UTC) pattern of dose rates."""

    KIND: ClassVar[str] = "flex"
    steps: tuple[FlexStep, ...]
    period: FlexPeriod = FlexPeriod.DAILY

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

    def to_mapping(self) -> dict[str, Any]:
        """The mode as a TOML/JSON table."""
        return {
            "type": self.KIND,
            "period": self.period.name.lower(),
            "steps": [
                {
                    "start": format_start(s.start_min, self.period),
                    "dose_mcg_per_day": s.dose_mcg_per_day,
                }
                for s in self.steps
            ],
        }

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


@dataclass(frozen=True)
class PeriodicBolus:
    """A basal rate plus a bolus repeated every ``interval_min``."""

    KIND: ClassVar[str] = "periodic_bolus"
    basal_mcg_per_day: float
    bolus_mcg: float
    bolus_duration_min: int
    interval_min: int
    first_offset_min: int = 0

    def to_wire(self) -> m.PeriodicBolusMode:
        """The wire mode record."""
        return m.PeriodicBolusMode(
            ng_from_mcg(self.basal_mcg_per_day),
            ng_from_mcg(self.bolus_mcg),
            self.bolus_duration_min,
            self.interval_min,
            self.first_offset_min,
        )

    def to_mapping(self) -> dict[str, Any]:
        """The mode as a TOML/JSON table."""
        return {
            "type": self.KIND,
            "basal_mcg_per_day": self.basal_mcg_per_day,
            "bolus_mcg": self.bolus_mcg,
            "bolus_duration_min": self.bolus_duration_min,
            "interval_min": self.interval_min,
            "first_offset_min": self.first_offset_min,
        }

    def __str__(self) -> str:
        return (
            f"periodic bolus: basal {_num(self.basal_mcg_per_day)} mcg/day + "
            f"{_num(self.bolus_mcg)} mcg over {self.bolus_duration_min} min "
            f"every {self.interval_min} min"
        )


Mode = Stopped | Continuous | Flex | PeriodicBolus
_MODE_KINDS: dict[str, type[Mode]] = {
    cls.KIND: cls for cls in (Stopped, Continuous, Flex, PeriodicBolus)
}


def _mode_from_wire(mode: m.TherapyModeBlock) -> Mode:
    if isinstance(mode, m.ContinuousMode):
        return Continuous(mcg_from_ng(mode.dose_ng_per_day))
    if isinstance(mode, m.FlexMode):
        return Flex(
            tuple(FlexStep(s.start_min, mcg_from_ng(s.dose_ng_per_day)) for s in mode.steps),
            mode.period,
        )
    if isinstance(mode, m.PeriodicBolusMode):
        return PeriodicBolus(
            mcg_from_ng(mode.basal_dose_ng_per_day),
            mcg_from_ng(mode.bolus_dose_ng),
            mode.bolus_duration_min,
            mode.interval_min,
            mode.first_offset_min,
        )
    return Stopped()


# --- program-wide settings --------------------------------------------------------------------


@dataclass(frozen=True)
class PatientBolusLimits:
    """Patient-activated bolus: dose, duration, lockout between starts, maximum per 24 h."""

    dose_mcg: float
    duration_min: int
    lockout_min: int
    max_per_day: int

    @classmethod
    def parse(cls, text: str) -> PatientBolusLimits:
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

    def __str__(self) -> str:
        return (
            f"{_num(self.dose_mcg)} mcg over {self.duration_min} min, lockout "
            f"{self.lockout_min} min, max {self.max_per_day}/day"
        )


@dataclass(frozen=True)
class Catheter:
    """Implanted catheter: length and internal volume per cm."""

    length_cm: float
    volume_ul_per_cm: float

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

    def __str__(self) -> str:
        return (
            f"{_num(self.length_cm)} cm x {_num(self.volume_ul_per_cm)} uL/cm "
            f"= {self.volume_ml * 1000:.0f} uL"
        )


@dataclass(frozen=True)
class Program:
    """A complete therapy program in clinical units (one PROGRAM transfer).

    ``drug`` and ``concentration_mcg_per_ml`` must match what the pump holds (set by a refill);
    the pump refuses the program otherwise. ``max_daily_dose_mcg`` bounds the dose in any
    24 h, patient boluses included.
    """

    drug: str
    concentration_mcg_per_ml: float
    max_daily_dose_mcg: float
    mode: Mode = field(default_factory=Stopped)
    patient_id: str = ""
    patient_bolus: PatientBolusLimits | None = None
    catheter: Catheter | None = None

    def to_wire(self) -> m.TherapyProgram:
        """The wire record; raises :class:`ValueError` naming the field when out of range."""
        pb = self.patient_bolus
        catheter = self.catheter
        return m.TherapyProgram(
            max_daily_dose_ng=ng_from_mcg(self.max_daily_dose_mcg),
            concentration_ng_per_ml=ng_from_mcg(self.concentration_mcg_per_ml),
            catheter_length_mm=0 if catheter is None else mm_from_cm(catheter.length_cm),
            catheter_volume_nl_per_cm=(
                0 if catheter is None else nl_from_ul(catheter.volume_ul_per_cm)
            ),
            patient_bolus=(
                None
                if pb is None
                else m.PatientBolusSettings(
                    ng_from_mcg(pb.dose_mcg), pb.duration_min, pb.lockout_min, pb.max_per_day
                )
            ),
            mode=self.mode.to_wire(),
            drug_name=self.drug,
            patient_id=self.patient_id,
        )

    @classmethod
    def from_wire(cls, wire: m.TherapyProgram) -> Program:
        """The friendly view of a wire record (e.g. the program reported by INTERROGATE)."""
        pb = wire.patient_bolus
        catheter = None
        if wire.catheter_length_mm or wire.catheter_volume_nl_per_cm:
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
                else PatientBolusLimits(
                    mcg_from_ng(pb.dose_ng), pb.duration_min, pb.lockout_min, pb.max_per_day
                )
            ),
            catheter=catheter,
        )

    # -- documents

    def to_mapping(self) -> dict[str, Any]:
        """The program as a TOML/JSON document (the input format of :meth:`from_mapping`)."""
        out: dict[str, Any] = {
            "drug": self.drug,
            "concentration_mcg_per_ml": self.concentration_mcg_per_ml,
            "max_daily_dose_mcg": self.max_daily_dose_mcg,
            "patient_id": self.patient_id,
            "mode": self.mode.to_mapping(),
        }
        if self.patient_bolus is not None:
            pb = self.patient_bolus
            out["patient_bolus"] = {
                "dose_mcg": pb.dose_mcg,
                "duration_min": pb.duration_min,
                "lockout_min": pb.lockout_min,
                "max_per_day": pb.max_per_day,
            }
        if self.catheter is not None:
            out["catheter"] = {
                "length_cm": self.catheter.length_cm,
                "volume_ul_per_cm": self.catheter.volume_ul_per_cm,
            }
        return out

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Program:
        """A program from a parsed TOML/JSON document; :class:`ValueError` names bad keys."""
        doc = _Table(data, "program")
        program = cls(
            drug=doc.get_str("drug"),
            concentration_mcg_per_ml=doc.get_float("concentration_mcg_per_ml"),
            max_daily_dose_mcg=doc.get_float("max_daily_dose_mcg"),
            mode=_mode_from_table(doc.get_table("mode")),
            patient_id=doc.get_str("patient_id", ""),
            patient_bolus=(
                None
                if (pbt := doc.get_table("patient_bolus", optional=True)) is None
                else PatientBolusLimits(
                    pbt.get_float("dose_mcg"),
                    pbt.get_int("duration_min"),
                    pbt.get_int("lockout_min"),
                    pbt.get_int("max_per_day"),
                )
            ),
            catheter=(
                None
                if (ct := doc.get_table("catheter", optional=True)) is None
                else Catheter(ct.get_float("length_cm"), ct.get_float("volume_ul_per_cm"))
            ),
        )
        doc.check_unused()
        return program

    @classmethod
    def load(cls, path: str | Path) -> Program:
        """Read a program file: TOML, or JSON if the name ends in ``.json``."""
        path = Path(path)
        try:
            if path.suffix.lower() == ".json":
                data = json.loads(path.read_text(encoding="utf-8"))
            else:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from exc
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: expected a table at the top level")
        try:
            return cls.from_mapping(data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc

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


# --- parsing helpers --------------------------------------------------------------------------


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


class _Table:
    """Typed access to one table of a program document, with the key path in errors."""

    def __init__(self, data: Mapping[str, Any], path: str) -> None:
        self._data = data
        self._path = path
        self._used: set[str] = set()

    def get_raw(self, key: str) -> Any:
        """The value of ``key`` as parsed (marks it used)."""
        return self._get(key)

    def _get(self, key: str) -> Any:
        self._used.add(key)
        return self._data.get(key)

    def _missing(self, key: str) -> ValueError:
        return ValueError(f"{self._path}.{key}: missing")

    def get_str(self, key: str, default: str | None = None) -> str:
        value = self._get(key)
        if value is None:
            if default is None:
                raise self._missing(key)
            return default
        if not isinstance(value, str):
            raise ValueError(f"{self._path}.{key}: expected a string")
        return value

    def get_float(self, key: str) -> float:
        value = self._get(key)
        if value is None:
            raise self._missing(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{self._path}.{key}: expected a number")
        return float(value)

    def get_int(self, key: str, default: int | None = None) -> int:
        value = self._get(key)
        if value is None:
            if default is None:
                raise self._missing(key)
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{self._path}.{key}: expected a whole number")
        return value

    def get_table(self, key: str, *, optional: bool = False) -> _Table | None:
        value = self._get(key)
        if value is None:
            if optional:
                return None
            raise self._missing(key)
        if not isinstance(value, Mapping):
            raise ValueError(f"{self._path}.{key}: expected a table")
        return _Table(value, f"{self._path}.{key}")

    def get_list(self, key: str) -> Sequence[Any]:
        value = self._get(key)
        if not isinstance(value, list):
            raise ValueError(f"{self._path}.{key}: expected a list")
        return value

    def check_unused(self) -> None:
        unknown = sorted(set(self._data) - self._used)
        if unknown:
            raise ValueError(f"{self._path}: unknown key(s) {', '.join(unknown)}")


def _mode_from_table(table: _Table | None) -> Mode:
    assert table is not None
    kind = table.get_str("type")
    if kind not in _MODE_KINDS:
        raise ValueError(f"mode.type {kind!r}: expected one of {', '.join(_MODE_KINDS)}")
    mode: Mode
    if kind == Continuous.KIND:
        mode = Continuous(table.get_float("dose_mcg_per_day"))
    elif kind == Flex.KIND:
        period = _period(table.get_str("period", "daily"))
        steps = []
        for i, item in enumerate(table.get_list("steps")):
            if not isinstance(item, Mapping):
                raise ValueError(f"mode.steps[{i}]: expected a table")
            step = _Table(item, f"mode.steps[{i}]")
            start = step.get_raw("start")
            if isinstance(start, int) and not isinstance(start, bool):
                start_min = start
            elif isinstance(start, str):
                start_min = parse_start(start, period)
            else:
                raise ValueError(f"mode.steps[{i}].start: expected HH:MM or minutes")
            steps.append(FlexStep(start_min, step.get_float("dose_mcg_per_day")))
            step.check_unused()
        mode = Flex(tuple(steps), period)
    elif kind == PeriodicBolus.KIND:
        mode = PeriodicBolus(
            table.get_float("basal_mcg_per_day"),
            table.get_float("bolus_mcg"),
            table.get_int("bolus_duration_min"),
            table.get_int("interval_min"),
            table.get_int("first_offset_min", 0),
        )
    else:
        mode = Stopped()
    table.check_unused()
    return mode
