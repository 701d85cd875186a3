"""A Hypothesis state machine against a served pump's byte handler: sessions, wrong keys,
garbage, replayed frames, other telemetry heads, patient keys and therapy commands in any
order. The pump never raises and never stops answering, a second head never disturbs a live
session, failed authentications back off as documented, and therapy changes only when an
authenticated command was acknowledged."""

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
from itpump.protocol.pump_connection import REPLACED_CHALLENGES_KEPT
from itpump.protocol.state import auth_backoff_s


class LinkClock:
    """The link's real clock, moved only by the state machine (backoff and idle timeouts)."""

    def __init__(self) -> None:
        self.t_s = 1000.0

    def __call__(self) -> float:
        return self.t_s


CLOCK = LinkClock()
FARM = PumpFarm(load_scenario("clinic-ready"), port=PortSpec("null"), speed=0.0, clock=CLOCK)
SERVED = FARM.pumps[0]
FRESH = SERVED.snapshot()
WRONG_KEY = bytes(32)
FLAG = b"\x7e"


class SessionMachine(RuleBasedStateMachine):
    """Model: identified / authenticated, and whether therapy runs."""

    def __init__(self) -> None:
        super().__init__()
        SERVED.restore(FRESH)  # a new endpoint: no session, no failed authentications
        self._nonce_seed = 0
        self.failures = 0  # consecutive failed authentications
        self.backoff_until_s = CLOCK.t_s
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
    @rule(key=st.sampled_from(["clinician", "patient", "wrong"]))
    def authenticate(self, key: str) -> None:
        begun = self._exchange(self.pc.auth_begin(m.Role.CLINICIAN))
        if CLOCK.t_s < self.backoff_until_s:
            # Too many failures: no challenge, whatever the key, until the wait is over.
            assert isinstance(begun, m.Refusal)
            assert begun.result is ResultCode.AUTH_BACKOFF
            self._new_programmer()
            return
        assert isinstance(begun, m.AuthBeginResponse)
        proof_key = {"clinician": None, "patient": SERVED.patient_key, "wrong": WRONG_KEY}[key]
        proof = self._exchange(self.pc.auth_proof(proof_key))
        if key == "clinician":
            assert isinstance(proof, m.AuthProofResponse)
            self.authenticated = True
            self.failures = 0
        else:
            # A patient's key is no clinician key: it fails like any wrong key.
            assert isinstance(proof, m.Refusal)
            assert proof.result is ResultCode.AUTH_FAILED
            self.failures += 1
            self.backoff_until_s = CLOCK.t_s + auth_backoff_s(self.failures)
            self._new_programmer()  # this programmer's handshake state is spent

    @precondition(lambda self: self.identified and not self.authenticated)
    @rule(jams=st.sampled_from([1, 2, 5, REPLACED_CHALLENGES_KEPT, REPLACED_CHALLENGES_KEPT + 1]))
    def handshake_jammed_on_the_same_link(self, jams: int) -> None:
        # Another writer on this very link (a shared PTY) sends AUTH_BEGINs between ours
        # and our proof: a right proof is CHALLENGE_REPLACED (while the link remembers the
        # challenge) and never counts as a failure; nothing changes on the pump.
        begun = self._exchange(self.pc.auth_begin(m.Role.CLINICIAN))
        if CLOCK.t_s < self.backoff_until_s:
            assert isinstance(begun, m.Refusal)
            assert begun.result is ResultCode.AUTH_BACKOFF
            self._new_programmer()
            return
        assert isinstance(begun, m.AuthBeginResponse)
        jammer = ProgrammerConnection(seeded_nonce_source(2000 + self._nonce_seed))
        for _ in range(jams):
            jammer.receive_data(
                SERVED.handler(jammer.send(jammer.auth_begin(m.Role.CLINICIAN), 0.0))
            )
            assert isinstance(jammer.next_event(), ResponseReceived)
        proof = self._exchange(self.pc.auth_proof())
        assert isinstance(proof, m.Refusal)
        if jams <= REPLACED_CHALLENGES_KEPT:
            assert proof.result is ResultCode.CHALLENGE_REPLACED
        else:
            # Forgotten: the pump cannot tell it from a guess, and counts it.
            assert proof.result is ResultCode.AUTH_FAILED
            self.failures += 1
            self.backoff_until_s = CLOCK.t_s + auth_backoff_s(self.failures)
        self._new_programmer()

    @precondition(lambda self: CLOCK.t_s < self.backoff_until_s)
    @rule()
    def wait_out_the_backoff(self) -> None:
        # Only without a session (failures happen only then), so no idle timeout is crossed.
        assert not self.authenticated
        CLOCK.t_s = self.backoff_until_s

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
