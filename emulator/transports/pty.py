"""A pseudo-terminal pair in raw mode: the slave path is the pump's "serial port".

Any program opens :attr:`PtyTransport.path` (or the stable symlink) like a serial device. The
slave side is raw (no echo, no CR/LF rewriting, 8 bits, no flow control; the settings stay
with the pair while the master is open, across client opens). We do not keep a slave
descriptor open ourselves: reading the master then fails with EIO whenever no client has the
port open, which is how a client closing the port is seen. A client that sent something and
closed the port has gone: the pump is told (its telemetry session ends, as when a head is
lifted), so whoever opens the port next starts afresh. While nobody has it open, the master
is polled every 50 ms. Baud rate means nothing on a PTY: pacing comes from the link
emulation.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from pathlib import Path

from itpump.emulator.transports.base import ByteHandler, Connection, PumpTransport
from itpump.emulator.transports.link import LinkEmulator

# termios and tty exist on POSIX systems only. Without them (Windows) this module must still
# import, so that the TCP and RFC 2217 transports (and the farm) work; asking for a PTY then
# raises PtyUnavailableError instead.
try:
    import termios
    import tty
except ImportError:
    PTY_AVAILABLE = False
else:
    PTY_AVAILABLE = True

#: What a user is told when asking for a PTY where there is none.
PTY_UNAVAILABLE_MESSAGE = "PTY ports need a POSIX system; use --port tcp:PORT or rfc2217:PORT"

log = logging.getLogger(__name__)


class PtyUnavailableError(RuntimeError):
    """A PTY was asked for on a system without POSIX terminals (no termios)."""

    def __init__(self) -> None:
        super().__init__(PTY_UNAVAILABLE_MESSAGE)


def _require_pty() -> None:
    if not PTY_AVAILABLE:
        raise PtyUnavailableError


_READ_SIZE = 65536
_MAX_BACKLOG = 1 << 20
_EIO_RETRY_S = 0.05


def make_raw(fd: int) -> None:
    """Put a terminal descriptor in raw mode (cfmakeraw): no echo, no CR/LF rewriting, 8N1.

    Raises :class:`PtyUnavailableError` where there is no termios.
    """
    _require_pty()
    tty.setraw(fd, termios.TCSANOW)
    attrs = termios.tcgetattr(fd)
    attrs[0] &= ~(
        termios.IGNBRK
        | termios.BRKINT
        | termios.PARMRK
        | termios.ISTRIP
        | termios.INLCR
        | termios.IGNCR
        | termios.ICRNL
        | termios.IXON
        | termios.IXOFF
    )
    attrs[1] &= ~termios.OPOST
    attrs[2] &= ~(termios.CSIZE | termios.PARENB)
    attrs[2] |= termios.CS8 | termios.CREAD | termios.CLOCAL
    attrs[3] &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
    attrs[6][termios.VMIN] = 1
    attrs[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


class LinkPathError(ValueError):
    """A symlink path that cannot be used (exists as a real file, or its directory is missing)."""


def _install_symlink(link: Path, target: str) -> None:
    """Point ``link`` at ``target``, replacing any existing *symlink* atomically.

    Anything else at that path (a file, a directory) is never replaced: a mistyped --link
    must not destroy a user's file.
    """
    if os.path.lexists(link) and not link.is_symlink():
        raise LinkPathError(f"{link} exists and is not a symlink; choose another link path")
    if not link.parent.is_dir():
        raise LinkPathError(f"directory {link.parent} does not exist (link path {link})")
    tmp = link.with_name(f".{link.name}.{os.getpid()}.{id(link):x}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _remove_symlink(link: Path, target: str) -> None:
    """Remove ``link`` if it still points at ``target`` (someone may have replaced it)."""
    try:
        if link.is_symlink() and os.readlink(link) == target:
            link.unlink()
    except OSError as exc:
        log.warning("could not remove symlink %s: %s", link, exc)


class PtyTransport(PumpTransport):
    """Serve a :class:`ByteHandler` on a raw PTY, with an optional stable symlink.

    ``link`` (e.g. ``Path("/tmp/ttyPUMP0")``) is created on :meth:`start`, replaced atomically
    if it exists, and removed on :meth:`close` if it still points at our slave. Raises
    :class:`PtyUnavailableError` on a system without POSIX terminals (Windows).
    """

    def __init__(
        self,
        handler: ByteHandler,
        *,
        link: Path | str | None = None,
        emulation: LinkEmulator | None = None,
    ) -> None:
        _require_pty()  # here, not at start(): a farm fails before it serves anything
        super().__init__(handler, emulation=emulation)
        self.link = Path(link) if link is not None else None
        self._master: int | None = None
        self._slave: int | None = None
        self._path: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: Connection | None = None
        self._backlog = bytearray()
        self._writer_armed = False
        self._retry: asyncio.TimerHandle | None = None
        self._client_seen = False  # bytes came from the client that has the port open now
        # Reply bytes dropped on the current link: the first drop is logged, the total when
        # the link resets or closes (one line a write flooded the log: 54,902 in 20 s).
        self._dropped_bytes = 0

    @property
    def path(self) -> str:
        """The slave device path a client opens (e.g. ``/dev/pts/7``)."""
        if self._path is None:
            raise RuntimeError("PtyTransport not started")
        return self._path

    @property
    def url(self) -> str:
        """The symlink if one was asked for, else the slave path."""
        return str(self.link) if self.link is not None else self.path

    @property
    def connection(self) -> Connection:
        """The single connection (a PTY has exactly one other end)."""
        if self._conn is None:
            raise RuntimeError("PtyTransport not started")
        return self._conn

    async def start(self) -> None:
        """Open the pair, set it raw, create the symlink, start reading the master."""
        if self._master is not None:
            return
        self._loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        try:
            make_raw(slave)
            os.set_blocking(master, False)
            path = os.ttyname(slave)
            if self.link is not None:
                _install_symlink(self.link, path)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        # Raw mode stays with the pair; holding the slave open would hide a client's close.
        os.close(slave)
        self._master, self._slave, self._path = master, None, path
        self._conn = self._new_connection(self._write, name=f"pty {path}")
        self._loop.add_reader(master, self._on_readable)
        log.info("PTY pump port on %s%s", path, f" (link {self.link})" if self.link else "")

    async def close(self) -> None:
        """Stop reading, close both descriptors, remove the symlink."""
        if self._master is None:
            return
        master, slave, path = self._master, self._slave, self._path
        self._master = self._slave = None
        assert self._loop is not None
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._loop.remove_reader(master)
        if self._writer_armed:
            self._loop.remove_writer(master)
            self._writer_armed = False
        if self._conn is not None:
            self._conn.close()
        self._report_drops()
        self._backlog.clear()
        os.close(master)
        if slave is not None:
            os.close(slave)
        if self.link is not None and path is not None:
            _remove_symlink(self.link, path)
        log.info("PTY pump port %s closed", path)

    def _on_readable(self) -> None:
        master = self._master
        if master is None:
            return
        try:
            data = os.read(master, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno == errno.EIO:
                self._hang_up()
                return
            raise
        if not data:
            self._hang_up()
            return
        assert self._conn is not None
        self._client_seen = True
        self._conn.feed(data)

    def _hang_up(self) -> None:
        """EIO: no client has the port open. Pause reading, then retry.

        If a client had sent something, it has closed the port: its link is reset (the pump
        ends its session) and replies it did not read are dropped.
        """
        if self._master is None or self._loop is None:
            return
        if self._client_seen:
            self._client_seen = False
            log.info("PTY %s: client closed the port; its session ends", self._path)
            self._report_drops()
            self._backlog.clear()
            if self._writer_armed:
                self._loop.remove_writer(self._master)
                self._writer_armed = False
            if self._conn is not None:
                self._conn.link_reset()
        self._loop.remove_reader(self._master)
        self._retry = self._loop.call_later(_EIO_RETRY_S, self._resume_reading)

    def _report_drops(self) -> None:
        """Log the link's total of dropped reply bytes, if any, and start counting anew."""
        if self._dropped_bytes:
            log.warning(
                "PTY %s: %d reply bytes dropped in all on this link (client not reading)",
                self._path,
                self._dropped_bytes,
            )
            self._dropped_bytes = 0

    def _resume_reading(self) -> None:
        self._retry = None
        if self._master is not None and self._loop is not None:
            self._loop.add_reader(self._master, self._on_readable)

    def _write(self, data: bytes) -> None:
        if self._master is None:
            return
        if self._backlog:
            self._queue(data)
            return
        try:
            n = os.write(self._master, data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            if exc.errno == errno.EIO:
                log.debug("PTY %s: write on hung-up pair dropped", self._path)
                return
            raise
        if n < len(data):
            self._queue(data[n:])

    def _queue(self, data: bytes) -> None:
        room = _MAX_BACKLOG - len(self._backlog)
        if len(data) > room:
            if self._dropped_bytes == 0:
                log.warning(
                    "PTY %s: client not reading; %d bytes dropped (later drops on this link "
                    "are counted)",
                    self._path,
                    len(data) - room,
                )
            self._dropped_bytes += len(data) - room
            data = data[:room]
        self._backlog += data
        if not self._writer_armed and self._master is not None and self._loop is not None:
            self._loop.add_writer(self._master, self._on_writable)
            self._writer_armed = True

    def _on_writable(self) -> None:
        master = self._master
        if master is None:
            return
        try:
            n = os.write(master, self._backlog)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            n = len(self._backlog)
        del self._backlog[:n]
        if not self._backlog and self._loop is not None:
            self._loop.remove_writer(master)
            self._writer_armed = False
