"""A capture decoded into the conversation it holds: frames, headers and typed messages.

Parsing is the protocol layer's: :class:`protocol.framing.Deframer` (one per pump and
direction, so a frame split across several reads is reassembled),
:func:`protocol.header.parse_body`, :func:`protocol.messages.decode_request` and
:func:`protocol.messages.decode_response`. What the deframer drops (bad CRC, truncated,
aborted, oversized frames, and bytes before the first flag) is reported as such, from its
statistics; MACs are shown, not verified (that needs the session key).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum, Flag, StrEnum
from typing import Any

from itpump.emulator.capture import CaptureRecord, Direction
from itpump.protocol.framing import Deframer, FramingStats
from itpump.protocol.header import Header, HeaderError, parse_body
from itpump.protocol.messages import (
    RESPONSE_BIT,
    MessageType,
    Refusal,
    Request,
    Response,
    decode_request,
    decode_response,
)
from itpump.protocol.wire import WireError

__all__ = [
    "ConversationEvent",
    "EventKind",
    "decode_records",
    "flatten_message",
    "to_jsonable",
]

# Deframer counters that stand for one dropped frame each, with the text shown for them.
_DROP_REASONS = {
    "bad_crc": "bad CRC",
    "runts": "truncated frame",
    "oversized": "oversized frame",
    "aborted": "aborted frame",
}


class EventKind(StrEnum):
    """What a :class:`ConversationEvent` is."""

    FRAME = "frame"  # a frame whose CRC is good; ``message`` or ``error`` says what it holds
    BAD_FRAME = "bad_frame"  # dropped by the deframer (``error`` says why); never answered
    GARBAGE = "garbage"  # bytes before any flag


@dataclass(frozen=True, slots=True)
class ConversationEvent:
    """One decoded frame (or one dropped one) of a capture."""

    kind: EventKind
    interface_id: int
    serial: str
    direction: Direction
    wall_time_ns: int
    sim_time_h: float
    body: bytes = b""  # frame body (header, payload, trailer) without flags, stuffing, CRC
    header: Header | None = None
    counter: int | None = None
    mac: bytes | None = None
    message: Request | Response | None = None
    error: str | None = None  # why the frame could not be decoded, or was dropped
    garbage_bytes: int = 0

    @property
    def name(self) -> str:
        """The message name as shown: ``INTERROGATE request``, ``BOLUS response`` ..."""
        if self.kind is EventKind.GARBAGE:
            return "garbage"
        if self.kind is EventKind.BAD_FRAME:
            return self.error or "bad frame"
        if self.header is None:
            return "undecodable frame"
        code = self.header.msg_type & ~RESPONSE_BIT
        try:
            base = MessageType(code).name
        except ValueError:
            base = f"type 0x{code:02X}"
        return f"{base} {'response' if self.header.is_response else 'request'}"


def _decode_body(body: bytes) -> tuple[Header | None, int | None, bytes | None, Any, str | None]:
    try:
        packet = parse_body(body)
    except HeaderError as exc:
        return None, None, None, None, str(exc)
    header = packet.header
    try:
        if header.is_response:
            message: Any = decode_response(
                MessageType(header.msg_type & ~RESPONSE_BIT), packet.payload
            )
        else:
            message = decode_request(header.msg_type, packet.payload)
    except (KeyError, ValueError) as exc:  # unknown type (KeyError, ValueError), WireError
        reason = str(exc) if isinstance(exc, WireError) else "unknown message type"
        return header, packet.counter, packet.mac, None, reason
    return header, packet.counter, packet.mac, message, None


def decode_records(records: Iterable[CaptureRecord]) -> Iterator[ConversationEvent]:
    """The conversation of a capture, in capture order.

    A frame is stamped with the times of the record in which it ended. Frames dropped by the
    deframer within one record are reported after that record's good frames.
    """
    deframers: dict[tuple[int, Direction], Deframer] = {}
    for record in records:
        key = (record.interface_id, record.direction)
        deframer = deframers.setdefault(key, Deframer())
        before = dataclasses.replace(deframer.stats)
        deframer.receive_data(record.data)
        stamp: dict[str, Any] = {
            "interface_id": record.interface_id,
            "serial": record.serial,
            "direction": record.direction,
            "wall_time_ns": record.wall_time_ns,
            "sim_time_h": record.sim_time_h,
        }
        while (body := deframer.next_frame()) is not None:
            header, counter, mac, message, error = _decode_body(body)
            yield ConversationEvent(
                EventKind.FRAME,
                body=body,
                header=header,
                counter=counter,
                mac=mac,
                message=message,
                error=error,
                **stamp,
            )
        yield from _drops(before, deframer.stats, stamp)


def _drops(
    before: FramingStats, after: FramingStats, stamp: dict[str, Any]
) -> Iterator[ConversationEvent]:
    discarded = after.bytes_discarded - before.bytes_discarded
    if discarded:
        yield ConversationEvent(EventKind.GARBAGE, garbage_bytes=discarded, **stamp)
    for counter, text in _DROP_REASONS.items():
        for _ in range(getattr(after, counter) - getattr(before, counter)):
            yield ConversationEvent(EventKind.BAD_FRAME, error=text, **stamp)


def to_jsonable(value: object) -> Any:
    """A message as JSON-able data: records as objects (with ``type``), enums by name,
    flag sets as lists of names, bytes in hex."""
    if isinstance(value, Flag):
        return [m.name for m in type(value) if m.value and m in value]
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple | list):
        return [to_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {"type": type(value).__name__}
        for f in dataclasses.fields(value):
            out[f.name] = to_jsonable(getattr(value, f.name))
        return out
    return value


def flatten_message(message: Request | Response) -> dict[str, tuple[str, object]]:
    """Every leaf field of a message by path (``alarms[0].raised_at_s``), with the name of
    the record that declares it (``Alarm.raised_at_s``) for masking.

    A refusal and a successful response share the path ``result``, so an answer that turned
    from OK into a refusal shows as a difference in ``result`` (and in the fields that are
    now missing).
    """
    out: dict[str, tuple[str, object]] = {}
    if isinstance(message, Refusal):
        out["result"] = ("Refusal.result", message.result.name)
        out["detail"] = ("Refusal.detail", message.detail)
        return out
    if not isinstance(message, Request):
        out["result"] = ("Response.result", "OK")
    _flatten(message, "", out)
    return out


def _flatten(value: object, path: str, out: dict[str, tuple[str, object]], qual: str = "") -> None:
    """``qual`` is the ``Record.field`` that holds ``value`` (list items inherit it)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        owner = type(value).__name__
        if path:
            out[path + ".type"] = (qual + ".type", owner)  # which member of a union
        for f in dataclasses.fields(value):
            child_path = f"{path}.{f.name}" if path else f.name
            _flatten(getattr(value, f.name), child_path, out, f"{owner}.{f.name}")
    elif isinstance(value, tuple):
        out[path + ".count"] = (qual + ".count", len(value))
        for i, item in enumerate(value):
            _flatten(item, f"{path}[{i}]", out, qual)
    else:
        out[path] = (qual, to_jsonable(value))
