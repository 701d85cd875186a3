"""Telemetry captures: every byte a pump receives and sends, as a pcapng file.

The file opens in Wireshark (with the dissector of :mod:`emulator.lua_dissector`) and is read
back by :class:`CaptureReader` for `itpump decode` and `itpump replay`. The format is
specified in ``docs/capture.md``; in short:

* one Section Header Block, then one Interface Description Block per pump (name = pump
  serial, description = the URL it is served on), link type :data:`LINKTYPE_ITPUMP`
  (LINKTYPE_USER0 = 147), timestamps in nanoseconds (``if_tsresol`` = 9);
* one Enhanced Packet Block per chunk of bytes as the transport delivered it (received) or
  the pump answered it (sent), stamped with wall-clock time; ``epb_flags`` carries the
  direction for Wireshark;
* every packet starts with a 12-byte pseudo-header (:data:`PSEUDO_HEADER`): version,
  direction, header length, simulated time in hours (float64), all big-endian. Then the raw
  telemetry bytes, exactly as they crossed the link (flags, stuffing, CRC included).

The blocks are written by hand rather than with dpkt: dpkt's pcapng ``Writer`` takes every
interface up front and stamps microseconds, and its ``Reader`` only reads the first interface
and returns neither the interface of a packet nor its options, which this format needs.

Every block goes to the file with one ``write`` on an unbuffered file the moment it is
recorded, so nothing waits in process memory and a capture of a process that is killed ends
on a whole block.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

__all__ = [
    "LINKTYPE_ITPUMP",
    "PSEUDO_HEADER",
    "CaptureError",
    "CaptureInterface",
    "CaptureReader",
    "CaptureRecord",
    "CaptureTap",
    "CaptureWriter",
    "CapturingHandler",
    "Direction",
    "read_capture",
]

log = logging.getLogger(__name__)

#: LINKTYPE_USER0: reserved by tcpdump.org for private use; Wireshark maps it to its
#: "wtap_encap" USER0 table, where the itpump dissector registers.
LINKTYPE_ITPUMP = 147
#: Per-packet pseudo-header: version u8, direction u8, header length u16, simulated time in
#: hours float64 (big-endian). The length lets a later version append fields that an older
#: reader skips.
PSEUDO_HEADER = struct.Struct(">BBHd")
PSEUDO_HEADER_VERSION = 1

_BT_SHB = 0x0A0D0D0A
_BT_IDB = 0x00000001
_BT_EPB = 0x00000006
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_OPT_END = 0
_OPT_SHB_USERAPPL = 4
_OPT_IF_NAME = 2
_OPT_IF_DESCRIPTION = 3
_OPT_IF_TSRESOL = 9
_OPT_EPB_FLAGS = 2
_TSRESOL_NS = 9  # 10^-9 s: wall time keeps the nanoseconds of time.time_ns()
# epb_flags bits 0-1: 01 = inbound, 10 = outbound, seen from the pump (the capture point).
_EPB_INBOUND = 0b01
_EPB_OUTBOUND = 0b10
# A block larger than this is not one we wrote (a frame is at most ~2 KiB on the wire, and a
# transport read is bounded); refusing it keeps a corrupt length from exhausting memory.
_MAX_BLOCK_BYTES = 16 * 1024 * 1024


class Direction(IntEnum):
    """Which way bytes travelled, as seen from the pump."""

    TO_PUMP = 0  # programmer -> pump: bytes the pump received
    FROM_PUMP = 1  # pump -> programmer: the pump's reply


class CaptureError(ValueError):
    """A file that is not a readable itpump capture (not pcapng, truncated, wrong link type)."""


@dataclass(frozen=True, slots=True)
class CaptureInterface:
    """One pump of a capture."""

    interface_id: int
    serial: str
    url: str
    linktype: int


@dataclass(frozen=True, slots=True)
class CaptureRecord:
    """One chunk of telemetry bytes as it crossed the link."""

    interface_id: int
    serial: str
    direction: Direction
    wall_time_ns: int  # Unix epoch, nanoseconds
    sim_time_h: float  # the pump world's env.now when the pump acted on (or sent) the bytes
    data: bytes


def _pad4(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


def _options(options: list[tuple[int, bytes]]) -> bytes:
    if not options:
        return b""
    out = bytearray()
    for code, value in options:
        out += struct.pack("<HH", code, len(value)) + _pad4(value)
    out += struct.pack("<HH", _OPT_END, 0)
    return bytes(out)


def _block(block_type: int, body: bytes) -> bytes:
    # Total length appears before and after the body so a reader can walk both ways.
    total = 12 + len(body)
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


class CaptureWriter:
    """Writes an itpump pcapng capture (little-endian) to a binary file object.

    Interfaces must be added before their first packet. Each call writes exactly one whole
    block with one ``write``.
    """

    def __init__(self, file: BinaryIO, *, application: str = "itpump") -> None:
        self._file = file
        self._interfaces = 0
        shb = struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1)  # v1.0, section length unknown
        shb += _options([(_OPT_SHB_USERAPPL, application.encode("utf-8"))])
        file.write(_block(_BT_SHB, shb))

    @property
    def interface_count(self) -> int:
        """Interfaces written so far (the next one gets this id)."""
        return self._interfaces

    def add_interface(self, name: str, description: str) -> int:
        """Write an Interface Description Block; returns its interface id."""
        body = struct.pack("<HHI", LINKTYPE_ITPUMP, 0, 0)  # snaplen 0: no limit
        body += _options(
            [
                (_OPT_IF_NAME, name.encode("utf-8")),
                (_OPT_IF_DESCRIPTION, description.encode("utf-8")),
                (_OPT_IF_TSRESOL, bytes([_TSRESOL_NS])),
            ]
        )
        self._file.write(_block(_BT_IDB, body))
        self._interfaces += 1
        return self._interfaces - 1

    def add_packet(
        self,
        interface_id: int,
        direction: Direction,
        wall_time_ns: int,
        sim_time_h: float,
        data: bytes,
    ) -> None:
        """Write an Enhanced Packet Block: pseudo-header + ``data``."""
        if not 0 <= interface_id < self._interfaces:
            raise ValueError(f"interface {interface_id} has not been added")
        packet = (
            PSEUDO_HEADER.pack(PSEUDO_HEADER_VERSION, direction, PSEUDO_HEADER.size, sim_time_h)
            + data
        )
        flags = _EPB_INBOUND if direction is Direction.TO_PUMP else _EPB_OUTBOUND
        body = struct.pack(
            "<IIIII",
            interface_id,
            wall_time_ns >> 32,
            wall_time_ns & 0xFFFFFFFF,
            len(packet),
            len(packet),
        )
        body += _pad4(packet) + _options([(_OPT_EPB_FLAGS, struct.pack("<I", flags))])
        self._file.write(_block(_BT_EPB, body))


# --- reading ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Iface:
    serial: str
    url: str
    linktype: int
    tsresol_divisor: int  # ticks per second
    tsresol_mult: int  # nanoseconds per tick when the resolution is coarser than 1 ns


def _parse_options(data: bytes, endian: str) -> dict[int, bytes]:
    options: dict[int, bytes] = {}
    offset = 0
    while offset + 4 <= len(data):
        code, length = struct.unpack_from(endian + "HH", data, offset)
        offset += 4
        if code == _OPT_END:
            break
        if offset + length > len(data):
            raise CaptureError("an option runs past the end of its block")
        options.setdefault(code, data[offset : offset + length])
        offset += length + (-length % 4)
    return options


def _tsresol(raw: bytes | None) -> tuple[int, int]:
    """(ticks per second, ns per tick or 0) for an if_tsresol option value."""
    if not raw:
        return 1_000_000, 1000  # the pcapng default: microseconds
    value = raw[0]
    if value & 0x80:
        return 2 ** (value & 0x7F), 0
    ticks = 10 ** (value & 0x7F)
    return ticks, (10**9 // ticks if ticks <= 10**9 else 0)


class CaptureReader:
    """Reads an itpump capture block by block (bounded memory); iterate for records.

    Raises :class:`CaptureError` for anything that is not a complete itpump pcapng capture:
    another file type, a truncated block, an interface of another link type, a packet without
    the pseudo-header. Blocks of other types (statistics, name resolution ...) are skipped, so
    a capture re-saved by Wireshark still reads.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._file: BinaryIO = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise CaptureError(f"{self.path}: {exc.strerror or exc}") from None
        self._endian = "<"
        self._ifaces: list[_Iface] = []
        self.application = ""
        self._read_section_header()

    @property
    def interfaces(self) -> list[CaptureInterface]:
        """Interfaces (pumps) described so far; all of them once iteration has finished."""
        return [
            CaptureInterface(i, f.serial, f.url, f.linktype) for i, f in enumerate(self._ifaces)
        ]

    def _read_exact(self, size: int, what: str) -> bytes:
        data = self._file.read(size)
        if len(data) != size:
            raise CaptureError(f"{self.path}: truncated file (incomplete {what})")
        return data

    def _read_section_header(self) -> None:
        head = self._file.read(12)
        if len(head) < 12 or struct.unpack_from("<I", head)[0] != _BT_SHB:
            raise CaptureError(f"{self.path}: not a pcapng file")
        self._read_shb_rest(head)

    def _read_shb_rest(self, head: bytes) -> None:
        magic = head[8:12]
        if magic == struct.pack("<I", _BYTE_ORDER_MAGIC):
            self._endian = "<"
        elif magic == struct.pack(">I", _BYTE_ORDER_MAGIC):
            self._endian = ">"
        else:
            raise CaptureError(f"{self.path}: not a pcapng file (bad byte-order magic)")
        (total,) = struct.unpack_from(self._endian + "I", head, 4)
        if not 28 <= total <= _MAX_BLOCK_BYTES:
            raise CaptureError(f"{self.path}: corrupt section header")
        rest = self._read_exact(total - 12, "section header")
        major = struct.unpack_from(self._endian + "H", rest, 0)[0]
        if major != 1:
            raise CaptureError(f"{self.path}: pcapng version {major} is not supported")
        options = _parse_options(rest[12:-4], self._endian)
        self.application = options.get(_OPT_SHB_USERAPPL, b"").decode("utf-8", "replace")
        # A new section starts a new set of interfaces.
        self._ifaces = []

    def _next_block(self) -> tuple[int, bytes] | None:
        head = self._file.read(8)
        if not head:
            return None
        if len(head) < 8:
            raise CaptureError(f"{self.path}: truncated file (incomplete block header)")
        block_type, total = struct.unpack(self._endian + "II", head)
        if block_type == _BT_SHB:
            self._read_shb_rest(head + self._read_exact(4, "section header"))
            return (_BT_SHB, b"")
        if total < 12 or total % 4 or total > _MAX_BLOCK_BYTES:
            raise CaptureError(f"{self.path}: corrupt block length {total}")
        rest = self._read_exact(total - 8, "block")
        if struct.unpack_from(self._endian + "I", rest, len(rest) - 4)[0] != total:
            raise CaptureError(f"{self.path}: corrupt block (trailing length differs)")
        return block_type, rest[:-4]

    def _interface(self, body: bytes) -> None:
        if len(body) < 8:
            raise CaptureError(f"{self.path}: corrupt interface description")
        linktype = struct.unpack_from(self._endian + "H", body, 0)[0]
        options = _parse_options(body[8:], self._endian)
        name = options.get(_OPT_IF_NAME, b"").decode("utf-8", "replace")
        if linktype != LINKTYPE_ITPUMP:
            raise CaptureError(
                f"{self.path}: interface {len(self._ifaces)} ({name or 'unnamed'}) has link "
                f"type {linktype}, not {LINKTYPE_ITPUMP} (itpump telemetry)"
            )
        ticks, ns_per_tick = _tsresol(options.get(_OPT_IF_TSRESOL))
        url = options.get(_OPT_IF_DESCRIPTION, b"").decode("utf-8", "replace")
        self._ifaces.append(_Iface(name, url, linktype, ticks, ns_per_tick))

    def _packet(self, body: bytes) -> CaptureRecord:
        if len(body) < 20:
            raise CaptureError(f"{self.path}: corrupt packet block")
        iface_id, ts_high, ts_low, caplen, _orig = struct.unpack_from(
            self._endian + "IIIII", body, 0
        )
        if iface_id >= len(self._ifaces):
            raise CaptureError(f"{self.path}: packet of undeclared interface {iface_id}")
        if 20 + caplen > len(body):
            raise CaptureError(f"{self.path}: corrupt packet block (data past its end)")
        iface = self._ifaces[iface_id]
        ticks = (ts_high << 32) | ts_low
        if iface.tsresol_mult:
            wall_ns = ticks * iface.tsresol_mult
        else:
            wall_ns = ticks * 10**9 // iface.tsresol_divisor
        packet = body[20 : 20 + caplen]
        if len(packet) < PSEUDO_HEADER.size:
            raise CaptureError(f"{self.path}: packet shorter than the itpump pseudo-header")
        version, direction, header_len, sim_time_h = PSEUDO_HEADER.unpack_from(packet)
        if version != PSEUDO_HEADER_VERSION or direction not in (0, 1):
            raise CaptureError(
                f"{self.path}: packet pseudo-header version {version} / direction {direction} "
                "not understood"
            )
        if not PSEUDO_HEADER.size <= header_len <= len(packet):
            raise CaptureError(f"{self.path}: bad pseudo-header length {header_len}")
        return CaptureRecord(
            iface_id, iface.serial, Direction(direction), wall_ns, sim_time_h, packet[header_len:]
        )

    def __iter__(self) -> Iterator[CaptureRecord]:
        while (block := self._next_block()) is not None:
            block_type, body = block
            if block_type == _BT_IDB:
                self._interface(body)
            elif block_type == _BT_EPB:
                yield self._packet(body)

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_capture(path: str | Path) -> tuple[list[CaptureInterface], list[CaptureRecord]]:
    """Every interface and record of a capture (for small files and tests)."""
    with CaptureReader(path) as reader:
        records = list(reader)
        return reader.interfaces, records


# --- recording from a farm ----------------------------------------------------------------


class CaptureTap:
    """The capture switch of a farm: pumps register once; recording starts and stops at will.

    The interfaces are written when the first packet arrives (or when the capture stops), so
    the description can be the URL (``describe(index)``), known only once the transports have
    started. Interface ids are the order of :meth:`add_pump`. Thread-safe: transports may
    call from threads.
    """

    def __init__(
        self,
        sim_clock_h: Callable[[], float],
        describe: Callable[[int], str] = lambda index: "",
        *,
        wall_clock_ns: Callable[[], int] = time.time_ns,
        application: str = "itpump",
    ) -> None:
        self._sim_clock_h = sim_clock_h
        self._describe = describe
        self._wall_clock_ns = wall_clock_ns
        self._application = application
        self._serials: list[str] = []
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None
        self._writer: CaptureWriter | None = None
        self._path: Path | None = None
        self.packets_written = 0
        # In-memory listeners (the dashboard's live conversation): called with every record
        # whether or not a file is being written.
        self._observers: list[Callable[[CaptureRecord], None]] = []

    def observe(self, callback: Callable[[CaptureRecord], None]) -> Callable[[], None]:
        """Call ``callback`` with every chunk of every pump from now on; returns the function
        that stops it. Called on the transport's thread: keep it short."""
        self._observers.append(callback)
        return lambda: self._observers.remove(callback)

    @property
    def active(self) -> bool:
        """Whether anything records: a file, or an observer."""
        return self._path is not None or bool(self._observers)

    @property
    def path(self) -> Path | None:
        """The file being written, or ``None`` when not capturing."""
        return self._path

    def add_pump(self, serial: str) -> int:
        """Register a pump; returns its index (= its interface id in every capture)."""
        with self._lock:
            self._serials.append(serial)
            return len(self._serials) - 1

    def wrap(self, index: int, handler: Callable[[bytes], bytes]) -> CapturingHandler:
        """A byte handler that records what ``handler`` receives and answers."""
        return CapturingHandler(self, index, handler)

    def start(self, path: str | Path) -> None:
        """Start writing a new capture to ``path`` (truncated); a running one is finished.

        The new file is opened first: a path that cannot be written raises (``OSError`` or
        ``ValueError``) and leaves a running capture untouched.
        """
        target = Path(path)
        # buffering=0: each block reaches the OS in one write (see the module docstring).
        file = open(target, "wb", buffering=0)  # noqa: SIM115 - closed by stop()
        self.stop()
        with self._lock:
            self._file = file
            self._writer = CaptureWriter(file, application=self._application)
            self._path = target
        log.info("capturing telemetry to %s", target)

    def stop(self) -> Path | None:
        """Finish the capture (interfaces are written even if no byte was seen); its path."""
        with self._lock:
            writer, file, path = self._writer, self._file, self._path
            if writer is None or file is None:
                return None
            self._ensure_interfaces(writer)
            self._writer = self._file = self._path = None
        file.close()
        log.info("capture %s closed", path)
        return path

    def _ensure_interfaces(self, writer: CaptureWriter) -> None:
        while (index := writer.interface_count) < len(self._serials):
            try:
                url = self._describe(index)
            except Exception:  # a pump whose transport is not up has no URL yet
                url = ""
            writer.add_interface(self._serials[index], url)

    def record(self, index: int, direction: Direction, data: bytes, wall_time_ns: int) -> None:
        """Append one chunk (no-op when not capturing or ``data`` is empty)."""
        if not data:
            return
        for observer in list(self._observers):
            serial = self._serials[index]
            observer(
                CaptureRecord(index, serial, direction, wall_time_ns, self._sim_clock_h(), data)
            )
        with self._lock:
            writer = self._writer
            if writer is None:
                return
            sim_time_h = self._sim_clock_h()
            self._ensure_interfaces(writer)
            try:
                writer.add_packet(index, direction, wall_time_ns, sim_time_h, data)
            except OSError:
                # A full disk must not take the pumps down: stop capturing, keep serving.
                log.exception("capture write failed; capture stopped")
                self._writer = None
                if self._file is not None:
                    self._file.close()
                self._file = self._path = None
                return
            self.packets_written += 1

    def now_ns(self) -> int:
        """Wall-clock time stamp for a packet."""
        return self._wall_clock_ns()


class CapturingHandler:
    """A pump's byte handler that also feeds the capture (and passes ``link_closed`` on)."""

    def __init__(self, tap: CaptureTap, index: int, handler: Callable[[bytes], bytes]) -> None:
        self._tap = tap
        self._index = index
        self.handler = handler

    def __call__(self, data: bytes, /) -> bytes:
        tap = self._tap
        if not tap.active:
            return self.handler(data)
        received_ns = tap.now_ns()
        reply = self.handler(data)
        # Both stamped with the simulated time after the handler ran: the runtime brings the
        # world to "now" before the pump acts, and the pump answers at that same instant.
        tap.record(self._index, Direction.TO_PUMP, data, received_ns)
        tap.record(self._index, Direction.FROM_PUMP, reply, tap.now_ns())
        return reply

    def open_head(self) -> CapturingHandler:
        """The wrapped handler's byte handler for one client link, captured the same way."""
        open_head = getattr(self.handler, "open_head", None)
        if open_head is None:
            return self
        return CapturingHandler(self._tap, self._index, open_head())

    def link_closed(self) -> None:
        """Pass the transport's notice on to the wrapped handler."""
        closed = getattr(self.handler, "link_closed", None)
        if closed is not None:
            closed()
