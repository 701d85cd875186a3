"""A Hypothesis state machine against a served pump's byte handler: sessions, wrong keys,
garbage, replayed frames, other telemetry heads and therapy commands in any order. The pump
never raises and never stops answering, a second head never disturbs a live session, and
therapy changes only when an authenticated command was acknowledged."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from itpump.emulator.farm import PortSpec, PumpFarm
from itpump.emulator.scenario import load_scenario
from itpump.firmware_stubs.firmware import TherapyState
from itpump.protocol import messages as m
from itpump.protocol.auth import seeded_nonce_source
from itpump.protocol.codes import ResultCode
from itpump.protocol.connection import ProgrammerConnection, ResponseReceived

FARM = PumpFarm(load_scenario("clinic-ready"), port=PortSpec("null"), speed=0.0)
SERVED = FARM.pumps[0]
FRESH = SERVED.snapshot()
WRONG_KEY = bytes(32)
FLAG = b"\x7e"


class SessionMachine(RuleBasedStateMachine):
    """Model: identified / authenticated, and whether therapy runs."""

    def __init__(self) -> None:
        super().__init__()
        SERVED.restore(FRESH)
        self._nonce_seed = 0
        self._new_programmer()
        self.running = True
        self.last_frame = b""

    def _new_programmer(self) -> None:
        self._nonce_seed += 1
        self.pc = ProgrammerConnection(seeded_nonce_source(self._nonce_seed), key=SERVED.key)
        self.identified = False
        self.authenticated = False

    def _exchange(self, request: m.Request) -> m.Response:
        frame = self.pc.send(request, 0.0)
        self.last_frame = frame
        self.pc.receive_data(SERVED.handler(frame))
        event = self.pc.next_event()
        assert isinstance(event, ResponseReceived), (request, event)
        return event.response

    @rule()
    def identify(self) -> None:
        response = self._exchange(m.IdentifyRequest())
        assert isinstance(response, m.IdentifyResponse)
        assert response.serial == SERVED.serial
        self.identified = True

    @precondition(lambda self: self.identified and not self.authenticated)
    @rule(right_key=st.booleans())
    def authenticate(self, right_key: bool) -> None:
        begun = self._exchange(self.pc.auth_begin(m.Role.CLINICIAN))
        assert isinstance(begun, m.AuthBeginResponse)
        proof = self._exchange(self.pc.auth_proof(None if right_key else WRONG_KEY))
        if right_key:
            assert isinstance(proof, m.AuthProofResponse)
            self.authenticated = True
        else:
            assert isinstance(proof, m.Refusal)
            assert proof.result is ResultCode.AUTH_FAILED
            self._new_programmer()  # this programmer's handshake state is spent

    @precondition(lambda self: self.identified)
    @rule()
    def interrogate(self) -> None:
        response = self._exchange(m.InterrogateRequest())
        if self.authenticated:
            assert isinstance(response, m.InterrogateResponse)
        else:
            assert isinstance(response, m.Refusal)
            assert response.result is ResultCode.NOT_AUTHENTICATED

    @precondition(lambda self: self.identified)
    @rule(stop=st.booleans())
    def stop_or_resume(self, stop: bool) -> None:
        request: m.Request = m.StopTherapyRequest() if stop else m.ResumeTherapyRequest()
        response = self._exchange(request)
        if not self.authenticated:
            assert isinstance(response, m.Refusal)
            assert response.result is ResultCode.NOT_AUTHENTICATED
        elif not isinstance(response, m.Refusal):
            self.running = not stop  # acknowledged: this is now the therapy state

    @rule(data=st.binary(max_size=300))
    def garbage(self, data: bytes) -> None:
        # A flag first and last: whatever the garbage is, the next frame starts clean.
        reply = SERVED.handler(FLAG + data + FLAG)
        assert isinstance(reply, bytes)

    @precondition(lambda self: bool(self.last_frame))
    @rule()
    def replay_last_frame(self) -> None:
        # A retransmission (or a recorded frame sent again): answered from the cache or
        # refused, never carried out twice.
        reply = SERVED.handler(self.last_frame)
        assert isinstance(reply, bytes)

    @rule(stop=st.booleans())
    def second_head_comes_and_goes(self, stop: bool) -> None:
        # Another client link: refused outright while this one holds a session, and its
        # leaving never ends this one's session.
        head = SERVED.handler.open_head()
        pc = ProgrammerConnection(seeded_nonce_source(1000 + self._nonce_seed), key=SERVED.key)
        request: m.Request = m.StopTherapyRequest() if stop else m.IdentifyRequest()
        pc.receive_data(head(pc.send(request, 0.0)))
        event = pc.next_event()
        assert isinstance(event, ResponseReceived), event
        if self.authenticated:
            assert isinstance(event.response, m.Refusal)
            assert event.response.result is ResultCode.SESSION_BUSY
        elif stop:
            assert isinstance(event.response, m.Refusal)
            assert event.response.result is ResultCode.NOT_AUTHENTICATED
        else:
            assert isinstance(event.response, m.IdentifyResponse)
        head.link_closed()

    @rule()
    def head_off_and_on(self) -> None:
        SERVED.lift_head()
        SERVED.place_head()
        self._new_programmer()

    @invariant()
    def therapy_changes_only_by_acknowledged_commands(self) -> None:
        state = SERVED.reported().therapy_state
        assert (state is not TherapyState.STOPPED) == self.running, state


TestSession = SessionMachine.TestCase
TestSession.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
