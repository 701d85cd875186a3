"""Pieces shared by the blocking and the asyncio client: opening the port, reading what is
there, turning a protocol event into a result or an exception, and what both clients hold
(:class:`ClientCore`) and show (:class:`ClientBase`)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import serial

from itpump.programmer import operations as ops
from itpump.programmer.errors import AuthenticationError, LinkError, PumpRefused, PumpTimeout
from itpump.programmer.models import PumpInfo, SessionDetails
from itpump.programmer.operations import KeySource, Operation
from itpump.protocol import messages as m
from itpump.protocol.auth import NonceSource
from itpump.protocol.codes import ResultCode
from itpump.protocol.connection import (
    DEFAULT_BACKOFF,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_TIMEOUT_S,
    LinkStats,
    ProgrammerConnection,
    ProgrammerEvent,
    PumpAuthenticationFailed,
    RequestTimedOut,
    ResponseReceived,
)
from itpump.protocol.messages import MessageType, Role

_log = logging.getLogger("programmer")

#: How long one read of the port waits for the first byte. Reads return as soon as bytes
#: arrive, so this only bounds how late a retransmission can be (and the CPU spent waiting).
READ_SLICE_S = 0.02
_READ_CHUNK = 4096

Clock = Callable[[], float]


class Port(Protocol):
    """What the clients use of a pyserial port (``serial.SerialBase``)."""

    name: str | None
    port: str | None
    timeout: float | None

    @property
    def in_waiting(self) -> int:
        """Bytes ready to read."""
        ...

    def read(self, size: int = 1) -> bytes:
        """Up to ``size`` bytes, waiting at most ``timeout``."""
        ...

    def write(self, data: bytes, /) -> int | None:
        """Write ``data``."""
        ...

    def close(self) -> None:
        """Close the port."""
        ...


def open_port(url: str, read_slice_s: float, **options: Any) -> Port:
    """``serial.serial_for_url(url, timeout=read_slice_s)``; failures become :class:`LinkError`.

    Works with a device or PTY path, ``socket://HOST:PORT``, ``rfc2217://HOST:PORT``,
    ``loop://`` and every other pyserial URL handler. ``options`` go to pyserial (e.g.
    ``baudrate``; meaningless on a PTY or socket).
    """
    try:
        port: Port = serial.serial_for_url(url, timeout=read_slice_s, **options)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise LinkError(f"cannot open {url}: {exc}") from exc
    _no_delay(port)
    return port


def _no_delay(port: Port) -> None:
    """Send each frame at once on a TCP port (``socket://``, ``rfc2217://``).

    pyserial leaves Nagle's algorithm on. A retransmission follows a frame the pump did not
    answer, so TCP has no reply to carry its ACK: Nagle held the retransmission until the
    pump's delayed ACK, about 40 ms on Linux, on every retransmission.
    """
    sock = getattr(port, "_socket", None)
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def read_some(port: Port) -> bytes:
    """Whatever the port has, waiting up to its read timeout for the first byte.

    ``in_waiting`` is exact on a serial device or PTY, and only 0 or 1 on ``socket://``
    (readable or not): keep reading while it says more is there, up to a limit.
    """
    try:
        data = bytearray(port.read(max(1, port.in_waiting)))
        while data and len(data) < _READ_CHUNK:
            waiting = port.in_waiting
            if not waiting:
                break
            data += port.read(min(waiting, _READ_CHUNK - len(data)))
    except (serial.SerialException, OSError) as exc:
        raise LinkError(f"read from {port.name or port.port}: {exc}") from exc
    return bytes(data)


def write_all(port: Port, data: bytes) -> None:
    """Write ``data`` (a frame) to the port."""
    if not data:
        return
    try:
        port.write(data)
    except (serial.SerialException, OSError) as exc:
        raise LinkError(f"write to {port.name or port.port}: {exc}") from exc


def close_port(port: Port) -> None:
    """Close the port; errors are logged, not raised.

    pyserial's ``socket://`` handler sleeps 0.3 s in ``close()`` "in case of quick
    reconnects"; a programmer has no use for that pause, so its socket is closed here.
    """
    try:
        sock = getattr(port, "_socket", None)
        if isinstance(sock, socket.socket) and type(port).__module__.endswith("protocol_socket"):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            port._socket = None  # type: ignore[attr-defined]
            port.is_open = False  # type: ignore[attr-defined]
            return
        port.close()
    except (serial.SerialException, OSError) as exc:
        _log.debug("closing the port: %s", exc)


class ClientCore:
    """What both clients hold: the sans-IO connection, its settings and the clock."""

    def __init__(
        self,
        *,
        key: KeySource | None,
        timeout_s: float | None,
        max_attempts: int | None,
        backoff: float | None,
        nonce_source: NonceSource | None,
        clock: Clock,
    ) -> None:
        timeout_s, max_attempts, backoff = self.settings(timeout_s, max_attempts, backoff)
        nonces: NonceSource = os.urandom if nonce_source is None else nonce_source
        self.key = key
        self.clock = clock
        # A random first sequence number: a new programmer never collides with the bytes
        # a previous one left in the pump's retransmission cache.
        self.conn = ProgrammerConnection(
            nonces,
            timeout_s=timeout_s,
            max_attempts=max_attempts,
            backoff=backoff,
            first_seq=int.from_bytes(nonces(2), "big"),
        )
        self.info: PumpInfo | None = None
        self.session: SessionDetails | None = None
        self.started_s = 0.0

    @staticmethod
    def settings(
        timeout_s: float | None, max_attempts: int | None, backoff: float | None
    ) -> tuple[float, int, float]:
        """Protocol defaults for the settings left out."""
        return (
            DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s,
            DEFAULT_MAX_ATTEMPTS if max_attempts is None else max_attempts,
            DEFAULT_BACKOFF if backoff is None else backoff,
        )

    @property
    def stats(self) -> LinkStats:
        """Link counters (frames, retransmissions, timeouts, drops)."""
        return self.conn.stats

    def authenticate(self, role: Role, key: KeySource | None) -> Operation[SessionDetails]:
        """Authenticate as ``role`` with ``key``, or else the client's key."""
        return ops.authenticate(self.conn, role, self.key if key is None else key)

    def connect(self, role: Role, key: KeySource | None) -> Operation[PumpInfo]:
        """IDENTIFY, then authenticate with ``key``, or else the client's key, if any."""
        return ops.connect(self.conn, role, self.key if key is None else key)

    @contextlib.contextmanager
    def single_attempt(self) -> Iterator[None]:
        """Requests sent inside the block get one transmission (ending a session on close)."""
        conn = self.conn
        conn.max_attempts, saved = 1, conn.max_attempts
        try:
            yield
        finally:
            conn.max_attempts = saved

    def start(self, request: m.Request) -> bytes:
        """The frame for ``request``; starts its timer."""
        self.started_s = self.clock()
        _log.debug("-> %s", MessageType(request.TYPE).name)
        return self.conn.send(request, self.started_s)

    def advance(self) -> m.ResponseBody | bytes | None:
        """One step of waiting for the answer to the request sent by :meth:`start`.

        Returns the answer's body (or raises, see :meth:`outcome`), a frame to retransmit
        now, or ``None``: read from the port, feed ``conn.receive_data`` and call again.
        """
        conn = self.conn
        while True:
            event = conn.next_event()
            if event is not None:
                return self.outcome(event)
            now = self.clock()
            deadline = conn.deadline_s
            assert deadline is not None
            if now < deadline:
                return None
            frame = conn.poll(now)
            if frame:
                return frame
            # b"": that was the last attempt; the timeout event is queued now

    def outcome(self, event: ProgrammerEvent) -> m.ResponseBody:
        """The body of a successful answer, or the matching exception."""
        conn = self.conn
        if isinstance(event, RequestTimedOut):
            waited = self.clock() - self.started_s
            raise PumpTimeout(event.request, event.attempts, waited)
        if isinstance(event, PumpAuthenticationFailed):
            raise AuthenticationError(
                "the pump's proof is wrong: whoever answered does not know the key "
                "(no session established)"
            )
        assert isinstance(event, ResponseReceived)
        name = MessageType(event.request.TYPE).name
        if event.attempts > 1:
            _log.info("%s answered after %d attempts", name, event.attempts)
        response = event.response
        if isinstance(response, m.Refusal):
            _log.debug("<- %s refused: %s %s", name, response.result.name, response.detail)
            if response.result is ResultCode.NOT_AUTHENTICATED:
                conn.forget_session()
                self.session = None
            raise PumpRefused(response.result, response.detail, event.request)
        _log.debug("<- %s ok", name)
        if isinstance(response, m.IdentifyResponse):
            self.info = PumpInfo.from_wire(response)
        elif isinstance(response, m.AuthProofResponse):
            session = conn.session
            assert session is not None  # the connection checked the pump's proof
            self.session = SessionDetails(session.session_id, session.role, response.idle_timeout_s)
        elif isinstance(event.request, m.EndSessionRequest):
            self.session = None
        return response


class ClientBase:
    """What the blocking and the asyncio client show alike: the connection and its state."""

    _core: ClientCore

    @property
    def connection(self) -> ProgrammerConnection:
        """The sans-IO protocol connection (sequence numbers, session, statistics)."""
        return self._core.conn

    @property
    def pump(self) -> PumpInfo | None:
        """The pump's answer to the last IDENTIFY."""
        return self._core.info

    @property
    def session(self) -> SessionDetails | None:
        """The authenticated session, if any."""
        return self._core.session

    @property
    def stats(self) -> LinkStats:
        """Link counters: frames, retransmissions, timeouts, dropped frames."""
        return self._core.stats
