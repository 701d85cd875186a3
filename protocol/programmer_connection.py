"""The programmer's end of the link (sans-IO): builds requests, matches answers, retransmits.

The caller passes the current time, so timeouts need no clock::

    port.write(prog.send(InterrogateRequest(), now_s=clock()))
    ... prog.receive_data(port.read()); event = prog.next_event()
    ... if clock() >= prog.deadline_s: port.write(prog.poll(clock()))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from itpump.protocol import auth
from itpump.protocol.auth import NonceSource
from itpump.protocol.endpoint import _Endpoint, _Session
from itpump.protocol.framing import MAX_BODY_SIZE, encode_frame
from itpump.protocol.header import (
    MAX_COUNTER,
    PROTOCOL_VERSION,
    Header,
    HeaderError,
    Packet,
    build_body,
    parse_body,
)
from itpump.protocol.messages import (
    MESSAGES,
    NONCE_SIZE,
    RESPONSE_BIT,
    AuthBeginRequest,
    AuthBeginResponse,
    AuthProofRequest,
    AuthProofResponse,
    EndSessionRequest,
    IdentifyRequest,
    IdentifyResponse,
    Refusal,
    Request,
    Response,
    ResponseBody,
    Role,
    decode_response,
)
from itpump.protocol.state import (
    HANDSHAKE_TRANSITIONS,
    SEQ_MODULUS,
    HandshakeEvent,
    HandshakeState,
    LocalProtocolError,
    RequestEvent,
    StateMachine,
)
from itpump.protocol.wire import WireError

__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_TIMEOUT_S",
    "ProgrammerConnection",
    "ProgrammerEvent",
    "PumpAuthenticationFailed",
    "RequestTimedOut",
    "ResponseReceived",
    "SessionInfo",
    "recommended_timeout_s",
]

_log = logging.getLogger(__name__)

#: First response timeout. At the profiles' 19 200 baud the largest request and response
#: (about 1 KiB each) take 2 x 0.54 s on the wire; typical exchanges take a few tens of ms.
DEFAULT_TIMEOUT_S = 1.0
DEFAULT_BACKOFF = 2.0  # each retransmission waits twice as long as the previous attempt
DEFAULT_MAX_ATTEMPTS = 4  # first transmission + 3 retransmissions: 1 + 2 + 4 + 8 = 15 s
# A response frame is at most about 1100 bytes on the wire (1 KiB body, a little stuffing).
_LONGEST_RESPONSE_BYTES = 1100


def recommended_timeout_s(baud: int, request_bytes: int = 0) -> float:
    """First response timeout for a link at ``baud`` (10 bits per byte on a UART).

    Long enough for the request and the longest response to cross the link plus a margin
    for turnaround, never below :data:`DEFAULT_TIMEOUT_S`.
    """
    wire_s = 10 * (request_bytes + _LONGEST_RESPONSE_BYTES) / baud
    return max(DEFAULT_TIMEOUT_S, 0.25 + wire_s)


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """Programmer side: the answer to the outstanding request."""

    request: Request
    response: Response
    seq: int
    attempts: int  # 1 = answered at the first transmission

    @property
    def ok(self) -> bool:
        """Whether the request was accepted."""
        return not isinstance(self.response, Refusal)


@dataclass(frozen=True, slots=True)
class RequestTimedOut:
    """Programmer side: no valid answer after every attempt; the request may or may not
    have been carried out (interrogate to find out)."""

    request: Request
    seq: int
    attempts: int


@dataclass(frozen=True, slots=True)
class PumpAuthenticationFailed:
    """Programmer side: the pump accepted our proof but its own proof is wrong.

    Whoever answered does not know the pump key: no session is installed.
    """

    request: Request
    response: AuthProofResponse


ProgrammerEvent = ResponseReceived | RequestTimedOut | PumpAuthenticationFailed


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """The programmer's view of its authenticated session."""

    session_id: int
    role: Role


@dataclass(slots=True)
class _Outstanding:
    request: Request
    seq: int
    session_id: int
    frame: bytes
    deadline_s: float
    session_key: auth.FrameMac | None
    counter: int | None
    attempts: int = 1


class ProgrammerConnection(_Endpoint[ProgrammerEvent]):
    """The programmer's end of the link: builds requests, matches answers, retransmits.

    Stop-and-wait: one request at a time. Sequence numbers, the session id, the MAC counter
    and MACs are filled in here; the caller passes the current time to :meth:`send` and
    :meth:`poll` so that timeouts need no clock. ``key`` is the key of the role this
    programmer authenticates as (:func:`protocol.auth.role_key` of the pump's key).
    """

    _DROPPED = "response"

    def __init__(
        self,
        nonce_source: NonceSource,
        *,
        key: bytes | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        backoff: float = DEFAULT_BACKOFF,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        first_seq: int = 1,
        max_body_size: int = MAX_BODY_SIZE,
    ) -> None:
        if timeout_s <= 0 or backoff < 1 or max_attempts < 1:
            raise ValueError("timeout_s > 0, backoff >= 1 and max_attempts >= 1 are required")
        self._nonces = nonce_source
        self._key = key
        self.timeout_s = timeout_s
        self.backoff = backoff
        self.max_attempts = max_attempts
        super().__init__("programmer request", max_body_size)
        self._handshake = StateMachine("handshake", HandshakeState.IDLE, HANDSHAKE_TRANSITIONS)
        self._next_seq = first_seq % SEQ_MODULUS
        self._version = PROTOCOL_VERSION
        self._pump: IdentifyResponse | None = None
        self._session: _Session | None = None
        self._outstanding: _Outstanding | None = None
        # handshake material
        self._hs_role: Role | None = None
        self._hs_nonce = b""
        self._hs_session_id = 0
        self._hs_pump_nonce = b""
        self._hs_transcript = b""
        self._hs_key = b""

    # -- properties

    @property
    def busy(self) -> bool:
        """Whether a request is outstanding."""
        return self._outstanding is not None

    @property
    def deadline_s(self) -> float | None:
        """When :meth:`poll` must be called next, or ``None`` with nothing outstanding."""
        return None if self._outstanding is None else self._outstanding.deadline_s

    @property
    def pump(self) -> IdentifyResponse | None:
        """The pump's answer to the last successful IDENTIFY."""
        return self._pump

    @property
    def version(self) -> int:
        """Protocol version used in headers (selected by IDENTIFY)."""
        return self._version

    @property
    def session(self) -> SessionInfo | None:
        """The authenticated session, if any."""
        s = self._session
        return None if s is None else SessionInfo(s.session_id, s.role)

    @property
    def handshake_state(self) -> HandshakeState:
        """Where the authentication handshake stands."""
        return self._handshake.state

    # -- building requests

    def auth_begin(self, role: Role) -> AuthBeginRequest:
        """An AUTH_BEGIN for ``role`` with a fresh nonce (send it with :meth:`send`)."""
        return AuthBeginRequest(role, self._nonces(NONCE_SIZE))

    def auth_proof(self, key: bytes | None = None) -> AuthProofRequest:
        """The AUTH_PROOF answering the challenge just received.

        ``key`` is the pump's key for the role asked for in AUTH_BEGIN (default: the one
        given to the constructor); the pump's serial number comes from the last IDENTIFY.
        """
        if self._handshake.state is not HandshakeState.CHALLENGED or self._hs_role is None:
            raise LocalProtocolError("no challenge received: send AUTH_BEGIN first")
        if self._pump is None:
            raise LocalProtocolError("IDENTIFY first: the pump serial is part of the proof")
        pump_key = key if key is not None else self._key
        if pump_key is None:
            raise LocalProtocolError("no pump key")
        self._hs_key = pump_key
        self._hs_transcript = auth.transcript(
            self._hs_role,
            self._hs_session_id,
            self._hs_nonce,
            self._hs_pump_nonce,
            self._pump.serial,
        )
        return AuthProofRequest(auth.programmer_proof(pump_key, self._hs_transcript))

    def send(self, request: Request, now_s: float, *, seq: int | None = None) -> bytes:
        """Frame ``request`` (sequence number, session, MAC) and start its timer.

        Requests that need a session are authenticated when one is active, and sent plainly
        otherwise (a pump with ``allow_unauthenticated`` accepts them, others refuse).
        ``seq`` overrides the next sequence number (to test a pump's window handling);
        numbering continues after it.
        """
        if self._outstanding is not None:
            raise LocalProtocolError("a request is outstanding: wait for its response or timeout")
        info = MESSAGES[request.TYPE]
        if isinstance(request, AuthProofRequest) and not self._handshake.can(HandshakeEvent.PROVE):
            raise LocalProtocolError("AUTH_PROOF without a challenge")
        if seq is None:
            seq = self._next_seq
        elif not 0 <= seq < SEQ_MODULUS:
            raise ValueError(f"seq must be 0..{SEQ_MODULUS - 1}")
        version = 1 if isinstance(request, IdentifyRequest) else self._version
        session_id = 0
        key = counter = None
        if isinstance(request, AuthProofRequest):
            session_id = self._hs_session_id
        elif info.needs_session and self._session is not None:
            if self._session.counter >= MAX_COUNTER:
                raise LocalProtocolError("MAC counter exhausted: authenticate again")
            session_id = self._session.session_id
            key, counter = self._session.mac, self._session.counter + 1
        body = build_body(
            Header(version, request.TYPE, 0, seq, session_id),
            request.encode(),
            session_key=key,
            counter=counter,
        )
        frame = encode_frame(body)  # raises before any state changes if the body is too big
        # commit
        if isinstance(request, AuthBeginRequest):
            self._handshake.fire(HandshakeEvent.BEGIN)
            self._hs_role = request.role
            self._hs_nonce = request.programmer_nonce
        elif isinstance(request, AuthProofRequest):
            self._handshake.fire(HandshakeEvent.PROVE)
        if counter is not None:
            assert self._session is not None
            self._session.counter = counter
        self._next_seq = (seq + 1) % SEQ_MODULUS
        self._request.fire(RequestEvent.SEND)
        self._outstanding = _Outstanding(
            request, seq, session_id, frame, now_s + self.timeout_s, key, counter
        )
        self.stats.frames_out += 1
        return frame

    def poll(self, now_s: float) -> bytes:
        """Bytes to retransmit if the response timer has expired, else ``b""``.

        After the last attempt the request is given up and a :class:`RequestTimedOut`
        event is queued.
        """
        out = self._outstanding
        if out is None or now_s < out.deadline_s:
            return b""
        if out.attempts < self.max_attempts:
            out.attempts += 1
            out.deadline_s = now_s + self.timeout_s * self.backoff ** (out.attempts - 1)
            self.stats.retransmissions += 1
            self.stats.frames_out += 1
            # Byte-identical, so the pump recognises it and answers from its cache.
            return out.frame
        self._outstanding = None
        self._request.fire(RequestEvent.GIVE_UP)
        self.stats.timeouts += 1
        if isinstance(out.request, AuthBeginRequest | AuthProofRequest):
            self._handshake.fire(HandshakeEvent.FAIL)
        self._events.append(RequestTimedOut(out.request, out.seq, out.attempts))
        return b""

    def forget_session(self) -> None:
        """Drop the session locally (e.g. the pump answered NOT_AUTHENTICATED)."""
        self._session = None

    # -- receiving

    def receive_data(self, data: bytes) -> None:
        """Feed bytes received from the link, in any chunking."""
        self._deframer.receive_data(data)

    def next_event(self) -> ProgrammerEvent | None:
        """The next event, or ``None`` when more bytes (or a :meth:`poll`) are needed."""
        return self._next_queued()

    def _handle(self, body: bytes) -> None:
        out = self._outstanding
        try:
            packet = parse_body(body)
        except HeaderError as exc:
            self._drop(str(exc))
            return
        header = packet.header
        if not header.is_response:
            self._drop("request frame received by the programmer (echo?)")
            return
        if (
            out is None
            or header.seq != out.seq
            or header.msg_type != out.request.TYPE | RESPONSE_BIT
            or header.session_id != out.session_id
        ):
            self._drop(f"stale or unexpected response seq={header.seq}")
            return
        try:
            response = decode_response(out.request.TYPE, packet.payload)
        except WireError as exc:
            self._drop(f"malformed response: {exc}")
            return
        if not self._authentic(packet, out, response):
            return
        self._outstanding = None
        self._request.fire(RequestEvent.RESPONSE)
        self._after_response(out, response)

    def _authentic(self, packet: Packet, out: _Outstanding, response: Response) -> bool:
        if packet.header.has_mac:
            assert packet.mac is not None
            if out.session_key is None or packet.counter != out.counter:
                self._drop("MAC on a response to an unauthenticated request")
                return False
            if not out.session_key.verify(packet.signed, packet.mac):
                self._drop("response MAC does not verify")
                return False
            return True
        if out.session_key is not None and not isinstance(response, Refusal):
            # A success answer to an authenticated command must be authenticated itself;
            # unauthenticated refusals are accepted (they change nothing).
            self._drop("unauthenticated success response in a session")
            return False
        return True

    def _after_response(self, out: _Outstanding, response: Response) -> None:
        request = out.request
        event = ResponseReceived(request, response, out.seq, out.attempts)
        if isinstance(response, IdentifyResponse):
            self._pump = response
            self._version = response.selected_version
        elif isinstance(request, AuthBeginRequest):
            if isinstance(response, AuthBeginResponse):
                self._handshake.fire(HandshakeEvent.CHALLENGE)
                self._hs_session_id = response.session_id
                self._hs_pump_nonce = response.pump_nonce
            else:
                self._handshake.fire(HandshakeEvent.FAIL)
        elif isinstance(request, AuthProofRequest):
            if isinstance(response, AuthProofResponse):
                expected = auth.pump_proof(self._hs_key, self._hs_transcript)
                if not auth.verify_proof(expected, response.pump_proof):
                    self._handshake.fire(HandshakeEvent.FAIL)
                    self._events.append(PumpAuthenticationFailed(request, response))
                    return
                assert self._hs_role is not None
                self._handshake.fire(HandshakeEvent.DONE)
                self._session = _Session(
                    self._hs_session_id,
                    self._hs_role,
                    auth.session_key(self._hs_key, self._hs_transcript),
                )
            else:
                self._handshake.fire(HandshakeEvent.FAIL)
        elif isinstance(request, EndSessionRequest) and isinstance(response, ResponseBody):
            self._session = None
        self._events.append(event)
