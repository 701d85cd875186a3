"""Framing: flag-delimited frames with RFC 1662 byte stuffing and a CRC-16/CCITT-FALSE check.

On the wire a frame is::

    0x7E  stuffed(body || crc16_be(body))  0x7E

* ``body`` is the header, payload and optional MAC trailer (see :mod:`protocol.header`);
* the CRC is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final XOR; check
  value 0x29B1 over ``b"123456789"``), sent most significant byte first;
* stuffing replaces 0x7E with 0x7D 0x5E and 0x7D with 0x7D 0x5D (escape, then byte XOR 0x20).
  The receiver un-escapes *any* byte after 0x7D, as RFC 1662 requires, so a peer that escapes
  more (for instance control characters) still interoperates.

Why CCITT-FALSE rather than the X.25 FCS of RFC 1662: both have the same polynomial and so the
same error-detecting power (Hamming distance 4 up to 32 751 bits, far above our 1 KiB frames);
CCITT-FALSE is computed by the standard library in C (``binascii.crc_hqx``), needs no table of
our own, and, being unreflected with no final XOR, is the simplest variant to reproduce in
another language (and a receiver may check ``crc(body || crc) == 0``).

The encoder always sends an opening *and* a closing flag, so garbage that arrives between two
frames is isolated between flags and discarded on its own instead of corrupting the next frame.
"""

from __future__ import annotations

import binascii
import logging
import re
from collections import deque
from dataclasses import dataclass, fields

__all__ = [
    "CRC_SIZE",
    "ESCAPE",
    "ESCAPE_XOR",
    "FLAG",
    "MAX_BODY_SIZE",
    "MAX_QUEUED_FRAMES",
    "MIN_BODY_SIZE",
    "Deframer",
    "FrameError",
    "FramingStats",
    "crc16_ccitt_false",
    "decode_frame",
    "encode_frame",
    "stuff",
    "unstuff",
]

_log = logging.getLogger(__name__)

FLAG = 0x7E
ESCAPE = 0x7D
ESCAPE_XOR = 0x20
CRC_SIZE = 2
# Largest body (header + payload + trailer, before the CRC and before stuffing). One KiB keeps
# a worst-case frame under 0.6 s at the 19 200 baud of the device profiles while holding the
# largest message (a status with a 64-step flex program and 32 alarms) with room to spare.
MAX_BODY_SIZE = 1024
MIN_BODY_SIZE = 1
# Complete frames held until the connection takes them. A stop-and-wait peer has one or two
# in flight; a burst of thousands of tiny frames in one read must not become thousands of
# queued frames (and answers), so frames beyond this are dropped and counted as overrun.
MAX_QUEUED_FRAMES = 64

_FLAG_BYTE = bytes([FLAG])
# An escape followed by any byte; DOTALL so that an escaped newline is matched too.
_ESCAPED = re.compile(rb"\x7d(.)", re.DOTALL)


def crc16_ccitt_false(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (0x29B1 for ``b"123456789"``).

    ``crc`` lets a caller continue a running CRC over several pieces.
    """
    return binascii.crc_hqx(data, crc)


def stuff(data: bytes) -> bytes:
    """Escape every FLAG and ESCAPE byte of ``data`` (RFC 1662, no control-character map)."""
    # The escape byte must be replaced first, or the escapes inserted for flags would be
    # escaped again.
    return data.replace(b"\x7d", b"\x7d\x5d").replace(b"\x7e", b"\x7d\x5e")


class FrameError(ValueError):
    """A frame could not be decoded; ``reason`` is one of the :class:`FramingStats` counters."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _unescape_one(match: re.Match[bytes]) -> bytes:
    return bytes([match.group(1)[0] ^ ESCAPE_XOR])


def unstuff(data: bytes) -> bytes:
    """Undo :func:`stuff`; any byte after an escape is XORed with 0x20.

    Raises :class:`FrameError` (reason ``"aborted"``) when ``data`` ends with a lone escape:
    RFC 1662 treats ESCAPE followed by FLAG as an abort sequence.
    """
    if ESCAPE not in data:
        return data
    if _count_trailing_escapes(data) % 2 == 1:
        raise FrameError("aborted", "frame ends with an escape byte (abort sequence)")
    return _ESCAPED.sub(_unescape_one, data)


def _count_trailing_escapes(data: bytes) -> int:
    n = 0
    for byte in reversed(data):
        if byte != ESCAPE:
            break
        n += 1
    return n


def encode_frame(body: bytes) -> bytes:
    """The on-wire bytes of one frame holding ``body`` (flags, stuffing and CRC added)."""
    if not MIN_BODY_SIZE <= len(body) <= MAX_BODY_SIZE:
        raise ValueError(
            f"frame body of {len(body)} bytes outside {MIN_BODY_SIZE}..{MAX_BODY_SIZE}"
        )
    crc = crc16_ccitt_false(body)
    return b"\x7e" + stuff(body + crc.to_bytes(2, "big")) + b"\x7e"


def _check_content(content: bytes, max_body_size: int) -> bytes:
    """Validate the unstuffed bytes between two flags; returns the body without its CRC."""
    if len(content) > max_body_size + CRC_SIZE:
        raise FrameError("oversized", f"frame of {len(content)} bytes exceeds the maximum")
    if len(content) < MIN_BODY_SIZE + CRC_SIZE:
        raise FrameError("runts", f"frame of {len(content)} bytes is too short")
    # For an unreflected CRC without a final XOR, running the CRC over the data followed by
    # its own big-endian CRC yields zero: one C call checks the frame.
    if crc16_ccitt_false(content) != 0:
        raise FrameError("bad_crc", "CRC mismatch")
    return content[:-CRC_SIZE]


def decode_frame(frame: bytes, max_body_size: int = MAX_BODY_SIZE) -> bytes:
    """Decode one complete frame (with or without its surrounding flags); returns the body.

    Raises :class:`FrameError` when the frame is aborted, too short, too long or fails its CRC.
    """
    inner = frame
    if inner[:1] == _FLAG_BYTE:
        inner = inner[1:]
    if inner[-1:] == _FLAG_BYTE:
        inner = inner[:-1]
    if FLAG in inner:
        raise FrameError("bad_crc", "flag byte inside a frame")
    return _check_content(unstuff(inner), max_body_size)


@dataclass
class FramingStats:
    """Counters kept by a :class:`Deframer`, for link diagnostics.

    ``bytes_discarded`` counts bytes seen before the first flag; every other counter counts
    candidate frames (the bytes between two flags) by the reason they were dropped.
    """

    frames_ok: int = 0
    bytes_discarded: int = 0
    bad_crc: int = 0
    runts: int = 0  # shorter than a CRC plus one byte: typically a truncated frame
    oversized: int = 0
    aborted: int = 0
    overrun: int = 0  # valid frames dropped because MAX_QUEUED_FRAMES were waiting

    def as_dict(self) -> dict[str, int]:
        """The counters by name (for logs and JSON output)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def frames_dropped(self) -> int:
        """Candidate frames dropped for any reason."""
        return self.bad_crc + self.runts + self.oversized + self.aborted + self.overrun


class Deframer:
    """Incremental frame decoder: feed bytes in any chunking, take out frame bodies.

    It never raises on bad input. Bytes before the first flag are discarded; a candidate frame
    that is truncated, oversized, aborted or fails its CRC is dropped and counted in
    :attr:`stats`, and decoding resumes at the next flag. Memory is bounded whatever arrives:
    a partial frame holds at most its longest stuffed length (:attr:`max_buffered_bytes`),
    and at most ``max_queued_frames`` complete frames wait (later ones are dropped as
    ``overrun`` until some are taken).
    """

    def __init__(
        self, max_body_size: int = MAX_BODY_SIZE, max_queued_frames: int = MAX_QUEUED_FRAMES
    ) -> None:
        if max_queued_frames < 1:
            raise ValueError(f"max_queued_frames must be >= 1, got {max_queued_frames}")
        self.max_body_size = max_body_size
        self.max_queued_frames = max_queued_frames
        self.stats = FramingStats()
        self._buffer = bytearray()
        self._in_frame = False  # a flag has been seen: bytes now belong to a candidate frame
        self._discarding = False  # current candidate already known to be oversized
        self._frames: deque[bytes] = deque()
        # Bound on the *stuffed* length of an acceptable candidate (every byte escaped).
        self._max_stuffed = 2 * (max_body_size + CRC_SIZE)

    def receive_data(self, data: bytes) -> None:
        """Add received bytes; complete frames become available from :meth:`next_frame`."""
        if not data:
            return
        buffer = self._buffer
        buffer += data
        start = 0
        while True:
            end = buffer.find(_FLAG_BYTE, start)
            if end < 0:
                break
            candidate = bytes(buffer[start:end])
            start = end + 1
            if not self._in_frame:
                self.stats.bytes_discarded += len(candidate)
                self._in_frame = True
            elif self._discarding:
                self._discarding = False
            elif candidate:  # two flags in a row (shared or idle flags) are no frame
                self._take(candidate)
        del buffer[:start]
        if not self._in_frame:
            self.stats.bytes_discarded += len(buffer)
            buffer.clear()
        elif len(buffer) > self._max_stuffed:
            # No flag within the longest possible frame: drop what we hold now instead of
            # buffering without bound, and skip the rest of this candidate.
            if not self._discarding:
                self.stats.oversized += 1
                _log.debug("dropping oversized frame (%d bytes without a flag)", len(buffer))
            self._discarding = True
            buffer.clear()

    def _take(self, stuffed: bytes) -> None:
        try:
            body = _check_content(unstuff(stuffed), self.max_body_size)
        except FrameError as exc:
            setattr(self.stats, exc.reason, getattr(self.stats, exc.reason) + 1)
            _log.debug("dropping frame: %s", exc)
            return
        if len(self._frames) >= self.max_queued_frames:
            self.stats.overrun += 1
            _log.debug("dropping frame: %d frames already waiting", len(self._frames))
            return
        self.stats.frames_ok += 1
        self._frames.append(body)

    def next_frame(self) -> bytes | None:
        """The body of the oldest complete frame, or ``None`` when none is waiting."""
        return self._frames.popleft() if self._frames else None

    @property
    def buffered_bytes(self) -> int:
        """Bytes of an incomplete frame held while waiting for its closing flag."""
        return len(self._buffer)

    @property
    def max_buffered_bytes(self) -> int:
        """The most :attr:`buffered_bytes` can be between two calls (every byte escaped)."""
        return self._max_stuffed

    @property
    def queued_frames(self) -> int:
        """Complete frames waiting for :meth:`next_frame` (at most ``max_queued_frames``)."""
        return len(self._frames)

    def reset(self) -> None:
        """Forget any partial frame (e.g. after the link dropped); statistics are kept."""
        self._buffer.clear()
        self._frames.clear()
        self._in_frame = False
        self._discarding = False
