"""The transport interface: a byte handler on the pump side, and one connection per client.

A transport moves bytes and nothing else. The pump side is a :class:`ByteHandler`: a
synchronous callable that takes the bytes just received (any split: half a frame, three frames)
and returns the bytes to send back (possibly empty). The protocol engine plugs in there; the
transport knows nothing about frames.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from itpump.emulator.transports.link import LinkEmulator

log = logging.getLogger(__name__)

DEFAULT_MAX_PENDING_BYTES = 16 * 1024
"""Received bytes a paced link holds before handling them (8.5 s at 19 200 baud): far above
what a stop-and-wait programmer has in flight (one frame, at most about 2 KiB stuffed)."""


class ByteHandler(Protocol):
    """The pump side of a link: received bytes in, reply bytes out (synchronous)."""

    def __call__(self, data: bytes, /) -> bytes:
        """Consume ``data`` as received; return the bytes to send back (``b""`` for none)."""
        ...


@runtime_checkable
class LinkAware(Protocol):
    """Optional: a handler with ``link_closed`` is told when its client goes away."""

    def link_closed(self) -> None:
        """The client disconnected (TCP close, null-modem close, transport shutdown)."""
        ...


@runtime_checkable
class HeadFactory(Protocol):
    """Optional: a handler that gives every client link a byte handler of its own.

    A pump answers one telemetry head at a time; with a handler per link it can tell the
    links apart (whose session, whose link closed). The transport calls :meth:`open_head`
    once per client and serves that client with the result.
    """

    def open_head(self) -> ByteHandler:
        """A byte handler for one new client link (told ``link_closed`` when it goes)."""
        ...


class Connection:
    """One client's link to the handler, through the optional link emulation.

    ``feed`` is called by the backend with bytes as they are read. Without delays (no pacing,
    no turnaround) the handler runs at once and its reply is written synchronously; with
    delays, chunks are processed in order by a task that awaits the link's ``sleep``.

    A paced link holds at most ``max_pending_bytes`` received bytes that wait for their
    transmission time. A client that sends faster than the baud rate (a socket is not a
    UART) loses the excess, as a UART's receive FIFO overruns: the bytes are counted in
    :attr:`bytes_overrun` and the frames they belonged to fail their CRC. Memory stays
    bounded, and only this client's link is affected.
    """

    def __init__(
        self,
        handler: ByteHandler,
        write: Callable[[bytes], None],
        emulation: LinkEmulator | None = None,
        *,
        name: str = "",
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    ) -> None:
        if max_pending_bytes < 1:
            raise ValueError(f"max_pending_bytes must be >= 1, got {max_pending_bytes}")
        self._handler = handler
        self._write = write
        self._emulation = emulation
        self._name = name
        self._pending: collections.deque[bytes] = collections.deque()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self.max_pending_bytes = max_pending_bytes
        self.pending_bytes = 0  # received, waiting for their transmission time
        self.pending_peak_bytes = 0
        self.bytes_overrun = 0  # received while max_pending_bytes were waiting: dropped
        self.bytes_in = 0
        self.bytes_out = 0

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def feed(self, data: bytes) -> None:
        """Bytes received from the client."""
        if self._closed or not data:
            return
        emulation = self._emulation
        if emulation is None:
            self._respond_now(data)
            return
        data = emulation.inbound(data)
        if not data:
            return
        if self._worker is None and not emulation.has_delays:
            self._respond_now(data)
            return
        room = self.max_pending_bytes - self.pending_bytes
        if len(data) > room:
            if self.bytes_overrun == 0:  # once per link: a flood must not flood the log too
                log.warning(
                    "%s: client sends faster than the link's baud rate; excess bytes dropped",
                    self._name,
                )
            self.bytes_overrun += len(data) - room
            data = data[:room]
            if not data:
                return
        self._pending.append(data)
        self.pending_bytes += len(data)
        self.pending_peak_bytes = max(self.pending_peak_bytes, self.pending_bytes)
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work(emulation))

    async def drained(self) -> None:
        """Wait until every byte fed so far has been handled and its reply sent."""
        while self._worker is not None and not self._worker.done():
            await asyncio.wait({self._worker})

    def close(self) -> None:
        """Stop handling bytes; tell a :class:`LinkAware` handler."""
        if self._closed:
            return
        self._closed = True
        self.link_reset()

    def link_reset(self) -> None:
        """The client went away but the port stays (a PTY closed, to be reopened): forget
        what was in flight and tell a :class:`LinkAware` handler; keep serving."""
        self._pending.clear()
        self.pending_bytes = 0
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None
        if isinstance(self._handler, LinkAware):
            try:
                self._handler.link_closed()
            except Exception:
                log.exception("%s: link_closed handler failed", self._name)

    def _call_handler(self, data: bytes) -> bytes:
        self.bytes_in += len(data)
        try:
            return self._handler(data)
        except Exception:
            log.exception(
                "%s: byte handler failed on %d bytes; reply dropped", self._name, len(data)
            )
            return b""

    def _send(self, data: bytes) -> None:
        if not self._closed and data:
            self.bytes_out += len(data)
            self._write(data)

    def _respond_now(self, data: bytes) -> None:
        reply = self._call_handler(data)
        if reply:
            if self._emulation is not None:
                reply = self._emulation.outbound(reply)
            self._send(reply)

    async def _work(self, emulation: LinkEmulator) -> None:
        try:
            while self._pending and not self._closed:
                # The chunk stays counted while it is still arriving at the baud rate.
                data = self._pending[0]
                await emulation.receive_delay(len(data))
                if self.closed:
                    return
                self._pending.popleft()
                self.pending_bytes -= len(data)
                reply = self._call_handler(data)
                if reply:
                    await emulation.send(reply, self._send)
        finally:
            if self._worker is asyncio.current_task():
                self._worker = None


class PumpTransport(abc.ABC):
    """A pump-side endpoint that serves a :class:`ByteHandler` (python-can style: one per backend).

    Use as an async context manager, or call :meth:`start` and :meth:`close`.
    """

    def __init__(self, handler: ByteHandler, *, emulation: LinkEmulator | None = None) -> None:
        self.handler = handler
        self.emulation = emulation

    @abc.abstractmethod
    async def start(self) -> None:
        """Open the endpoint and start serving (needs a running event loop)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop serving and release every resource. Idempotent."""

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """What a programmer passes to ``serial.serial_for_url`` (or a descriptive name)."""

    def _new_connection(self, write: Callable[[bytes], None], name: str) -> Connection:
        handler = self.handler
        if isinstance(handler, HeadFactory):
            handler = handler.open_head()  # this client's own link to the pump
        return Connection(handler, write, self.emulation, name=name)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
