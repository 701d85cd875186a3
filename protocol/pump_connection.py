"""The pump's end of the link (sans-IO): it only ever answers.

Bytes go in, typed events come out, typed answers become bytes; no clock is read and no
port is opened. The whole pump side in one call per chunk of received bytes, with
``firmware`` answering each delivered request::

    port.write(pump.respond(chunk, firmware, now_s=clock()))

which is this loop (write it yourself only to do something else with the events)::

    pump.receive_data(chunk)
    while (event := pump.next_event()) is not None:
        if isinstance(event, RequestReceived):
            response = firmware_handler(event.request)   # ResponseBody or Refusal
            port.write(pump.send(response))
        elif isinstance(event, (AutoReply, ResentResponse)):
            port.write(event.data)      # answered by the protocol layer itself
        # SessionStarted / SessionEnded: notifications (log them, drop a pending program)

The session and request state machines (:mod:`protocol.state`) decide everything here.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from itpump.protocol import auth
from itpump.protocol.auth import NonceSource
from itpump.protocol.codes import ResultCode
from itpump.protocol.endpoint import _Endpoint, _Scope, _Session
from itpump.protocol.framing import MAX_BODY_SIZE, encode_frame
from itpump.protocol.header import (
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
    Role,
    encode_response,
    role_allows,
)
from itpump.protocol.state import (
    CHALLENGE_STATES,
    PUMP_SESSION_TRANSITIONS,
    SESSION_STATES,
    AuthBackoff,
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
    "DEFAULT_IDLE_TIMEOUT_S",
    "REPLACED_CHALLENGES_KEPT",
    "AutoReply",
    "PumpConnection",
    "PumpEvent",
    "PumpFirmware",
    "PumpIdentity",
    "RequestReceived",
    "ResentResponse",
    "SessionEnded",
    "SessionStarted",
]

_log = logging.getLogger(__name__)

DEFAULT_IDLE_TIMEOUT_S = 300
#: How many challenges a link remembers after a newer AUTH_BEGIN replaced them, so that a
#: right proof for one is answered CHALLENGE_REPLACED instead of counting as a failure.
#: Measured on a served PTY under a keyless flood of 30 AUTH_BEGINs a second: the paced
#: link's queue delayed the programmer's AUTH_PROOF by 2 to 5 s, past 64 replacements. At
#: 19 200 baud a link carries about 60 AUTH_BEGINs a second and its receive queue holds
#: 8.5 s, so 512 cover the longest turn a link can impose; a lookup is by session id and
#: only the matching challenge is verified (about 100 KiB per link at most).
REPLACED_CHALLENGES_KEPT = 512
#: IDENTIFY's ``firmware_version`` field (str8 of at most 16 bytes).
_FIRMWARE_VERSION_MAX_BYTES = 16


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
    def mac_key(self) -> auth.FrameMac | None:
        """Session key for the answer's MAC: only when the request's own MAC verified."""
        return None if self.session is None or self.counter is None else self.session.mac


# Looked up by the header's plain int, once per frame: without the Enum constructor (a Python
# call that raises for an unknown type); an unknown type finds nothing.
_MESSAGES_BY_TYPE: dict[int, MessageInfo] = {int(t): info for t, info in MESSAGES.items()}


def _response_frame(
    request_header: Header,
    response: Response,
    session_key: auth.FrameMac | None,
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


class PumpConnection(_Endpoint[PumpEvent]):
    """The pump's end of the link: it only ever answers.

    ``key`` is this pump's device key (at least 16 bytes), from which it derives the key of
    each role (:func:`protocol.auth.role_key`); ``nonce_source`` provides challenge
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
        auth_backoff: AuthBackoff | None = None,
    ) -> None:
        if len(key) < auth.MIN_KEY_SIZE:
            raise ValueError(f"pump key must be at least {auth.MIN_KEY_SIZE} bytes")
        self.identity = identity
        self.allow_unauthenticated = allow_unauthenticated
        self.idle_timeout_s = idle_timeout_s
        #: Failed authentications and the wait they impose; pass one object to every link
        #: of a pump so that a guesser cannot reset it by opening another link.
        self.auth_backoff = AuthBackoff() if auth_backoff is None else auth_backoff
        self._key = key
        self._nonces = nonce_source
        super().__init__("pump request", max_body_size)
        self._session_sm = StateMachine(
            "pump session", PumpSessionState.NONE, PUMP_SESSION_TRANSITIONS
        )
        self._session: _Session | None = None
        self._challenge: _Challenge | None = None
        # Challenges replaced by a later AUTH_BEGIN on this link, newest last (bounded).
        self._replaced: OrderedDict[int, _Challenge] = OrderedDict()
        self._version = PROTOCOL_VERSION
        self._link = _Scope()  # requests outside any session
        self._now_s: float | None = None  # last time given to receive_data()
        self._pending: tuple[Header, MessageInfo, _Context] | None = None
        self._busy: str | None = None  # set by respond(): another head holds the pump

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
        busy: str | None = None,
    ) -> bytes:
        """Feed ``data``, answer every request it completes with ``firmware``; the reply bytes.

        The pump's whole side of the link in one call: the session idles out first (when
        ``now_s`` is given), protocol-level answers and cached retransmissions go out as they
        are, and each delivered request is answered by ``firmware``. A firmware exception is
        logged and answered INTERNAL_ERROR, so the pump keeps answering; ``None`` from
        ``firmware`` means the pump fell silent doing it (power lost): the request is closed
        and nothing at all is sent for this input. ``on_event`` sees every event first (to
        log, record, or drop a half-done program transfer on a session change).

        ``busy`` (a detail text) says another telemetry head holds the pump: every request in
        ``data`` is then refused SESSION_BUSY without a MAC and nothing else happens.
        """
        if now_s is not None:
            self.expire_idle_session(now_s)
        self.receive_data(data, now_s)
        self._busy = busy
        try:
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
        finally:
            self._busy = None

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
        if self._busy is not None:
            self._refuse(header, ResultCode.SESSION_BUSY, self._busy)
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
        return _MESSAGES_BY_TYPE.get(msg_type)

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
            if not session.mac.verify(packet.signed, packet.mac):
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
        wait_s = self.auth_backoff.wait_s(request.role, self._now_s)
        if wait_s > 0:
            # Refused before a challenge exists: this link's challenge and session, if any,
            # stay as they were, and no key can be guessed until the wait is over.
            detail = (
                f"{self.auth_backoff.failures(request.role)} failed authentications as "
                f"{request.role.name}; "
                f"retry in {math.ceil(wait_s)} s"
            )
            self._auto(header, Refusal.make(ResultCode.AUTH_BACKOFF, detail), ctx, request)
            return
        session_id = 0
        while session_id == 0 or session_id == self.session_id:
            session_id = int.from_bytes(self._nonces(4), "big")
        challenge = _Challenge(
            request.role, session_id, request.programmer_nonce, self._nonces(NONCE_SIZE)
        )
        if self._challenge is not None:
            self._replaced[self._challenge.session_id] = self._challenge
            if len(self._replaced) > REPLACED_CHALLENGES_KEPT:
                self._replaced.popitem(last=False)  # the oldest goes
        self._fire_session(PumpSessionEvent.CHALLENGE, challenge=challenge)
        self._auto(header, AuthBeginResponse(session_id, challenge.pump_nonce), ctx, request)

    def _auth_proof(self, header: Header, request: AuthProofRequest, ctx: _Context) -> None:
        if self._answer_replaced(header, request, ctx):
            return
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
        # The role is bound twice: in the transcript and in the key, so only a holder of
        # this role's key can answer (a patient's key cannot open a clinician session).
        key = auth.role_key(self._key, challenge.role)
        if header.session_id != challenge.session_id or not auth.verify_proof(
            auth.programmer_proof(key, transcript), request.proof
        ):
            # One attempt per challenge, right or wrong.
            self._fire_session(PumpSessionEvent.PROOF_BAD)
            self.auth_backoff.failed(challenge.role, self._now_s)
            self._auto(header, Refusal.make(ResultCode.AUTH_FAILED, "proof rejected"), ctx, request)
            return
        session = _Session(
            challenge.session_id,
            challenge.role,
            auth.session_key(key, transcript),
            last_active_s=self._now_s,
        )
        previous = self._fire_session(PumpSessionEvent.PROOF_OK, session=session)
        self._replaced.clear()
        self.auth_backoff.succeeded(challenge.role)
        response = AuthProofResponse(auth.pump_proof(key, transcript), self.idle_timeout_s)
        self._auto(header, response, ctx, request)
        if previous is not None:
            self._events.append(SessionEnded(previous.session_id, "replaced by a new session"))
        self._events.append(SessionStarted(challenge.session_id, challenge.role))

    def _answer_replaced(self, header: Header, request: AuthProofRequest, ctx: _Context) -> bool:
        """Answer a proof naming a challenge a later AUTH_BEGIN on this link replaced.

        On a shared link (a PTY any process can write to) someone else's AUTH_BEGIN can
        replace a programmer's challenge between its AUTH_BEGIN and its AUTH_PROOF. A right
        proof for it is not a failed authentication: it is answered CHALLENGE_REPLACED and
        not counted, so the programmer is not told its key is wrong and a flood cannot push
        a clinician into backoff. A wrong one counts like any other and spends the challenge
        (one guess per challenge). A right one leaves it, so that the programmer's
        retransmission of that proof (a flood's frames in between defeat the duplicate
        cache) gets the same answer instead of counting; it never opens a session, so
        nothing is gained by sending it again. The current challenge is not touched.
        """
        replaced = self._replaced.get(header.session_id)
        current = self._outstanding()
        if replaced is None or (current is not None and current.session_id == replaced.session_id):
            return False  # (a new challenge may draw a replaced one's id: it takes precedence)
        transcript = auth.transcript(
            replaced.role,
            replaced.session_id,
            replaced.programmer_nonce,
            replaced.pump_nonce,
            self.identity.serial,
        )
        key = auth.role_key(self._key, replaced.role)
        if auth.verify_proof(auth.programmer_proof(key, transcript), request.proof):
            response = Refusal.make(
                ResultCode.CHALLENGE_REPLACED,
                "challenge replaced by a newer AUTH_BEGIN on this link; send AUTH_BEGIN again",
            )
        else:
            del self._replaced[replaced.session_id]
            self.auth_backoff.failed(replaced.role, self._now_s)
            response = Refusal.make(ResultCode.AUTH_FAILED, "proof rejected")
        self._auto(header, response, ctx, request)
        return True

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
