"""A TCP server a programmer opens with pyserial as ``socket://HOST:PORT``."""

from __future__ import annotations

import asyncio
import logging

from itpump.emulator.transports.base import ByteHandler, Connection, PumpTransport
from itpump.emulator.transports.link import LinkEmulator

log = logging.getLogger(__name__)

WRITE_BUFFER_HIGH_BYTES = 64 * 1024
"""Unsent reply bytes at which the server stops reading a client (back-pressure): a client
that does not read its answers cannot make the pump produce more."""
WRITE_BUFFER_LOW_BYTES = 16 * 1024
"""Unsent reply bytes below which reading resumes."""
MAX_WRITE_BUFFER_BYTES = 1024 * 1024
"""Hard bound on unsent reply bytes per client: a write that would go beyond it drops that
client's connection (the replies of one read can overshoot the high-water mark)."""


class _TcpLink(asyncio.Protocol):
    """One accepted client."""

    def __init__(self, owner: TcpTransport) -> None:
        self._owner = owner
        self._transport: asyncio.Transport | None = None
        self._reading_paused = False
        self.conn: Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.set_write_buffer_limits(WRITE_BUFFER_HIGH_BYTES, WRITE_BUFFER_LOW_BYTES)
        peer = transport.get_extra_info("peername")
        self.conn = self._owner._new_connection(self._write, name=f"tcp {peer}")
        self._owner._links.add(self)
        log.info("TCP pump port %d: client %s connected", self._owner.port, peer)

    def _write(self, data: bytes) -> None:
        self._write_raw(self.encode(data))

    def _write_raw(self, data: bytes) -> None:
        transport = self._transport
        if not data or transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() + len(data) > MAX_WRITE_BUFFER_BYTES:
            log.warning(
                "TCP pump port %d: client not reading (%d reply bytes unsent); disconnecting it",
                self._owner.port,
                transport.get_write_buffer_size(),
            )
            transport.abort()
            return
        transport.write(data)

    @property
    def write_buffer_bytes(self) -> int:
        """Reply bytes written but not yet taken by the client's socket."""
        transport = self._transport
        return 0 if transport is None else transport.get_write_buffer_size()

    @property
    def reading_paused(self) -> bool:
        """True while the client is not read because it does not read its replies."""
        return self._reading_paused

    def pause_writing(self) -> None:
        # Back-pressure: stop reading a client that does not read; its requests wait in
        # its own socket buffers, not in our memory.
        self._reading_paused = True
        if self._transport is not None:
            self._transport.pause_reading()
        log.debug("TCP pump port %d: client not reading; reading paused", self._owner.port)

    def resume_writing(self) -> None:
        self._reading_paused = False
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def encode(self, data: bytes) -> bytes:
        """Pump bytes -> wire bytes (identity; RFC 2217 escapes IAC)."""
        return data

    def decode(self, data: bytes) -> bytes:
        """Wire bytes -> pump bytes (identity; RFC 2217 strips Telnet negotiation)."""
        return data

    def data_received(self, data: bytes) -> None:
        if self.conn is None:
            return
        try:
            decoded = self.decode(data)
        except Exception:
            # Whatever a client sends must cost at most its own connection.
            log.exception("TCP pump port %d: undecodable input; disconnecting", self._owner.port)
            self.abort()
            return
        self.conn.feed(decoded)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.conn.close()
        self._owner._links.discard(self)
        self._transport = None
        log.info("TCP pump port %d: client disconnected", self._owner.port)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


class TcpTransport(PumpTransport):
    """Serve a :class:`ByteHandler` on TCP. ``port=0`` picks a free port (see :attr:`port`).

    Every accepted client gets its own :class:`Connection` on the same handler (one pump).
    """

    def __init__(
        self,
        handler: ByteHandler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        emulation: LinkEmulator | None = None,
    ) -> None:
        super().__init__(handler, emulation=emulation)
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._server: asyncio.Server | None = None
        self._links: set[_TcpLink] = set()

    @property
    def port(self) -> int:
        """The bound port."""
        if self._port is None:
            raise RuntimeError("TcpTransport not started")
        return self._port

    @property
    def url(self) -> str:
        """``socket://HOST:PORT`` for ``serial.serial_for_url``."""
        return f"socket://{self.host}:{self.port}"

    @property
    def connections(self) -> list[Connection]:
        """The connections of the clients currently connected."""
        return [link.conn for link in self._links if link.conn is not None]

    @property
    def links(self) -> list[_TcpLink]:
        """The socket side of each connected client (write buffer, back-pressure state)."""
        return list(self._links)

    async def start(self) -> None:
        """Bind and listen."""
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._make_link, self.host, self._requested_port)
        self._port = int(self._server.sockets[0].getsockname()[1])
        log.info("TCP pump port on %s", self.url)

    def _make_link(self) -> _TcpLink:
        return _TcpLink(self)

    async def close(self) -> None:
        """Stop listening and drop every client."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for link in list(self._links):
            link.abort()
        await server.wait_closed()
        # Let the aborted transports run connection_lost.
        await asyncio.sleep(0)
        log.info("TCP pump port %s closed", self._port)
