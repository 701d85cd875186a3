"""`itpump decode`: print the conversation held in a capture (`itpump serve --capture`)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from itpump.tools.cli import UsageError

if TYPE_CHECKING:
    from itpump.emulator.conversation import ConversationEvent

EPILOG = """\
Each line: wall time (UTC), simulated time (hours), pump serial, direction, message name,
header (seq, session, counter, MAC) and the decoded fields. Frames dropped for a bad CRC,
truncation or an abort, and bytes outside any frame, are shown as such. MACs are shown, not
verified. With --json each line is a JSON object.

The Wireshark dissector for these captures: `itpump decode --dissector-path` (see
docs/capture.md).
"""

_ARROWS = {0: "programmer->pump", 1: "pump->programmer"}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `decode` sub-command."""
    parser = sub.add_parser(
        "decode",
        help="print the telemetry conversation of a capture file (pcapng)",
        description="Decode a capture written by `itpump serve --capture`.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", nargs="?", help="capture file (.pcapng)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--dissector-path",
        action="store_true",
        help="print where the Wireshark Lua dissector is installed, and exit",
    )
    parser.set_defaults(func=run)


def _wall(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _header_text(event: ConversationEvent) -> str:
    header = event.header
    if header is None:
        return ""
    text = f"seq={header.seq} session=0x{header.session_id:08X}"
    if event.counter is not None and event.mac is not None:
        text += f" counter={event.counter} mac={event.mac.hex()}"
    return text


def _line(event: ConversationEvent) -> str:
    from itpump.emulator.conversation import EventKind
    from itpump.protocol.examples import describe

    head = (
        f"{_wall(event.wall_time_ns)}  sim {event.sim_time_h:.6f} h  {event.serial}  "
        f"{_ARROWS[event.direction]}  "
    )
    if event.kind is EventKind.GARBAGE:
        return head + f"garbage: {event.garbage_bytes} bytes outside any frame"
    if event.kind is EventKind.BAD_FRAME:
        return head + f"dropped frame: {event.error}"
    if event.message is None:
        return head + f"{event.name}  {_header_text(event)}  undecodable: {event.error}".rstrip()
    return head + f"{event.name}  {_header_text(event)}  {describe(event.message)}"


def _json(event: ConversationEvent) -> dict[str, Any]:
    from itpump.emulator.conversation import to_jsonable

    header = event.header
    return {
        "wall_time": _wall(event.wall_time_ns),
        "wall_time_ns": event.wall_time_ns,
        "sim_time_h": event.sim_time_h,
        "pump": event.serial,
        "interface": event.interface_id,
        "direction": event.direction.name.lower(),
        "kind": str(event.kind),
        "name": event.name,
        "header": None
        if header is None
        else {
            "version": header.version,
            "msg_type": header.msg_type,
            "flags": header.flags,
            "seq": header.seq,
            "session_id": header.session_id,
        },
        "counter": event.counter,
        "mac": None if event.mac is None else event.mac.hex(),
        "message": None if event.message is None else to_jsonable(event.message),
        "error": event.error,
        "garbage_bytes": event.garbage_bytes or None,
    }


def run(args: argparse.Namespace) -> int:
    """Print the decoded conversation (or the dissector's path)."""
    from itpump.emulator.capture import CaptureError, CaptureReader
    from itpump.emulator.conversation import decode_records
    from itpump.emulator.lua_dissector import dissector_path

    if args.dissector_path:
        print(dissector_path())
        return 0
    if args.file is None:
        raise UsageError("give a capture FILE (or --dissector-path)")
    try:
        with CaptureReader(args.file) as reader:
            for event in decode_records(reader):
                print(json.dumps(_json(event)) if args.json else _line(event), flush=False)
    except CaptureError as exc:
        raise UsageError(str(exc)) from None
    return 0
