"""Transports: move bytes between a programmer and a pump-side :class:`ByteHandler`.

One module per backend (python-can style): :mod:`~emulator.transports.pty` (raw PTY pair,
optional stable symlink), :mod:`~emulator.transports.tcp` (pyserial ``socket://``),
:mod:`~emulator.transports.rfc2217` (pyserial ``rfc2217://``),
:mod:`~emulator.transports.null_modem` (in memory, for tests). Link emulation (pacing,
turnaround, corruption, drop) lives in :mod:`~emulator.transports.link` and nowhere else.
"""

from emulator.transports.base import ByteHandler, Connection, LinkAware, PumpTransport
from emulator.transports.link import (
    BITS_PER_BYTE,
    LinkConfig,
    LinkEmulator,
    pacing_schedule,
    transmit_time_s,
)
from emulator.transports.null_modem import NullModem, NullModemClient
from emulator.transports.pty import LinkPathError, PtyTransport, make_raw
from emulator.transports.rfc2217 import Rfc2217Transport
from emulator.transports.tcp import TcpTransport

__all__ = [
    "BITS_PER_BYTE",
    "ByteHandler",
    "Connection",
    "LinkAware",
    "LinkConfig",
    "LinkEmulator",
    "LinkPathError",
    "NullModem",
    "NullModemClient",
    "PtyTransport",
    "PumpTransport",
    "Rfc2217Transport",
    "TcpTransport",
    "make_raw",
    "pacing_schedule",
    "transmit_time_s",
]
