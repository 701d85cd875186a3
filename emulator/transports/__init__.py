"""Transports: move bytes between a programmer and a pump-side :class:`ByteHandler`.

One module per backend (python-can style): :mod:`~emulator.transports.pty` (raw PTY pair,
optional stable symlink; POSIX only, see ``PTY_AVAILABLE``), :mod:`~emulator.transports.tcp`
(pyserial ``socket://``),
:mod:`~emulator.transports.rfc2217` (pyserial ``rfc2217://``),
:mod:`~emulator.transports.null_modem` (in memory, for tests). Link emulation (pacing,
turnaround, corruption, drop) lives in :mod:`~emulator.transports.link` and nowhere else.
"""

from itpump.emulator.transports.base import ByteHandler, Connection, LinkAware, PumpTransport
from itpump.emulator.transports.link import (
    BITS_PER_BYTE,
    LinkConfig,
    LinkEmulator,
    pacing_schedule,
    transmit_time_s,
)
from itpump.emulator.transports.null_modem import NullModem, NullModemClient
from itpump.emulator.transports.pty import (
    PTY_AVAILABLE,
    PTY_UNAVAILABLE_MESSAGE,
    LinkPathError,
    PtyTransport,
    PtyUnavailableError,
    make_raw,
)
from itpump.emulator.transports.rfc2217 import Rfc2217Transport
from itpump.emulator.transports.tcp import TcpTransport

__all__ = [
    "BITS_PER_BYTE",
    "PTY_AVAILABLE",
    "PTY_UNAVAILABLE_MESSAGE",
    "ByteHandler",
    "Connection",
    "LinkAware",
    "LinkConfig",
    "LinkEmulator",
    "LinkPathError",
    "NullModem",
    "NullModemClient",
    "PtyTransport",
    "PtyUnavailableError",
    "PumpTransport",
    "Rfc2217Transport",
    "TcpTransport",
    "make_raw",
    "pacing_schedule",
    "transmit_time_s",
]
