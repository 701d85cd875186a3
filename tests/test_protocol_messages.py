"""Message codecs: every message round-trips; malformed payloads are rejected; sizes fit."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from itpump.protocol import messages as m
from itpump.protocol.codes import AlarmId, ResultCode
from itpump.protocol.header import MAX_PAYLOAD_SIZE
from itpump.protocol.wire import (
    BoolSpec,
    BytesSpec,
    EnumSpec,
    FlagSpec,
    IntSpec,
    ListSpec,
    OptionalSpec,
    Spec,
    StringSpec,
    StructSpec,
    TailBytesSpec,
    UnionSpec,
    WireError,
    WireStruct,
    struct_fields,
    struct_max_size,
)
from tests.protocol_helpers import STATUS

# --- strategies derived from the wire specs ---------------------------------------------------


def _text(spec: StringSpec) -> st.SearchStrategy[str]:
    return st.text(min_size=spec.min_bytes, max_size=spec.max_bytes).filter(
        lambda s: spec.min_bytes <= len(s.encode("utf-8")) <= spec.max_bytes
    )


def spec_strategy(spec: Spec) -> st.SearchStrategy[Any]:
    """Valid values for one field."""
    if isinstance(spec, IntSpec):
        ints = st.integers(spec.min, spec.max).filter(lambda v: v != spec.none_value)
        return ints | st.none() if spec.none_value is not None else ints
    if isinstance(spec, BoolSpec):
        return st.booleans()
    if isinstance(spec, EnumSpec):
        return st.sampled_from(list(spec.enum))
    if isinstance(spec, FlagSpec):
        return st.integers(0, 0xFFFFFFFF).map(spec.flags)
    if isinstance(spec, BytesSpec):
        return st.binary(min_size=spec.size, max_size=spec.size)
    if isinstance(spec, TailBytesSpec):
        return st.binary(min_size=spec.min_bytes, max_size=spec.max_bytes)
    if isinstance(spec, StringSpec):
        return _text(spec)
    if isinstance(spec, ListSpec):
        return st.lists(
            spec_strategy(spec.item), min_size=spec.min_items, max_size=spec.max_items
        ).map(tuple)
    if isinstance(spec, StructSpec):
        return struct_strategy(spec.cls)
    if isinstance(spec, OptionalSpec):
        return st.none() | struct_strategy(spec.cls)
    if isinstance(spec, UnionSpec):
        return st.one_of([struct_strategy(member) for member in spec.members])
    raise AssertionError(f"no strategy for {spec!r}")


@st.composite
def _flex_mode(draw: st.DrawFn) -> m.FlexMode:
    period = draw(st.sampled_from(list(m.FlexPeriod)))
    starts = draw(st.sets(st.integers(1, period.minutes - 1), max_size=m.MAX_FLEX_STEPS_WIRE - 1))
    doses = st.integers(0, m.MAX_MASS_NG)
    steps = tuple(m.FlexStep(s, draw(doses)) for s in sorted({0, *starts}))
    return m.FlexMode(period, steps)


@st.composite
def _periodic_mode(draw: st.DrawFn) -> m.PeriodicBolusMode:
    interval = draw(st.integers(1, m.MINUTES_PER_WEEK))
    return m.PeriodicBolusMode(
        basal_dose_ng_per_day=draw(st.integers(0, m.MAX_MASS_NG)),
        bolus_dose_ng=draw(st.integers(1, m.MAX_MASS_NG)),
        bolus_duration_min=draw(st.integers(1, interval)),
        interval_min=interval,
        first_offset_min=draw(st.integers(0, m.MINUTES_PER_WEEK)),
    )


_OVERRIDES: dict[type[WireStruct], st.SearchStrategy[Any]] = {
    m.FlexMode: _flex_mode(),
    m.PeriodicBolusMode: _periodic_mode(),
    m.Refusal: st.builds(
        m.Refusal,
        st.sampled_from([c for c in ResultCode if c is not ResultCode.OK]),
        _text(StringSpec(m.MAX_DETAIL_BYTES)),
    ),
}


def struct_strategy(cls: type[WireStruct]) -> st.SearchStrategy[Any]:
    """Valid instances of a record class."""
    if cls in _OVERRIDES:
        return _OVERRIDES[cls]
    return st.builds(cls, **{name: spec_strategy(spec) for name, spec in struct_fields(cls)})


REQUESTS = [info.request for info in m.MESSAGES.values()]
RESPONSES = sorted({info.response for info in m.MESSAGES.values()}, key=lambda c: c.__name__)
RECORDS: list[type[WireStruct]] = [
    m.TherapyProgram,
    m.FlexStep,
    m.FlexMode,
    m.PeriodicBolusMode,
    m.PatientBolusSettings,
    m.Alarm,
    m.LogEntry,
    m.Refusal,
    *m.BOLUS_KINDS,
]
ALL = [*REQUESTS, *RESPONSES, *RECORDS]


def _name(cls: type[Any]) -> str:
    return cls.__name__


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL, ids=_name)
def test_round_trip(cls: type[WireStruct]) -> None:
    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(struct_strategy(cls))
    def check(value: WireStruct) -> None:
        encoded = value.encode()
        assert len(encoded) <= struct_max_size(cls)
        assert cls.decode(encoded) == value

    check()


@pytest.mark.parametrize("info", list(m.MESSAGES.values()), ids=lambda i: i.code.name)
def test_response_envelope_round_trip(info: m.MessageInfo) -> None:
    @settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(struct_strategy(info.response) | _OVERRIDES[m.Refusal])
    def check(response: m.Response) -> None:
        assert m.decode_response(info.code, m.encode_response(response)) == response

    check()


@pytest.mark.parametrize("info", list(m.MESSAGES.values()), ids=lambda i: i.code.name)
def test_every_message_fits_a_frame(info: m.MessageInfo) -> None:
    # The response payload has a result byte and an (empty) detail before its body.
    assert struct_max_size(info.request) <= MAX_PAYLOAD_SIZE
    assert 2 + struct_max_size(info.response) <= MAX_PAYLOAD_SIZE
    assert struct_max_size(m.Refusal) <= MAX_PAYLOAD_SIZE


def test_every_message_type_has_one_request_class() -> None:
    assert set(m.MESSAGES) == set(m.MessageType)
    assert all(info.request.TYPE is code for code, info in m.MESSAGES.items())
    assert all(code < m.RESPONSE_BIT for code in m.MessageType)


def test_success_detail_is_skipped() -> None:
    payload = b"\x00\x03abc" + m.SetClockResponse(1_700_000_000).encode()
    assert m.decode_response(m.MessageType.SET_CLOCK, payload) == m.SetClockResponse(1_700_000_000)


def test_refusal_detail_is_cut_on_a_character_boundary() -> None:
    refusal = m.Refusal.make(ResultCode.OUT_OF_RANGE, "é" * 100)
    assert len(refusal.detail.encode()) <= m.MAX_DETAIL_BYTES
    assert set(refusal.detail) == {"é"}


def test_fixed_layout_of_a_simple_message() -> None:
    bolus = m.BolusRequest(m.ClinicianBolus(dose_ng=50_000, duration_min=30, then_resume=True))
    assert bolus.encode().hex() == "01" + "0000c350" + "001e" + "01"


def test_none_values_use_their_sentinels() -> None:
    refill = m.RefillRequest(20_000_000, 2_000_000, None, False, "baclofen")
    assert refill.encode()[8:12] == b"\xff\xff\xff\xff"
    assert m.AckAlarmRequest(None).encode() == b"\xff"
    assert m.PrimingBolus(None).encode() == bytes(4)


# --- rejections -------------------------------------------------------------------------------


_FEW = settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize(
    "cls",
    [c for c in ALL if struct_max_size(c) > 0 and c is not m.ProgramDataRequest],
    ids=_name,
)
def test_truncated_payload_is_malformed(cls: type[WireStruct]) -> None:
    # (PROGRAM_DATA ends with "the rest of the payload": it has no length to violate.)
    @_FEW
    @given(struct_strategy(cls))
    def check(value: WireStruct) -> None:
        encoded = value.encode()
        if encoded:
            with pytest.raises(WireError):
                cls.decode(encoded[:-1])

    check()


@pytest.mark.parametrize("cls", [c for c in ALL if c is not m.ProgramDataRequest], ids=_name)
def test_trailing_byte_is_malformed(cls: type[WireStruct]) -> None:
    @_FEW
    @given(struct_strategy(cls))
    def check(value: WireStruct) -> None:
        with pytest.raises(WireError, match="trailing"):
            cls.decode(value.encode() + b"\x00")

    check()


@pytest.mark.parametrize(
    ("cls", "payload", "match"),
    [
        (m.AuthBeginRequest, b"\x03" + bytes(16), "Role"),  # unknown enum value
        (m.ClinicianBolus, bytes.fromhex("000003e8000a02"), "neither 0 nor 1"),  # bool 2
        (m.RefillRequest, bytes(4) + bytes.fromhex("00000001ffffffff0000"), "volume_nl"),
        (m.SetClockRequest, bytes(4), "time_s"),  # 0 is not a time
        (m.AckAlarmRequest, b"\x00", "alarm_id"),
        (m.Refusal, b"\x00\x00", "OK"),
        (m.Refusal, b"\x20\x02\xff\xfe", "utf-8"),
        (m.BolusRequest, b"\x09", "tag"),
        (m.FlexStep, bytes.fromhex("2760") + bytes(4), "start_min"),  # 10080 min
        (m.PeriodicBolusMode, bytes(4) + bytes.fromhex("00000001000a0005 0000"), "duration"),
        (m.FlexMode, bytes.fromhex("0101") + bytes.fromhex("0005") + bytes(4), "steps\\[0\\]"),
        (m.FlexMode, bytes.fromhex("0102") + bytes(6) + bytes.fromhex("0000") + bytes(4), "above"),
        (m.FlexMode, bytes.fromhex("0100"), "items"),  # no step at all
        (m.TherapyProgram, bytes(12) + b"\x02", "presence"),
        (m.IdentifyRequest, b"\x00", "items"),  # empty version list
    ],
)
def test_malformed_payloads(cls: type[WireStruct], payload: bytes, match: str) -> None:
    with pytest.raises(WireError, match=match):
        cls.decode(payload)


def test_out_of_range_values_are_refused_at_construction() -> None:
    with pytest.raises(WireError, match="battery_per_mille"):
        dataclasses.replace(STATUS, battery_per_mille=1001)
    with pytest.raises(WireError, match="expected an integer"):
        m.SetClockRequest(True)
    with pytest.raises(WireError, match="UTF-8 bytes"):
        m.RefillRequest(1, 1, None, False, "x" * 33)
    with pytest.raises(WireError, match="below 1440"):
        m.FlexMode(m.FlexPeriod.DAILY, (m.FlexStep(0, 1), m.FlexStep(1440, 2)))


def test_decode_request_unknown_type() -> None:
    with pytest.raises(KeyError):
        m.decode_request(0x7F, b"")
    assert m.decode_request(0x10, b"") == m.InterrogateRequest()


def test_role_rules() -> None:
    patient = m.Role.PATIENT
    assert m.role_allows(patient, m.InterrogateRequest())
    assert m.role_allows(patient, m.IdentifyRequest())
    assert m.role_allows(patient, m.EndSessionRequest())
    assert m.role_allows(patient, m.BolusRequest(m.PatientBolus()))
    assert not m.role_allows(patient, m.BolusRequest(m.CancelBolus()))
    assert not m.role_allows(patient, m.StopTherapyRequest())
    assert not m.role_allows(patient, m.ReadLogRequest(0))


@_FEW
@given(st.one_of([struct_strategy(cls) for cls in REQUESTS]))
def test_clinician_may_send_everything(request_: m.Request) -> None:
    assert m.role_allows(m.Role.CLINICIAN, request_)


def test_alarm_ids_are_defined_once_below_the_firmware_and_the_programmer() -> None:
    # One enum, not two kept in step: the firmware raises, and the programmer names, the
    # protocol's own AlarmId (a wire code, protocol/codes.py).
    from itpump.firmware_stubs import alarms, command_handler
    from itpump.programmer import models

    assert alarms.SEVERITY.keys() == set(AlarmId)
    assert all(type(alarm) is AlarmId for alarm in alarms.SEVERITY)
    assert vars(command_handler)["AlarmId"] is AlarmId
    assert vars(models)["AlarmId"] is AlarmId
    assert "AlarmId" not in vars(m)
