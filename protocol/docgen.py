"""Reference tables of ``docs/protocol.md`` generated from the code.

The message layouts, enumerations and result codes in the specification are rendered from
the same wire specs that encode and decode them, so the document cannot disagree with the
implementation. :mod:`protocol.examples` renders them;
``python -m itpump.tools.gen_protocol_docs`` writes them into the document.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from enum import IntEnum, IntFlag

from itpump.protocol.codes import (
    EVENT_ARGS,
    VOLUME_BOLUS_KINDS,
    AlarmId,
    EventArg,
    LogBolusKind,
    LogTherapyMode,
    ResultCode,
)
from itpump.protocol.messages import (
    BOLUS_KINDS,
    MESSAGES,
    THERAPY_MODES,
    Alarm,
    AlarmSeverity,
    Capability,
    FlexPeriod,
    FlexStep,
    LogEntry,
    MessageInfo,
    MessageType,
    PatientBolusSettings,
    Role,
    TherapyProgram,
    TherapyState,
)
from itpump.protocol.wire import (
    IntSpec,
    ListSpec,
    OptionalSpec,
    Spec,
    StructSpec,
    UnionSpec,
    WireStruct,
    struct_fields,
    struct_fixed_size,
    struct_max_size,
)

__all__ = [
    "RESULT_CODE_MEANINGS",
    "enum_tables",
    "event_code_table",
    "message_tables",
    "result_code_table",
]

#: What each result code means, for the specification (codes.py holds only the numbers).
RESULT_CODE_MEANINGS: dict[str, str] = {
    "OK": "accepted; the response body follows",
    "MALFORMED": "payload (or header flags) do not decode for this message type",
    "UNKNOWN_MESSAGE": "message type not defined",
    "UNSUPPORTED_VERSION": "header version not the negotiated one, or no common version",
    "NOT_AUTHENTICATED": "command needs a session: none is active, or the session id is wrong",
    "AUTH_FAILED": "proof rejected, or no challenge outstanding",
    "BAD_MAC": "MAC missing or wrong",
    "REPLAYED": "counter not above the last accepted one of the session",
    "ROLE_FORBIDDEN": "the session's role may not send this command",
    "SEQUENCE_ERROR": "header sequence number outside the window (section 9); recover with "
    "IDENTIFY, then send the request again",
    "SESSION_BUSY": "another telemetry head holds a session with the pump; nothing was done "
    "(retry when that session has ended)",
    "AUTH_BACKOFF": "AUTH_BEGIN refused after repeated failed authentications until the "
    "backoff ends (the detail gives the seconds to wait, at most 60; section 7); nothing "
    "changed",
    "CHALLENGE_REPLACED": "AUTH_PROOF answered a challenge that a newer AUTH_BEGIN on the same "
    "link replaced (another transmitter on a shared link); the proof was right, it does not "
    "count as a failed authentication: send AUTH_BEGIN again (section 7)",
    "INTERNAL_ERROR": "the pump failed while answering (logged); the request may or may not "
    "have been carried out: interrogate. The pump keeps answering",
    "OUT_OF_RANGE": "a field outside the pump's allowed range; detail names field and range",
    "RATE_OUT_OF_RANGE": "the resulting flow rate is outside the pump's range",
    "DAILY_DOSE_EXCEEDED": "the program or bolus could exceed the maximum daily dose",
    "RESERVOIR_CAPACITY_EXCEEDED": "refill volume above the reservoir capacity",
    "LOCKOUT_ACTIVE": "patient bolus requested during its lockout",
    "PATIENT_BOLUS_DAILY_MAX": "patient bolus daily maximum reached",
    "TOO_MANY_STEPS": "more flex steps than this pump supports",
    "NO_PENDING_PROGRAM": "no program transfer (or no verified program) to act on",
    "PROGRAM_VERIFY_FAILED": "transfer incomplete, digest mismatch, or program undecodable",
    "INVALID_STATE": "not possible now (e.g. resume while running, bolus without drug)",
    "THERAPY_DISABLED": "end of service or critical fault: no delivery possible",
    "NOT_PRIMED": "catheter not primed",
    "LOG_PAGE_OUT_OF_RANGE": "log page number beyond the last page",
    "NOT_SUPPORTED": "this pump model lacks the feature",
    "PROGRAM_CHUNK_OUT_OF_ORDER": "PROGRAM_DATA offset is not the number of bytes received so "
    "far; the detail gives the expected offset: send the chunk from there",
}


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in rows:
        cells = [str(c).replace("|", "\\|") for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _range(spec: Spec) -> str:
    if isinstance(spec, IntSpec) and spec.is_full_range:
        return "any"
    return spec.range_text()


def _type(spec: Spec) -> str:
    if isinstance(spec, StructSpec | OptionalSpec):
        name = spec.cls.__name__
        text = spec.type_text()
        return text.replace(name, f"[{name}](#{name.lower()})")
    if isinstance(spec, ListSpec) and isinstance(spec.item, StructSpec):
        name = spec.item.cls.__name__
        return f"list8 of [{name}](#{name.lower()})"
    if isinstance(spec, UnionSpec):
        return "u8 tag + one of " + ", ".join(
            f"[{m.__name__}](#{m.__name__.lower()})" for m in spec.members
        )
    return spec.type_text()


def record_table(cls: type[WireStruct]) -> list[str]:
    """The field table of one record, offsets given while they are fixed."""
    fields = struct_fields(cls)
    if not fields:
        return ["(no fields: empty payload)"]
    rows = []
    offset: int | None = 0
    for name, spec in fields:
        rows.append(
            [
                "" if offset is None else str(offset),
                f"`{name}`",
                _type(spec),
                spec.unit or "",
                _range(spec),
                spec.doc,
            ]
        )
        size = spec.fixed_size
        offset = None if offset is None or size is None else offset + size
    lines = _table(("offset", "field", "type", "unit", "range", "meaning"), rows)
    fixed = struct_fixed_size(cls)
    size_text = f"{fixed} bytes" if fixed is not None else f"up to {struct_max_size(cls)} bytes"
    lines.append("")
    lines.append(f"Size: {size_text}.")
    return lines


def _doc(cls: type[object]) -> str:
    return (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")


def _roles(info: MessageInfo) -> str:
    if info.code is MessageType.BOLUS:
        return "CLINICIAN; PATIENT for PatientBolus only"
    return "CLINICIAN, PATIENT" if info.patient_allowed else "CLINICIAN"


def message_tables() -> str:
    """One section per message type: summary, session rule, request and response layouts."""
    lines = [
        "Summary (request type; the response type is the request type + 0x80):",
        "",
        *_table(
            ("type", "name", "session + MAC", "roles", "request", "response body"),
            [
                (
                    f"0x{info.code:02X}",
                    info.code.name,
                    "required" if info.needs_session else "never",
                    _roles(info),
                    f"[{info.request.__name__}](#{info.request.__name__.lower()})",
                    f"[{info.response.__name__}](#{info.response.__name__.lower()})",
                )
                for info in MESSAGES.values()
            ],
        ),
        "",
    ]
    seen: set[type[WireStruct]] = set()
    for info in MESSAGES.values():
        session = "required" if info.needs_session else "never"
        lines += [
            f"### 0x{info.code:02X} {info.code.name}",
            "",
            f"Session and MAC: {session}. Roles: {_roles(info)}.",
            "",
        ]
        pair: tuple[type[WireStruct], type[WireStruct]] = (info.request, info.response)
        for cls in pair:
            if cls in seen:
                lines += [f"Response body: [{cls.__name__}](#{cls.__name__.lower()}).", ""]
                continue
            seen.add(cls)
            lines += [f"#### {cls.__name__}", "", _doc(cls), "", *record_table(cls), ""]
    lines += ["### Records", ""]
    records: list[type[WireStruct]] = [
        TherapyProgram,
        *THERAPY_MODES,
        FlexStep,
        PatientBolusSettings,
        Alarm,
        LogEntry,
        *BOLUS_KINDS,
    ]
    for cls in records:
        tag = f" (tag {cls.TAG})" if cls.TAG >= 0 else ""
        lines += [f"#### {cls.__name__}", "", _doc(cls) + tag, "", *record_table(cls), ""]
        if cls is LogEntry:
            lines += event_code_table()
    return "\n".join(lines).rstrip() + "\n"


def _arg_text(arg: EventArg) -> str:
    text = f"`{arg.name}`"
    if arg.unit:
        text += f" ({arg.unit})"
    if arg.codes:
        text += f" ({arg.codes})"
    if arg.note:
        text += f": {arg.note}"
    return text


def event_code_table() -> list[str]:
    """The event codes of ``LogEntry.event_code`` with the names and units of their arguments."""
    volume_kinds = " and ".join(kind.name for kind in sorted(VOLUME_BOLUS_KINDS))
    rows = [
        (str(int(code)), code.name, "; ".join(_arg_text(a) for a in args) or "(none)")
        for code, args in EVENT_ARGS.items()
    ]
    codes_used = sorted({a.codes for args in EVENT_ARGS.values() for a in args if a.codes})
    return [
        "Event codes (`event_code`) and their arguments (`args_milli` / 1000, in this order; "
        "a trailing argument may be absent, and an entry never has more). Code arguments are "
        f"numbers of the enumerations {', '.join(codes_used)} (see Enumerations). For "
        f"{volume_kinds}, BOLUS_STARTED gives a `volume` (mL) in place of the `dose`.",
        "",
        *_table(("code", "event", "arguments"), rows),
        "",
    ]


def _enum_rows(enum: type[IntEnum] | type[IntFlag]) -> list[tuple[str, str]]:
    rows = []
    for member in enum:
        value = int(member)
        if isinstance(member, IntFlag):
            if value == 0:
                continue
            rows.append((f"bit {value.bit_length() - 1} (0x{value:02X})", str(member.name)))
        else:
            rows.append((str(value), str(member.name)))
    return rows


def enum_tables() -> str:
    """Tables of every enumeration used on the wire."""
    lines: list[str] = []
    enums: list[type[IntEnum] | type[IntFlag]] = [
        Role,
        Capability,
        TherapyState,
        AlarmSeverity,
        AlarmId,
        FlexPeriod,
        LogBolusKind,
        LogTherapyMode,
    ]
    for enum in enums:
        lines += [f"#### {enum.__name__}", "", _doc(enum), ""]
        lines += _table(("value", "name"), _enum_rows(enum))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def result_code_table() -> str:
    """The result codes with their meaning."""
    rows = [
        (f"0x{code:02X}", code.name, RESULT_CODE_MEANINGS.get(code.name, "(see the firmware)"))
        for code in ResultCode
    ]
    return "\n".join(_table(("code", "name", "meaning"), rows)) + "\n"
