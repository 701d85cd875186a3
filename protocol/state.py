"""The session state machines, as explicit transition tables (the h11 way).

Two small machines per side, kept apart because they change for different reasons:

* the *request* machine (stop-and-wait): IDLE -> AWAITING_RESPONSE -> IDLE, and ERROR;
* the *session* machine: authentication handshake and the active session.

:mod:`protocol.pump_connection` and :mod:`protocol.programmer_connection` drive them, and
they are the authority: every decision a connection takes on its session or its pending
request reads a machine's state, and the data a state carries (the session, the outstanding
challenge, the pending request) exists exactly while the machine is in that state. Any
transition not in a table is a bug in the caller's use of the API and raises
:class:`LocalProtocolError`. Frames from the peer never raise: bad input is answered or
dropped before a transition is attempted.

As in h11, an unexpected exception while a connection processes input or output moves its
request machine to ERROR. Unlike h11's, the pump's ERROR is not terminal: a pump must never
go deaf, so it answers the request INTERNAL_ERROR and RECOVERs to IDLE (the session, if any,
stays as it was).

The pure rules on sequence numbers and counters are here too, so that they can be tested and
read on their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum, auto
from typing import Generic, TypeVar

__all__ = [
    "AUTH_BACKOFF_MAX_S",
    "AUTH_FREE_FAILURES",
    "CHALLENGE_STATES",
    "SEQ_WINDOW",
    "SESSION_STATES",
    "AuthBackoff",
    "HandshakeEvent",
    "HandshakeState",
    "LocalProtocolError",
    "PumpSessionEvent",
    "PumpSessionState",
    "RequestEvent",
    "RequestState",
    "SeqVerdict",
    "StateMachine",
    "auth_backoff_s",
    "classify_seq",
    "counter_is_fresh",
]


class LocalProtocolError(RuntimeError):
    """The caller used a connection object in a way the protocol does not allow."""


class _MachineEnum(Enum):
    """An Enum hashed by identity, in C: the machines look up ``(state, event)`` several times
    per frame, and Enum's own ``__hash__`` is a Python call. Members are singletons compared
    by identity, so identity hashing agrees with equality."""

    __hash__ = object.__hash__


S = TypeVar("S", bound=Enum)
E = TypeVar("E", bound=Enum)


class StateMachine(Generic[S, E]):
    """A current state and a table of allowed ``(state, event) -> new state`` transitions."""

    def __init__(self, name: str, initial: S, transitions: Mapping[tuple[S, E], S]) -> None:
        self.name = name
        self.state = initial
        self._transitions = transitions

    def can(self, event: E) -> bool:
        """Whether ``event`` is allowed in the current state."""
        return (self.state, event) in self._transitions

    def fire(self, event: E) -> S:
        """Apply ``event``; raises :class:`LocalProtocolError` if it is not allowed now."""
        try:
            self.state = self._transitions[(self.state, event)]
        except KeyError:
            raise LocalProtocolError(
                f"{self.name}: {event.name} not allowed in state {self.state.name}"
            ) from None
        return self.state


# --- request (both sides) -------------------------------------------------------------------


class RequestState(_MachineEnum):
    """Stop-and-wait: at most one request outstanding."""

    IDLE = auto()
    AWAITING_RESPONSE = auto()
    ERROR = auto()  # an unexpected exception; the pump answers INTERNAL_ERROR and recovers


class RequestEvent(_MachineEnum):
    """Programmer: SEND, then RESPONSE or GIVE_UP. Pump: SEND = request delivered, RESPONSE.

    ERROR: an unexpected exception (from any state). RECOVER: the pump answered it.
    """

    SEND = auto()
    RESPONSE = auto()
    GIVE_UP = auto()
    ERROR = auto()
    RECOVER = auto()


REQUEST_TRANSITIONS: Mapping[tuple[RequestState, RequestEvent], RequestState] = {
    (RequestState.IDLE, RequestEvent.SEND): RequestState.AWAITING_RESPONSE,
    (RequestState.AWAITING_RESPONSE, RequestEvent.RESPONSE): RequestState.IDLE,
    (RequestState.AWAITING_RESPONSE, RequestEvent.GIVE_UP): RequestState.IDLE,
    **{(state, RequestEvent.ERROR): RequestState.ERROR for state in RequestState},
    (RequestState.ERROR, RequestEvent.RECOVER): RequestState.IDLE,
}


# --- pump session -----------------------------------------------------------------------------


class PumpSessionState(_MachineEnum):
    """Whether a session is active and whether a challenge is outstanding.

    An outstanding challenge does not end the active session: an unauthenticated AUTH_BEGIN
    must not be enough to throw a clinician out.
    """

    NONE = auto()
    CHALLENGED = auto()
    ACTIVE = auto()
    ACTIVE_CHALLENGED = auto()


class PumpSessionEvent(_MachineEnum):
    """CHALLENGE: AUTH_BEGIN answered. PROOF_OK / PROOF_BAD: AUTH_PROOF checked. END."""

    CHALLENGE = auto()
    PROOF_OK = auto()
    PROOF_BAD = auto()
    END = auto()


_PS, _PE = PumpSessionState, PumpSessionEvent
PUMP_SESSION_TRANSITIONS: Mapping[tuple[PumpSessionState, PumpSessionEvent], PumpSessionState] = {
    (_PS.NONE, _PE.CHALLENGE): _PS.CHALLENGED,
    (_PS.CHALLENGED, _PE.CHALLENGE): _PS.CHALLENGED,  # a new challenge replaces the old one
    (_PS.CHALLENGED, _PE.PROOF_OK): _PS.ACTIVE,
    (_PS.CHALLENGED, _PE.PROOF_BAD): _PS.NONE,  # one attempt per challenge
    (_PS.ACTIVE, _PE.CHALLENGE): _PS.ACTIVE_CHALLENGED,
    (_PS.ACTIVE_CHALLENGED, _PE.CHALLENGE): _PS.ACTIVE_CHALLENGED,
    (_PS.ACTIVE_CHALLENGED, _PE.PROOF_OK): _PS.ACTIVE,  # the new session replaces the old
    (_PS.ACTIVE_CHALLENGED, _PE.PROOF_BAD): _PS.ACTIVE,
    (_PS.NONE, _PE.END): _PS.NONE,
    (_PS.CHALLENGED, _PE.END): _PS.NONE,
    (_PS.ACTIVE, _PE.END): _PS.NONE,
    (_PS.ACTIVE_CHALLENGED, _PE.END): _PS.NONE,
}


#: States in which the pump has an active session (and only these).
SESSION_STATES = frozenset({_PS.ACTIVE, _PS.ACTIVE_CHALLENGED})
#: States in which an AUTH_BEGIN challenge awaits its AUTH_PROOF (and only these).
CHALLENGE_STATES = frozenset({_PS.CHALLENGED, _PS.ACTIVE_CHALLENGED})


# --- programmer handshake ---------------------------------------------------------------------


class HandshakeState(_MachineEnum):
    """Programmer side of the authentication handshake."""

    IDLE = auto()
    BEGIN_SENT = auto()  # AUTH_BEGIN built, waiting for the challenge
    CHALLENGED = auto()  # challenge received, AUTH_PROOF may be built
    PROOF_SENT = auto()  # AUTH_PROOF built, waiting for the pump's proof


class HandshakeEvent(_MachineEnum):
    """Steps of the handshake as the programmer sees them."""

    BEGIN = auto()
    CHALLENGE = auto()
    PROVE = auto()
    DONE = auto()  # success
    FAIL = auto()  # refusal, timeout or a wrong pump proof


_HS, _HE = HandshakeState, HandshakeEvent
HANDSHAKE_TRANSITIONS: Mapping[tuple[HandshakeState, HandshakeEvent], HandshakeState] = {
    **{(state, _HE.BEGIN): _HS.BEGIN_SENT for state in _HS},  # starting over is always allowed
    (_HS.BEGIN_SENT, _HE.CHALLENGE): _HS.CHALLENGED,
    (_HS.CHALLENGED, _HE.PROVE): _HS.PROOF_SENT,
    (_HS.PROOF_SENT, _HE.DONE): _HS.IDLE,
    **{(state, _HE.FAIL): _HS.IDLE for state in _HS},
}


# --- sequence numbers and counters ------------------------------------------------------------

#: How far ahead of the last accepted sequence number a new request may be. A programmer that
#: gave up on requests (lost on the link) skips their numbers; 32 tolerates that many.
SEQ_WINDOW = 32
SEQ_MODULUS = 1 << 16


class SeqVerdict(_MachineEnum):
    """How a request's sequence number relates to the last accepted one."""

    NEW = auto()
    DUPLICATE = auto()  # same number as the last accepted request
    OUT_OF_WINDOW = auto()


def classify_seq(last_seq: int | None, seq: int, window: int = SEQ_WINDOW) -> SeqVerdict:
    """Classify ``seq`` against the last accepted sequence number (``None``: none yet)."""
    if last_seq is None:
        return SeqVerdict.NEW
    ahead = (seq - last_seq) % SEQ_MODULUS
    if ahead == 0:
        return SeqVerdict.DUPLICATE
    if ahead <= window:
        return SeqVerdict.NEW
    return SeqVerdict.OUT_OF_WINDOW


def counter_is_fresh(last_counter: int, counter: int) -> bool:
    """A MAC counter must be strictly above the last accepted one of the session."""
    return counter > last_counter


# --- failed authentications -------------------------------------------------------------------

#: Consecutive failed AUTH_PROOFs allowed without delay (a mistyped key, a wrong pump).
AUTH_FREE_FAILURES = 2
#: The longest wait after failed authentications: the documented recovery is to wait it out.
AUTH_BACKOFF_MAX_S = 60.0


def auth_backoff_s(failures: int) -> float:
    """How long AUTH_BEGIN is refused after ``failures`` consecutive failed AUTH_PROOFs.

    None for the first :data:`AUTH_FREE_FAILURES`, then 1 s doubling with each further
    failure, capped at :data:`AUTH_BACKOFF_MAX_S`: an online key guesser gets about one
    guess a minute, a clinician who mistyped waits seconds.
    """
    extra = failures - AUTH_FREE_FAILURES
    if extra <= 0:
        return 0.0
    return min(2.0 ** (extra - 1), AUTH_BACKOFF_MAX_S)


class AuthBackoff:
    """The pump's counts of consecutive failed authentications, one per role, for all links.

    A failure counts against the role its challenge asked for, and AUTH_BEGIN for a role
    waits only on that role's count: someone guessing the patient key (or failing with it)
    never delays a clinician's handshake, and the other way round. Times are the link's
    real clock (the caller's ``now_s``, as for the idle timeout). A success resets its
    role's count; a restart of the pump resets all (the counts are not persistent). Without
    a clock (``now_s`` None) failures are counted but nothing waits.
    """

    def __init__(self) -> None:
        # role -> (consecutive failures, AUTH_BEGIN refused until); bounded by the roles
        self._roles: dict[int, tuple[int, float | None]] = {}

    def failures(self, role: int) -> int:
        """Consecutive failed authentications for ``role``."""
        return self._roles.get(role, (0, None))[0]

    def failed(self, role: int, now_s: float | None) -> None:
        """An AUTH_PROOF for a ``role`` challenge was rejected."""
        failures = self.failures(role) + 1
        wait_s = auth_backoff_s(failures)
        self._roles[role] = (failures, None if now_s is None or wait_s == 0 else now_s + wait_s)

    def succeeded(self, role: int) -> None:
        """An AUTH_PROOF for ``role`` was accepted: that role's count starts over."""
        self._roles.pop(role, None)

    def wait_s(self, role: int, now_s: float | None) -> float:
        """Seconds until AUTH_BEGIN for ``role`` is answered again (0: now)."""
        until_s = self._roles.get(role, (0, None))[1]
        if until_s is None or now_s is None:
            return 0.0
        return max(0.0, until_s - now_s)
