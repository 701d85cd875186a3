"""An RFC 2217 (Telnet COM port control) server: pyserial ``rfc2217://HOST:PORT``.

Built on :class:`~emulator.transports.tcp.TcpTransport` and pyserial's own
``serial.rfc2217.PortManager``, which handles the Telnet/RFC 2217 negotiation: incoming bytes
go through ``PortManager.filter`` (negotiation stripped), outgoing bytes through
``PortManager.escape`` (IAC doubled). Port settings the client sets (baud rate, parity, ...)
are accepted and acknowledged on an in-memory ``loop://`` port that carries no data; they do
not change the link emulation.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import serial
from serial import rfc2217

from itpump.emulator.transports.base import ByteHandler
from itpump.emulator.transports.link import LinkEmulator
from itpump.emulator.transports.tcp import TcpTransport, _TcpLink

log = logging.getLogger(__name__)


class _RawWriter:
    """What PortManager calls ``connection``: writes negotiation bytes unescaped."""

    def __init__(self, link: _Rfc2217Link) -> None:
        self._link = link

    def write(self, data: bytes) -> None:
        self._link._write_raw(data)


class _Rfc2217Link(_TcpLink):
    def __init__(self, owner: TcpTransport) -> None:
        super().__init__(owner)
        self._settings: Any = None
        self._manager: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._settings = serial.serial_for_url("loop://", timeout=0)
        self._manager = rfc2217.PortManager(
            self._settings, _RawWriter(self), logger=log.getChild("telnet")
        )

    def encode(self, data: bytes) -> bytes:
        if self._manager is None:
            return data
        return b"".join(self._manager.escape(data))

    def decode(self, data: bytes) -> bytes:
        if self._manager is None:
            return data
        return b"".join(self._manager.filter(data))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._settings is not None:
            self._settings.close()
            self._settings = None
        self._manager = None


class Rfc2217Transport(TcpTransport):
    """Serve a :class:`ByteHandler` over RFC 2217; ``port=0`` picks a free port."""

    def __init__(
        self,
        handler: ByteHandler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        emulation: LinkEmulator | None = None,
    ) -> None:
        super().__init__(handler, host=host, port=port, emulation=emulation)

    @property
    def url(self) -> str:
        """``rfc2217://HOST:PORT`` for ``serial.serial_for_url``."""
        return f"rfc2217://{self.host}:{self.port}"

    def _make_link(self) -> _TcpLink:
        return _Rfc2217Link(self)
