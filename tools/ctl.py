"""`itpump ctl`: talk to a pump (emulated or not) over a serial port, like a programmer.

Argument parsing and printing only; everything else is the :mod:`programmer` library.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from itpump.programmer import (
    AlarmId,
    AuthenticationError,
    Catheter,
    Continuous,
    Flex,
    LinkError,
    Mode,
    PatientBolusLimits,
    PeriodicBolus,
    Program,
    ProgramError,
    PumpClient,
    PumpError,
    PumpInfo,
    PumpRefused,
    PumpStatus,
    Role,
    Stopped,
    master_key_source,
    parse_key,
    to_data,
)
from itpump.programmer.operations import KeySource
from itpump.programmer.program import read_program_table
from itpump.protocol import messages as m
from itpump.protocol.codes import ResultCode
from itpump.protocol.connection import DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT_S
from itpump.protocol.messages import ALL_ALARMS, MessageType
from itpump.protocol.state import AUTH_BACKOFF_MAX_S
from itpump.protocol.therapy import (
    TYPICAL_CATHETER_VOLUME_UL_PER_CM,
    ProgramTable,
    check_text,
    check_wire_value,
    format_start,
    wire_range,
)
from itpump.protocol.wire import WireStruct
from itpump.tools.argtypes import (
    float_in_range,
    int_in_range,
    non_negative_float,
    positive_float,
    positive_int,
)
from itpump.tools.cli import UsageError

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ERROR = 1  # e.g. the pump's program echo did not match (nothing committed)
EXIT_USAGE = 2
EXIT_REFUSED = 3  # the pump refused, or authentication failed
EXIT_LINK = 4  # no answer (timeout), or the port could not be used

#: --timeout and --attempts bounds: with the doubling backoff the worst case waits
#: 120 x (2**8 - 1) s, about eight hours, before giving up (120 s covers a full log page at
#: 300 baud, docs/protocol.md section 9); an unbounded value would overflow the
#: wait (inf, 1e308 doubled) or never return.
MAX_TIMEOUT_S = 120.0
MAX_ATTEMPTS = 8

KEY_ENV = "ITPUMP_KEY"
MASTER_KEY_ENV = "ITPUMP_MASTER_KEY"

DESCRIPTION = """\
Talk to a pump over a serial port, as a clinician or patient programmer would: IDENTIFY,
authenticate (HMAC challenge-response with the pump's key), run one command, END_SESSION.
PORT_URL is anything pyserial opens: a device or PTY path (/tmp/ttyPUMP0),
socket://HOST:PORT, rfc2217://HOST:PORT.
"""

EPILOG = f"""\
options may also follow COMMAND. Keys:
  --key HEX           the pump's key for --role, as `itpump serve` prints it (or ${KEY_ENV})
  --master-key TEXT   the rig's master key, as given to `itpump serve --master-key`; the
                      key of --role is derived from it and the serial (or ${MASTER_KEY_ENV})
  --no-auth           no session: for pumps whose profile allows unauthenticated use
  Without a key, a pump that does not require authentication is used without a session.

exit status:
  0 done; 1 other error (e.g. program echo mismatch, nothing committed);
  2 usage error; 3 the pump refused (code and detail are printed) or authentication
  failed; 4 no answer from the pump (timeout) or the port cannot be used.

examples:
  itpump ctl /tmp/ttyPUMP0 --key $KEY status
  itpump ctl /tmp/ttyPUMP0 --master-key itpump-test-rig-master-key-0001 status
  itpump ctl socket://127.0.0.1:7000 --json status
  itpump ctl /tmp/ttyPUMP0 program --flex "00:00=180,07:00=260,22:00=200" --max-daily 400
  itpump ctl /tmp/ttyPUMP0 program --file program.toml --dry-run
  itpump ctl /tmp/ttyPUMP0 refill 20 --drug baclofen --concentration 2000 --aspirated 1.8
  itpump ctl /tmp/ttyPUMP0 bolus clinician 50 30
  itpump ctl /tmp/ttyPUMP0 --role patient bolus patient
  itpump ctl /tmp/ttyPUMP0 log --limit 20
  itpump ctl /tmp/ttyPUMP0 clock set 2026-03-01T08:00:00Z
"""

PROGRAM_EPILOG = """\
The new program starts from --file if given, else from the pump's current program; the
flags then replace single settings. The pump verifies the program and echoes it; the echo is
compared with what was sent and shown next to the old settings, then committed (or, with
--dry-run, discarded). Drug and concentration must match the reservoir (set by refill).

program file (TOML, or JSON if the name ends in .json; the keys of a scenario's program
action). `mode` and that mode's keys are required; patient_bolus left out is off; the
program-wide keys (max_daily_dose_mcg, drug, concentration, patient_id, catheter) left out
keep the pump's values:
  mode = "flex"                # continuous | flex | periodic_bolus | stopped
  max_daily_dose_mcg = 600
  period = "daily"             # weekly: starts like "Tue 07:00"
  steps = [{start = "00:00", dose_mcg_per_day = 180},
           {start = "07:00", dose_mcg_per_day = 260}]
  # continuous: dose_mcg_per_day = 450; periodic_bolus: dose_mcg_per_day (basal) and
  # periodic = {dose_mcg = 50, duration_min = 30, interval = "6h", first_offset = "1h"}
  patient_bolus = {dose_mcg = 25, duration_min = 10, lockout_min = 180, max_per_day = 4}
  drug = "baclofen"            # drug, concentration, patient id, catheter: optional
  concentration_mcg_per_ml = 2000
  patient_id = "P-0001"
  catheter = {length_cm = 110, volume_ul_per_cm = 2.6}
`itpump ctl PORT --json status` prints the current program in this form.
"""


# --- arguments --------------------------------------------------------------------------------


def _add_common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Global options; on sub-command parsers they default to SUPPRESS so that a value given
    before the command is not reset by the sub-parser."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("connection options")
    group.add_argument(
        "--key",
        metavar="HEX",
        default=default(None),
        help=f"the pump's key for --role (default ${KEY_ENV})",
    )
    group.add_argument(
        "--master-key",
        metavar="TEXT",
        default=default(None),
        help="derive the --role key from a rig master key (text, as for `itpump serve`) and "
        f"the serial (default ${MASTER_KEY_ENV})",
    )
    group.add_argument(
        "--role",
        choices=("clinician", "patient"),
        default=default("clinician"),
        help="role to authenticate as (default clinician)",
    )
    group.add_argument(
        "--no-auth",
        action="store_true",
        default=default(False),
        help="do not authenticate (pumps with allow_unauthenticated)",
    )
    group.add_argument(
        "--timeout",
        metavar="S",
        type=float_in_range(0.0, MAX_TIMEOUT_S, low_open=True),
        default=default(DEFAULT_TIMEOUT_S),
        help=f"first response timeout, doubled at each retry, up to {MAX_TIMEOUT_S:g} "
        f"(default {DEFAULT_TIMEOUT_S:g})",
    )
    group.add_argument(
        "--attempts",
        metavar="N",
        type=int_in_range(1, MAX_ATTEMPTS),
        default=default(DEFAULT_MAX_ATTEMPTS),
        help=f"transmissions before giving up, 1..{MAX_ATTEMPTS} (default {DEFAULT_MAX_ATTEMPTS})",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="machine-readable output (one JSON document on stdout)",
    )


#: log pages a READ_LOG request can name
_LOG_PAGES = tuple(int(n) for n in wire_range(m.ReadLogRequest, "page")[:2])

#: what the program parser takes for a (negative) value rather than an option: "-5",
#: "-5,2.6", "-1e3", "-.5"
_NEGATIVE_VALUE = re.compile(r"^-\.?\d[\d.,eE+-]*$")


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    handler: Callable[[PumpClient, argparse.Namespace, Any], Output],
    help_text: str,
    **kwargs: Any,
) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text, **kwargs)
    _add_common(parser, top=False)
    parser.set_defaults(handler=handler)
    return parser


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `ctl` sub-command."""
    parser = subparsers.add_parser(
        "ctl",
        help="talk to a pump over a serial port (identify, status, program, bolus, ...)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", metavar="PORT_URL", help="pyserial URL or device path")
    _add_common(parser, top=True)
    parser.set_defaults(func=run)
    sub = parser.add_subparsers(dest="ctl_command", metavar="COMMAND", required=True)

    _command(sub, "identify", cmd_identify, "serial, model, firmware, capabilities (no session)")
    _command(
        sub,
        "status",
        cmd_status,
        "full status: drug, reservoir, program, alarms, battery",
        aliases=["interrogate"],
    )

    p = _command(
        sub,
        "program",
        cmd_program,
        "send a therapy program: transfer, verify, compare, commit",
        epilog=PROGRAM_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # "-5,2.6" is a value (refused later with the range), not an unknown option
    p._negative_number_matcher = _NEGATIVE_VALUE
    p.add_argument("--file", metavar="PROGRAM.toml", help="start from this program file")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--continuous", metavar="MCG_PER_DAY", type=non_negative_float, help="continuous mode"
    )
    mode.add_argument(
        "--flex",
        metavar="STEPS",
        help='flex mode: "START=MCG_PER_DAY,..." e.g. "00:00=180,07:00=260" (weekly: "Mon 07:00")',
    )
    mode.add_argument(
        "--periodic",
        metavar="BASAL,BOLUS_MCG,DURATION_MIN,INTERVAL_MIN[,FIRST_OFFSET_MIN]",
        help="periodic bolus mode: basal mcg/day plus a bolus every INTERVAL_MIN",
    )
    mode.add_argument("--stopped", action="store_true", help="no basal delivery")
    p.add_argument(
        "--flex-period",
        choices=("daily", "weekly"),
        help="length of the --flex pattern (default daily)",
    )
    p.add_argument("--max-daily", metavar="MCG", type=positive_float, help="maximum daily dose")
    p.add_argument(
        "--patient-bolus",
        metavar="DOSE_MCG,DURATION_MIN,LOCKOUT_MIN,MAX_PER_DAY",
        help='patient-activated bolus settings, or "off"',
    )
    p.add_argument(
        "--concentration",
        metavar="MCG_PER_ML",
        type=positive_float,
        help="drug concentration in mcg/mL; must be the reservoir's (set by refill)",
    )
    p.add_argument("--drug", metavar="NAME", help="drug name")
    p.add_argument(
        "--patient-id", metavar="ID", help="patient identifier (the pump limits its length)"
    )
    p.add_argument(
        "--catheter", metavar="LEN_CM,UL_PER_CM", help='catheter length and volume, e.g. "110,2.6"'
    )
    p.add_argument(
        "--dry-run", action="store_true", help="let the pump verify the program, then discard it"
    )

    p = _command(sub, "bolus", cmd_bolus, "start or cancel a bolus")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    k = kinds.add_parser("clinician", help="a clinician bolus on top of the basal")
    k.add_argument("dose_mcg", metavar="DOSE_MCG", type=positive_float, help="bolus dose in mcg")
    k.add_argument(
        "duration_min",
        metavar="DURATION_MIN",
        type=positive_int,
        help="minutes to deliver the dose over",
    )
    k.add_argument("--then-stop", action="store_true", help="stop therapy after the bolus")
    kinds.add_parser("patient", help="a patient-activated bolus (limits from the program)")
    k = kinds.add_parser("prime", help="fill catheter and tubing at the maximum rate")
    k.add_argument("--volume", metavar="ML", type=positive_float, help="default: pump computes")
    k = kinds.add_parser("bridge", help="push the old drug out after a concentration change")
    k.add_argument("--volume", metavar="ML", type=positive_float, help="default: pump computes")
    k.add_argument(
        "--old-concentration",
        metavar="MCG_PER_ML",
        type=positive_float,
        help="default: the concentration currently programmed",
    )
    kinds.add_parser("cancel", help="cancel every bolus in progress")
    for kind in kinds.choices.values():
        _add_common(kind, top=False)

    p = _command(sub, "refill", cmd_refill, "record a refill (volume, drug, concentration)")
    p.add_argument("volume_ml", metavar="VOLUME_ML", type=positive_float, help="volume filled")
    p.add_argument("--drug", required=True, metavar="NAME", help="drug name")
    p.add_argument(
        "--concentration",
        required=True,
        metavar="MCG_PER_ML",
        type=positive_float,
        help="concentration of the drug filled, in mcg/mL",
    )
    p.add_argument(
        "--aspirated",
        metavar="ML",
        type=non_negative_float,
        help="residual volume withdrawn and measured (default: not measured)",
    )
    p.add_argument(
        "--no-bridge",
        action="store_true",
        help="no bridge bolus even if the concentration changed",
    )

    p = _command(sub, "log", cmd_log, "read the event log (newest first)")
    p.add_argument(
        "--page",
        metavar="N",
        type=int_in_range(*_LOG_PAGES),
        help=f"one page only (0 = newest; the wire carries {_LOG_PAGES[0]}..{_LOG_PAGES[1]})",
    )
    p.add_argument("--limit", metavar="N", type=positive_int, help="show at most N entries")

    p = _command(sub, "clock", cmd_clock, "show or set the pump clock (UTC)")
    p.add_argument(
        "action",
        nargs="?",
        choices=("show", "set"),
        default="show",
        help="show (default): the pump clock beside the host clock; set: set it to WHEN",
    )
    p.add_argument(
        "when",
        nargs="?",
        default="now",
        help="for set: ISO 8601 time (UTC unless an offset is given) or 'now' (default)",
    )

    p = _command(
        sub, "alarms", cmd_alarms, "list, acknowledge, test or set alarm thresholds"
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=("list", "ack", "threshold", "test"),
        default="list",
        help="list (default): the active alarms; ack: silence one or all (they stay active "
        "until resolved); threshold: set the low-reservoir alarm volume; test: sound each "
        "alarm pattern once",
    )
    p.add_argument(
        "value",
        nargs="?",
        help="ack: alarm id or name, or 'all' (default); threshold: low-reservoir volume in mL",
    )

    _command(sub, "stop", cmd_stop, "stop all delivery")
    _command(
        sub,
        "valve-reset",
        cmd_valve_reset,
        "reopen a valve-gated pump's MRI safety valve after a scan",
    )
    p = _command(
        sub,
        "catheter-revision",
        cmd_catheter_revision,
        "record a new (empty) catheter, so that a priming bolus is allowed",
    )
    p.add_argument(
        "length_cm", metavar="LENGTH_CM", type=positive_float, help="new catheter length (cm)"
    )
    p.add_argument(
        "--volume-ul-per-cm",
        metavar="UL_PER_CM",
        type=positive_float,
        default=TYPICAL_CATHETER_VOLUME_UL_PER_CM,
        help="internal volume per cm (default %(default)s); the pump checks both against its "
        "device limits",
    )
    _command(sub, "resume", cmd_resume, "resume the programmed therapy")


# --- output -----------------------------------------------------------------------------------


@dataclass
class Output:
    """What a command prints: ``text`` for people, ``data`` for --json."""

    text: str
    data: Any


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def _duration(seconds: float) -> str:
    """A clock difference in words: ``3 s``, ``4 min 10 s``, ``2 h 5 min``, ``328 d 1 h``."""
    s = round(abs(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86_400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86_400} d {s % 86_400 // 3600} h"


def _when_s(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _rows(rows: list[tuple[str, str]]) -> str:
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}".rstrip() for label, value in rows)


def _identify_rows(info: PumpInfo) -> list[tuple[str, str]]:
    caps = ", ".join(to_data(info.capabilities)) or "none"
    return [
        ("pump", f"{info.serial}  {info.model}  firmware {info.firmware_version}"),
        ("protocol", f"version {info.protocol_version} (pump speaks {list(info.versions)})"),
        ("auth", "required" if info.auth_required else "not required"),
        ("features", caps),
        ("limits", f"{info.max_flex_steps} flex steps, {info.max_body_bytes}-byte frames"),
    ]


def _status_text(info: PumpInfo | None, s: PumpStatus) -> str:
    p = s.program
    rows: list[tuple[str, str]] = []
    if info is not None:
        rows.append(("Pump", f"{info.serial}  {info.model}  firmware {info.firmware_version}"))
    rows += [
        (
            "Clock",
            _when_s(s.time)
            if s.clock_valid
            else f"{_when_s(s.time)}  NOT SET (lost at a power-on reset): set the clock, "
            "then commit a program",
        ),
        ("Therapy", f"{s.therapy_state.name} at {s.rate_ml_per_day:.3f} mL/day"),
        ("Drug", f"{p.drug or '(none)'}  {p.concentration_mcg_per_ml:g} mcg/mL"),
        ("Patient", p.patient_id or "(none)"),
    ]
    reservoir = (
        f"{s.reservoir_ml:.2f} mL of {s.reservoir_capacity_ml:.2f} mL (estimated); "
        f"low alarm at {s.low_reservoir_alarm_ml:.2f} mL"
    )
    if s.projected_low_reservoir is not None:
        reservoir += f", reached {_when(s.projected_low_reservoir)}"
    if s.projected_empty is not None:
        reservoir += f"; empty {_when(s.projected_empty)}"
    rows.append(("Reservoir", reservoir))
    if s.has_program:
        rows += [
            (
                "Program",
                f"{p.mode} (mean {p.mode.mean_dose_mcg_per_day():g} mcg/day)"
                if isinstance(p.mode, Flex)
                else str(p.mode),
            ),
            (
                "Max daily",
                f"{p.max_daily_dose_mcg:g} mcg (last 24 h: {s.dose_24h_mcg:g} mcg delivered)",
            ),
        ]
        if p.patient_bolus is not None:
            rows.append(
                ("Pt bolus", f"{p.patient_bolus}; {s.patient_boluses_24h} in the last 24 h")
            )
        else:
            rows.append(("Pt bolus", "off"))
    else:
        rows.append(("Program", "none"))
    catheter = str(p.catheter or "not set")
    if s.unprimed_ml > 0:
        catheter += f"; {s.unprimed_ml:.3f} mL of the path empty (prime allowed)"
    rows.append(("Catheter", catheter))
    battery = f"{s.battery_percent:.1f} %"
    if s.battery_eos:
        battery += "  END OF SERVICE"
    elif s.battery_eri:
        battery += "  ELECTIVE REPLACEMENT (ERI)"
    elif s.projected_eri is not None:
        battery += f"; replacement (ERI) projected {_when(s.projected_eri)}"
    rows.append(("Battery", battery))
    if not s.alarms:
        rows.append(("Alarms", "none"))
    for i, a in enumerate(s.alarms):
        ack = "acknowledged" if a.acknowledged else "NOT acknowledged"
        severity = a.severity.name.lower().replace("_", "-")
        rows.append(
            (
                "Alarms" if i == 0 else "",
                f"{a.alarm_id} {a.name}  {severity}  since {_when(a.raised_at)}  {ack}",
            )
        )
    return _rows(rows)


def _program_compare(old: Program | None, new: Program) -> str:
    new_items = new.summary_items()
    if old is None:
        return _rows(new_items)
    old_items = dict(old.summary_items())
    width = max(len(v) for v in old_items.values()) if old_items else 0
    width = max(width, len("before"))
    rows = [("", f"{'before':<{width}}  after")]
    for label, value in new_items:
        before = old_items.get(label, "")
        mark = "" if before == value else "  *"
        rows.append((label, f"{before:<{width}}  {value}{mark}"))
    return _rows(rows)


# --- commands ---------------------------------------------------------------------------------


def cmd_identify(pump: PumpClient, args: argparse.Namespace, _parsed: None) -> Output:
    """IDENTIFY only."""
    info = pump.pump
    assert info is not None
    return Output(_rows(_identify_rows(info)), to_data(info))


def cmd_status(pump: PumpClient, args: argparse.Namespace, _parsed: None) -> Output:
    """INTERROGATE."""
    status = pump.interrogate()
    return Output(
        _status_text(pump.pump, status), {"pump": to_data(pump.pump), "status": to_data(status)}
    )


@dataclass(frozen=True)
class _ProgramFlags:
    """The program command's flags, checked (against what the wire carries, in clinical
    units) before the port is opened."""

    table: ProgramTable | None  # --file
    mode: Mode | None
    changes: dict[str, Any]

    def program(self, current: Program) -> Program:
        """The program to send: the file over the pump's current program, then the flags."""
        base = current if self.table is None else self.table.program(current)
        new = dataclasses.replace(base, **self.changes)
        return new if self.mode is None else dataclasses.replace(new, mode=self.mode)


#: how an error names each program setting given by a flag (program document paths)
_FLAG_LABELS = {
    "steps": "--flex",
    "periodic.dose_mcg": "--periodic: BOLUS_MCG",
    "periodic.duration_min": "--periodic: DURATION_MIN",
    "periodic.interval": "--periodic: INTERVAL_MIN",
    "periodic.first_offset": "--periodic: FIRST_OFFSET_MIN",
    "max_daily_dose_mcg": "--max-daily",
    "concentration_mcg_per_ml": "--concentration",
    "drug": "--drug",
    "patient_id": "--patient-id",
    "patient_bolus.dose_mcg": "--patient-bolus: DOSE_MCG",
    "patient_bolus.duration_min": "--patient-bolus: DURATION_MIN",
    "patient_bolus.lockout_min": "--patient-bolus: LOCKOUT_MIN",
    "patient_bolus.max_per_day": "--patient-bolus: MAX_PER_DAY",
    "catheter.length_cm": "--catheter: length",
    "catheter.volume_ul_per_cm": "--catheter: volume",
}
_STEP_DOSE = re.compile(r"^steps\[(\d+)\]\.dose_mcg_per_day$")


def _labelled(label: str, message: str) -> str:
    """``--flag: message``, or ``--flag: PART message`` for a part of a flag's value."""
    return f"{label}{' ' if ': ' in label else ': '}{message}"


def _flag_label(path: str, mode: Mode | None) -> str:
    """The flag (and part of its value) a program document path was given by."""
    if path == "dose_mcg_per_day":
        return "--periodic: BASAL" if isinstance(mode, PeriodicBolus) else "--continuous"
    step = _STEP_DOSE.match(path)
    if step is not None and isinstance(mode, Flex) and int(step[1]) < len(mode.steps):
        return f"--flex: step {format_start(mode.steps[int(step[1])].start_min, mode.period)}"
    return _FLAG_LABELS.get(path.split("[", 1)[0], path)


_T = TypeVar("_T")


def _flag_value(flag: str, parse: Callable[..., _T], *values: str) -> _T:
    """``parse(*values)``, a :class:`ValueError` becoming a usage error that names ``flag``."""
    try:
        return parse(*values)
    except ValueError as exc:
        raise UsageError(_labelled(flag, str(exc))) from None


def _check_drug(drug: str) -> None:
    """A drug name is the reservoir's: what a refill may record (a program must match it)."""
    try:
        check_text("--drug", drug, m.RefillRequest, "drug_name")
    except ProgramError as exc:
        raise UsageError(str(exc)) from None


def _program_flags(args: argparse.Namespace) -> _ProgramFlags:
    """The flags and --file as program settings, each checked in its own units before any
    wire record is built (a wire error would name nanograms and nanolitres)."""
    if args.flex_period is not None and args.flex is None:
        raise UsageError("--flex-period goes with --flex (a program file sets its own period)")
    try:
        table = _load_program_file(args.file) if args.file else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    mode: Mode | None = None
    if args.continuous is not None:
        mode = Continuous(args.continuous)
    elif args.flex is not None:
        mode = _flag_value("--flex", Flex.parse, args.flex, args.flex_period or "daily")
    elif args.periodic is not None:
        mode = _flag_value("--periodic", PeriodicBolus.parse, args.periodic)
    elif args.stopped:
        mode = Stopped()
    catheter = (
        None if args.catheter is None else _flag_value("--catheter", Catheter.parse, args.catheter)
    )
    text = (args.patient_bolus or "").strip().lower()
    limits = (
        None
        if text in ("", "off", "none")
        else _flag_value("--patient-bolus", PatientBolusLimits.parse, text)
    )
    if args.drug == "":
        raise UsageError("--drug must not be empty")
    if args.drug is not None:
        _check_drug(args.drug)
    if args.patient_id == "":
        # an empty id on the wire means "keep the patient id": refuse it rather than
        # report a change the pump does not make
        raise UsageError("--patient-id must not be empty (the wire's empty id keeps the pump's)")
    # Every flag in one record, absent ones at harmless values, for the model's wire check.
    given = Program(
        drug=args.drug or "",
        concentration_mcg_per_ml=args.concentration or 0.0,
        max_daily_dose_mcg=args.max_daily or 0.0,
        mode=mode or Stopped(),
        patient_id=args.patient_id or "",
        patient_bolus=limits,
        catheter=catheter,
    )
    try:
        given.check_wire()
    except ProgramError as exc:
        raise UsageError(_labelled(_flag_label(exc.field, mode), exc.message)) from None
    changes: dict[str, Any] = {
        key: value
        for key, value in (
            ("max_daily_dose_mcg", args.max_daily),
            ("concentration_mcg_per_ml", args.concentration),
            ("drug", args.drug),
            ("patient_id", args.patient_id),
            ("catheter", catheter),
        )
        if value is not None
    }
    if args.patient_bolus is not None:
        changes["patient_bolus"] = limits
    return _ProgramFlags(table, mode, changes)


def _load_program_file(path: str) -> ProgramTable:
    """A program document, behind the bounds every user document has
    (programmer/documents.py)."""
    return read_program_table(path)


def cmd_program(pump: PumpClient, args: argparse.Namespace, flags: _ProgramFlags) -> Output:
    """Build the program (file or current program, then flags), transfer, verify, commit."""
    current = pump.interrogate()
    old = current.program if current.has_program else None
    new = flags.program(current.program)
    missing = [
        option
        for option, absent in (
            ("--drug", not new.drug),
            ("--concentration", new.concentration_mcg_per_ml <= 0),
            ("--max-daily", new.max_daily_dose_mcg <= 0),
        )
        if absent
    ]
    if missing:
        raise UsageError(f"the pump has no program to start from: give {', '.join(missing)}")
    verified = pump.program(new, commit=not args.dry_run)
    shown = verified.applied_to(current.program)
    heading = (
        "Program verified by the pump and discarded (dry run); nothing changed:"
        if args.dry_run
        else "Program verified and committed:"
    )
    text = f"{heading}\n{_program_compare(old, shown)}"
    data = {
        "committed": not args.dry_run,
        "before": None if old is None else old.to_mapping(),
        "program": shown.to_mapping(),
    }
    return Output(text, data)


def cmd_bolus(pump: PumpClient, args: argparse.Namespace, _parsed: None) -> Output:
    """BOLUS of the kind chosen."""
    kind = args.kind
    if kind == "cancel":
        n = pump.cancel_bolus()
        return Output(f"Cancelled {n} bolus(es)", {"kind": kind, "cancelled": n})
    if kind == "clinician":
        result = pump.bolus_clinician(args.dose_mcg, args.duration_min, not args.then_stop)
        after = "then stop therapy" if args.then_stop else "then resume the program"
        text = (
            f"Clinician bolus started: {result.dose_mcg:g} mcg ({result.volume_ml:.3f} mL) "
            f"over {args.duration_min} min, {after}"
        )
    elif kind == "patient":
        result = pump.patient_bolus()
        text = f"Patient bolus started: {result.dose_mcg:g} mcg ({result.volume_ml:.3f} mL)"
    elif kind == "prime":
        result = pump.prime(args.volume)
        text = f"Priming bolus started: {result.volume_ml:.3f} mL"
    else:
        result = pump.bridge_bolus(args.volume, args.old_concentration)
        text = f"Bridge bolus started: {result.volume_ml:.3f} mL ({result.dose_mcg:g} mcg)"
    return Output(text, {"kind": kind, **to_data(result)})


def cmd_refill(pump: PumpClient, args: argparse.Namespace, _parsed: None) -> Output:
    """REFILL."""
    result = pump.refill(
        args.volume_ml, args.drug, args.concentration, args.aspirated, not args.no_bridge
    )
    rows = [
        ("Refill", f"{args.volume_ml:g} mL of {args.drug} {args.concentration:g} mcg/mL"),
        ("Reservoir", f"{result.reservoir_ml:.2f} mL (estimated)"),
        (
            "Bridge",
            f"{result.bridge_volume_ml:.3f} mL bolus started"
            if result.bridge_volume_ml
            else "none",
        ),
        (
            "Low alarm",
            "not projected"
            if result.projected_low_reservoir is None
            else f"projected {_when(result.projected_low_reservoir)}",
        ),
    ]
    return Output(_rows(rows), to_data(result))


def cmd_valve_reset(pump: PumpClient, _args: argparse.Namespace, _parsed: None) -> Output:
    """MRI_VALVE_RESET."""
    pump.reset_mri_valve()
    return Output("MRI safety valve reset: delivery can resume", {"valve_reset": True})


def cmd_catheter_revision(
    pump: PumpClient, args: argparse.Namespace, _parsed: None
) -> Output:
    """CATHETER_REVISION."""
    unprimed_ml = pump.revise_catheter(args.length_cm, args.volume_ul_per_cm)
    text = _rows(
        [
            ("Catheter", f"{args.length_cm:g} cm x {args.volume_ul_per_cm:g} uL/cm (new, empty)"),
            ("Prime", f"allowed up to {unprimed_ml:.3f} mL: `bolus prime` fills it"),
        ]
    )
    return Output(
        text,
        {
            "length_cm": args.length_cm,
            "volume_ul_per_cm": args.volume_ul_per_cm,
            "unprimed_ml": unprimed_ml,
        },
    )


def cmd_log(pump: PumpClient, args: argparse.Namespace, _parsed: None) -> Output:
    """READ_LOG, one page or all."""
    records = pump.read_log(args.page)
    if args.limit is not None:
        records = records[: args.limit]
    lines = []
    for r in records:
        values = " ".join(r.arg_texts())
        lines.append(f"#{r.index:<6} {_when_s(r.time)}  {r.event:<22} {values}".rstrip())
    return Output("\n".join(lines) if lines else "(log empty)", to_data(records))


def _parse_when(text: str) -> datetime:
    if text.strip().lower() == "now":
        return datetime.now(UTC).replace(microsecond=0)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"clock set {text!r}: expected ISO 8601, e.g. 2026-03-01T08:00Z") from None
    when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    low, high, _unit = wire_range(m.SetClockRequest, "time_s")
    if not low <= when.timestamp() <= high:
        span = " to ".join(
            f"{datetime.fromtimestamp(t, UTC):%Y-%m-%d %H:%M:%S}" for t in (low, high)
        )
        raise UsageError(
            f"clock set {text!r}: the protocol carries {span} UTC (the pump accepts less)"
        )
    return when


def cmd_clock(pump: PumpClient, args: argparse.Namespace, when: datetime | None) -> Output:
    """Show the pump clock next to the host's, or set it (``when``: the parsed time)."""
    if when is not None:
        previous = pump.set_clock(when)
        text = f"Pump clock set to {_when_s(when)} (was {_when_s(previous)})"
        return Output(text, {"time": when.isoformat(), "previous": previous.isoformat()})
    status = pump.interrogate()
    host = datetime.now(UTC)
    drift = (status.time - host).total_seconds()
    text = (
        f"Pump clock {_when_s(status.time)}\n"
        f"Host clock {_when_s(host)} (pump is {_duration(drift)} "
        f"{'ahead' if drift >= 0 else 'behind'})"
    )
    return Output(text, {"time": status.time.isoformat(), "host_time": host.isoformat()})


def _alarm_id(text: str | None) -> int | None:
    if text is None or text.strip().lower() == "all":
        return None
    value = text.strip()
    if value.isdigit():
        if int(value) >= ALL_ALARMS:  # one byte on the wire; 0xFF means "every alarm"
            raise UsageError(
                f"alarm {text!r}: a number 0..{ALL_ALARMS - 1}, 'all' or an alarm name"
            )
        return int(value)
    try:
        return int(AlarmId[value.upper().replace("-", "_")])
    except KeyError:
        names = ", ".join(a.name for a in AlarmId)
        raise UsageError(f"alarm {text!r}: a number, 'all' or one of {names}") from None


def cmd_alarms(pump: PumpClient, args: argparse.Namespace, value: Any) -> Output:
    """List, acknowledge (``value``: alarm id or None), or set the low-reservoir threshold
    (``value``: mL)."""
    if args.action == "ack":
        n = pump.acknowledge_alarm(value)
        return Output(f"Acknowledged {n} alarm(s)", {"acknowledged": n})
    if args.action == "test":
        pump.alarm_test()
        return Output(
            "Alarm test: the pump sounded the critical two-tone, then the non-critical tone",
            {"alarm_test": True},
        )
    if args.action == "threshold":
        pump.set_low_reservoir_alarm(value)
        return Output(f"Low-reservoir alarm set to {value:g} mL", {"low_reservoir_alarm_ml": value})
    status = pump.interrogate()
    lines = [
        f"{a.alarm_id} {a.name}  {a.severity.name.lower()}  since {_when(a.raised_at)}  "
        f"{'acknowledged' if a.acknowledged else 'NOT acknowledged'}"
        for a in status.alarms
    ]
    return Output("\n".join(lines) if lines else "No active alarms", to_data(status.alarms))


def cmd_stop(pump: PumpClient, args: argparse.Namespace, _parsed: None) -> Output:
    """STOP_THERAPY."""
    pump.stop_therapy()
    return Output("Therapy stopped", {"therapy": "stopped"})


def cmd_resume(pump: PumpClient, args: argparse.Namespace, _parsed: None) -> Output:
    """RESUME_THERAPY."""
    pump.resume_therapy()
    return Output("Therapy resumed", {"therapy": "resumed"})


# --- running ----------------------------------------------------------------------------------


def _key_source(args: argparse.Namespace) -> KeySource | None:
    if args.no_auth:
        return None
    key_text = args.key or os.environ.get(KEY_ENV)
    master_text = args.master_key or os.environ.get(MASTER_KEY_ENV)
    try:
        if key_text:
            return parse_key(key_text)
        if master_text:
            return master_key_source(master_text.encode("utf-8"), Role[args.role.upper()])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return None


#: values of the other commands, checked in clinical units against what the wire carries:
#: (command, argument) -> (how the error names it, wire record, field)
_WIRE_VALUES: dict[tuple[str, str], tuple[str, type[WireStruct], str]] = {
    ("bolus clinician", "dose_mcg"): ("bolus clinician: DOSE_MCG", m.ClinicianBolus, "dose_ng"),
    ("bolus clinician", "duration_min"): (
        "bolus clinician: DURATION_MIN",
        m.ClinicianBolus,
        "duration_min",
    ),
    ("bolus prime", "volume"): ("--volume", m.PrimingBolus, "volume_nl"),
    ("bolus bridge", "volume"): ("--volume", m.BridgeBolus, "volume_nl"),
    ("bolus bridge", "old_concentration"): (
        "--old-concentration",
        m.BridgeBolus,
        "old_concentration_ng_per_ml",
    ),
    ("catheter-revision", "length_cm"): (
        "catheter-revision: LENGTH_CM",
        m.CatheterRevisionRequest,
        "catheter_length_mm",
    ),
    ("catheter-revision", "volume_ul_per_cm"): (
        "--volume-ul-per-cm",
        m.CatheterRevisionRequest,
        "catheter_volume_nl_per_cm",
    ),
    ("refill", "volume_ml"): ("refill: VOLUME_ML", m.RefillRequest, "volume_nl"),
    ("refill", "concentration"): ("--concentration", m.RefillRequest, "concentration_ng_per_ml"),
    ("refill", "aspirated"): ("--aspirated", m.RefillRequest, "aspirated_nl"),
    ("alarms threshold", "value"): (
        "alarms threshold",
        m.SetAlarmThresholdsRequest,
        "low_reservoir_nl",
    ),
}


def _check_wire_values(command: str, values: dict[str, Any]) -> None:
    """Raise :class:`UsageError` naming the argument for a value the wire cannot carry."""
    for name, value in values.items():
        entry = _WIRE_VALUES.get((command, name))
        if entry is None or value is None:
            continue
        label, struct, wire_name = entry
        try:
            check_wire_value(label, value, struct, wire_name)
        except ProgramError as exc:
            raise UsageError(_labelled(exc.field, exc.message)) from None


def _parse_arguments(args: argparse.Namespace) -> Any:
    """Check the command's arguments before the port is opened; the parsed value the
    command's handler takes (program settings, a time, an alarm, a volume), if any."""
    command = " ".join(filter(None, (args.ctl_command, getattr(args, "kind", None))))
    _check_wire_values(command, vars(args))
    if command == "refill":
        _check_drug(args.drug)
    if command == "program":
        return _program_flags(args)
    if command == "clock":
        return _parse_when(args.when) if args.action == "set" else None
    if command != "alarms":
        return None
    if args.action == "ack":
        return _alarm_id(args.value)
    if args.action == "threshold":
        if args.value is None:
            raise UsageError("alarms threshold: give the low-reservoir volume in mL")
        try:
            threshold_ml = non_negative_float(args.value)
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"alarms threshold {args.value!r}: {exc}") from None
        _check_wire_values("alarms threshold", {"value": threshold_ml})
        return threshold_ml
    if args.value is not None:
        raise UsageError(f"alarms {args.action} takes no value")
    return None


def _open_session(pump: PumpClient, args: argparse.Namespace, key: KeySource | None) -> None:
    info = pump.identify()
    if args.ctl_command == "identify" or args.no_auth:
        return
    if key is None:
        if info.auth_required:
            raise UsageError(
                f"pump {info.serial} requires authentication: give --key HEX (or ${KEY_ENV}), "
                f"--master-key TEXT (or ${MASTER_KEY_ENV}), or --no-auth for a pump that "
                "allows it"
            )
        log.info("pump %s does not require authentication: no session", info.serial)
        return
    _authenticate(pump, info.serial, Role[args.role.upper()], key)


#: How ctl waits out an AUTH_BACKOFF (a seam for tests; blocking is what a CLI should do).
_sleep: Callable[[float], None] = time.sleep
_RETRY_IN = re.compile(r"retry in (\d+(?:\.\d+)?) s")


def _authenticate(pump: PumpClient, serial: str, role: Role, key: KeySource) -> None:
    """Authenticate; after AUTH_BACKOFF wait the time the pump names (at most 60 s), once.

    The backoff means someone failed handshakes for this role recently (a mistyped key, or
    a guesser on the link): waiting is the documented recovery, so ctl does it instead of
    giving up, and says so on stderr. A second refusal is reported as usual.
    """
    try:
        pump.authenticate(role, key)
        return
    except AuthenticationError as exc:
        match = _RETRY_IN.search(str(exc))
        if exc.code is not ResultCode.AUTH_BACKOFF or match is None:
            raise
        wait_s = min(float(match[1]), AUTH_BACKOFF_MAX_S)
    print(
        f"itpump ctl: pump {serial} refuses {role.name} handshakes for {wait_s:g} s after "
        "failed authentications (a mistyped key, or another transmitter guessing); waiting",
        file=sys.stderr,
    )
    _sleep(wait_s)
    pump.authenticate(role, key)


def _print_error(args: argparse.Namespace, kind: str, message: str, **fields: Any) -> None:
    print(f"itpump ctl: {message}", file=sys.stderr)
    if args.json:
        print(json.dumps({"error": {"type": kind, "message": message, **fields}}, indent=2))


_SERVE_PORT = re.compile(r"^\s*(tcp|rfc2217):(\d+)\s*$", re.I)


def _url_hint(url: str) -> str:
    """For `itpump serve --port` syntax (``tcp:7000``), the URL a programmer opens."""
    match = _SERVE_PORT.match(url)
    if match is None:
        return ""
    scheme = "socket" if match[1].lower() == "tcp" else "rfc2217"
    return (
        f" ({url.strip()} is `itpump serve --port` syntax; "
        f"to connect to it use {scheme}://127.0.0.1:{match[2]})"
    )


_NETWORK_URL = re.compile(r"^(socket|rfc2217)://(.*?):([^:/?]*)(?:[/?].*)?$", re.I)


def _check_url(url: str) -> None:
    """Refuse a network URL whose port no socket can have, in one line: pyserial's own
    message for it is its URL-syntax help text, and it came back as a link failure (exit 4)."""
    match = _NETWORK_URL.match(url.strip())
    if match is None:
        return
    port = match[3]
    if not (port.isdigit() and 1 <= int(port) <= 65535):
        raise UsageError(
            f"PORT_URL {url!r}: port {port!r} is not 1..65535 "
            f"(expected {match[1].lower()}://HOST:PORT)"
        )


def run(args: argparse.Namespace) -> int:
    """Connect, run one command, end the session; print the result."""
    _check_url(args.url)
    key = _key_source(args)
    parsed = _parse_arguments(args)
    handler: Callable[[PumpClient, argparse.Namespace, Any], Output] = args.handler
    try:
        with PumpClient(
            args.url, key=key, timeout_s=args.timeout, max_attempts=args.attempts
        ) as pump:
            _open_session(pump, args, key)
            output = handler(pump, args, parsed)
    except PumpRefused as exc:
        request = None if exc.request is None else MessageType(exc.request.TYPE).name
        _print_error(
            args,
            "refused",
            f"refused: {exc.code.name} (0x{int(exc.code):02X})"
            + (f": {exc.detail}" if exc.detail else ""),
            code=exc.code.name,
            code_value=int(exc.code),
            detail=exc.detail,
            request=request,
        )
        return EXIT_REFUSED
    except AuthenticationError as exc:
        code = None if exc.code is None else exc.code.name
        _print_error(args, "authentication", f"authentication failed: {exc}", code=code)
        return EXIT_REFUSED
    except LinkError as exc:
        _print_error(args, "link", str(exc) + _url_hint(args.url))
        return EXIT_LINK
    except PumpError as exc:
        _print_error(args, "error", str(exc))
        return EXIT_ERROR
    if args.json:
        print(json.dumps(output.data, indent=2))
    else:
        print(output.text)
    return EXIT_OK
