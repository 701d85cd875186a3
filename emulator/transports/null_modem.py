"""An in-memory link for tests: no descriptors, no sockets (like pymodbus' null modem)."""

from __future__ import annotations

import asyncio
import itertools
import logging

from itpump.emulator.transports.base import ByteHandler, Connection, PumpTransport
from itpump.emulator.transports.link import LinkEmulator

log = logging.getLogger(__name__)

_ids = itertools.count(1)


class NullModemClient:
    """The programmer's end of a :class:`NullModem`: ``write`` bytes, read from ``reader``."""

    def __init__(self, modem: NullModem) -> None:
        self.reader = asyncio.StreamReader()
        self._conn = modem._new_connection(self._deliver, name=f"{modem.url} client")
        self._modem = modem

    @property
    def connection(self) -> Connection:
        """The pump side of this client's link."""
        return self._conn

    @property
    def closed(self) -> bool:
        """True once either end closed."""
        return self._conn.closed

    def _deliver(self, data: bytes) -> None:
        if not self.reader.at_eof():
            self.reader.feed_data(data)

    def write(self, data: bytes) -> None:
        """Send bytes to the pump."""
        if self._conn.closed:
            raise ConnectionError("null modem closed")
        self._conn.feed(data)

    async def read_exactly(self, n: int) -> bytes:
        """Read exactly ``n`` bytes of reply."""
        return await self.reader.readexactly(n)

    def close(self) -> None:
        """Hang up."""
        self._conn.close()
        self.reader.feed_eof()
        self._modem._clients.discard(self)


class NullModem(PumpTransport):
    """Serve a :class:`ByteHandler` in memory; :meth:`connect` gives a client end."""

    def __init__(self, handler: ByteHandler, *, emulation: LinkEmulator | None = None) -> None:
        super().__init__(handler, emulation=emulation)
        self._name = f"null-modem://{next(_ids)}"
        self._clients: set[NullModemClient] = set()
        self._open = False

    @property
    def url(self) -> str:
        """A descriptive name (``null-modem://N``); not a pyserial URL."""
        return self._name

    async def start(self) -> None:
        """Accept clients."""
        self._open = True

    def connect(self) -> NullModemClient:
        """Open a client end (needs a running event loop)."""
        if not self._open:
            raise RuntimeError("NullModem not started")
        client = NullModemClient(self)
        self._clients.add(client)
        return client

    async def close(self) -> None:
        """Hang up every client."""
        self._open = False
        for client in list(self._clients):
            client.close()
