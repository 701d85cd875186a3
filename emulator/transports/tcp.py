"""A TCP server a programmer opens with pyserial as ``socket://HOST:PORT``."""

from __future__ import annotations

import asyncio
import logging

from itpump.emulator.transports.base import ByteHandler, Connection, PumpTransport
from itpump.emulator.transports.link import LinkEmulator

log = logging.getLogger(__name__)


class _TcpLink(asyncio.Protocol):
    """One accepted client."""

    def __init__(self, owner: TcpTransport) -> None:
        self._owner = owner
        self._transport: asyncio.Transport | None = None
        self.conn: Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.conn = self._owner._new_connection(self._write, name=f"tcp {peer}")
        self._owner._links.add(self)
        log.info("TCP pump port %d: client %s connected", self._owner.port, peer)

    def _write(self, data: bytes) -> None:
        self._write_raw(self.encode(data))

    def _write_raw(self, data: bytes) -> None:
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def encode(self, data: bytes) -> bytes:
        """Pump bytes -> wire bytes (identity; RFC 2217 escapes IAC)."""
        return data

    def decode(self, data: bytes) -> bytes:
        """Wire bytes -> pump bytes (identity; RFC 2217 strips Telnet negotiation)."""
        return data

    def data_received(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.feed(self.decode(data))

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
