"""Frame body layout: a fixed header, the payload, and an optional counter + MAC trailer.

::

    offset  size  field
    0       1     version      protocol version of this frame (1)
    1       1     msg_type     request type, or request type | 0x80 for its response
    2       1     flags        bit 0: MAC trailer present; bits 1-7 reserved, must be 0
    3       2     seq          sequence number chosen by the programmer, echoed in the response
    5       4     session_id   0 outside a session
    9       n     payload
    9+n     4     counter      (MAC flag only) strictly increasing per session
    13+n    8     mac          (MAC flag only) HMAC-SHA256(session key, bytes 0 .. 12+n)[:8]

All integers are big-endian. The version and type come first and keep their place in every
future version, so that any pump can answer a frame it cannot parse with UNSUPPORTED_VERSION.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from itpump.protocol.auth import MAC_SIZE, FrameMac, compute_mac
from itpump.protocol.framing import MAX_BODY_SIZE

__all__ = [
    "COUNTER_SIZE",
    "FLAG_MAC",
    "HEADER_SIZE",
    "MAX_PAYLOAD_SIZE",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "TRAILER_SIZE",
    "Header",
    "HeaderError",
    "Packet",
    "build_body",
    "parse_body",
]

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)
_HEADER = struct.Struct(">BBBHI")
HEADER_SIZE = _HEADER.size
COUNTER_SIZE = 4
TRAILER_SIZE = COUNTER_SIZE + MAC_SIZE
FLAG_MAC = 0x01
_RESERVED_FLAGS = 0xFF & ~FLAG_MAC
#: largest payload that fits a frame whatever its flags
MAX_PAYLOAD_SIZE = MAX_BODY_SIZE - HEADER_SIZE - TRAILER_SIZE
MAX_SEQ = 0xFFFF
MAX_COUNTER = 0xFFFFFFFF


class HeaderError(ValueError):
    """A frame body too short for its header and trailer, or with reserved flags set."""


@dataclass(frozen=True, slots=True)
class Header:
    """The fixed 9-byte header of every frame body."""

    version: int
    msg_type: int
    flags: int
    seq: int
    session_id: int

    @property
    def has_mac(self) -> bool:
        """Whether a counter and MAC trailer follow the payload."""
        return bool(self.flags & FLAG_MAC)

    @property
    def is_response(self) -> bool:
        """Whether the frame travels from pump to programmer."""
        return bool(self.msg_type & 0x80)

    def pack(self) -> bytes:
        """The 9 header bytes."""
        return _HEADER.pack(self.version, self.msg_type, self.flags, self.seq, self.session_id)


@dataclass(frozen=True, slots=True)
class Packet:
    """A frame body split into its parts."""

    header: Header
    payload: bytes
    counter: int | None  # None without the MAC flag
    mac: bytes | None
    signed: bytes  # header + payload + counter: the bytes the MAC covers


def build_body(
    header: Header,
    payload: bytes,
    *,
    session_key: bytes | FrameMac | None = None,
    counter: int | None = None,
) -> bytes:
    """Assemble a frame body; with ``session_key`` and ``counter`` a MAC trailer is appended.

    ``session_key`` is the key, or a session's :class:`~protocol.auth.FrameMac` of it (the
    same MAC, keyed once per session).

    The header's MAC flag is set or cleared to match.
    """
    if (session_key is None) != (counter is None):
        raise ValueError("a MAC needs both a session key and a counter")
    if session_key is None:
        head = Header(
            header.version, header.msg_type, header.flags & ~FLAG_MAC, header.seq, header.session_id
        )
        return head.pack() + payload
    assert counter is not None
    if not 0 <= counter <= MAX_COUNTER:
        raise ValueError(f"counter {counter} outside 0..{MAX_COUNTER}")
    head = Header(
        header.version, header.msg_type, header.flags | FLAG_MAC, header.seq, header.session_id
    )
    signed = head.pack() + payload + counter.to_bytes(COUNTER_SIZE, "big")
    if isinstance(session_key, FrameMac):
        return signed + session_key.compute(signed)
    return signed + compute_mac(session_key, signed)


def parse_header(body: bytes) -> Header:
    """Parse the header only (works for any version whose first two bytes keep their place)."""
    if len(body) < HEADER_SIZE:
        raise HeaderError(f"frame body of {len(body)} bytes is shorter than the header")
    return Header(*_HEADER.unpack_from(body))


def parse_body(body: bytes) -> Packet:
    """Split a version-1 frame body; raises :class:`HeaderError` if it cannot be split."""
    header = parse_header(body)
    if header.flags & _RESERVED_FLAGS:
        raise HeaderError(f"reserved flag bits set: 0x{header.flags:02X}")
    if not header.has_mac:
        return Packet(header, body[HEADER_SIZE:], None, None, body)
    if len(body) < HEADER_SIZE + TRAILER_SIZE:
        raise HeaderError("frame body too short for its MAC trailer")
    signed = body[:-MAC_SIZE]
    counter = int.from_bytes(signed[-COUNTER_SIZE:], "big")
    return Packet(header, body[HEADER_SIZE:-TRAILER_SIZE], counter, body[-MAC_SIZE:], signed)
