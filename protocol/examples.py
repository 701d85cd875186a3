"""Hex examples of real frames for ``docs/protocol.md``, produced by running the protocol.

A pump and a programmer with a fixed key and seeded nonce sources hold a short clinic
conversation through :class:`~protocol.connection.PumpConnection` and
:class:`~protocol.connection.ProgrammerConnection`; every frame is recorded and annotated.
The output is byte-exact from run to run, so a test can regenerate it and fail when the
document drifted from the code.

Pure functions (sans-IO, like the rest of the package): ``update_document(text)`` returns the
document with its generated regions refreshed. Reading and writing ``docs/protocol.md`` is the
job of ``python -m itpump.tools.gen_protocol_docs --write`` (or ``--check``).
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from enum import Enum

from itpump.protocol import auth
from itpump.protocol import messages as m
from itpump.protocol.auth import seeded_nonce_source
from itpump.protocol.codes import AlarmId, ResultCode
from itpump.protocol.connection import (
    AutoReply,
    ProgrammerConnection,
    PumpConnection,
    PumpEvent,
    PumpIdentity,
    ResentResponse,
    ResponseReceived,
)
from itpump.protocol.docgen import enum_tables, message_tables, result_code_table
from itpump.protocol.framing import crc16_ccitt_false, decode_frame
from itpump.protocol.header import parse_body
from itpump.protocol.transfer import (
    TRANSFER_REQUESTS,
    ProgramReceiver,
    program_digest,
    transfer_requests,
)

__all__ = [
    "EXAMPLE_CLINICIAN_KEY",
    "EXAMPLE_KEY",
    "EXAMPLE_PUMP",
    "examples_markdown",
    "generated_regions",
    "update_document",
]

EXAMPLE_KEY = bytes(range(32))  # 00 01 02 ... 1f: for examples only, obviously
#: What the example's clinician programmer holds (the pump derives it from EXAMPLE_KEY).
EXAMPLE_CLINICIAN_KEY = auth.role_key(EXAMPLE_KEY, m.Role.CLINICIAN)
PUMP_SEED = 1
PROGRAMMER_SEED = 2
EXAMPLE_PUMP = PumpIdentity(
    serial="PP20-000042",
    model="peristaltic-20",
    firmware_version="1.0.0",
    capabilities=m.Capability.FLEX
    | m.Capability.PERIODIC_BOLUS
    | m.Capability.PATIENT_BOLUS
    | m.Capability.BRIDGE_BOLUS
    | m.Capability.PRIMING_BOLUS
    | m.Capability.CLINICIAN_BOLUS,
    max_flex_steps=10,
)
_T0 = 1_767_261_600  # 2026-01-01T10:00:00Z, the pump clock in the examples

EXAMPLE_PROGRAM = m.TherapyProgram(
    max_daily_dose_ng=600_000,
    concentration_ng_per_ml=2_000_000,
    catheter_length_mm=1100,
    catheter_volume_nl_per_cm=2600,
    patient_bolus=m.PatientBolusSettings(
        dose_ng=25_000, duration_min=10, lockout_min=180, max_per_day=4
    ),
    mode=m.ContinuousMode(dose_ng_per_day=450_000),
    drug_name="baclofen",
    patient_id="P-0001",
)
EXAMPLE_STATUS = m.InterrogateResponse(
    time_s=_T0,
    therapy_state=m.TherapyState.RUNNING,
    # Below the 2 mL threshold, so the LOW_RESERVOIR alarm below is consistent with it (and
    # no low-reservoir time is projected: it has been reached).
    reservoir_volume_nl=1_850_000,
    reservoir_capacity_nl=20_000_000,
    low_reservoir_threshold_nl=2_000_000,
    rate_nl_per_day=200_000,
    # 400 mcg of basal plus the one 25 mcg patient bolus of the program's settings below
    dose_24h_ng=425_000,
    patient_boluses_24h=1,
    battery_per_mille=870,
    battery_eri=False,
    battery_eos=False,
    projected_low_reservoir_s=None,
    projected_eri_s=_T0 + 3 * 365 * 86_400,
    # The example program at 400 mcg/day (patient_boluses_24h above counts boluses of its
    # patient-bolus settings).
    program=dataclasses.replace(
        EXAMPLE_PROGRAM, mode=m.ContinuousMode(dose_ng_per_day=400_000)
    ),
    alarms=(
        m.Alarm(
            alarm_id=AlarmId.LOW_RESERVOIR,
            severity=m.AlarmSeverity.NON_CRITICAL,
            raised_at_s=_T0 - 3_600,
            acknowledged=False,
        ),
    ),
    # 1.35 mL above the 0.5 mL empty threshold at 0.2 mL/day plus one 25 mcg bolus a day
    projected_empty_s=_T0 + 6 * 86_400 + 8 * 3600,
)
_BOLUS_REFUSAL = m.Refusal.make(
    ResultCode.DAILY_DOSE_EXCEEDED,
    "dose_mcg=900 would bring the 24 h dose to 1325 mcg; max_daily_dose_mcg is 600",
)


# --- rendering --------------------------------------------------------------------------------


def _hex(data: bytes) -> str:
    return " ".join(f"{b:02x}" for b in data)


def _hex_lines(label: str, data: bytes, per_line: int = 24) -> list[str]:
    if not data:
        return [f"{label:<8}(none)"]
    chunks = [data[i : i + per_line] for i in range(0, len(data), per_line)]
    return [f"{label if i == 0 else '':<8}{_hex(chunk)}" for i, chunk in enumerate(chunks)]


def describe(value: object) -> str:
    """A compact, deterministic rendering of a message (enums by name, bytes in hex)."""
    if isinstance(value, Enum):
        return str(value.name)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple):
        return "[" + ", ".join(describe(v) for v in value) + "]"
    if is_dataclass(value) and not isinstance(value, type):
        inner = ", ".join(f"{f.name}={describe(getattr(value, f.name))}" for f in fields(value))
        return f"{type(value).__name__}({inner})"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _frame_block(direction: str, frame: bytes, message: object) -> list[str]:
    body = decode_frame(frame)
    packet = parse_body(body)
    h = packet.header
    name = m.MessageType(h.msg_type & ~m.RESPONSE_BIT).name
    kind = "response" if h.is_response else "request"
    lines = [f"{direction} {name} {kind}, {len(frame)} bytes on the wire:", ""]
    lines.append("```text")
    lines += _hex_lines("wire", frame)
    lines.append(
        f"{'header':<8}{_hex(body[:9])}    version {h.version}, type 0x{h.msg_type:02x}, "
        f"flags 0x{h.flags:02x}, seq {h.seq}, session 0x{h.session_id:08x}"
    )
    lines += _hex_lines("payload", packet.payload)
    if packet.counter is not None and packet.mac is not None:
        lines.append(f"{'counter':<8}{_hex(packet.counter.to_bytes(4, 'big'))}    {packet.counter}")
        lines.append(f"{'mac':<8}{_hex(packet.mac)}")
    lines.append(f"{'crc':<8}{crc16_ccitt_false(body):04x}")
    for i, text in enumerate(textwrap.wrap(describe(message), 90, break_long_words=True)):
        lines.append(f"{'decoded' if i == 0 else '':<8}{text}")
    lines.append("```")
    lines.append("")
    return lines


# --- the conversation -------------------------------------------------------------------------


@dataclass
class _Clinic:
    pump: PumpConnection
    prog: ProgrammerConnection
    receiver: ProgramReceiver
    override: m.Response | None = None
    last_request_frame: bytes = b""

    def firmware(self, request: m.Request) -> m.Response:
        """A stand-in for the firmware command handler, with fixed answers."""
        if self.override is not None:
            response, self.override = self.override, None
            return response
        if isinstance(request, m.InterrogateRequest):
            return EXAMPLE_STATUS
        if isinstance(request, TRANSFER_REQUESTS):
            return self.receiver.handle(request)
        return m.Ack()

    def pump_answer(self, frame: bytes) -> tuple[bytes, m.Response]:
        answers: list[m.Response] = []

        def record(event: PumpEvent) -> None:
            if isinstance(event, ResentResponse):
                raise AssertionError("examples never retransmit")
            if isinstance(event, AutoReply):
                answers.append(event.response)

        def firmware(request: m.Request) -> m.Response:
            answers.append(self.firmware(request))
            return answers[-1]

        data = self.pump.respond(frame, firmware, on_event=record)
        assert len(answers) == 1, answers
        return data, answers[0]

    def exchange(self, request: m.Request) -> tuple[list[str], m.Response]:
        frame = self.prog.send(request, 0.0)
        self.last_request_frame = frame
        answer, _ = self.pump_answer(frame)
        self.prog.receive_data(answer)
        event = self.prog.next_event()
        assert isinstance(event, ResponseReceived), event
        # Show what the programmer decoded, not what the firmware handed over.
        lines = _frame_block("Programmer to pump:", frame, request)
        lines += _frame_block("Pump to programmer:", answer, event.response)
        return lines, event.response


def examples_markdown() -> str:
    """The examples section of the specification (deterministic)."""
    prog_nonces = seeded_nonce_source(PROGRAMMER_SEED)
    clinic = _Clinic(
        pump=PumpConnection(EXAMPLE_PUMP, EXAMPLE_KEY, seeded_nonce_source(PUMP_SEED)),
        prog=ProgrammerConnection(prog_nonces, key=EXAMPLE_CLINICIAN_KEY),
        receiver=ProgramReceiver(),
    )
    out: list[str] = [
        "All examples come from one conversation between a pump (serial number "
        f"`{EXAMPLE_PUMP.serial}`) with the key K = bytes 0x00..0x1f "
        f"(`{EXAMPLE_KEY.hex()}`) and a clinician programmer holding K_clinician = "
        'HMAC-SHA256(K, "itpump/v1/role-key" | 01) '
        f"(`{EXAMPLE_CLINICIAN_KEY.hex()}`); nonces come from seeded generators. Each frame "
        "is shown as sent on the wire (flags, stuffing and CRC included), then split into header, "
        "payload, MAC trailer and CRC, all before stuffing. Where a `7d` appears in the wire "
        "bytes, it escapes a `7d` or `7e` of the body.",
        "",
    ]

    def section(title: str, text: str, request: m.Request) -> m.Response:
        out.extend([f"### {title}", "", text, ""])
        lines, response = clinic.exchange(request)
        out.extend(lines)
        return response

    section(
        "Identify",
        "The programmer speaks version 1 only; the pump selects it and reports its features.",
        m.IdentifyRequest(versions=(1,)),
    )
    begin = clinic.prog.auth_begin(m.Role.CLINICIAN)
    challenge = section(
        "Authenticate: AUTH_BEGIN",
        "The programmer asks for the CLINICIAN role with its nonce Np; the pump answers "
        "with a session id and its nonce Nc.",
        begin,
    )
    assert isinstance(challenge, m.AuthBeginResponse)
    transcript = auth.transcript(
        begin.role,
        challenge.session_id,
        begin.programmer_nonce,
        challenge.pump_nonce,
        EXAMPLE_PUMP.serial,
    )
    out += [
        "The transcript T and the values derived from it with the clinician key K_role:",
        "",
        "```text",
        *_hex_lines("K_role", EXAMPLE_CLINICIAN_KEY, 32),
        *_hex_lines("T", transcript, 32),
        *_hex_lines("proof_P", auth.programmer_proof(EXAMPLE_CLINICIAN_KEY, transcript), 32),
        *_hex_lines("proof_D", auth.pump_proof(EXAMPLE_CLINICIAN_KEY, transcript), 32),
        *_hex_lines("K_sess", auth.session_key(EXAMPLE_CLINICIAN_KEY, transcript), 32),
        "```",
        "",
    ]
    section(
        "Authenticate: AUTH_PROOF",
        "The header carries the offered session id; the pump checks proof_P and answers "
        "with proof_D, which the programmer checks in turn.",
        clinic.prog.auth_proof(),
    )
    interrogate = m.InterrogateRequest()
    section(
        "Interrogate",
        "The first command of the session: MAC flag set, counter 1. The answer carries the "
        "same counter and its own MAC.",
        interrogate,
    )
    replay_frame = clinic.last_request_frame

    encoded = EXAMPLE_PROGRAM.encode()
    out += [
        "### Program transfer",
        "",
        "The program to send, encoded as a TherapyProgram record "
        f"({len(encoded)} bytes), and its SHA-256 digest:",
        "",
        "```text",
        *_hex_lines("program", encoded, 32),
        *_hex_lines("sha256", program_digest(encoded), 32),
        *[
            f"{'decoded' if i == 0 else '':<8}{t}"
            for i, t in enumerate(textwrap.wrap(describe(EXAMPLE_PROGRAM), 90))
        ],
        "```",
        "",
        "It travels in 32-byte chunks: BEGIN, DATA, DATA, VERIFY (the pump echoes digest and",
        "decoded program; nothing has changed yet), then COMMIT.",
        "",
    ]
    for request in [*transfer_requests(EXAMPLE_PROGRAM, chunk_bytes=32), None]:
        if request is None:
            request = m.ProgramCommitRequest(program_digest(encoded))
        out.append(f"#### {m.MessageType(request.TYPE).name}")
        out.append("")
        lines, response = clinic.exchange(request)
        assert not isinstance(response, m.Refusal), response
        out.extend(lines)

    clinic.override = _BOLUS_REFUSAL
    section(
        "A refusal from the firmware",
        "A clinician bolus that would exceed the maximum daily dose. Refusals carry the "
        "result code and a detail naming the field and the limit, and no body.",
        m.BolusRequest(m.ClinicianBolus(dose_ng=900_000, duration_min=30, then_resume=True)),
    )
    out += [
        "### A refusal from the protocol layer",
        "",
        "The INTERROGATE frame recorded above, replayed later in the session: its MAC is",
        "still valid but its counter is not above the last accepted one. The refusal is not",
        "authenticated (the request's counter is stale) and nothing reaches the firmware.",
        "",
    ]
    answer, response = clinic.pump_answer(replay_frame)
    out += _frame_block("Replayed frame:", replay_frame, interrogate)
    out += _frame_block("Pump to programmer:", answer, response)
    section(
        "End the session",
        "The answer is still authenticated with the session key; then the pump forgets it.",
        m.EndSessionRequest(),
    )
    return "\n".join(out).rstrip() + "\n"


# --- document regions -------------------------------------------------------------------------

_REGION = re.compile(
    r"(<!-- BEGIN GENERATED: (?P<name>[a-z-]+) -->\n)"
    r"(?P<body>.*?)"
    r"(<!-- END GENERATED: (?P=name) -->)",
    re.DOTALL,
)


def generated_regions() -> dict[str, Callable[[], str]]:
    """Renderers of every generated region of the document, by marker name."""
    return {
        "result-codes": result_code_table,
        "enums": enum_tables,
        "messages": message_tables,
        "examples": examples_markdown,
    }


def update_document(text: str) -> str:
    """``text`` with every generated region re-rendered; raises if a region is missing."""
    renderers = generated_regions()
    found: set[str] = set()

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in renderers:
            raise ValueError(f"unknown generated region {name!r}")
        found.add(name)
        return match.group(1) + "\n" + renderers[name]().rstrip("\n") + "\n\n" + match.group(4)

    updated = _REGION.sub(replace, text)
    missing = set(renderers) - found
    if missing:
        raise ValueError(f"document lacks generated regions: {sorted(missing)}")
    return updated
