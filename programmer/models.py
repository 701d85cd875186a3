"""What the client returns: the pump's answers in clinical units (mL, mcg, datetime).

Every class keeps the wire record it was built from in ``raw`` (excluded from
:func:`to_data`), for callers who need an exact integer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum, IntEnum, IntFlag
from typing import Any

from itpump.programmer.program import Program
from itpump.protocol import messages as m
from itpump.protocol.codes import (
    AlarmId,
    EventArg,
    EventCode,
    LogBolusKind,
    LogTherapyMode,
    ResultCode,
    event_args,
)
from itpump.protocol.messages import AlarmSeverity, Capability, Role, TherapyState
from itpump.protocol.units import float_from_milli, mcg_from_ng, ml_from_nl

__all__ = [
    "AlarmInfo",
    "BolusResult",
    "LogPage",
    "LogRecord",
    "PumpInfo",
    "PumpStatus",
    "RefillResult",
    "SessionDetails",
    "alarm_name",
    "datetime_from_s",
    "event_name",
    "format_arg",
    "s_from_datetime",
    "to_data",
]


def datetime_from_s(seconds: int) -> datetime:
    """A wire instant (seconds since the Unix epoch) as an aware UTC datetime."""
    return datetime.fromtimestamp(seconds, tz=UTC)


def _maybe_datetime(seconds: int | None) -> datetime | None:
    return None if seconds is None else datetime_from_s(seconds)


def s_from_datetime(when: datetime) -> int:
    """An aware datetime as wire seconds; a naive one is refused (the pump clock is UTC)."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{when.isoformat()}: give a timezone (the pump clock runs in UTC)")
    return int(when.timestamp())


def alarm_name(alarm_id: int) -> str:
    """The protocol name of an alarm id, or ``ALARM_<n>`` for one this client does not know."""
    try:
        return AlarmId(alarm_id).name
    except ValueError:
        return f"ALARM_{alarm_id}"


def event_name(code: int) -> str:
    """The firmware's name of an event-log code, or ``EVENT_<n>`` for an unknown one."""
    try:
        return EventCode(code).name
    except ValueError:
        return f"EVENT_{code}"


@dataclass(frozen=True)
class PumpInfo:
    """The pump's answer to IDENTIFY."""

    serial: str
    model: str
    firmware_version: str
    protocol_version: int
    versions: tuple[int, ...]
    capabilities: Capability
    auth_required: bool
    max_body_bytes: int
    max_flex_steps: int
    raw: m.IdentifyResponse = field(repr=False, compare=False)

    @classmethod
    def from_wire(cls, r: m.IdentifyResponse) -> PumpInfo:
        """Convert an IDENTIFY response."""
        return cls(
            serial=r.serial,
            model=r.model,
            firmware_version=r.firmware_version,
            protocol_version=r.selected_version,
            versions=tuple(r.versions),
            capabilities=r.capabilities,
            auth_required=r.auth_required,
            max_body_bytes=r.max_body_bytes,
            max_flex_steps=r.max_flex_steps,
            raw=r,
        )


@dataclass(frozen=True)
class SessionDetails:
    """An authenticated session."""

    session_id: int
    role: Role
    idle_timeout_s: int


@dataclass(frozen=True)
class AlarmInfo:
    """An active alarm."""

    alarm_id: int
    name: str
    severity: AlarmSeverity
    raised_at: datetime
    acknowledged: bool

    @classmethod
    def from_wire(cls, a: m.Alarm) -> AlarmInfo:
        """Convert an alarm record."""
        return cls(
            a.alarm_id,
            alarm_name(a.alarm_id),
            a.severity,
            datetime_from_s(a.raised_at_s),
            a.acknowledged,
        )


@dataclass(frozen=True)
class PumpStatus:
    """The pump's answer to INTERROGATE: what its firmware believes (estimates)."""

    time: datetime
    therapy_state: TherapyState
    reservoir_ml: float
    reservoir_capacity_ml: float
    low_reservoir_alarm_ml: float
    rate_ml_per_day: float
    dose_24h_mcg: float
    patient_boluses_24h: int
    battery_percent: float
    battery_eri: bool
    battery_eos: bool
    projected_low_reservoir: datetime | None
    projected_eri: datetime | None
    program: Program
    alarms: tuple[AlarmInfo, ...]
    raw: m.InterrogateResponse = field(repr=False, compare=False)
    #: when the estimate reaches the empty-reservoir alarm (minimum-rate mode); projected from
    #: the programmed dose plus the last 7 days' patient-bolus use, like the low-reservoir date
    projected_empty: datetime | None = None
    #: volume of catheter and tubing the pump knows is empty: the most a prime may push
    #: (0: the path is full of drug and a prime is refused)
    unprimed_ml: float = 0.0
    #: False after a power-on reset until the clock is set: ``time`` is not the real time
    clock_valid: bool = True

    @property
    def has_program(self) -> bool:
        """Whether a therapy program was ever committed (max daily dose 0 = no program)."""
        return self.program.max_daily_dose_mcg > 0

    @classmethod
    def from_wire(cls, r: m.InterrogateResponse) -> PumpStatus:
        """Convert an INTERROGATE response."""
        return cls(
            time=datetime_from_s(r.time_s),
            therapy_state=r.therapy_state,
            reservoir_ml=ml_from_nl(r.reservoir_volume_nl),
            reservoir_capacity_ml=ml_from_nl(r.reservoir_capacity_nl),
            low_reservoir_alarm_ml=ml_from_nl(r.low_reservoir_threshold_nl),
            rate_ml_per_day=ml_from_nl(r.rate_nl_per_day),
            dose_24h_mcg=mcg_from_ng(r.dose_24h_ng),
            patient_boluses_24h=r.patient_boluses_24h,
            battery_percent=r.battery_per_mille / 10,
            battery_eri=r.battery_eri,
            battery_eos=r.battery_eos,
            projected_low_reservoir=_maybe_datetime(r.projected_low_reservoir_s),
            projected_eri=_maybe_datetime(r.projected_eri_s),
            program=Program.from_wire(r.program),
            alarms=tuple(AlarmInfo.from_wire(a) for a in r.alarms),
            raw=r,
            projected_empty=_maybe_datetime(r.projected_empty_s),
            unprimed_ml=ml_from_nl(r.unprimed_nl),
            clock_valid=r.clock_valid,
        )


_CODE_ENUMS: dict[str, type[IntEnum]] = {
    "AlarmId": AlarmId,
    "ResultCode": ResultCode,
    "LogBolusKind": LogBolusKind,
    "LogTherapyMode": LogTherapyMode,
}


def format_arg(arg: EventArg, value: float) -> str:
    """``name=value unit``; a code argument shows its name (``alarm=LOW_RESERVOIR``) when it
    is a known member of its enumeration, else the number."""
    enum = _CODE_ENUMS.get(arg.codes) if arg.codes is not None else None
    if enum is not None and value == int(value):
        try:
            return f"{arg.name}={enum(int(value)).name}"
        except ValueError:
            pass
    return f"{arg.name}={value:g}" + (f" {arg.unit}" if arg.unit else "")


@dataclass(frozen=True)
class LogRecord:
    """One event-log entry.

    ``args`` are the event's numeric arguments as sent; ``labelled_args`` maps each one's name
    (from the table in :mod:`protocol.codes`, ``arg<i>`` when unknown) to its value, and
    ``arg_units`` each name to its unit (empty for a count or a code).
    """

    index: int
    time: datetime
    event_code: int
    event: str
    args: tuple[float, ...]
    labelled_args: dict[str, float] = field(default_factory=dict)
    arg_units: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, e: m.LogEntry) -> LogRecord:
        """Convert a log entry."""
        values = tuple(float_from_milli(a) for a in e.args_milli)
        names = event_args(e.event_code, values)
        return cls(
            e.index,
            datetime_from_s(e.time_s),
            e.event_code,
            event_name(e.event_code),
            values,
            {arg.name: value for arg, value in zip(names, values, strict=True)},
            {arg.name: arg.unit for arg in names},
        )

    def arg_texts(self) -> list[str]:
        """Each argument as ``name=value unit`` (codes by name), in order."""
        return [
            format_arg(arg, value)
            for arg, value in zip(event_args(self.event_code, self.args), self.args, strict=True)
        ]


@dataclass(frozen=True)
class LogPage:
    """One page of the event log (page 0 = newest), newest entry first."""

    page: int
    total_pages: int
    total_entries: int
    records: tuple[LogRecord, ...]

    @classmethod
    def from_wire(cls, r: m.ReadLogResponse) -> LogPage:
        """Convert a READ_LOG response."""
        return cls(
            r.page, r.total_pages, r.total_entries, tuple(LogRecord.from_wire(e) for e in r.entries)
        )


@dataclass(frozen=True)
class BolusResult:
    """What a started bolus delivers (dose 0 for priming; volume 0 when unknown)."""

    dose_mcg: float
    volume_ml: float
    cancelled: int

    @classmethod
    def from_wire(cls, r: m.BolusResponse) -> BolusResult:
        """Convert a BOLUS response."""
        return cls(mcg_from_ng(r.dose_ng), ml_from_nl(r.volume_nl), r.cancelled)


@dataclass(frozen=True)
class RefillResult:
    """The pump's estimate after a refill, and the bridge bolus it started (0 mL: none)."""

    reservoir_ml: float
    bridge_volume_ml: float
    projected_low_reservoir: datetime | None

    @classmethod
    def from_wire(cls, r: m.RefillResponse) -> RefillResult:
        """Convert a REFILL response."""
        return cls(
            ml_from_nl(r.reservoir_volume_nl),
            ml_from_nl(r.bridge_volume_nl),
            _maybe_datetime(r.projected_low_reservoir_s),
        )


def to_data(value: Any) -> Any:
    """Plain JSON-ready data: dataclasses as dicts (without ``raw``), datetimes in ISO 8601,
    enums by name, flag sets as lists of names, programs in their document form."""
    if isinstance(value, Program):
        return value.to_mapping()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_data(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.name != "raw"
        }
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, IntFlag):
        return [flag.name for flag in type(value) if flag.value and flag in value]
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, list | tuple):
        return [to_data(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_data(v) for k, v in value.items()}
    return value
