"""An RFC 2217 (Telnet COM port control) server: pyserial ``rfc2217://HOST:PORT``.

Built on :class:`~emulator.transports.tcp.TcpTransport` and pyserial's own
``serial.rfc2217.PortManager``, which handles the Telnet/RFC 2217 negotiation: incoming bytes
go through ``PortManager.filter`` (negotiation stripped), outgoing bytes through
``PortManager.escape`` (IAC doubled). Port settings the client sets (baud rate, parity, ...)
are accepted and acknowledged on an in-memory ``loop://`` port that carries no data; they do
not change the link emulation.

The filter is pyserial's with two guards against a hostile client (:class:`_BoundedPortManager`):
a subnegotiation (``IAC SB ... IAC SE``) holds at most :data:`MAX_SUBNEGOTIATION_BYTES`
(beyond that, the rest of it is discarded up to its ``IAC SE``, and it is ignored), and an
``IAC SE`` without an ``IAC SB``, or a malformed subnegotiation, is ignored instead of raising.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import serial
from serial import rfc2217

from itpump.emulator.transports.base import ByteHandler
from itpump.emulator.transports.link import LinkEmulator
from itpump.emulator.transports.tcp import TcpTransport, _TcpLink

log = logging.getLogger(__name__)

MAX_SUBNEGOTIATION_BYTES = 256
"""Longest subnegotiation kept. RFC 2217's own are at most 6 bytes; a SIGNATURE text is short."""


class _OncePerConnectionLog:
    """The logger pyserial's ``PortManager`` writes to, for one connection: its first
    WARNING is logged, later ones only counted (a client sending unescaped IAC bytes got one
    WARNING per byte, 52,326 lines for a 50 MB blast); the count is logged when the
    connection closes, as the TCP transport warns once about a client that does not read.
    Other levels pass through."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self.warnings = 0

    def warning(self, msg: str, *args: object) -> None:
        self.warnings += 1
        if self.warnings == 1:
            self._logger.warning(
                "RFC 2217: " + msg + " (later Telnet warnings on this connection are counted)",
                *args,
            )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)

    def closed(self) -> None:
        """Say how many warnings were not logged, if any."""
        if self.warnings > 1:
            self._logger.warning(
                "RFC 2217: %d more Telnet warnings on this connection were not logged "
                "(unescaped IAC bytes or unsupported options)",
                self.warnings - 1,
            )


class _BoundedPortManager(rfc2217.PortManager):  # type: ignore[misc]  # pyserial is untyped
    """pyserial's ``PortManager`` whose input filter holds a bounded subnegotiation."""

    # Set by pyserial's PortManager; declared for the type checker.
    mode: int
    suboption: bytearray | None
    telnet_command: bytes | None

    def __init__(self, serial_port: Any, connection: Any, logger: _OncePerConnectionLog) -> None:
        super().__init__(serial_port, connection, logger=logger)
        self.logger: _OncePerConnectionLog = logger
        self._overflowing = False  # the current subnegotiation outgrew the bound
        self.subnegotiation_overflows = 0
        self.subnegotiation_peak_bytes = 0

    def _keep(self, byte: bytes) -> None:
        """Add a byte to the current subnegotiation, up to the bound."""
        assert self.suboption is not None
        if len(self.suboption) < MAX_SUBNEGOTIATION_BYTES:
            self.suboption += byte
            self.subnegotiation_peak_bytes = max(
                self.subnegotiation_peak_bytes, len(self.suboption)
            )
        elif not self._overflowing:
            self._overflowing = True
            self.subnegotiation_overflows += 1
            self.logger.warning("subnegotiation over %d bytes discarded", MAX_SUBNEGOTIATION_BYTES)

    def _end_subnegotiation(self) -> None:
        suboption, overflowed = self.suboption, self._overflowing
        self.suboption = None
        self._overflowing = False
        if suboption is None:
            log.debug("RFC 2217: IAC SE without IAC SB ignored")
            return
        if overflowed:
            return
        try:
            self._telnet_process_subnegotiation(bytes(suboption))
        except Exception:
            # pyserial raises on some malformed options (e.g. a short baud rate): a client's
            # bad option must not end the link.
            self.logger.warning("malformed subnegotiation %r ignored", bytes(suboption)[:16])

    def filter(self, data: bytes) -> Iterator[bytes]:
        """Yield the data bytes of ``data``; Telnet commands are acted on (pyserial's logic)."""
        for byte in serial.iterbytes(data):
            if self.mode == rfc2217.M_NORMAL:
                if byte == rfc2217.IAC:
                    self.mode = rfc2217.M_IAC_SEEN
                elif self.suboption is not None:
                    self._keep(byte)
                else:
                    yield byte
            elif self.mode == rfc2217.M_IAC_SEEN:
                self.mode = rfc2217.M_NORMAL
                if byte == rfc2217.IAC:  # a doubled IAC is the data byte 0xFF
                    if self.suboption is not None:
                        self._keep(byte)
                    else:
                        yield byte
                elif byte == rfc2217.SB:
                    self.suboption = bytearray()
                    self._overflowing = False
                elif byte == rfc2217.SE:
                    self._end_subnegotiation()
                elif byte in (rfc2217.DO, rfc2217.DONT, rfc2217.WILL, rfc2217.WONT):
                    self.telnet_command = byte
                    self.mode = rfc2217.M_NEGOTIATE
                else:
                    self._telnet_process_command(byte)
            elif self.mode == rfc2217.M_NEGOTIATE:
                self._telnet_negotiate_option(self.telnet_command, byte)
                self.mode = rfc2217.M_NORMAL


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
        self._manager = _BoundedPortManager(
            self._settings, _RawWriter(self), logger=_OncePerConnectionLog(log.getChild("telnet"))
        )

    @property
    def subnegotiation_bytes(self) -> int:
        """Bytes held for an unfinished subnegotiation (at most MAX_SUBNEGOTIATION_BYTES)."""
        suboption = None if self._manager is None else self._manager.suboption
        return 0 if suboption is None else len(suboption)

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
        if self._manager is not None:
            self._manager.logger.closed()
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
