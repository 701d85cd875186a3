"""Sans-IO connections for both ends of the telemetry link.

Neither class reads a clock, opens a port or starts a thread. Bytes go in with
``receive_data()``, typed events come out of ``next_event()``, and ``send()`` turns a typed
message into the bytes to write. The programmer side also gets the current time from its
caller (``now_s``) to decide when to retransmit.

Pump side, in one call per chunk of received bytes (``firmware`` answers each request)::

    port.write(pump.respond(chunk, firmware, now_s=clock()))

which is this loop (write it yourself only to do something else with the events)::

    pump.receive_data(chunk)
    while (event := pump.next_event()) is not None:
        if isinstance(event, RequestReceived):
            response = firmware_handler(event.request, event.role)   # ResponseBody or Refusal
            port.write(pump.send(response))
        elif isinstance(event, (AutoReply, ResentResponse)):
            port.write(event.data)      # answered by the protocol layer itself
        # SessionStarted / SessionEnded: notifications (log them, drop a pending program)

Programmer side::

    port.write(prog.send(InterrogateRequest(), now_s=clock()))
    ... prog.receive_data(port.read()); event = prog.next_event()
    ... if clock() >= prog.deadline_s: port.write(prog.poll(clock()))
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Generic, TypeVar

from itpump.protocol import auth
from itpump.protocol.auth import NonceSource
from itpump.protocol.codes import ResultCode
from itpump.protocol.framing import MAX_BODY_SIZE, Deframer, FramingStats, encode_frame
from itpump.protocol.header import (
    MAX_COUNTER,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    Header,
    HeaderError,
    Packet,
    build_body,
    parse_body,
    parse_header,
)
from itpump.protocol.messages import (
    MESSAGES,
    NAME_MAX_BYTES,
    NONCE_SIZE,
    RESPONSE_BIT,
    SERIAL_MAX_BYTES,
    Ack,
    AuthBeginRequest,
    AuthBeginResponse,
    AuthProofRequest,
    AuthProofResponse,
    Capability,
    EndSessionRequest,
    IdentifyRequest,
    IdentifyResponse,
    MessageInfo,
    MessageType,
    Refusal,
    Request,
    Response,
    ResponseBody,
    Role,
    decode_response,
    encode_response,
    role_allows,
)
from itpump.protocol.state import (
    CHALLENGE_STATES,
    HANDSHAKE_TRANSITIONS,
    PUMP_SESSION_TRANSITIONS,
    REQUEST_TRANSITIONS,
    SEQ_MODULUS,
    SESSION_STATES,
    HandshakeEvent,
    HandshakeState,
    LocalProtocolError,
    PumpSessionEvent,
    PumpSessionState,
    RequestEvent,
    RequestState,
    SeqVerdict,
    StateMachine,
    classify_seq,
    counter_is_fresh,
)
from itpump.protocol.wire import WireError

__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_IDLE_TIMEOUT_S",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_TIMEOUT_S",
    "AutoReply",
    "LinkStats",
    "ProgrammerConnection",
    "ProgrammerEvent",
    "PumpAuthenticationFailed",
    "PumpConnection",
    "PumpEvent",
    "PumpFirmware",
    "PumpIdentity",
    "RequestReceived",
    "RequestTimedOut",
    "ResentResponse",
    "ResponseReceived",
    "SessionEnded",
    "SessionInfo",
    "SessionStarted",
    "recommended_timeout_s",
]

_log = logging.getLogger(__name__)

#: First response timeout. At the profiles' 19 200 baud the largest request and response
#: (about 1 KiB each) take 2 x 0.54 s on the wire; typical exchanges take a few tens of ms.
DEFAULT_TIMEOUT_S = 1.0
DEFAULT_BACKOFF = 2.0  # each retransmission waits twice as long as the previous attempt
DEFAULT_MAX_ATTEMPTS = 4  # first transmission + 3 retransmissions: 1 + 2 + 4 + 8 = 15 s
DEFAULT_IDLE_TIMEOUT_S = 300
# A response frame is at most about 1100 bytes on the wire (1 KiB body, a little stuffing).
_LONGEST_RESPONSE_BYTES = 1100
#: IDENTIFY's ``firmware_version`` field (str8 of at most 16 bytes).
_FIRMWARE_VERSION_MAX_BYTES = 16


def recommended_timeout_s(baud: int, request_bytes: int = 0) -> float:
    """First response timeout for a link at ``baud`` (10 bits per byte on a UART).

    Long enough for the request and the longest response to cross the link plus a margin
    for turnaround, never below :data:`DEFAULT_TIMEOUT_S`.
    """
    wire_s = 10 * (request_bytes + _LONGEST_RESPONSE_BYTES) / baud
    return max(DEFAULT_TIMEOUT_S, 0.25 + wire_s)


# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """Pump side: a request that passed every protocol check; answer it with ``send()``."""

    request: Request
    seq: int
    role: Role
    session_id: int  # 0 on an unauthenticated link (``allow_unauthenticated``)
    authenticated: bool


@dataclass(frozen=True, slots=True)
class AutoReply:
    """Pump side: the protocol layer answered by itself; write ``data`` to the link.

    Used for IDENTIFY, AUTH_BEGIN, AUTH_PROOF and END_SESSION, and for every refusal decided
    by the protocol layer (bad MAC, replay, wrong role, malformed ...). ``request`` is
    ``None`` when the request could not be decoded.
    """

    data: bytes
    msg_type: int
    seq: int
    response: Response
    request: Request | None = None

    @property
    def result(self) -> ResultCode:
        """OK, or the reason for the refusal."""
        return self.response.result if isinstance(self.response, Refusal) else ResultCode.OK


@dataclass(frozen=True, slots=True)
class ResentResponse:
    """Pump side: a retransmitted request; ``data`` is the cached answer, nothing was redone."""

    data: bytes
    seq: int


@dataclass(frozen=True, slots=True)
class SessionStarted:
    """Pump side notification: an authenticated session began (after its AutoReply)."""

    session_id: int
    role: Role


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """Pump side notification: the session ended (END_SESSION, replaced, idle, link lost)."""

    session_id: int
    reason: str


PumpEvent = RequestReceived | AutoReply | ResentResponse | SessionStarted | SessionEnded

#: What answers the requests a pump delivers (see :meth:`PumpConnection.respond`): the
#: firmware's response or refusal, or ``None`` when the pump falls silent (lost power).
PumpFirmware = Callable[[Request], Response | None]


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


# --- shared -----------------------------------------------------------------------------------


@dataclass
class LinkStats:
    """Counters of one connection, for diagnostics (framing counters included)."""

    framing: FramingStats
    frames_in: int = 0  # frame bodies that passed the CRC
    frames_out: int = 0
    dropped: int = 0  # CRC-valid bodies ignored: too short, wrong direction, stale, bad MAC
    duplicates: int = 0  # pump: retransmissions answered from the cache
    retransmissions: int = 0  # programmer: frames sent again
    timeouts: int = 0  # programmer: requests given up
    internal_errors: int = 0  # pump: requests answered INTERNAL_ERROR (see the log)
    refusals: Counter[ResultCode] = field(default_factory=Counter)  # protocol-level

    def as_dict(self) -> dict[str, object]:
        """The counters as plain data (for logs and JSON output)."""
        out: dict[str, object] = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("framing", "refusals")
        }
        out["framing"] = self.framing.as_dict()
        out["refusals"] = {code.name: n for code, n in self.refusals.items()}
        return out


@dataclass(frozen=True, slots=True)
class PumpIdentity:
    """What a pump says about itself in IDENTIFY (from its device profile and firmware)."""

    serial: str
    model: str
    firmware_version: str
    capabilities: Capability
    max_flex_steps: int

    def __post_init__(self) -> None:
        # Checked here, when a pump is built, because IDENTIFY could not carry a longer
        # text: the pump would fail on every IDENTIFY instead of refusing to start. The
        # limits are UTF-8 bytes on the wire, not characters.
        for name, text, max_bytes in (
            ("serial", self.serial, SERIAL_MAX_BYTES),
            ("model", self.model, NAME_MAX_BYTES),
            ("firmware_version", self.firmware_version, _FIRMWARE_VERSION_MAX_BYTES),
        ):
            n_bytes = len(text.encode("utf-8"))
            if not 0 < n_bytes <= max_bytes:
                raise ValueError(
                    f"{name}={text!r} is {n_bytes} UTF-8 bytes; IDENTIFY carries 1..{max_bytes}"
                )


@dataclass(slots=True)
class _Scope:
    """Sequence window and retransmission cache of one scope: the link, or one session.

    Keeping them per scope means that frames outside a session (IDENTIFY, AUTH_BEGIN from
    anyone in range) can neither shift a session's window nor evict its cached answer.
    """

    last_seq: int | None = None  # None: the next sequence number is accepted as it is
    last_body: bytes | None = None
    last_response: bytes | None = None


@dataclass(slots=True)
class _Session:
    session_id: int
    role: Role
    key: bytes
    counter: int = 0  # pump: last accepted; programmer: last used
    scope: _Scope = field(default_factory=_Scope)
    last_active_s: float | None = None  # pump: time of the last accepted request, if known


@dataclass(frozen=True, slots=True)
class _Challenge:
    role: Role
    session_id: int
    programmer_nonce: bytes
    pump_nonce: bytes


@dataclass(frozen=True, slots=True)
class _Context:
    """Who sent an accepted request, and how to authenticate and cache the answer."""

    role: Role
    session: _Session | None
    counter: int | None
    scope: _Scope

    @property
    def mac_key(self) -> bytes | None:
        """Session key for the answer's MAC: only when the request's own MAC verified."""
        return None if self.session is None or self.counter is None else self.session.key


def _response_frame(
    request_header: Header,
    response: Response,
    session_key: bytes | None,
    counter: int | None,
) -> bytes:
    version = request_header.version if request_header.version in SUPPORTED_VERSIONS else 1
    header = Header(
        version,
        (request_header.msg_type | RESPONSE_BIT) & 0xFF,
        0,
        request_header.seq,
        request_header.session_id,
    )
    body = build_body(header, encode_response(response), session_key=session_key, counter=counter)
    return encode_frame(body)


_E = TypeVar("_E")


class _Endpoint(Generic[_E]):
    """What both ends share: frames in, ``_handle`` each body, events out (a queue)."""

    #: what a dropped frame is, for the debug log
    _DROPPED = "frame"

    def __init__(self, request_machine: str, max_body_size: int) -> None:
        self._deframer = Deframer(max_body_size)
        self.stats = LinkStats(self._deframer.stats)
        self._events: deque[_E] = deque()
        self._request = StateMachine(request_machine, RequestState.IDLE, REQUEST_TRANSITIONS)

    def _handle(self, body: bytes) -> None:
        raise NotImplementedError

    def _next_queued(self) -> _E | None:
        """The next event, handling buffered frames until one is queued; ``None``: none."""
        while not self._events:
            body = self._deframer.next_frame()
            if body is None:
                return None
            self.stats.frames_in += 1
            self._handle(body)
        return self._events.popleft()

    def _drop(self, why: str) -> None:
        self.stats.dropped += 1
        _log.debug("dropping %s: %s", self._DROPPED, why)


# --- pump -------------------------------------------------------------------------------------


class PumpConnection(_Endpoint[PumpEvent]):
    """The pump's end of the link: it only ever answers.

    ``key`` is this pump's secret (at least 16 bytes); ``nonce_source`` provides challenge
    nonces and session ids (``os.urandom`` on a device, a seeded source in simulations).
    With ``allow_unauthenticated`` the pump also obeys commands sent outside any session, as
    the CLINICIAN role, to test programmers written for older devices.
    """

    def __init__(
        self,
        identity: PumpIdentity,
        key: bytes,
        nonce_source: NonceSource,
        *,
        allow_unauthenticated: bool = False,
        idle_timeout_s: int = DEFAULT_IDLE_TIMEOUT_S,
        max_body_size: int = MAX_BODY_SIZE,
    ) -> None:
        if len(key) < auth.MIN_KEY_SIZE:
            raise ValueError(f"pump key must be at least {auth.MIN_KEY_SIZE} bytes")
        self.identity = identity
        self.allow_unauthenticated = allow_unauthenticated
        self.idle_timeout_s = idle_timeout_s
        self._key = key
        self._nonces = nonce_source
        super().__init__("pump request", max_body_size)
        self._session_sm = StateMachine(
            "pump session", PumpSessionState.NONE, PUMP_SESSION_TRANSITIONS
        )
        self._session: _Session | None = None
        self._challenge: _Challenge | None = None
        self._version = PROTOCOL_VERSION
        self._link = _Scope()  # requests outside any session
        self._now_s: float | None = None  # last time given to receive_data()
        self._pending: tuple[Header, MessageInfo, _Context] | None = None

    # -- public API

    @property
    def session_id(self) -> int | None:
        """Id of the active session, if any."""
        session = self._active()
        return None if session is None else session.session_id

    @property
    def role(self) -> Role | None:
        """Role of the active session, if any."""
        session = self._active()
        return None if session is None else session.role

    @property
    def session_state(self) -> PumpSessionState:
        """State of the session machine."""
        return self._session_sm.state

    @property
    def request_state(self) -> RequestState:
        """State of the request machine (AWAITING_RESPONSE: answer with :meth:`send`)."""
        return self._request.state

    # -- the machines are the authority: state-carried data is read and written only here

    def _active(self) -> _Session | None:
        """The active session: there is one exactly in the machine's SESSION_STATES."""
        if self._session_sm.state not in SESSION_STATES:
            return None
        assert self._session is not None
        return self._session

    def _outstanding(self) -> _Challenge | None:
        """The challenge awaiting its AUTH_PROOF: one exactly in CHALLENGE_STATES."""
        if self._session_sm.state not in CHALLENGE_STATES:
            return None
        assert self._challenge is not None
        return self._challenge

    def _fire_session(
        self,
        event: PumpSessionEvent,
        *,
        session: _Session | None = None,
        challenge: _Challenge | None = None,
    ) -> _Session | None:
        """Fire ``event`` and set the data the new state carries; returns the session the
        transition ended or replaced, if any.

        ``session`` is the new session (PROOF_OK), ``challenge`` the new challenge
        (CHALLENGE); otherwise a session the new state keeps is kept, and everything the new
        state does not carry is dropped.
        """
        before = self._active()
        state = self._session_sm.fire(event)
        if state in CHALLENGE_STATES:
            assert challenge is not None
            self._challenge = challenge
        else:
            self._challenge = None
        if state in SESSION_STATES:
            self._session = session if session is not None else before
            assert self._session is not None
        else:
            self._session = None
        return before if before is not None and before is not self._session else None

    def _pending_request(self) -> tuple[Header, MessageInfo, _Context]:
        """The request waiting for :meth:`send`: there is one exactly in AWAITING_RESPONSE."""
        if self._request.state is not RequestState.AWAITING_RESPONSE:
            raise LocalProtocolError("no request is waiting for a response")
        assert self._pending is not None
        return self._pending

    @property
    def version(self) -> int:
        """Protocol version negotiated by the last IDENTIFY."""
        return self._version

    def receive_data(self, data: bytes, now_s: float | None = None) -> None:
        """Feed bytes received from the link, in any chunking.

        ``now_s`` (the caller's clock, e.g. simulated time) stamps the session's activity for
        :meth:`expire_idle_session`; without it the idle timeout is not tracked.
        """
        if now_s is not None:
            self._now_s = now_s
        self._deframer.receive_data(data)

    @property
    def idle_deadline_s(self) -> float | None:
        """When the active session expires if no request arrives, or ``None``."""
        session = self._active()
        if session is None or session.last_active_s is None:
            return None
        return session.last_active_s + self.idle_timeout_s

    def expire_idle_session(self, now_s: float) -> bool:
        """End the session if it has been idle for ``idle_timeout_s``; returns whether it did.

        Queues a :class:`SessionEnded` event.
        """
        deadline = self.idle_deadline_s
        if deadline is None or now_s < deadline:
            return False
        self.end_session("idle timeout")
        return True

    def next_event(self) -> PumpEvent | None:
        """The next event, or ``None`` when more bytes are needed.

        After a :class:`RequestReceived`, call :meth:`send` before asking for the next event.
        """
        if self._request.state is RequestState.AWAITING_RESPONSE:
            raise LocalProtocolError("answer the pending request with send() first")
        if self._request.state is RequestState.ERROR:
            # The INTERNAL_ERROR answer itself could not be built: nothing can be sent for
            # that request, but the pump must go on answering the next ones.
            _log.error("pump %s: recovering from an unanswered error", self.identity.serial)
            self._pending = None
            self._request.fire(RequestEvent.RECOVER)
        return self._next_queued()

    def send(self, response: Response) -> bytes:
        """Encode the firmware's answer to the pending :class:`RequestReceived`."""
        header, info, ctx = self._pending_request()
        if not isinstance(response, (Refusal, info.response)):
            raise LocalProtocolError(
                f"{type(response).__name__} does not answer {info.code.name}; "
                f"expected {info.response.__name__} or Refusal"
            )
        try:
            frame = self._answer(header, response, ctx)
        except Exception as exc:
            # A value the wire cannot carry (or any bug in encoding it) must not leave the
            # request pending: the pump would never answer again.
            _log.exception("%s: the answer could not be encoded", info.code.name)
            return self._fail(header, ctx, f"{info.code.name} answer: {exc}")[0]
        self._pending = None
        self._request.fire(RequestEvent.RESPONSE)
        return frame

    def send_internal_error(self, detail: str = "") -> bytes:
        """Answer the pending request with INTERNAL_ERROR (the firmware failed on it).

        The request machine returns to idle, so the pump keeps answering; a retransmission
        of the same request gets the same answer, nothing is redone. ``detail`` travels to
        the programmer (at most 120 bytes): name what failed, never a secret.
        """
        header, _info, ctx = self._pending_request()
        return self._fail(header, ctx, detail)[0]

    def respond(
        self,
        data: bytes,
        firmware: PumpFirmware,
        *,
        now_s: float | None = None,
        on_event: Callable[[PumpEvent], object] | None = None,
    ) -> bytes:
        """Feed ``data``, answer every request it completes with ``firmware``; the reply bytes.

        The pump's whole side of the link in one call: the session idles out first (when
        ``now_s`` is given), protocol-level answers and cached retransmissions go out as they
        are, and each delivered request is answered by ``firmware``. A firmware exception is
        logged and answered INTERNAL_ERROR, so the pump keeps answering; ``None`` from
        ``firmware`` means the pump fell silent doing it (power lost): the request is closed
        and nothing at all is sent for this input. ``on_event`` sees every event first (to
        log, record, or drop a half-done program transfer on a session change).
        """
        if now_s is not None:
            self.expire_idle_session(now_s)
        self.receive_data(data, now_s)
        out: list[bytes] = []
        while (event := self.next_event()) is not None:
            if on_event is not None:
                on_event(event)
            if isinstance(event, AutoReply | ResentResponse):
                out.append(event.data)
            elif isinstance(event, RequestReceived):
                frame = self._firmware_answer(firmware, event.request)
                if frame is None:
                    return b""
                out.append(frame)
        return b"".join(out)

    def _firmware_answer(self, firmware: PumpFirmware, request: Request) -> bytes | None:
        """The reply frame to the pending request (``None``: the pump stays silent)."""
        name = type(request).__name__
        try:
            response = firmware(request)
        except Exception as exc:
            _log.exception(
                "pump %s: %s failed; answering INTERNAL_ERROR", self.identity.serial, name
            )
            return self.send_internal_error(f"{name} failed: {type(exc).__name__}: {exc}")
        if response is None:
            # Close the request (a retransmission later gets this answer from the cache).
            self.send_internal_error(f"{name}: no answer")
            return None
        try:
            return self.send(response)
        except LocalProtocolError as exc:
            # The firmware answered with the wrong message type: a bug, not the peer's fault.
            _log.exception(
                "pump %s: bad answer to %s; answering INTERNAL_ERROR", self.identity.serial, name
            )
            return self.send_internal_error(f"{name} failed: {exc}")

    def _fail(self, header: Header, ctx: _Context | None, detail: str) -> tuple[bytes, Refusal]:
        """An unexpected exception: ERROR, answer INTERNAL_ERROR, RECOVER to IDLE.

        With the context of an accepted request the answer is cached (a retransmission gets
        it, nothing is redone) and authenticated as that request was; without (the failure
        came before the request was accepted) it is a plain refusal. If even this answer
        cannot be built, the machine stays in ERROR and :meth:`next_event` recovers.
        """
        self._request.fire(RequestEvent.ERROR)
        self._pending = None
        self.stats.internal_errors += 1
        refusal = Refusal.make(ResultCode.INTERNAL_ERROR, detail)
        if ctx is None:
            self.stats.refusals[ResultCode.INTERNAL_ERROR] += 1
            frame = _response_frame(header, refusal, None, None)
            self.stats.frames_out += 1
        else:
            frame = self._answer(header, refusal, ctx)
        self._request.fire(RequestEvent.RECOVER)
        return frame, refusal

    def end_session(self, reason: str = "ended by the pump") -> None:
        """End the active session (idle timeout, telemetry link lost, ...)."""
        ended = self._fire_session(PumpSessionEvent.END)
        if ended is not None:
            self._events.append(SessionEnded(ended.session_id, reason))

    def link_lost(self) -> None:
        """The telemetry head was lifted: forget partial frames and end the session."""
        self._deframer.reset()
        self.end_session("telemetry link lost")

    # -- processing of one frame body

    def _handle(self, body: bytes) -> None:
        try:
            header = parse_header(body)
        except HeaderError as exc:
            self._drop(str(exc))
            return
        if header.is_response:
            # A response reaching the pump is an echo or another pump: answering it could
            # start an endless exchange, so it is ignored.
            self._drop("response frame received by the pump")
            return
        try:
            self._handle_request(header, body)
        except Exception as exc:
            # Frames from the peer never raise by design; if one does anyway (a bug, or a
            # value such as a serial number the wire cannot carry), the connection goes to
            # ERROR, answers INTERNAL_ERROR and recovers instead of failing on every frame.
            _log.exception("pump failed on seq %d type 0x%02X", header.seq, header.msg_type)
            frame, refusal = self._fail(header, None, f"{type(exc).__name__}: {exc}")
            self._events.append(AutoReply(frame, header.msg_type, header.seq, refusal))

    def _handle_request(self, header: Header, body: bytes) -> None:
        """Check and dispatch one request whose header parsed."""
        for scope in self._scopes():
            if body == scope.last_body and scope.last_response is not None:
                self.stats.duplicates += 1
                self._events.append(ResentResponse(scope.last_response, header.seq))
                return
        expected_version = 1 if header.msg_type == MessageType.IDENTIFY else self._version
        if header.version != expected_version:
            self._refuse(
                header,
                ResultCode.UNSUPPORTED_VERSION,
                f"version={header.version}; this message needs version {expected_version} "
                f"(pump speaks {', '.join(map(str, SUPPORTED_VERSIONS))})",
            )
            return
        try:
            packet = parse_body(body)
        except HeaderError as exc:
            self._refuse(header, ResultCode.MALFORMED, str(exc))
            return
        info = self._info(header.msg_type)
        if info is None:
            self._refuse(header, ResultCode.UNKNOWN_MESSAGE, f"type=0x{header.msg_type:02X}")
            return
        ctx = self._authorise(packet, info)
        if ctx is None:
            return
        if info.needs_session:
            verdict = classify_seq(ctx.scope.last_seq, header.seq)
            if verdict is not SeqVerdict.NEW:
                last = ctx.scope.last_seq if ctx.scope.last_seq is not None else 0
                self._refuse(
                    header,
                    ResultCode.SEQUENCE_ERROR,
                    f"seq={header.seq} {verdict.name.lower()}; last accepted {last}",
                    ctx,
                )
                return
        try:
            request = info.request.decode(packet.payload)
        except WireError as exc:
            self._refuse(header, ResultCode.MALFORMED, f"{info.code.name}: {exc}", ctx)
            return
        if not role_allows(ctx.role, request):
            self._refuse(
                header,
                ResultCode.ROLE_FORBIDDEN,
                f"{info.code.name} not allowed for role {ctx.role.name}",
                ctx,
            )
            return
        # Accepted: from here on the request counts, and a retransmission of these exact
        # bytes gets the cached answer instead of being carried out again.
        ctx.scope.last_body = body
        ctx.scope.last_response = None
        if info.needs_session:
            ctx.scope.last_seq = header.seq
        if ctx.session is not None and ctx.counter is not None:
            ctx.session.counter = ctx.counter
            ctx.session.last_active_s = self._now_s
        self._dispatch(header, info, ctx, request)

    def _scopes(self) -> tuple[_Scope, ...]:
        session = self._active()
        if session is None:
            return (self._link,)
        return (session.scope, self._link)

    @staticmethod
    def _info(msg_type: int) -> MessageInfo | None:
        try:
            return MESSAGES[MessageType(msg_type)]
        except ValueError:
            return None

    def _authorise(self, packet: Packet, info: MessageInfo) -> _Context | None:
        """Check session, MAC and counter; returns the sender's context or refuses."""
        header = packet.header
        if not info.needs_session:
            if header.has_mac:
                self._refuse(header, ResultCode.MALFORMED, f"{info.code.name} never carries a MAC")
                return None
            return _Context(Role.CLINICIAN, None, None, self._link)
        session = self._active()
        if header.has_mac:
            assert packet.mac is not None
            assert packet.counter is not None
            if session is None or header.session_id != session.session_id:
                self._refuse(
                    header, ResultCode.NOT_AUTHENTICATED, f"no session {header.session_id}"
                )
                return None
            if not auth.verify_mac(session.key, packet.signed, packet.mac):
                self._refuse(header, ResultCode.BAD_MAC, "MAC does not verify")
                return None
            if not counter_is_fresh(session.counter, packet.counter):
                self._refuse(
                    header,
                    ResultCode.REPLAYED,
                    f"counter={packet.counter}; must be above {session.counter}",
                )
                return None
            return _Context(session.role, session, packet.counter, session.scope)
        if self.allow_unauthenticated and header.session_id == 0:
            return _Context(Role.CLINICIAN, None, None, self._link)
        if session is not None and header.session_id == session.session_id:
            self._refuse(header, ResultCode.BAD_MAC, "MAC missing")
        else:
            self._refuse(header, ResultCode.NOT_AUTHENTICATED, f"{info.code.name} needs a session")
        return None

    def _dispatch(self, header: Header, info: MessageInfo, ctx: _Context, request: Request) -> None:
        if isinstance(request, IdentifyRequest):
            # IDENTIFY is how a programmer resynchronises after SEQUENCE_ERROR: the next
            # sequence number is accepted whatever it is (counters still stop replays).
            for scope in self._scopes():
                scope.last_seq = None
            self._identify(header, request, ctx)
        elif isinstance(request, AuthBeginRequest):
            self._auth_begin(header, request, ctx)
        elif isinstance(request, AuthProofRequest):
            self._auth_proof(header, request, ctx)
        elif isinstance(request, EndSessionRequest):
            self._auto(header, Ack(), ctx, request)
            if ctx.session is not None:
                # The session's cache goes with it; keep the answer where a retransmitted
                # END_SESSION will still find it.
                self._link.last_body = ctx.session.scope.last_body
                self._link.last_response = ctx.session.scope.last_response
                self.end_session("ended by the programmer")
        else:
            self._request.fire(RequestEvent.SEND)
            self._pending = (header, info, ctx)
            self._events.append(
                RequestReceived(
                    request,
                    header.seq,
                    ctx.role,
                    0 if ctx.session is None else ctx.session.session_id,
                    ctx.session is not None,
                )
            )

    def _identify(self, header: Header, request: IdentifyRequest, ctx: _Context) -> None:
        common = set(request.versions) & set(SUPPORTED_VERSIONS)
        if not common:
            self._auto(
                header,
                Refusal.make(
                    ResultCode.UNSUPPORTED_VERSION,
                    f"versions={list(request.versions)}; pump speaks {list(SUPPORTED_VERSIONS)}",
                ),
                ctx,
                request,
            )
            return
        self._version = max(common)
        ident = self.identity
        response = IdentifyResponse(
            selected_version=self._version,
            capabilities=ident.capabilities,
            auth_required=not self.allow_unauthenticated,
            max_body_bytes=self._deframer.max_body_size,
            max_flex_steps=ident.max_flex_steps,
            versions=SUPPORTED_VERSIONS,
            serial=ident.serial,
            model=ident.model,
            firmware_version=ident.firmware_version,
        )
        self._auto(header, response, ctx, request)

    def _auth_begin(self, header: Header, request: AuthBeginRequest, ctx: _Context) -> None:
        session_id = 0
        while session_id == 0 or session_id == self.session_id:
            session_id = int.from_bytes(self._nonces(4), "big")
        challenge = _Challenge(
            request.role, session_id, request.programmer_nonce, self._nonces(NONCE_SIZE)
        )
        self._fire_session(PumpSessionEvent.CHALLENGE, challenge=challenge)
        self._auto(header, AuthBeginResponse(session_id, challenge.pump_nonce), ctx, request)

    def _auth_proof(self, header: Header, request: AuthProofRequest, ctx: _Context) -> None:
        challenge = self._outstanding()
        if challenge is None:
            self._auto(
                header,
                Refusal.make(ResultCode.AUTH_FAILED, "no challenge outstanding: AUTH_BEGIN first"),
                ctx,
                request,
            )
            return
        transcript = auth.transcript(
            challenge.role,
            challenge.session_id,
            challenge.programmer_nonce,
            challenge.pump_nonce,
            self.identity.serial,
        )
        if header.session_id != challenge.session_id or not auth.verify_proof(
            auth.programmer_proof(self._key, transcript), request.proof
        ):
            # One attempt per challenge, right or wrong.
            self._fire_session(PumpSessionEvent.PROOF_BAD)
            self._auto(header, Refusal.make(ResultCode.AUTH_FAILED, "proof rejected"), ctx, request)
            return
        session = _Session(
            challenge.session_id,
            challenge.role,
            auth.session_key(self._key, transcript),
            last_active_s=self._now_s,
        )
        previous = self._fire_session(PumpSessionEvent.PROOF_OK, session=session)
        response = AuthProofResponse(auth.pump_proof(self._key, transcript), self.idle_timeout_s)
        self._auto(header, response, ctx, request)
        if previous is not None:
            self._events.append(SessionEnded(previous.session_id, "replaced by a new session"))
        self._events.append(SessionStarted(challenge.session_id, challenge.role))

    # -- answers

    def _answer(self, header: Header, response: Response, ctx: _Context) -> bytes:
        """Frame an answer to an accepted request and cache it for retransmissions."""
        frame = _response_frame(header, response, ctx.mac_key, ctx.counter)
        ctx.scope.last_response = frame
        self.stats.frames_out += 1
        return frame

    def _auto(self, header: Header, response: Response, ctx: _Context, request: Request) -> None:
        frame = self._answer(header, response, ctx)
        self._events.append(AutoReply(frame, header.msg_type, header.seq, response, request))

    def _refuse(
        self, header: Header, code: ResultCode, detail: str, ctx: _Context | None = None
    ) -> None:
        """Refuse at the protocol level: nothing changes, nothing is cached."""
        _log.debug(
            "refusing seq %d type 0x%02X: %s %s", header.seq, header.msg_type, code.name, detail
        )
        self.stats.refusals[code] += 1
        refusal = Refusal.make(code, detail)
        # The answer is authenticated only when the request's own MAC verified.
        frame = _response_frame(
            header,
            refusal,
            None if ctx is None else ctx.mac_key,
            None if ctx is None else ctx.counter,
        )
        self.stats.frames_out += 1
        self._events.append(AutoReply(frame, header.msg_type, header.seq, refusal))


# --- programmer -------------------------------------------------------------------------------


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
    session_key: bytes | None
    counter: int | None
    attempts: int = 1


class ProgrammerConnection(_Endpoint[ProgrammerEvent]):
    """The programmer's end of the link: builds requests, matches answers, retransmits.

    Stop-and-wait: one request at a time. Sequence numbers, the session id, the MAC counter
    and MACs are filled in here; the caller passes the current time to :meth:`send` and
    :meth:`poll` so that timeouts need no clock.
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

        ``key`` is the pump's key (default: the one given to the constructor); the pump's
        serial number comes from the last IDENTIFY.
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
            key, counter = self._session.key, self._session.counter + 1
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
            if not auth.verify_mac(out.session_key, packet.signed, packet.mac):
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
