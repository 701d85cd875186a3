"""The generated validators accept and refuse exactly what the field specs do (issue 11).

Each record class validates through code generated from its specs (protocol/wire.py); the
generic loop over `Spec.validate` (`WireStruct.__post_init__`) is the reference. Every field of
a set of example records is set to each probe value and both must agree: accepted, or the same
error with the same text.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from itpump.protocol import messages as m
from itpump.protocol.codes import AlarmId, ResultCode
from itpump.protocol.examples import EXAMPLE_PROGRAM, EXAMPLE_STATUS
from itpump.protocol.wire import WireError, WireStruct

ALARM = m.Alarm(alarm_id=3, severity=m.AlarmSeverity.CRITICAL, raised_at_s=5, acknowledged=True)
EXAMPLES: list[WireStruct] = [
    EXAMPLE_STATUS,  # the documented status (docs/protocol.md)
    EXAMPLE_PROGRAM,
    ALARM,
    m.FlexMode(
        period=m.FlexPeriod.DAILY,
        steps=(m.FlexStep(start_min=0, dose_ng_per_day=100), m.FlexStep(60, 200)),
    ),
    m.PeriodicBolusMode(
        basal_dose_ng_per_day=100,
        bolus_dose_ng=50,
        bolus_duration_min=10,
        interval_min=240,
        first_offset_min=0,
    ),
    m.LogEntry(index=1, time_s=2, event_code=3, args_milli=(-5, 7)),
    m.IdentifyRequest(versions=(1,)),
    m.Refusal.make(ResultCode.OUT_OF_RANGE, "dose_ng=5 outside 1..2"),
    m.AuthBeginRequest(role=m.Role.PATIENT, programmer_nonce=bytes(16)),
]

PROBES: list[Any] = [
    0, 1, -1, 254, 255, 256, 1000, 1001, 1440, 65535, 65536, 10**9, 10**9 + 1, 2**31,
    2**32 - 1, 2**32, True, False, None, 1.0, "", "x", "a" * 32, "a" * 33, "é" * 16, "é" * 17,
    "\udcff", b"", bytes(16), bytes(32), bytes(33), (), (1,), (ALARM,), (ALARM,) * 33,
    [ALARM], (-(2**31), 2**31 - 1), (2**31,), AlarmId.LOW_RESERVOIR, m.TherapyState.STOPPED,
    m.AlarmSeverity.CRITICAL, m.Role.CLINICIAN, m.Capability.FLEX, ResultCode.OK,
    ResultCode.OUT_OF_RANGE, EXAMPLE_PROGRAM, m.ContinuousMode(5), m.StoppedMode(),
    m.PatientBolusSettings(dose_ng=1, duration_min=1, lockout_min=0, max_per_day=1),
    m.FlexStep(0, 1), ALARM,
]


def _outcome(action: Any) -> str:
    try:
        action()
    except (WireError, TypeError, ValueError, AttributeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def _generic(cls: type[WireStruct], values: dict[str, Any]) -> None:
    obj = object.__new__(cls)
    for name, value in values.items():
        object.__setattr__(obj, name, value)
    WireStruct.__post_init__(obj)  # the loop over every field's Spec.validate, then check()


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: type(e).__name__)
def test_compiled_validation_agrees_with_the_specs(example: WireStruct) -> None:
    cls = type(example)
    base = {f.name: getattr(example, f.name) for f in dataclasses.fields(example)}
    assert _outcome(lambda: _generic(cls, base)) == "ok"
    for name in base:
        for probe in PROBES:
            values = {**base, name: probe}
            compiled = _outcome(lambda values=values: cls(**values))
            generic = _outcome(lambda values=values: _generic(cls, values))
            assert compiled == generic, (cls.__name__, name, probe)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: type(e).__name__)
def test_compiled_codec_round_trips(example: WireStruct) -> None:
    data = example.encode()
    assert type(example).decode(data) == example
    with pytest.raises(WireError):
        type(example).decode(data + b"\0")
    if data:
        with pytest.raises(WireError):
            type(example).decode(data[:-1])


def test_decoding_checks_ranges_and_enum_values() -> None:
    data = bytearray(ALARM.encode())
    data[0] = 255  # alarm_id 255 is outside 1..254
    with pytest.raises(WireError, match=r"alarm_id=255 outside 1\.\.254"):
        m.Alarm.decode(bytes(data))
    data[0], data[1] = 3, 9  # severity 9 is no AlarmSeverity
    with pytest.raises(WireError, match="AlarmSeverity"):
        m.Alarm.decode(bytes(data))
    data[1], data[-1] = 1, 2  # acknowledged byte 2 is neither 0 nor 1
    with pytest.raises(WireError, match="neither 0 nor 1"):
        m.Alarm.decode(bytes(data))
