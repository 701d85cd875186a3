"""Typed messages: every request and response payload, with units, ranges and codecs.

Integers on the wire are fixed point with the unit in the field name:

* drug mass in nanograms (``_ng``; 1 mcg = 1000 ng), dose rates in ``_ng_per_day``;
* volumes in nanolitres (``_nl``; 1 mL = 1 000 000 nL), rates in ``_nl_per_day``;
* concentrations in ``_ng_per_ml`` (numerically equal to 0.001 mcg/mL);
* instants as ``_s``: seconds since the Unix epoch, UTC; durations in ``_min`` or ``_s``;
* catheter length in millimetres, catheter internal volume in nL per cm.

The ranges declared here are the *wire* limits: a value outside them makes the payload
malformed (``ResultCode.MALFORMED``). The pump's own limits, which depend on the device
profile (rates, reservoir volume, flex step count ...), are checked by the firmware and
refused with a specific code (``OUT_OF_RANGE``, ``RATE_OUT_OF_RANGE`` ...).

Helpers for the float units the firmware uses live in :mod:`protocol.units`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import ClassVar

from itpump.protocol.codes import ResultCode
from itpump.protocol.wire import (
    IntSpec,
    WireError,
    WireStruct,
    boolean,
    enum8,
    fixed_bytes,
    flags32,
    list_of,
    nested,
    optional,
    string,
    struct_max_size,
    tail_bytes,
    u8,
    u16,
    u32,
    union,
    wire_struct,
)

# --- wire limits --------------------------------------------------------------------------
MAX_MASS_NG = 1_000_000_000  # 1 g: above any intrathecal dose or dose rate per day
MAX_CONCENTRATION_NG_PER_ML = 1_000_000_000  # 1 g/mL
MAX_VOLUME_NL = 1_000_000_000  # 1 L
MINUTES_PER_DAY = 1440
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY
NONCE_SIZE = 16
PROOF_SIZE = 32
DIGEST_SIZE = 32  # SHA-256
MAX_VERSIONS = 8
MAX_FLEX_STEPS_WIRE = 64  # the device profile's own limit is smaller (TOO_MANY_STEPS)
MAX_ALARMS = 32
MAX_LOG_ENTRIES_PER_PAGE = 16
MAX_LOG_ARGS = 6
MAX_PROGRAM_CHUNK = 512
MAX_DETAIL_BYTES = 120
SERIAL_MAX_BYTES = 32
NAME_MAX_BYTES = 32
ALL_ALARMS = 0xFF  # alarm_id value of ACK_ALARM meaning "every alarm"
RESPONSE_BIT = 0x80  # response type = request type | RESPONSE_BIT


class MessageType(IntEnum):
    """Request type codes; a response carries ``type | 0x80``."""

    IDENTIFY = 0x01
    AUTH_BEGIN = 0x02
    AUTH_PROOF = 0x03
    END_SESSION = 0x04
    INTERROGATE = 0x10
    READ_LOG = 0x11
    SET_CLOCK = 0x20
    SET_ALARM_THRESHOLDS = 0x21
    ACK_ALARM = 0x22
    PROGRAM_BEGIN = 0x30
    PROGRAM_DATA = 0x31
    PROGRAM_VERIFY = 0x32
    PROGRAM_COMMIT = 0x33
    PROGRAM_ABORT = 0x34
    BOLUS = 0x40
    STOP_THERAPY = 0x41
    RESUME_THERAPY = 0x42
    REFILL = 0x50
    CATHETER_REVISION = 0x51
    MRI_VALVE_RESET = 0x52
    ALARM_TEST = 0x53


class Role(IntEnum):
    """Who the programmer authenticates as."""

    CLINICIAN = 1  # every command
    PATIENT = 2  # identify, interrogate, patient bolus request, end session


class Capability(IntFlag):
    """Optional features of a pump model, reported by IDENTIFY."""

    NONE = 0
    FLEX = 1 << 0
    PERIODIC_BOLUS = 1 << 1
    PATIENT_BOLUS = 1 << 2
    BRIDGE_BOLUS = 1 << 3
    PRIMING_BOLUS = 1 << 4
    CLINICIAN_BOLUS = 1 << 5


class TherapyState(IntEnum):
    """What the pump is doing, as reported by INTERROGATE."""

    RUNNING = 1
    STOPPED = 2
    BOLUS = 3  # a clinician or patient bolus on top of the basal
    PRIMING = 4
    BRIDGING = 5
    MINIMUM_RATE = 6  # reservoir estimated empty: keep-open rate only
    DISABLED = 7  # end of service or critical fault: no delivery possible


class AlarmSeverity(IntEnum):
    """Critical alarms mean therapy is or will be interrupted."""

    NON_CRITICAL = 1
    CRITICAL = 2


class FlexPeriod(IntEnum):
    """Length of a flex pattern before it repeats."""

    DAILY = 1  # starts at 00:00 UTC
    WEEKLY = 2  # starts on Monday 00:00 UTC

    @property
    def minutes(self) -> int:
        """Period length in minutes."""
        return MINUTES_PER_DAY if self is FlexPeriod.DAILY else MINUTES_PER_WEEK


# --- base classes -----------------------------------------------------------------------------


class Request(WireStruct):
    """A programmer-to-pump message; ``TYPE`` is its message type code."""

    __slots__ = ()
    TYPE: ClassVar[MessageType]


class ResponseBody(WireStruct):
    """The body of a successful response (result OK)."""

    __slots__ = ()


@wire_struct
class Ack(ResponseBody):
    """Successful response without a body."""


@wire_struct
class Refusal(WireStruct):
    """A refused request: result code and a short text naming the field and allowed range."""

    result: ResultCode = enum8(ResultCode, "why the request was refused (never OK)")
    detail: str = string(
        "human-readable reason, e.g. 'dose_mcg=900 outside 0.001..500 mcg'",
        max_bytes=MAX_DETAIL_BYTES,
        default="",
    )

    def check(self) -> None:
        if self.result is ResultCode.OK:
            raise WireError("result: a refusal cannot carry OK")

    @classmethod
    def make(cls, result: ResultCode, detail: str = "") -> Refusal:
        """A refusal whose detail is cut (on a character boundary) to the wire limit."""
        raw = detail.encode("utf-8")[:MAX_DETAIL_BYTES]
        return cls(result, raw.decode("utf-8", errors="ignore"))


Response = ResponseBody | Refusal

# --- shared records ---------------------------------------------------------------------------


@wire_struct
class FlexStep(WireStruct):
    """From ``start_min`` after the period start until the next step, deliver a dose rate."""

    start_min: int = u16(
        "start of the step, from the period start", unit="min", hi=MINUTES_PER_WEEK - 1
    )
    dose_ng_per_day: int = u32("dose rate during the step", unit="ng/day", hi=MAX_MASS_NG)


@wire_struct
class StoppedMode(WireStruct):
    """Mode STOPPED: no basal delivery."""

    TAG: ClassVar[int] = 0


@wire_struct
class ContinuousMode(WireStruct):
    """Mode CONTINUOUS: one dose rate around the clock."""

    TAG: ClassVar[int] = 1
    dose_ng_per_day: int = u32("basal dose rate", unit="ng/day", hi=MAX_MASS_NG)


@wire_struct
class FlexMode(WireStruct):
    """Mode FLEX: a daily or weekly pattern of dose-rate steps."""

    TAG: ClassVar[int] = 2
    period: FlexPeriod = enum8(FlexPeriod, "length of the repeating pattern")
    steps: tuple[FlexStep, ...] = list_of(
        FlexStep,
        "the steps; first at 0 min, start_min strictly increasing, below the period length",
        min_items=1,
        max_items=MAX_FLEX_STEPS_WIRE,
    )

    def check(self) -> None:
        if self.steps[0].start_min != 0:
            raise WireError("steps[0].start_min must be 0")
        for i in range(1, len(self.steps)):
            if self.steps[i].start_min <= self.steps[i - 1].start_min:
                raise WireError(f"steps[{i}].start_min must be above steps[{i - 1}].start_min")
        if self.steps[-1].start_min >= self.period.minutes:
            raise WireError(
                f"steps[{len(self.steps) - 1}].start_min must be below {self.period.minutes}"
            )


@wire_struct
class PeriodicBolusMode(WireStruct):
    """Mode PERIODIC_BOLUS: a basal rate plus a bolus repeated at a fixed interval."""

    TAG: ClassVar[int] = 3
    basal_dose_ng_per_day: int = u32("basal dose rate", unit="ng/day", hi=MAX_MASS_NG)
    bolus_dose_ng: int = u32("dose of each bolus", unit="ng", lo=1, hi=MAX_MASS_NG)
    bolus_duration_min: int = u16("duration of each bolus", unit="min", lo=1, hi=MINUTES_PER_WEEK)
    interval_min: int = u16(
        "time from one bolus start to the next (>= bolus_duration_min)",
        unit="min",
        lo=1,
        hi=MINUTES_PER_WEEK,
    )
    first_offset_min: int = u16(
        "first bolus start after the program is committed", unit="min", hi=MINUTES_PER_WEEK
    )

    def check(self) -> None:
        if self.bolus_duration_min > self.interval_min:
            raise WireError("bolus_duration_min must not exceed interval_min")


TherapyModeBlock = StoppedMode | ContinuousMode | FlexMode | PeriodicBolusMode
THERAPY_MODES = (StoppedMode, ContinuousMode, FlexMode, PeriodicBolusMode)


@wire_struct
class PatientBolusSettings(WireStruct):
    """Patient-activated bolus: dose, minimum time between starts, maximum per 24 h."""

    dose_ng: int = u32("dose of one patient bolus", unit="ng", lo=1, hi=MAX_MASS_NG)
    duration_min: int = u16("duration of one bolus", unit="min", lo=1, hi=MINUTES_PER_DAY)
    lockout_min: int = u16(
        "minimum time from one bolus start to the next", unit="min", hi=MINUTES_PER_WEEK
    )
    max_per_day: int = u8("most boluses in any 24 h", lo=1, hi=255)


@wire_struct
class TherapyProgram(WireStruct):
    """A complete therapy program with its program-wide settings, committed in one step.

    ``drug_name`` and ``concentration_ng_per_ml`` state what the programmer assumed is in the
    reservoir; the pump refuses a program whose drug does not match (REFILL changes the drug).
    """

    max_daily_dose_ng: int = u32(
        "largest dose allowed in any 24 h, patient boluses included",
        unit="ng",
        hi=MAX_MASS_NG,
        special=((0, "no program"),),
    )
    concentration_ng_per_ml: int = u32(
        "drug concentration the program was computed for",
        unit="ng/mL",
        hi=MAX_CONCENTRATION_NG_PER_ML,
        special=((0, "no drug"),),
    )
    catheter_length_mm: int = u16("implanted catheter length", unit="mm", special=((0, "not set"),))
    catheter_volume_nl_per_cm: int = u16(
        "catheter internal volume per cm", unit="nL/cm", special=((0, "not set"),)
    )
    patient_bolus: PatientBolusSettings | None = optional(
        PatientBolusSettings, "patient-activated bolus; absent = disabled"
    )
    mode: TherapyModeBlock = union(THERAPY_MODES, "infusion mode and its parameters")
    drug_name: str = string("drug name", max_bytes=NAME_MAX_BYTES)
    patient_id: str = string("patient identifier", max_bytes=NAME_MAX_BYTES)


@wire_struct
class Alarm(WireStruct):
    """An active alarm."""

    alarm_id: int = u8("alarm identifier (AlarmId)", lo=1, hi=254)
    severity: AlarmSeverity = enum8(AlarmSeverity, "critical or not")
    raised_at_s: int = u32("when it was raised", unit="s since epoch")
    acknowledged: bool = boolean("silenced by ACK_ALARM (the condition may persist)")


@wire_struct
class LogEntry(WireStruct):
    """One event-log record."""

    index: int = u32("sequence number of the entry since manufacture")
    time_s: int = u32("pump clock when it happened", unit="s since epoch")
    event_code: int = u16("what happened (firmware event code)")
    args_milli: tuple[int, ...] = list_of(
        IntSpec(8, "argument", signed=True),
        "numeric arguments of the event, each times 1000 (e.g. 2.6 is sent as 2600)",
        max_items=MAX_LOG_ARGS,
    )


# --- session messages -------------------------------------------------------------------------


@wire_struct
class IdentifyRequest(Request):
    """Who are you, and which protocol versions do we share? Always sent with header version 1."""

    TYPE: ClassVar[MessageType] = MessageType.IDENTIFY
    versions: tuple[int, ...] = list_of(
        IntSpec(1, "version", lo=1),
        "protocol versions the programmer speaks",
        min_items=1,
        max_items=MAX_VERSIONS,
        default=(1,),
    )


@wire_struct
class IdentifyResponse(ResponseBody):
    """The pump's identity, its features and the protocol version both sides will use."""

    selected_version: int = u8("highest version in both lists: use it in every later header", lo=1)
    capabilities: Capability = flags32(Capability, "optional features of this pump")
    auth_required: bool = boolean("whether commands need an authenticated session")
    max_body_bytes: int = u16("largest frame body the pump accepts", unit="bytes", lo=64)
    max_flex_steps: int = u8("most flex steps a program may have on this pump", lo=1)
    versions: tuple[int, ...] = list_of(
        IntSpec(1, "version", lo=1),
        "protocol versions the pump speaks",
        min_items=1,
        max_items=MAX_VERSIONS,
    )
    serial: str = string("serial number; selects the per-pump key", max_bytes=SERIAL_MAX_BYTES)
    model: str = string("model name", max_bytes=NAME_MAX_BYTES)
    firmware_version: str = string("firmware version", max_bytes=16)


@wire_struct
class AuthBeginRequest(Request):
    """Start the challenge-response handshake for a role."""

    TYPE: ClassVar[MessageType] = MessageType.AUTH_BEGIN
    role: Role = enum8(Role, "role asked for")
    programmer_nonce: bytes = fixed_bytes("fresh random nonce Np", size=NONCE_SIZE)


@wire_struct
class AuthBeginResponse(ResponseBody):
    """The pump's challenge."""

    session_id: int = u32("identifier of the session being set up", lo=1)
    pump_nonce: bytes = fixed_bytes("fresh random nonce Nc", size=NONCE_SIZE)


@wire_struct
class AuthProofRequest(Request):
    """Proof that the programmer knows the key of the role asked for; header session_id = S."""

    TYPE: ClassVar[MessageType] = MessageType.AUTH_PROOF
    proof: bytes = fixed_bytes("HMAC-SHA256 programmer proof", size=PROOF_SIZE)


@wire_struct
class AuthProofResponse(ResponseBody):
    """Session established; the pump proves it knows the key too."""

    pump_proof: bytes = fixed_bytes("HMAC-SHA256 pump proof", size=PROOF_SIZE)
    idle_timeout_s: int = u16("the session ends after this long without a request", unit="s", lo=1)


@wire_struct
class EndSessionRequest(Request):
    """End the authenticated session (the telemetry head is about to be lifted)."""

    TYPE: ClassVar[MessageType] = MessageType.END_SESSION


# --- status -----------------------------------------------------------------------------------


@wire_struct
class InterrogateRequest(Request):
    """Ask for the full status."""

    TYPE: ClassVar[MessageType] = MessageType.INTERROGATE


@wire_struct
class InterrogateResponse(ResponseBody):
    """Everything the firmware believes about itself (estimates, not measurements)."""

    time_s: int = u32("pump clock", unit="s since epoch")
    therapy_state: TherapyState = enum8(TherapyState, "what the pump is doing")
    reservoir_volume_nl: int = u32("estimated volume in the reservoir", unit="nL", hi=MAX_VOLUME_NL)
    reservoir_capacity_nl: int = u32("reservoir capacity", unit="nL", hi=MAX_VOLUME_NL)
    low_reservoir_threshold_nl: int = u32(
        "low-reservoir alarm threshold", unit="nL", hi=MAX_VOLUME_NL
    )
    rate_nl_per_day: int = u32("flow rate commanded now", unit="nL/day", hi=MAX_VOLUME_NL)
    dose_24h_ng: int = u32("dose delivered in the last 24 h", unit="ng", hi=MAX_MASS_NG)
    patient_boluses_24h: int = u8("patient boluses given in the last 24 h")
    battery_per_mille: int = u16("battery charge remaining", unit="0.1 %", hi=1000)
    battery_eri: bool = boolean("elective replacement indicator")
    battery_eos: bool = boolean("end of service: the pump has stopped for good")
    projected_low_reservoir_s: int | None = u32(
        "when the low-reservoir alarm is projected", unit="s since epoch", lo=1, none_value=0
    )
    projected_eri_s: int | None = u32(
        "when ERI is projected", unit="s since epoch", lo=1, none_value=0
    )
    program: TherapyProgram = nested(TherapyProgram, "active program and settings")
    alarms: tuple[Alarm, ...] = list_of(Alarm, "active alarms", max_items=MAX_ALARMS)
    projected_empty_s: int | None = u32(
        "when the estimate is projected to reach the empty-reservoir alarm (programmed dose "
        "plus the last 7 days' patient-bolus use)",
        unit="s since epoch",
        lo=1,
        none_value=0,
        default=None,
    )
    unprimed_nl: int = u32(
        "volume of catheter and pump tubing the pump knows is empty (new implant, catheter "
        "revision, a reservoir believed dry): the most a priming bolus may push; 0 = the "
        "path is full and priming is refused",
        unit="nL",
        hi=MAX_VOLUME_NL,
        default=0,
    )
    clock_valid: bool = boolean(
        "false after a power-on reset until SET_CLOCK: time_s is then not the real time",
        default=True,
    )


@wire_struct
class ReadLogRequest(Request):
    """Ask for one page of the event log; page 0 holds the newest entries."""

    TYPE: ClassVar[MessageType] = MessageType.READ_LOG
    page: int = u16("page number, 0 = newest")


@wire_struct
class ReadLogResponse(ResponseBody):
    """One page of the event log, newest entry first."""

    page: int = u16("page number")
    total_pages: int = u16("pages available now")
    total_entries: int = u32("entries retained")
    entries: tuple[LogEntry, ...] = list_of(
        LogEntry, "entries of the page, newest first", max_items=MAX_LOG_ENTRIES_PER_PAGE
    )


# --- settings ---------------------------------------------------------------------------------


@wire_struct
class SetClockRequest(Request):
    """Set the pump's real-time clock."""

    TYPE: ClassVar[MessageType] = MessageType.SET_CLOCK
    time_s: int = u32("new clock value", unit="s since epoch", lo=1)


@wire_struct
class SetClockResponse(ResponseBody):
    """Clock set."""

    previous_time_s: int = u32("clock value before the change", unit="s since epoch")


@wire_struct
class SetAlarmThresholdsRequest(Request):
    """Program the low-reservoir alarm."""

    TYPE: ClassVar[MessageType] = MessageType.SET_ALARM_THRESHOLDS
    low_reservoir_nl: int = u32(
        "alarm when the estimated volume falls to this", unit="nL", hi=MAX_VOLUME_NL
    )


@wire_struct
class AckAlarmRequest(Request):
    """Silence one alarm, or all of them."""

    TYPE: ClassVar[MessageType] = MessageType.ACK_ALARM
    alarm_id: int | None = u8(
        "alarm to acknowledge", lo=1, hi=254, none_value=ALL_ALARMS, none_text="all alarms"
    )


@wire_struct
class AckAlarmResponse(ResponseBody):
    """Alarms acknowledged."""

    acknowledged: int = u8("how many alarms were acknowledged")


# --- program transfer -------------------------------------------------------------------------


@wire_struct
class ProgramBeginRequest(Request):
    """Start a program transfer; discards any earlier pending or verified program."""

    TYPE: ClassVar[MessageType] = MessageType.PROGRAM_BEGIN
    length_bytes: int = u16("length of the encoded TherapyProgram", unit="bytes", lo=1)
    digest: bytes = fixed_bytes("SHA-256 of the encoded TherapyProgram", size=DIGEST_SIZE)


@wire_struct
class ProgramDataRequest(Request):
    """One chunk of the encoded program; chunks are sent in order."""

    TYPE: ClassVar[MessageType] = MessageType.PROGRAM_DATA
    offset: int = u16("position of the chunk in the encoded program", unit="bytes")
    chunk: bytes = tail_bytes(
        "program bytes (the rest of the payload)", min_bytes=1, max_bytes=MAX_PROGRAM_CHUNK
    )


@wire_struct
class ProgramDataResponse(ResponseBody):
    """Chunk stored."""

    received_bytes: int = u16("bytes received so far", unit="bytes")


@wire_struct
class ProgramVerifyRequest(Request):
    """Ask the pump to check the complete transfer and echo what it holds."""

    TYPE: ClassVar[MessageType] = MessageType.PROGRAM_VERIFY


@wire_struct
class ProgramVerifyResponse(ResponseBody):
    """The pump holds a complete, valid program (not yet in effect)."""

    length_bytes: int = u16("length held", unit="bytes", lo=1)
    digest: bytes = fixed_bytes("SHA-256 of the bytes held", size=DIGEST_SIZE)
    program: TherapyProgram = nested(TherapyProgram, "the program as the pump decoded it")


@wire_struct
class ProgramCommitRequest(Request):
    """Make the verified program take effect, atomically."""

    TYPE: ClassVar[MessageType] = MessageType.PROGRAM_COMMIT
    digest: bytes = fixed_bytes("SHA-256 of the verified program (must match)", size=DIGEST_SIZE)


@wire_struct
class ProgramAbortRequest(Request):
    """Discard any pending or verified program."""

    TYPE: ClassVar[MessageType] = MessageType.PROGRAM_ABORT


# --- delivery ---------------------------------------------------------------------------------


@wire_struct
class ClinicianBolus(WireStruct):
    """A single bolus on top of the basal."""

    TAG: ClassVar[int] = 1
    dose_ng: int = u32("dose", unit="ng", lo=1, hi=MAX_MASS_NG)
    duration_min: int = u16("duration", unit="min", lo=1, hi=MINUTES_PER_DAY)
    then_resume: bool = boolean("resume the program afterwards (false: stop therapy)")


@wire_struct
class PrimingBolus(WireStruct):
    """Fill the empty part of catheter and pump tubing at the maximum rate; refused unless
    the pump knows part of its path is empty (INTERROGATE `unprimed_nl` > 0)."""

    TAG: ClassVar[int] = 2
    volume_nl: int | None = u32(
        "volume to push, at most INTERROGATE's unprimed_nl",
        unit="nL",
        lo=1,
        hi=MAX_VOLUME_NL,
        none_value=0,
        none_text="the pump's unprimed volume",
    )


@wire_struct
class BridgeBolus(WireStruct):
    """Push the old drug out of the path at the old-drug equivalent rate."""

    TAG: ClassVar[int] = 3
    volume_nl: int | None = u32(
        "volume to push",
        unit="nL",
        lo=1,
        hi=MAX_VOLUME_NL,
        none_value=0,
        none_text="the pump computes catheter + pump tubing volume",
    )
    old_concentration_ng_per_ml: int | None = u32(
        "concentration of the drug being pushed out",
        unit="ng/mL",
        lo=1,
        hi=MAX_CONCENTRATION_NG_PER_ML,
        none_value=0,
        none_text="the concentration currently programmed",
    )


@wire_struct
class PatientBolus(WireStruct):
    """Patient-activated bolus request (dose and limits come from the program)."""

    TAG: ClassVar[int] = 4


@wire_struct
class CancelBolus(WireStruct):
    """Cancel every bolus, priming or bridge in progress."""

    TAG: ClassVar[int] = 5


BolusKind = ClinicianBolus | PrimingBolus | BridgeBolus | PatientBolus | CancelBolus
BOLUS_KINDS = (ClinicianBolus, PrimingBolus, BridgeBolus, PatientBolus, CancelBolus)


@wire_struct
class BolusRequest(Request):
    """Start (or cancel) a bolus."""

    TYPE: ClassVar[MessageType] = MessageType.BOLUS
    bolus: BolusKind = union(BOLUS_KINDS, "kind of bolus and its parameters")


@wire_struct
class BolusResponse(ResponseBody):
    """Bolus started (or cancelled)."""

    dose_ng: int = u32(
        "dose the bolus delivers (priming: the drug it moves, counted in the 24 h dose; "
        "0: cancel)",
        unit="ng",
    )
    volume_nl: int = u32("volume the bolus pushes (0 when unknown)", unit="nL")
    cancelled: int = u8("boluses cancelled (CANCEL only)")


@wire_struct
class StopTherapyRequest(Request):
    """Stop all delivery until RESUME_THERAPY."""

    TYPE: ClassVar[MessageType] = MessageType.STOP_THERAPY


@wire_struct
class ResumeTherapyRequest(Request):
    """Resume the programmed therapy."""

    TYPE: ClassVar[MessageType] = MessageType.RESUME_THERAPY


@wire_struct
class RefillRequest(Request):
    """The reservoir was emptied and refilled."""

    TYPE: ClassVar[MessageType] = MessageType.REFILL
    volume_nl: int = u32(
        "volume in the reservoir after refilling", unit="nL", lo=1, hi=MAX_VOLUME_NL
    )
    concentration_ng_per_ml: int = u32(
        "concentration of the new drug", unit="ng/mL", lo=1, hi=MAX_CONCENTRATION_NG_PER_ML
    )
    aspirated_nl: int | None = u32(
        "residual volume the clinician withdrew and measured",
        unit="nL",
        hi=MAX_VOLUME_NL,
        none_value=0xFFFFFFFF,
        none_text="not measured",
    )
    bridge_bolus: bool = boolean("start a bridge bolus if the concentration changed")
    drug_name: str = string("drug name", min_bytes=1, max_bytes=NAME_MAX_BYTES)


@wire_struct
class RefillResponse(ResponseBody):
    """Refill recorded."""

    reservoir_volume_nl: int = u32("estimated reservoir volume now", unit="nL")
    bridge_volume_nl: int = u32("volume of the bridge bolus started (0: none)", unit="nL")
    projected_low_reservoir_s: int | None = u32(
        "when the low-reservoir alarm is projected", unit="s since epoch", lo=1, none_value=0
    )


@wire_struct
class CatheterRevisionRequest(Request):
    """A new catheter was implanted: record it and mark its volume empty (priming allowed)."""

    TYPE: ClassVar[MessageType] = MessageType.CATHETER_REVISION
    # The wire carries any u16; the device's catheter limits are the firmware's
    # (FirmwareConfig.check_catheter, OUT_OF_RANGE), as for the program's catheter fields.
    catheter_length_mm: int = u16("new catheter length", unit="mm")
    catheter_volume_nl_per_cm: int = u16("new catheter internal volume per cm", unit="nL/cm")


@wire_struct
class CatheterRevisionResponse(ResponseBody):
    """Revision recorded."""

    unprimed_nl: int = u32(
        "volume a priming bolus may now push (the new catheter, plus any empty tubing)",
        unit="nL",
        hi=MAX_VOLUME_NL,
    )


@wire_struct
class MriValveResetRequest(Request):
    """Reopen a valve-gated pump's MRI safety valve after a scan (it stays shut until this)."""

    TYPE: ClassVar[MessageType] = MessageType.MRI_VALVE_RESET


@wire_struct
class AlarmTestRequest(Request):
    """Sound each alarm pattern once (critical two-tone, then non-critical single tone)."""

    TYPE: ClassVar[MessageType] = MessageType.ALARM_TEST


# --- registry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MessageInfo:
    """Static facts about one message type."""

    code: MessageType
    request: type[Request]
    response: type[ResponseBody]
    #: needs an authenticated session and a MAC (unless the pump allows unauthenticated use)
    needs_session: bool
    #: allowed for the PATIENT role (BOLUS only for the PATIENT kind)
    patient_allowed: bool
    #: changes pump state (documentation; every session command carries a MAC anyway)
    state_changing: bool


def _info(
    request: type[Request],
    response: type[ResponseBody],
    *,
    session: bool = True,
    patient: bool = False,
    changes: bool = True,
) -> MessageInfo:
    return MessageInfo(request.TYPE, request, response, session, patient, changes)


MESSAGES: dict[MessageType, MessageInfo] = {
    info.code: info
    for info in (
        _info(IdentifyRequest, IdentifyResponse, session=False, patient=True, changes=False),
        _info(AuthBeginRequest, AuthBeginResponse, session=False, patient=True, changes=False),
        _info(AuthProofRequest, AuthProofResponse, session=False, patient=True, changes=False),
        _info(EndSessionRequest, Ack, patient=True),
        _info(InterrogateRequest, InterrogateResponse, patient=True, changes=False),
        _info(ReadLogRequest, ReadLogResponse, changes=False),
        _info(SetClockRequest, SetClockResponse),
        _info(SetAlarmThresholdsRequest, Ack),
        _info(AckAlarmRequest, AckAlarmResponse),
        _info(ProgramBeginRequest, Ack),
        _info(ProgramDataRequest, ProgramDataResponse),
        _info(ProgramVerifyRequest, ProgramVerifyResponse),
        _info(ProgramCommitRequest, Ack),
        _info(ProgramAbortRequest, Ack),
        _info(BolusRequest, BolusResponse, patient=True),
        _info(StopTherapyRequest, Ack),
        _info(ResumeTherapyRequest, Ack),
        _info(RefillRequest, RefillResponse),
        _info(CatheterRevisionRequest, CatheterRevisionResponse),
        _info(MriValveResetRequest, Ack),
        _info(AlarmTestRequest, Ack),
    )
}

#: largest encoded TherapyProgram (bounds PROGRAM_BEGIN.length_bytes)
MAX_PROGRAM_BYTES = struct_max_size(TherapyProgram)


def role_allows(role: Role, request: Request) -> bool:
    """Whether ``role`` may send ``request`` (patients: status, session and patient bolus)."""
    if role is Role.CLINICIAN:
        return True
    if isinstance(request, BolusRequest):
        return isinstance(request.bolus, PatientBolus)
    return MESSAGES[request.TYPE].patient_allowed


def decode_request(msg_type: int, payload: bytes) -> Request:
    """Decode a request payload.

    Raises :class:`KeyError` for an unknown type and :class:`WireError` for a malformed payload.
    """
    try:
        info = MESSAGES[MessageType(msg_type)]
    except ValueError:
        raise KeyError(msg_type) from None
    return info.request.decode(payload)


# Response payload prefix: result code, then a str8 detail (empty for OK); the body follows
# only when the result is OK.


def encode_response(response: Response) -> bytes:
    """The payload of a response: ``result u8 | detail str8 | body (OK only)``."""
    if isinstance(response, Refusal):
        return response.encode()
    return b"\x00\x00" + response.encode()


def decode_response(msg_type: MessageType, payload: bytes) -> Response:
    """Decode the payload of the response to a request of ``msg_type``.

    Raises :class:`WireError` for a malformed payload or an unknown result code.
    """
    if len(payload) < 2:
        raise WireError("response shorter than its result and detail fields")
    if payload[0] != ResultCode.OK:
        return Refusal.decode(payload)
    detail_end = 2 + payload[1]
    if detail_end > len(payload):
        raise WireError("detail runs past the end of the payload")
    # A detail on success is allowed (a warning) but has no typed place: it is skipped.
    return MESSAGES[msg_type].response.decode(payload[detail_end:])
