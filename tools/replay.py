"""`itpump replay`: play a captured session's requests against a pump, report changed answers."""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING, Any

from itpump.tools.cli import UsageError

if TYPE_CHECKING:
    from itpump.emulator.replay import ReplayReport
    from itpump.programmer.operations import KeySource

KEY_ENV = "ITPUMP_KEY"
MASTER_KEY_ENV = "ITPUMP_MASTER_KEY"
EXIT_DIFFERENT = 1

EPILOG = f"""\
The recorded session is replayed in a fresh session: IDENTIFY as recorded, a new
handshake with the pump key (nonces, session id, MACs and counters are new), then every
other recorded request with the same contents. Each answer is compared field by field with
the recorded one, except the fields that differ by design (nonces, session id, proofs, pump
clock and projected dates; see docs/capture.md); --ignore adds more (Record.field, e.g.
InterrogateResponse.reservoir_volume_nl).

Exit status: 0 every answer matched, {EXIT_DIFFERENT} some answer differs, 2 bad input
(unreadable capture, unknown pump, no key, port cannot be opened).

Key: --key HEX (or ${KEY_ENV}), or --master-key TEXT as given to `itpump serve`
(or ${MASTER_KEY_ENV}).
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `replay` sub-command."""
    parser = sub.add_parser(
        "replay",
        help="replay a captured session against a pump and report answers that differ",
        description="Regression test for firmware and protocol changes: play the programmer "
        "side of a capture against a pump in the same state.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", help="capture file (.pcapng) from `itpump serve --capture`")
    parser.add_argument(
        "--against", required=True, metavar="URL", help="pump to talk to (pyserial URL or path)"
    )
    parser.add_argument("--serial", help="pump of the capture to replay (when it holds several)")
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--key", metavar="HEX", help=f"the pump's key (default ${KEY_ENV})")
    keys.add_argument(
        "--master-key",
        metavar="TEXT",
        help=f"derive the pump key from a rig master key (default ${MASTER_KEY_ENV})",
    )
    parser.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="RECORD.FIELD",
        help="also ignore this field (repeatable)",
    )
    parser.add_argument("--timeout", type=float, default=None, help="first response timeout (s)")
    parser.add_argument("--json", action="store_true", help="one JSON object per exchange")
    parser.set_defaults(func=run)


def _key_source(args: argparse.Namespace) -> KeySource | None:
    from itpump.programmer.keys import master_key_source, parse_key

    key_text = args.key or (None if args.master_key else os.environ.get(KEY_ENV))
    master_text = args.master_key or os.environ.get(MASTER_KEY_ENV)
    try:
        if key_text:
            return parse_key(key_text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if master_text:
        return master_key_source(master_text.encode("utf-8"))
    return None


def _print(report: ReplayReport, as_json: bool) -> None:
    for step in report.steps:
        if as_json:
            data: dict[str, Any] = {
                "index": step.index,
                "request": step.name,
                "match": not step.differences,
                "skipped": step.skipped,
                "differences": [
                    {"field": d.path, "recorded": d.recorded, "replayed": d.replayed}
                    for d in step.differences
                ],
            }
            print(json.dumps(data))
            continue
        if step.skipped and not step.differences:
            print(f"{step.index:3d} {step.name}: skipped ({step.skipped})")
        elif not step.differences:
            print(f"{step.index:3d} {step.name}: same")
        else:
            print(f"{step.index:3d} {step.name}: DIFFERS")
            for d in step.differences:
                print(f"      {d.path}: recorded {d.recorded!r}, now {d.replayed!r}")
    if not as_json:
        total = sum(1 for s in report.steps if not s.skipped or s.differences)
        verdict = "no differences" if report.ok else f"{report.differences} answers differ"
        print(f"pump {report.serial}: {total} exchanges replayed, {verdict}")


def run(args: argparse.Namespace) -> int:
    """Replay and report; exit 1 when an answer differs."""
    import serial

    from itpump.emulator.replay import (
        DEFAULT_IGNORED_FIELDS,
        ReplayInputError,
        check_ignored_fields,
        load_exchanges,
        replay_capture,
    )
    from itpump.programmer.client import PumpClient
    from itpump.programmer.errors import PumpError
    from itpump.protocol.messages import AuthProofRequest

    key = _key_source(args)
    if args.timeout is not None and not args.timeout > 0:
        raise UsageError(f"--timeout must be > 0 (got {args.timeout})")
    try:
        serial_number, exchanges = load_exchanges(args.file, args.serial)
    except ReplayInputError as exc:
        raise UsageError(str(exc)) from None
    if key is None and any(isinstance(x.request, AuthProofRequest) for x in exchanges):
        raise UsageError(
            f"the session authenticates: give --key HEX (or ${KEY_ENV}) or --master-key TEXT "
            f"(or ${MASTER_KEY_ENV})"
        )
    try:
        check_ignored_fields(args.ignore)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    ignored = DEFAULT_IGNORED_FIELDS | frozenset(args.ignore)
    try:
        client = PumpClient(args.against, key=key, timeout_s=args.timeout)
    except (serial.SerialException, OSError, ValueError, PumpError) as exc:
        raise UsageError(f"cannot open {args.against}: {exc}") from None
    try:
        with client:
            report = replay_capture(exchanges, client, key, serial=serial_number, ignored=ignored)
    except PumpError as exc:
        raise UsageError(f"replay stopped: {exc}") from None
    _print(report, args.json)
    return 0 if report.ok else EXIT_DIFFERENT
