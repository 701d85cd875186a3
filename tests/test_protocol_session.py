"""Sessions end to end between a PumpConnection and a ProgrammerConnection, bytes only.

Every bad-input test checks three things: the pump answers with the specific result code
(or stays silent where the spec says so), the request never reaches the firmware, and the
session state (sequence number, MAC counter) is unchanged, so the next good request works.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from itpump.protocol import messages as m
from itpump.protocol import pump_connection as connection_module
from itpump.protocol.auth import role_key, seeded_nonce_source
from itpump.protocol.codes import ResultCode
from itpump.protocol.connection import (
    ProgrammerConnection,
    ProgrammerEvent,
    PumpAuthenticationFailed,
    PumpConnection,
    PumpEvent,
    PumpIdentity,
    RequestReceived,
    RequestTimedOut,
    ResentResponse,
    ResponseReceived,
    SessionEnded,
    SessionStarted,
)
from itpump.protocol.framing import decode_frame, encode_frame
from itpump.protocol.header import Header, build_body, parse_body
from itpump.protocol.state import (
    REQUEST_TRANSITIONS,
    HandshakeState,
    LocalProtocolError,
    PumpSessionState,
    RequestEvent,
    RequestState,
)
from tests.protocol_helpers import PROGRAM, STATUS

KEY = bytes(range(32))
IDENTITY = PumpIdentity(
    serial="PP20-000042",
    model="peristaltic-20",
    firmware_version="1.0.0",
    capabilities=m.Capability.FLEX | m.Capability.PATIENT_BOLUS,
    max_flex_steps=10,
)


def _canned(request: m.Request) -> m.Response:
    """A minimal firmware: a valid answer of the right type to every request."""
    response_cls = m.MESSAGES[request.TYPE].response
    canned: dict[type[m.ResponseBody], m.ResponseBody] = {
        m.InterrogateResponse: STATUS,
        m.ProgramVerifyResponse: m.ProgramVerifyResponse(1, bytes(32), PROGRAM),
        m.SetClockResponse: m.SetClockResponse(1_700_000_000),
        m.AckAlarmResponse: m.AckAlarmResponse(1),
        m.ProgramDataResponse: m.ProgramDataResponse(1),
        m.BolusResponse: m.BolusResponse(100_000, 50_000, 0),
        m.RefillResponse: m.RefillResponse(20_000_000, 0, None),
        m.ReadLogResponse: m.ReadLogResponse(0, 1, 0, ()),
    }
    return canned.get(response_cls, m.Ack())


class Rig:
    """A pump and a programmer joined by a perfect link the test can interfere with."""

    def __init__(
        self,
        *,
        allow_unauthenticated: bool = False,
        pump_key: bytes = KEY,
        programmer_key: bytes = KEY,
        firmware: Callable[[m.Request], m.Response] = _canned,
    ) -> None:
        self.pump = PumpConnection(
            IDENTITY,
            pump_key,
            seeded_nonce_source(1),
            allow_unauthenticated=allow_unauthenticated,
        )
        # The programmer is given the pump key; it proves with the key of the role it asks
        # for, as a programmer provisioned for that role would.
        self.programmer_key = programmer_key
        self.prog = ProgrammerConnection(
            seeded_nonce_source(2), key=role_key(programmer_key, m.Role.CLINICIAN)
        )
        self.firmware = firmware
        self.delivered: list[RequestReceived] = []
        self.pump_events: list[PumpEvent] = []
        self.now = 0.0

    def to_pump(self, data: bytes) -> bytes:
        """Deliver bytes to the pump; run the firmware; return what the pump writes back."""

        def record(event: PumpEvent) -> None:
            self.pump_events.append(event)
            if isinstance(event, RequestReceived):
                self.delivered.append(event)

        return self.pump.respond(data, self.firmware, on_event=record)

    def to_programmer(self, data: bytes) -> ProgrammerEvent | None:
        self.prog.receive_data(data)
        return self.prog.next_event()

    def exchange(self, request: m.Request) -> ResponseReceived:
        event = self.to_programmer(self.to_pump(self.prog.send(request, self.now)))
        assert isinstance(event, ResponseReceived), event
        return event

    def identify(self) -> m.IdentifyResponse:
        response = self.exchange(m.IdentifyRequest()).response
        assert isinstance(response, m.IdentifyResponse)
        return response

    def login(self, role: m.Role = m.Role.CLINICIAN) -> None:
        self.identify()
        assert isinstance(self.exchange(self.prog.auth_begin(role)).response, m.AuthBeginResponse)
        proof = self.prog.auth_proof(role_key(self.programmer_key, role))
        assert isinstance(self.exchange(proof).response, m.AuthProofResponse)
        assert self.prog.session is not None
        assert self.prog.session.session_id == self.pump.session_id

    def refused_with(self, frame: bytes) -> ResultCode:
        """Send a hand-made frame to the pump; it must be refused and not delivered."""
        before = len(self.delivered)
        out = self.to_pump(frame)
        assert len(self.delivered) == before, "a refused request reached the firmware"
        response = m.decode_response(
            m.MessageType.INTERROGATE, parse_body(decode_frame(out)).payload
        )  # a refusal decodes the same for every type
        assert isinstance(response, m.Refusal)
        return response.result


def _tamper(frame: bytes, position: int, xor: int = 0x01) -> bytes:
    """Flip bits of one body byte and re-frame with a valid CRC (a forger, not noise)."""
    body = bytearray(decode_frame(frame))
    body[position] ^= xor
    return encode_frame(bytes(body))


def _still_works(rig: Rig) -> None:
    """The session survived: the next normal request is delivered and answered."""
    before = len(rig.delivered)
    assert rig.exchange(m.InterrogateRequest()).ok
    assert len(rig.delivered) == before + 1


# --- identify and negotiation -----------------------------------------------------------------


def test_identify_reports_pump_and_negotiates_version() -> None:
    rig = Rig()
    event = rig.exchange(m.IdentifyRequest(versions=(1, 2, 7)))
    response = event.response
    assert isinstance(response, m.IdentifyResponse)
    assert response.selected_version == 1
    assert response.serial == IDENTITY.serial
    assert response.auth_required
    assert response.max_flex_steps == 10
    assert m.Capability.FLEX in response.capabilities
    assert rig.prog.pump == response
    assert rig.delivered == []  # answered by the protocol layer


def test_identify_without_common_version_is_refused() -> None:
    rig = Rig()
    response = rig.exchange(m.IdentifyRequest(versions=(2, 3))).response
    assert isinstance(response, m.Refusal)
    assert response.result is ResultCode.UNSUPPORTED_VERSION


def test_unsupported_header_version_is_refused() -> None:
    rig = Rig(allow_unauthenticated=True)
    body = Header(2, m.MessageType.INTERROGATE, 0, 5, 0).pack()
    assert rig.refused_with(encode_frame(body)) is ResultCode.UNSUPPORTED_VERSION


# --- authentication ---------------------------------------------------------------------------


def test_handshake_establishes_the_same_session_on_both_sides() -> None:
    rig = Rig()
    rig.login()
    assert rig.pump.session_state is PumpSessionState.ACTIVE
    assert rig.prog.handshake_state is HandshakeState.IDLE
    assert any(isinstance(e, SessionStarted) for e in rig.pump_events)
    _still_works(rig)
    assert rig.delivered[-1].authenticated


def test_wrong_key_fails_and_consumes_the_challenge() -> None:
    rig = Rig(programmer_key=bytes(32))
    rig.identify()
    challenge = rig.exchange(rig.prog.auth_begin(m.Role.CLINICIAN)).response
    assert isinstance(challenge, m.AuthBeginResponse)
    proof = rig.prog.auth_proof()
    response = rig.exchange(proof).response
    assert isinstance(response, m.Refusal)
    assert response.result is ResultCode.AUTH_FAILED
    assert rig.prog.session is None
    assert rig.pump.session_id is None
    assert rig.prog.handshake_state is HandshakeState.IDLE
    # The same proof again, as a new request (not a retransmission), finds no challenge.
    again = Header(1, m.MessageType.AUTH_PROOF, 0, 99, challenge.session_id).pack()
    assert rig.refused_with(encode_frame(again + proof.encode())) is ResultCode.AUTH_FAILED


def test_impostor_pump_is_detected() -> None:
    rig = Rig()
    rig.identify()
    rig.exchange(rig.prog.auth_begin(m.Role.CLINICIAN))
    answer = rig.to_pump(rig.prog.send(rig.prog.auth_proof(), rig.now))
    # Corrupt the pump proof in the answer (header 9 + result 1 + detail length 1).
    event = rig.to_programmer(_tamper(answer, 11))
    assert isinstance(event, PumpAuthenticationFailed)
    assert rig.prog.session is None


def test_commands_need_a_session() -> None:
    rig = Rig()
    rig.identify()
    for request in (m.InterrogateRequest(), m.StopTherapyRequest(), m.SetClockRequest(10)):
        response = rig.exchange(request).response
        assert isinstance(response, m.Refusal)
        assert response.result is ResultCode.NOT_AUTHENTICATED
    assert rig.delivered == []


def test_unauthenticated_auth_begin_does_not_end_a_session() -> None:
    rig = Rig()
    rig.login()
    intruder = ProgrammerConnection(seeded_nonce_source(99))
    rig.to_pump(intruder.send(intruder.auth_begin(m.Role.CLINICIAN), 0.0, seq=100))
    assert rig.pump.session_state is PumpSessionState.ACTIVE_CHALLENGED
    _still_works(rig)


def test_new_handshake_replaces_the_session() -> None:
    rig = Rig()
    rig.login()
    old_frame = rig.prog.send(m.InterrogateRequest(), rig.now)
    rig.to_programmer(rig.to_pump(old_frame))
    first = rig.pump.session_id
    rig.login(m.Role.PATIENT)
    assert rig.pump.session_id != first
    assert any(isinstance(e, SessionEnded) for e in rig.pump_events)
    # A frame of the old session is worthless now.
    assert rig.refused_with(old_frame) is ResultCode.NOT_AUTHENTICATED


def test_end_session() -> None:
    rig = Rig()
    rig.login()
    assert rig.exchange(m.EndSessionRequest()).ok
    assert rig.prog.session is None
    assert rig.pump.session_id is None
    assert isinstance(rig.pump_events[-1], SessionEnded)
    response = rig.exchange(m.InterrogateRequest()).response
    assert isinstance(response, m.Refusal)
    assert response.result is ResultCode.NOT_AUTHENTICATED


def test_lost_answers_to_handshake_and_end_session_are_resent() -> None:
    rig = Rig()
    rig.identify()
    rig.exchange(rig.prog.auth_begin(m.Role.CLINICIAN))
    rig.to_pump(rig.prog.send(rig.prog.auth_proof(), rig.now))  # answer lost
    event = rig.to_programmer(rig.to_pump(rig.prog.poll(rig.now + 5)))
    assert isinstance(event, ResponseReceived)
    assert rig.prog.session is not None
    rig.to_pump(rig.prog.send(m.EndSessionRequest(), rig.now))  # answer lost
    assert rig.pump.session_id is None
    event = rig.to_programmer(rig.to_pump(rig.prog.poll(rig.now + 5)))
    assert isinstance(event, ResponseReceived)
    assert event.ok
    assert rig.prog.session is None


def _deadline(pump: PumpConnection) -> float | None:
    return pump.idle_deadline_s


def test_idle_session_expires() -> None:
    rig = Rig()
    rig.identify()
    rig.exchange(rig.prog.auth_begin(m.Role.CLINICIAN))
    rig.pump.receive_data(rig.prog.send(rig.prog.auth_proof(), 0.0), now_s=100.0)
    rig.to_programmer(rig.to_pump(b""))
    assert rig.pump.idle_deadline_s == 400.0
    rig.pump.receive_data(rig.prog.send(m.InterrogateRequest(), 0.0), now_s=350.0)
    rig.to_programmer(rig.to_pump(b""))
    assert rig.pump.idle_deadline_s == 650.0
    assert not rig.pump.expire_idle_session(649.0)
    assert rig.pump.expire_idle_session(650.0)
    assert (rig.pump.session_id, _deadline(rig.pump)) == (None, None)
    ended = rig.pump.next_event()
    assert isinstance(ended, SessionEnded)
    assert ended.reason == "idle timeout"


def test_pump_ends_session_when_link_is_lost() -> None:
    rig = Rig()
    rig.login()
    rig.pump.link_lost()
    assert rig.pump.session_id is None
    assert isinstance(rig.pump.next_event(), SessionEnded)


# --- MAC, counter, replay ---------------------------------------------------------------------


def test_wrong_mac_is_refused_and_changes_nothing() -> None:
    rig = Rig()
    rig.login()
    frame = rig.prog.send(m.StopTherapyRequest(), rig.now)
    assert rig.refused_with(_tamper(frame, -1)) is ResultCode.BAD_MAC
    assert rig.pump.stats.refusals[ResultCode.BAD_MAC] == 1
    # The genuine frame still goes through: neither its seq nor its counter were consumed.
    event = rig.to_programmer(rig.to_pump(frame))
    assert isinstance(event, ResponseReceived)
    assert event.ok


def test_tampered_payload_fails_the_mac() -> None:
    rig = Rig()
    rig.login()
    frame = rig.prog.send(m.SetClockRequest(1_700_000_000), rig.now)
    assert rig.refused_with(_tamper(frame, 9)) is ResultCode.BAD_MAC


def test_missing_mac_in_a_session_is_refused() -> None:
    rig = Rig()
    rig.login()
    sid = rig.pump.session_id
    assert sid is not None
    frame = encode_frame(Header(1, m.MessageType.STOP_THERAPY, 0, 50, sid).pack())
    assert rig.refused_with(frame) is ResultCode.BAD_MAC


def test_replayed_frame_is_refused() -> None:
    rig = Rig()
    rig.login()
    recorded = rig.prog.send(m.BolusRequest(m.ClinicianBolus(50_000, 30, True)), rig.now)
    rig.to_programmer(rig.to_pump(recorded))
    rig.exchange(m.InterrogateRequest())
    delivered = len(rig.delivered)
    assert rig.refused_with(recorded) is ResultCode.REPLAYED
    assert len(rig.delivered) == delivered
    _still_works(rig)


def test_responses_are_authenticated_in_a_session() -> None:
    rig = Rig()
    rig.login()
    answer = rig.to_pump(rig.prog.send(m.InterrogateRequest(), rig.now))
    assert parse_body(decode_frame(answer)).header.has_mac
    # A forged answer is dropped; the genuine one, resent on retransmission, is accepted.
    assert rig.to_programmer(_tamper(answer, 12)) is None
    assert rig.prog.stats.dropped == 1
    retransmission = rig.prog.poll(rig.now + 10)
    event = rig.to_programmer(rig.to_pump(retransmission))
    assert isinstance(event, ResponseReceived)
    assert event.attempts == 2


def test_unauthenticated_success_answer_is_not_trusted_in_a_session() -> None:
    rig = Rig()
    rig.login()
    frame = rig.prog.send(m.InterrogateRequest(), rig.now)
    header = parse_body(decode_frame(frame)).header
    forged = Header(1, header.msg_type | 0x80, 0, header.seq, header.session_id)
    assert rig.to_programmer(encode_frame(build_body(forged, b"\x00\x00"))) is None
    assert rig.prog.busy


# --- sequence numbers, duplicates, retransmission ---------------------------------------------


def test_retransmission_is_answered_from_cache_without_acting_twice() -> None:
    rig = Rig()
    rig.login()
    frame = rig.prog.send(m.BolusRequest(m.ClinicianBolus(50_000, 30, True)), rig.now)
    rig.to_pump(frame)  # the answer is lost
    assert rig.prog.deadline_s == rig.now + 1.0
    assert rig.prog.poll(rig.now + 0.5) == b""
    again = rig.prog.poll(rig.now + 1.0)
    assert again == frame
    event = rig.to_programmer(rig.to_pump(again))
    assert isinstance(event, ResponseReceived)
    assert event.attempts == 2
    assert isinstance(rig.pump_events[-1], ResentResponse)
    assert sum(isinstance(d.request, m.BolusRequest) for d in rig.delivered) == 1
    assert rig.pump.stats.duplicates == 1


def test_out_of_window_sequence_number_is_refused() -> None:
    rig = Rig()
    rig.login()
    last = rig.exchange(m.InterrogateRequest()).seq
    delivered = len(rig.delivered)
    frame = rig.prog.send(m.StopTherapyRequest(), rig.now, seq=(last + 1000) % 0x10000)
    event = rig.to_programmer(rig.to_pump(frame))
    assert isinstance(event, ResponseReceived)
    assert isinstance(event.response, m.Refusal)
    assert event.response.result is ResultCode.SEQUENCE_ERROR
    assert len(rig.delivered) == delivered
    # The programmer's numbering jumped ahead; IDENTIFY resynchronises the pump's window.
    rig.identify()
    _still_works(rig)


def test_reused_sequence_number_with_new_content_is_refused() -> None:
    rig = Rig()
    rig.login()
    first = rig.exchange(m.InterrogateRequest())
    frame = rig.prog.send(m.StopTherapyRequest(), rig.now, seq=first.seq)
    assert rig.refused_with(frame) is ResultCode.SEQUENCE_ERROR


def test_skipped_sequence_numbers_within_the_window_are_accepted() -> None:
    rig = Rig()
    rig.login()
    last = rig.exchange(m.InterrogateRequest()).seq
    event = rig.to_programmer(rig.to_pump(rig.prog.send(m.InterrogateRequest(), 0, seq=last + 5)))
    assert isinstance(event, ResponseReceived)
    assert event.ok


def test_sequence_numbers_wrap() -> None:
    rig = Rig(allow_unauthenticated=True)
    rig.identify()  # the window is open: any sequence number is accepted next
    event = rig.to_programmer(rig.to_pump(rig.prog.send(m.InterrogateRequest(), 0, seq=0xFFFF)))
    assert isinstance(event, ResponseReceived)
    assert event.ok
    event = rig.exchange(m.InterrogateRequest())
    assert event.seq == 0
    assert event.ok


def test_frames_outside_the_session_do_not_disturb_it() -> None:
    rig = Rig()
    rig.login()
    frame = rig.prog.send(m.BolusRequest(m.ClinicianBolus(50_000, 30, True)), rig.now)
    rig.to_pump(frame)  # the answer is lost ...
    intruder = ProgrammerConnection(seeded_nonce_source(99))
    rig.to_pump(intruder.send(m.IdentifyRequest(), 0.0, seq=7))
    # ... and the retransmission still finds it cached in the session.
    event = rig.to_programmer(rig.to_pump(rig.prog.poll(rig.now + 5)))
    assert isinstance(event, ResponseReceived)
    assert event.ok
    assert sum(isinstance(d.request, m.BolusRequest) for d in rig.delivered) == 1
    _still_works(rig)


def test_timeout_after_every_attempt() -> None:
    rig = Rig()
    rig.prog.send(m.IdentifyRequest(), 0.0)
    deadlines = []
    now = 0.0
    while rig.prog.busy:
        deadline = rig.prog.deadline_s
        assert deadline is not None
        deadlines.append(deadline)
        now = deadline
        rig.prog.poll(now)
    assert deadlines == [1.0, 3.0, 7.0, 15.0]  # 1 s, doubled at each retransmission
    event = rig.prog.next_event()
    assert isinstance(event, RequestTimedOut)
    assert event.attempts == 4
    assert rig.prog.stats.retransmissions == 3
    assert rig.prog.stats.timeouts == 1


def test_stale_and_echoed_frames_are_ignored_by_the_programmer() -> None:
    rig = Rig()
    first = rig.to_pump(rig.prog.send(m.IdentifyRequest(), 0.0))
    rig.to_programmer(first)
    request = rig.prog.send(m.IdentifyRequest(), 0.0)
    assert rig.to_programmer(first) is None  # answer to the previous seq
    assert rig.to_programmer(request) is None  # our own request echoed back
    assert rig.prog.stats.dropped == 2
    assert isinstance(rig.to_programmer(rig.to_pump(request)), ResponseReceived)


# --- errors decided by the protocol layer -----------------------------------------------------


def test_unknown_message_type() -> None:
    rig = Rig(allow_unauthenticated=True)
    assert rig.refused_with(encode_frame(Header(1, 0x7F, 0, 3, 0).pack())) is (
        ResultCode.UNKNOWN_MESSAGE
    )
    _still_works(rig)


def test_malformed_payload() -> None:
    rig = Rig(allow_unauthenticated=True)
    body = Header(1, m.MessageType.SET_CLOCK, 0, 3, 0).pack() + b"\x01\x02\x03"
    assert rig.refused_with(encode_frame(body)) is ResultCode.MALFORMED
    _still_works(rig)


def test_malformed_payload_in_a_session_gets_an_authenticated_refusal() -> None:
    rig = Rig()
    rig.login()
    session = rig.prog._session
    assert session is not None
    header = Header(1, m.MessageType.SET_CLOCK, 0, rig.prog._next_seq, session.session_id)
    body = build_body(header, b"\x00", session_key=session.key, counter=session.counter + 1)
    out = rig.to_pump(encode_frame(body))
    packet = parse_body(decode_frame(out))
    assert packet.header.has_mac
    refusal = m.decode_response(m.MessageType.SET_CLOCK, packet.payload)
    assert isinstance(refusal, m.Refusal)
    assert refusal.result is ResultCode.MALFORMED


def test_reserved_flags_and_mac_on_identify_are_malformed() -> None:
    rig = Rig()
    assert (
        rig.refused_with(
            encode_frame(Header(1, m.MessageType.IDENTIFY, 0x80, 1, 0).pack() + b"\x01\x01")
        )
        is ResultCode.MALFORMED
    )
    with_mac = build_body(
        Header(1, m.MessageType.IDENTIFY, 0, 1, 0), b"\x01\x01", session_key=KEY, counter=1
    )
    assert rig.refused_with(encode_frame(with_mac)) is ResultCode.MALFORMED


def test_wrong_role() -> None:
    rig = Rig()
    rig.login(m.Role.PATIENT)
    for request in (
        m.BolusRequest(m.ClinicianBolus(50_000, 30, True)),
        m.StopTherapyRequest(),
        m.ReadLogRequest(0),
        m.ProgramAbortRequest(),
    ):
        response = rig.exchange(request).response
        assert isinstance(response, m.Refusal)
        assert response.result is ResultCode.ROLE_FORBIDDEN
    assert rig.delivered == []
    assert rig.exchange(m.BolusRequest(m.PatientBolus())).ok
    assert rig.delivered[-1].role is m.Role.PATIENT
    _still_works(rig)


def test_frames_the_pump_cannot_use_are_dropped_silently() -> None:
    rig = Rig()
    assert rig.to_pump(encode_frame(b"\x01\x01")) == b""  # shorter than a header
    response = Header(1, 0x81, 0, 1, 0).pack() + b"\x00\x00"
    assert rig.to_pump(encode_frame(response)) == b""  # a response: never answered
    assert rig.pump.stats.dropped == 2


def test_garbage_and_broken_frames_on_the_link() -> None:
    rig = Rig()
    rig.login()
    good = rig.prog.send(m.InterrogateRequest(), rig.now)
    corrupt = bytearray(good)
    corrupt[5] ^= 0x10
    noise = b"\x00\xff\x7d" + bytes(corrupt) + b"\x13\x7e\x7e\x55" + good[:7]
    answer = rig.to_pump(noise + good)
    event = rig.to_programmer(b"\xaa\x7d" + answer)
    assert isinstance(event, ResponseReceived)
    assert event.ok
    stats = rig.pump.stats.framing
    assert stats.frames_dropped >= 2
    assert len(rig.delivered) == 1


def test_allow_unauthenticated() -> None:
    rig = Rig(allow_unauthenticated=True)
    assert not rig.identify().auth_required
    assert rig.exchange(m.StopTherapyRequest()).ok
    assert rig.delivered[-1].role is m.Role.CLINICIAN
    assert not rig.delivered[-1].authenticated
    # Sessions still work, and inside one the usual rules apply.
    rig.login()
    _still_works(rig)
    assert rig.delivered[-1].authenticated


# --- API misuse -------------------------------------------------------------------------------


def test_local_protocol_errors() -> None:
    rig = Rig(allow_unauthenticated=True)
    rig.prog.send(m.InterrogateRequest(), 0.0)
    with pytest.raises(LocalProtocolError):
        rig.prog.send(m.InterrogateRequest(), 0.0)
    with pytest.raises(LocalProtocolError):
        rig.prog.auth_proof()
    rig.pump.receive_data(rig.prog.poll(5.0))
    event = rig.pump.next_event()
    assert isinstance(event, RequestReceived)
    with pytest.raises(LocalProtocolError):
        rig.pump.next_event()
    with pytest.raises(LocalProtocolError):
        rig.pump.send(m.SetClockResponse(1))
    rig.pump.send(m.Refusal.make(ResultCode.INVALID_STATE, "busy"))
    with pytest.raises(LocalProtocolError):
        rig.pump.send(m.Ack())


def test_pump_key_must_be_long_enough() -> None:
    with pytest.raises(ValueError, match="at least"):
        PumpConnection(IDENTITY, b"short", seeded_nonce_source(1))


# --- the state machines are the authority; errors recover ----------------------------------


def _machines(pump: PumpConnection) -> tuple[PumpSessionState, RequestState]:
    """Both machines' states, read afresh (a function call, so no stale narrowing)."""
    return pump.session_state, pump.request_state


def test_the_session_machine_alone_decides_whether_a_session_exists() -> None:
    rig = Rig()
    rig.login()
    assert rig.pump.session_state is PumpSessionState.ACTIVE
    # A machine that says NONE means no session in every view of it: commands are refused.
    rig.pump.end_session("test")
    assert _machines(rig.pump)[0] is PumpSessionState.NONE
    assert (rig.pump.session_id, rig.pump.role, rig.pump.idle_deadline_s) == (None, None, None)
    assert not rig.exchange(m.InterrogateRequest()).ok


def test_every_request_state_can_fail_and_only_error_recovers() -> None:
    for state in RequestState:
        assert REQUEST_TRANSITIONS[(state, RequestEvent.ERROR)] is RequestState.ERROR
        recovers = (state, RequestEvent.RECOVER) in REQUEST_TRANSITIONS
        assert recovers == (state is RequestState.ERROR)


def test_an_exception_in_the_protocol_layer_goes_through_error_and_recovers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig = Rig()
    rig.login()
    session_id = rig.pump.session_id
    seen: list[RequestState] = []
    answer_frame = connection_module._response_frame

    def failing_identify(*_args: object) -> None:
        raise ZeroDivisionError("a bug in IDENTIFY")

    def watching(*args: Any) -> bytes:
        seen.append(rig.pump.request_state)
        return answer_frame(*args)

    monkeypatch.setattr(rig.pump, "_identify", failing_identify)
    monkeypatch.setattr(connection_module, "_response_frame", watching)
    event = rig.exchange(m.IdentifyRequest())
    assert isinstance(event.response, m.Refusal)
    assert event.response.result is ResultCode.INTERNAL_ERROR
    assert "ZeroDivisionError" in event.response.detail
    assert seen == [RequestState.ERROR]  # the answer was built in the error state
    assert rig.pump.request_state is RequestState.IDLE
    assert rig.pump.stats.internal_errors == 1
    assert rig.pump.session_id == session_id  # the session is not an error's casualty
    monkeypatch.undo()
    _still_works(rig)


def test_a_pump_that_cannot_even_answer_internal_error_is_not_deaf(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig = Rig(allow_unauthenticated=True)
    rig.identify()

    def broken_firmware(_request: m.Request) -> m.Response:
        raise ZeroDivisionError("a bug in the firmware")

    def unframeable(*_args: object) -> bytes:
        raise MemoryError("no buffer for the answer")

    rig.firmware = broken_firmware
    monkeypatch.setattr(connection_module, "_response_frame", unframeable)
    frame = rig.prog.send(m.InterrogateRequest(), rig.now)
    with pytest.raises(MemoryError):
        rig.to_pump(frame)
    assert _machines(rig.pump)[1] is RequestState.ERROR
    monkeypatch.undo()
    rig.firmware = _canned
    # The next frame recovers the machine and is answered: the retransmission finds no
    # cached answer, so it is refused as a repeated sequence number (nothing is redone) ...
    rig.now += 10.0
    event = rig.to_programmer(rig.to_pump(rig.prog.poll(rig.now)))
    assert isinstance(event, ResponseReceived)
    assert isinstance(event.response, m.Refusal)
    assert event.response.result is ResultCode.SEQUENCE_ERROR
    assert _machines(rig.pump)[1] is RequestState.IDLE
    # ... and the next request is carried out.
    assert rig.exchange(m.InterrogateRequest()).ok
