"""The pump's session model (issue 9, point 5), each attack pinned by a regression test.

One telemetry head at a time, roles bound to keys, a pending challenge that a keyless flood
cannot take away, and a backoff after failed authentications. docs/safety.md describes the
model and names these tests. Everything runs in-process through served pumps' byte handlers
and in-memory links.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

import pytest

from itpump.emulator.farm import PortSpec, PumpFarm, ServedPump
from itpump.emulator.scenario import load_scenario
from itpump.emulator.transports import NullModem, PtyTransport
from itpump.firmware_stubs.firmware import TherapyState
from itpump.programmer import operations
from itpump.programmer.errors import AuthenticationError, PumpRefused
from itpump.programmer.models import SessionDetails
from itpump.protocol import messages as m
from itpump.protocol.auth import seeded_nonce_source
from itpump.protocol.codes import ResultCode
from itpump.protocol.connection import ProgrammerConnection, ResponseReceived
from itpump.protocol.framing import Deframer
from itpump.protocol.header import parse_body
from tests.test_transports import FdClient

pytestmark = pytest.mark.timeout(60)

Handler = Callable[[bytes], bytes]


class FakeClock:
    """Real seconds, moved by hand (the farm's link clock)."""

    def __init__(self) -> None:
        self.t_s = 1000.0

    def __call__(self) -> float:
        return self.t_s


def _farm(clock: FakeClock | None = None) -> PumpFarm:
    return PumpFarm(
        load_scenario("clinic-ready"),
        port=PortSpec("null"),
        speed=0.0,
        clock=clock or FakeClock(),
    )


def _exchange(handler: Handler, pc: ProgrammerConnection, request: m.Request) -> m.Response:
    pc.receive_data(handler(pc.send(request, 0.0)))
    event = pc.next_event()
    assert isinstance(event, ResponseReceived), event
    return event.response


def _handshake(
    handler: Handler, key: bytes, role: m.Role = m.Role.CLINICIAN, seed: int = 7
) -> tuple[ProgrammerConnection, m.Response]:
    """IDENTIFY, AUTH_BEGIN, AUTH_PROOF with ``key``; the programmer and the proof's answer."""
    pc = ProgrammerConnection(seeded_nonce_source(seed), key=key)
    assert isinstance(_exchange(handler, pc, m.IdentifyRequest()), m.IdentifyResponse)
    begun = _exchange(handler, pc, pc.auth_begin(role))
    assert isinstance(begun, m.AuthBeginResponse), begun
    return pc, _exchange(handler, pc, pc.auth_proof())


def _refused(response: m.Response, code: ResultCode) -> bool:
    return isinstance(response, m.Refusal) and response.result is code


# --- roles are bound to keys -----------------------------------------------------------------


def _served() -> ServedPump:
    return _farm().pumps[0]


def test_a_patient_key_cannot_open_a_clinician_session() -> None:
    served = _served()
    pc, proof = _handshake(served.handler, served.patient_key, m.Role.CLINICIAN)
    assert _refused(proof, ResultCode.AUTH_FAILED)
    assert pc.session is None
    # Nor can it command a stop by any other route: without a session it is refused.
    assert _refused(
        _exchange(served.handler, pc, m.StopTherapyRequest()), ResultCode.NOT_AUTHENTICATED
    )
    assert served.reported().therapy_state is TherapyState.RUNNING


def test_each_key_opens_its_own_role_only() -> None:
    served = _served()
    assert served.key != served.patient_key
    pc, proof = _handshake(served.handler, served.patient_key, m.Role.PATIENT)
    assert isinstance(proof, m.AuthProofResponse)
    assert pc.session is not None
    assert pc.session.role is m.Role.PATIENT
    assert _refused(
        _exchange(served.handler, pc, m.StopTherapyRequest()), ResultCode.ROLE_FORBIDDEN
    )
    assert isinstance(_exchange(served.handler, pc, m.EndSessionRequest()), m.Ack)
    # The clinician's key is no patient key either: each key proves one role.
    _pc, proof = _handshake(served.handler, served.key, m.Role.PATIENT, seed=8)
    assert _refused(proof, ResultCode.AUTH_FAILED)
    pc, proof = _handshake(served.handler, served.key, m.Role.CLINICIAN, seed=9)
    assert isinstance(proof, m.AuthProofResponse)
    assert isinstance(_exchange(served.handler, pc, m.StopTherapyRequest()), m.Ack)
    assert served.reported().therapy_state is TherapyState.STOPPED


# --- one telemetry head at a time --------------------------------------------------------------


class _Reader(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


class _Client(Protocol):
    @property
    def reader(self) -> _Reader: ...

    def write(self, data: bytes) -> None: ...


async def _ask(client: _Client, pc: ProgrammerConnection, request: m.Request) -> m.Response:
    """One request over a real client link, the answer read as it arrives."""
    client.write(pc.send(request, 0.0))
    while (event := pc.next_event()) is None:
        chunk = await client.reader.read(4096)
        assert chunk, "the link closed before the answer came"
        pc.receive_data(chunk)
    assert isinstance(event, ResponseReceived), event
    return event.response


async def _log_in(client: _Client, key: bytes, seed: int) -> ProgrammerConnection:
    pc = ProgrammerConnection(seeded_nonce_source(seed), key=key)
    assert isinstance(await _ask(client, pc, m.IdentifyRequest()), m.IdentifyResponse)
    assert isinstance(await _ask(client, pc, pc.auth_begin(m.Role.CLINICIAN)), m.AuthBeginResponse)
    assert isinstance(await _ask(client, pc, pc.auth_proof()), m.AuthProofResponse)
    return pc


def test_a_second_head_is_refused_while_a_session_is_live() -> None:
    served = _served()
    first, second = served.handler.open_head(), served.handler.open_head()
    pc, proof = _handshake(first, served.key)
    assert isinstance(proof, m.AuthProofResponse)
    # Everything from the second head is refused, unauthenticated, and changes nothing.
    intruder = ProgrammerConnection(seeded_nonce_source(99), key=served.key)
    for request in (m.IdentifyRequest(), m.StopTherapyRequest()):
        assert _refused(_exchange(second, intruder, request), ResultCode.SESSION_BUSY)
    assert served.reported().therapy_state is TherapyState.RUNNING
    # The second head leaving does not end the first head's session.
    second.link_closed()
    assert isinstance(_exchange(first, pc, m.InterrogateRequest()), m.InterrogateResponse)
    # Once that session ends, the pump is free for the next head.
    assert isinstance(_exchange(first, pc, m.EndSessionRequest()), m.Ack)
    third = served.handler.open_head()
    other, proof = _handshake(third, served.key, seed=11)
    assert isinstance(proof, m.AuthProofResponse)
    assert isinstance(_exchange(third, other, m.StopTherapyRequest()), m.Ack)
    assert served.reported().therapy_state is TherapyState.STOPPED


def test_an_idle_session_frees_the_pump_for_another_head() -> None:
    clock = FakeClock()
    served = _farm(clock).pumps[0]
    first, second = served.handler.open_head(), served.handler.open_head()
    pc, _proof = _handshake(first, served.key)
    clock.t_s += 301.0  # past the 300 s idle timeout, on the link's clock
    _other, proof = _handshake(second, served.key, seed=12)
    assert isinstance(proof, m.AuthProofResponse)
    late = _exchange(first, pc, m.StopTherapyRequest())
    assert _refused(late, ResultCode.SESSION_BUSY)
    assert served.reported().therapy_state is TherapyState.RUNNING


async def test_each_client_link_is_its_own_head_and_closing_it_ends_only_its_session() -> None:
    served = _served()
    modem = served.transport
    assert isinstance(modem, NullModem)
    await modem.start()
    holder, other = modem.connect(), modem.connect()
    pc = await _log_in(holder, served.key, seed=7)
    intruder = ProgrammerConnection(seeded_nonce_source(8), key=served.key)
    assert _refused(await _ask(other, intruder, m.IdentifyRequest()), ResultCode.SESSION_BUSY)
    other.close()  # a client's disconnect ends no other client's session
    assert isinstance(await _ask(holder, pc, m.InterrogateRequest()), m.InterrogateResponse)
    holder.close()  # ... and ends its own: the pump is free
    assert served.endpoint.holder() is None
    newcomer = modem.connect()
    await _log_in(newcomer, served.key, seed=9)
    newcomer.close()
    await modem.close()


async def test_closing_and_reopening_a_pty_ends_the_session() -> None:
    served = _served()
    async with PtyTransport(served.handler) as transport:
        client = FdClient(transport.path)
        pc = await _log_in(client, served.key, seed=7)
        stop_frame = pc.send(m.StopTherapyRequest(), 0.0)  # the old session's next command
        client.close()
        while served.endpoint.holder() is not None:
            await asyncio.sleep(0)  # a turn of the loop, until the transport sees the hang-up
        client = FdClient(transport.path)  # whoever opens the port next ...
        try:
            client.write(stop_frame)  # ... cannot use the old session
            answer = b""
            while not (bodies := _bodies(answer)):
                answer += await client.reader.read(4096)
        finally:
            client.close()
    refusal = m.decode_response(m.MessageType.STOP_THERAPY, parse_body(bodies[0]).payload)
    assert _refused(refusal, ResultCode.NOT_AUTHENTICATED)
    assert served.reported().therapy_state is TherapyState.RUNNING


def _bodies(data: bytes) -> list[bytes]:
    deframer = Deframer()
    deframer.receive_data(data)
    out = []
    while (body := deframer.next_frame()) is not None:
        out.append(body)
    return out


# --- a keyless flood cannot take a handshake's challenge; failures back off ---------------------


def test_a_flood_of_keyless_auth_begins_cannot_starve_a_handshake() -> None:
    served = _served()
    clinician_link, flood_link = served.handler.open_head(), served.handler.open_head()
    pc = ProgrammerConnection(seeded_nonce_source(7), key=served.key)
    assert isinstance(_exchange(clinician_link, pc, m.IdentifyRequest()), m.IdentifyResponse)
    begun = _exchange(clinician_link, pc, pc.auth_begin(m.Role.CLINICIAN))
    assert isinstance(begun, m.AuthBeginResponse)
    flooder = ProgrammerConnection(seeded_nonce_source(8))
    for _ in range(200):  # more than the 180 a second of the adversarial test
        answer = _exchange(flood_link, flooder, flooder.auth_begin(m.Role.CLINICIAN))
        assert isinstance(answer, m.AuthBeginResponse)
    assert isinstance(_exchange(clinician_link, pc, pc.auth_proof()), m.AuthProofResponse)
    assert isinstance(_exchange(clinician_link, pc, m.StopTherapyRequest()), m.Ack)
    # Now it holds the pump: the flood gets nothing more than SESSION_BUSY.
    answer = _exchange(flood_link, flooder, flooder.auth_begin(m.Role.CLINICIAN))
    assert _refused(answer, ResultCode.SESSION_BUSY)


def _guess(handler: Handler, seed: int) -> m.Response:
    """A handshake with a wrong key: the AUTH_BEGIN answer, or the AUTH_PROOF answer."""
    pc = ProgrammerConnection(seeded_nonce_source(seed), key=bytes(32))
    _exchange(handler, pc, m.IdentifyRequest())
    begun = _exchange(handler, pc, pc.auth_begin(m.Role.CLINICIAN))
    if not isinstance(begun, m.AuthBeginResponse):
        return begun
    return _exchange(handler, pc, pc.auth_proof())


def test_failed_authentications_back_off_on_the_link_clock_for_the_whole_pump() -> None:
    clock = FakeClock()
    served = _farm(clock).pumps[0]
    first, second = served.handler.open_head(), served.handler.open_head()
    # Two mistakes are free (a mistyped key, the wrong pump) ...
    for seed in (1, 2):
        assert _refused(_guess(first, seed), ResultCode.AUTH_FAILED)
    pc, proof = _handshake(first, served.key)
    assert isinstance(proof, m.AuthProofResponse)  # a success starts the count over
    assert isinstance(_exchange(first, pc, m.EndSessionRequest()), m.Ack)
    for seed in (3, 4, 5):
        assert _refused(_guess(first, seed), ResultCode.AUTH_FAILED)
    # ... the third in a row makes AUTH_BEGIN wait 1 s, on every link, even with the key.
    refused = _guess(second, 6)
    assert _refused(refused, ResultCode.AUTH_BACKOFF)
    assert isinstance(refused, m.Refusal)
    assert "retry in 1 s" in refused.detail
    pc = ProgrammerConnection(seeded_nonce_source(9), key=served.key)
    _exchange(second, pc, m.IdentifyRequest())
    assert _refused(_exchange(second, pc, pc.auth_begin(m.Role.CLINICIAN)), ResultCode.AUTH_BACKOFF)
    clock.t_s += 1.0  # the documented recovery: wait the time the refusal names
    assert isinstance(_handshake(second, served.key, seed=10)[1], m.AuthProofResponse)


def test_the_backoff_doubles_up_to_a_minute_and_then_the_key_works() -> None:
    clock = FakeClock()
    served = _farm(clock).pumps[0]
    link = served.handler.open_head()
    waits: list[int] = []
    for seed in range(20):
        answer = _guess(link, seed)
        if _refused(answer, ResultCode.AUTH_BACKOFF):
            assert isinstance(answer, m.Refusal)
            waits.append(int(answer.detail.rsplit("retry in ", 1)[1].split()[0]))
            clock.t_s += waits[-1]
        else:
            assert _refused(answer, ResultCode.AUTH_FAILED)
    assert waits[:7] == [1, 2, 4, 8, 16, 32, 60]
    assert max(waits) == 60  # the most anyone waits, however long the guessing went on
    clock.t_s += 60.0
    _pc, proof = _handshake(link, served.key, seed=99)
    assert isinstance(proof, m.AuthProofResponse)


# --- a shared link: another transmitter's AUTH_BEGIN, and guessers of the other role -------------


def test_a_right_proof_for_a_replaced_challenge_is_not_a_failed_authentication() -> None:
    # A PTY is one link shared by every process that opens it: a keyless AUTH_BEGIN on it
    # replaces the clinician's challenge between its AUTH_BEGIN and its AUTH_PROOF.
    clock = FakeClock()
    served = _farm(clock).pumps[0]
    link = served.handler.open_head()
    flooder = ProgrammerConnection(seeded_nonce_source(8))
    for attempt in range(6):  # more than the free failures: none of these may count
        pc = ProgrammerConnection(seeded_nonce_source(100 + attempt), key=served.key)
        _exchange(link, pc, m.IdentifyRequest())
        assert isinstance(_exchange(link, pc, pc.auth_begin(m.Role.CLINICIAN)), m.AuthBeginResponse)
        for _ in range(3):  # within the challenges the link remembers
            jam = _exchange(link, flooder, flooder.auth_begin(m.Role.CLINICIAN))
            assert isinstance(jam, m.AuthBeginResponse)
        answer = _exchange(link, pc, pc.auth_proof())
        assert _refused(answer, ResultCode.CHALLENGE_REPLACED), answer
        assert isinstance(answer, m.Refusal)
        assert "replaced by a newer AUTH_BEGIN on this link" in answer.detail
    assert served.endpoint.auth_backoff.failures(m.Role.CLINICIAN) == 0
    # With no second transmitter the same key works at once: no backoff was earned.
    _pc, proof = _handshake(link, served.key, seed=200)
    assert isinstance(proof, m.AuthProofResponse)


def test_a_retransmitted_right_proof_for_a_replaced_challenge_does_not_count() -> None:
    # Under a flood the answer is slow, the programmer sends its AUTH_PROOF again, and the
    # flood's frames in between keep the link's duplicate cache from catching the copy.
    served = _served()
    link = served.handler.open_head()
    pc = ProgrammerConnection(seeded_nonce_source(5), key=served.key)
    _exchange(link, pc, m.IdentifyRequest())
    _exchange(link, pc, pc.auth_begin(m.Role.CLINICIAN))
    jammer = ProgrammerConnection(seeded_nonce_source(6))
    _exchange(link, jammer, jammer.auth_begin(m.Role.CLINICIAN))
    proof_frame = pc.send(pc.auth_proof(), 0.0)
    answers = []
    for _ in range(3):
        answers.append(_bodies(link(proof_frame)))
        _exchange(link, jammer, jammer.auth_begin(m.Role.CLINICIAN))
    for bodies in answers:
        assert len(bodies) == 1
        refusal = m.decode_response(m.MessageType.AUTH_PROOF, parse_body(bodies[0]).payload)
        assert _refused(refusal, ResultCode.CHALLENGE_REPLACED)
    assert served.endpoint.auth_backoff.failures(m.Role.CLINICIAN) == 0


def test_a_wrong_proof_for_a_replaced_challenge_still_counts() -> None:
    served = _served()
    link = served.handler.open_head()
    guesser = ProgrammerConnection(seeded_nonce_source(5), key=bytes(32))
    _exchange(link, guesser, m.IdentifyRequest())
    assert isinstance(
        _exchange(link, guesser, guesser.auth_begin(m.Role.CLINICIAN)), m.AuthBeginResponse
    )
    other = ProgrammerConnection(seeded_nonce_source(6))
    begun = _exchange(link, other, other.auth_begin(m.Role.CLINICIAN))
    assert isinstance(begun, m.AuthBeginResponse)
    # A guesser cannot dodge the count by naming a challenge it had replaced itself ...
    proof_frame = guesser.send(guesser.auth_proof(), 0.0)
    first = m.decode_response(
        m.MessageType.AUTH_PROOF, parse_body(_bodies(link(proof_frame))[0]).payload
    )
    assert _refused(first, ResultCode.AUTH_FAILED)
    assert served.endpoint.auth_backoff.failures(m.Role.CLINICIAN) == 1
    # ... and the challenge is spent: a second guess at it is one more failure.
    _exchange(link, other, other.auth_begin(m.Role.CLINICIAN))  # defeat the duplicate cache
    link(proof_frame)
    assert served.endpoint.auth_backoff.failures(m.Role.CLINICIAN) == 2


def _authenticate_jammed(
    link: Handler, pc: ProgrammerConnection, key: bytes, jams: int
) -> tuple[SessionDetails, int]:
    """Drive the library's handshake; another writer on ``link`` jams the first ``jams``.

    Returns the session and how many AUTH_BEGINs the library sent; raises what it raises.
    """
    jammer = ProgrammerConnection(seeded_nonce_source(6))
    operation = operations.authenticate(pc, m.Role.CLINICIAN, key)
    request = next(operation)
    begins = 0
    while True:
        answer = _exchange(link, pc, request)
        if isinstance(request, m.AuthBeginRequest):
            begins += 1
            if begins <= jams:
                _exchange(link, jammer, jammer.auth_begin(m.Role.CLINICIAN))
        try:
            if isinstance(answer, m.Refusal):
                request = operation.throw(PumpRefused(answer.result, answer.detail, request))
            else:
                request = operation.send(answer)
        except StopIteration as done:
            return done.value, begins


def test_the_programmer_library_begins_again_when_its_challenge_was_replaced() -> None:
    served = _served()
    link = served.handler.open_head()
    pc = ProgrammerConnection(seeded_nonce_source(5), key=served.key)
    _exchange(link, pc, m.IdentifyRequest())
    # The first two handshakes are jammed; the library tries HANDSHAKE_ATTEMPTS (3).
    session, begins = _authenticate_jammed(link, pc, served.key, jams=2)
    assert session.role is m.Role.CLINICIAN
    assert begins == operations.HANDSHAKE_ATTEMPTS
    assert isinstance(_exchange(link, pc, m.StopTherapyRequest()), m.Ack)
    assert served.endpoint.auth_backoff.failures(m.Role.CLINICIAN) == 0


def test_the_programmer_library_gives_up_after_bounded_attempts() -> None:
    served = _served()
    link = served.handler.open_head()
    pc = ProgrammerConnection(seeded_nonce_source(5), key=served.key)
    _exchange(link, pc, m.IdentifyRequest())
    with pytest.raises(AuthenticationError) as failed:
        _authenticate_jammed(link, pc, served.key, jams=1000)  # a flood
    assert failed.value.code is ResultCode.CHALLENGE_REPLACED
    assert "CHALLENGE_REPLACED" in str(failed.value)  # not "proof rejected": the key is right
    assert served.endpoint.auth_backoff.failures(m.Role.CLINICIAN) == 0


def test_a_patient_key_guesser_does_not_lock_out_the_clinician() -> None:
    clock = FakeClock()
    served = _farm(clock).pumps[0]
    link = served.handler.open_head()
    refused = 0
    for seed in range(10):
        guesser = ProgrammerConnection(seeded_nonce_source(seed), key=bytes(32))
        _exchange(link, guesser, m.IdentifyRequest())
        begun = _exchange(link, guesser, guesser.auth_begin(m.Role.PATIENT))
        if _refused(begun, ResultCode.AUTH_BACKOFF):
            refused += 1
            continue
        assert _refused(_exchange(link, guesser, guesser.auth_proof()), ResultCode.AUTH_FAILED)
    assert refused == 7  # the patient role is in backoff after its third failure ...
    pc, proof = _handshake(link, served.key, m.Role.CLINICIAN, seed=50)
    assert isinstance(proof, m.AuthProofResponse)  # ... the clinician's handshake is not
    assert isinstance(_exchange(link, pc, m.StopTherapyRequest()), m.Ack)
    assert served.endpoint.auth_backoff.failures(m.Role.PATIENT) == 3
    # and the clinician's success does not forgive the patient-role guesses
    assert isinstance(_exchange(link, pc, m.EndSessionRequest()), m.Ack)
    late = ProgrammerConnection(seeded_nonce_source(60), key=served.patient_key)
    _exchange(link, late, m.IdentifyRequest())
    assert _refused(_exchange(link, late, late.auth_begin(m.Role.PATIENT)), ResultCode.AUTH_BACKOFF)
