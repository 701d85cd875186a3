"""Codes shared by the wire protocol, the firmware and the programmer.

Result codes: one enum so that a refusal raised deep in the firmware reaches the programmer
unchanged. Ranges: 0x00 success, 0x01-0x1F link/session faults, 0x20-0x5F therapy refusals.

Alarm ids: the firmware raises them, INTERROGATE, ACK_ALARM and the event log carry them.

Event-log codes and the meaning of each event's arguments: the firmware writes them, the log
pages carry them, the programmer labels them. They live here, below both, so that the two
ends read one table (and docs/protocol.md is generated from it).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ResultCode(IntEnum):
    """Why a request was refused (OK = accepted)."""

    OK = 0x00
    # --- link and session (protocol layer) ---
    MALFORMED = 0x01  # payload does not decode for its message type
    UNKNOWN_MESSAGE = 0x02
    UNSUPPORTED_VERSION = 0x03
    NOT_AUTHENTICATED = 0x04
    AUTH_FAILED = 0x05
    BAD_MAC = 0x06
    REPLAYED = 0x07  # counter not above the last accepted one
    ROLE_FORBIDDEN = 0x08  # e.g. patient role asking for a clinician command
    SEQUENCE_ERROR = 0x09  # header seq outside the window (recover: IDENTIFY, then resend)
    SESSION_BUSY = 0x0A  # another telemetry head holds a session: nothing was done
    AUTH_BACKOFF = 0x0B  # too many failed authentications: AUTH_BEGIN refused for a while
    # A correct proof for a challenge that a later AUTH_BEGIN on the same link replaced (a
    # second transmitter on a shared link): not a failed authentication; begin again.
    CHALLENGE_REPLACED = 0x0C
    # The last number of the link range, so that codes added after SESSION_BUSY never clash
    # with it: the pump failed while answering; the request may or may not have been carried
    # out (interrogate), and the pump keeps answering.
    INTERNAL_ERROR = 0x1F
    # --- therapy refusals (firmware layer) ---
    OUT_OF_RANGE = 0x20  # a field outside its allowed range; detail names field and range
    RATE_OUT_OF_RANGE = 0x21
    DAILY_DOSE_EXCEEDED = 0x22
    RESERVOIR_CAPACITY_EXCEEDED = 0x23
    LOCKOUT_ACTIVE = 0x24
    PATIENT_BOLUS_DAILY_MAX = 0x25
    TOO_MANY_STEPS = 0x26
    NO_PENDING_PROGRAM = 0x27
    PROGRAM_VERIFY_FAILED = 0x28
    INVALID_STATE = 0x29  # e.g. bolus while stopped, resume while running
    THERAPY_DISABLED = 0x2A  # end of service or critical fault: no delivery possible
    NOT_PRIMED = 0x2B
    LOG_PAGE_OUT_OF_RANGE = 0x2C
    NOT_SUPPORTED = 0x2D  # the device profile lacks the feature
    # A PROGRAM_DATA chunk whose offset is not the number of bytes received so far. Not
    # SEQUENCE_ERROR: that one is recovered by IDENTIFY and a resend of the same frame, which
    # would be refused again here; this one is recovered by sending the expected offset.
    PROGRAM_CHUNK_OUT_OF_ORDER = 0x2E


class AlarmId(IntEnum):
    """Alarm identifiers known in protocol version 1: the firmware raises them, the wire's
    ``alarm_id`` fields and the event log carry them, the programmer names them.

    The ``alarm_id`` fields are plain integers so that a programmer can show an alarm that a
    newer pump raises; these are the values defined so far.
    """

    LOW_RESERVOIR = 1
    EMPTY_RESERVOIR = 2
    ELECTIVE_REPLACEMENT = 3  # ERI: battery low, pump keeps running
    END_OF_SERVICE = 4  # EOS: pump has stopped for good
    MOTOR_STALL = 5
    MEMORY_ERROR = 6
    POWER_ON_RESET = 7  # clock and program lost: minimum rate until reprogrammed


class EventCode(IntEnum):
    """What happened. Numbers are stable: they travel in the telemetry log pages."""

    POWER_ON = 1
    CLOCK_SET = 2
    PROGRAM_CHANGED = 10
    THERAPY_STOPPED = 11
    THERAPY_RESUMED = 12
    PATIENT_ID_SET = 13
    CATHETER_SET = 14
    ALARM_THRESHOLD_SET = 15
    BOLUS_STARTED = 20
    BOLUS_COMPLETED = 21
    BOLUS_CANCELLED = 22
    PATIENT_BOLUS_DENIED = 23
    REFILL = 30
    CONCENTRATION_CHANGED = 31
    REFILL_DISCREPANCY = 32
    ALARM_RAISED = 40
    ALARM_CLEARED = 41
    ALARM_ACKNOWLEDGED = 42
    MOTOR_STALL = 50
    MOTOR_RECOVERED = 51
    MINIMUM_RATE_MODE = 52
    MEMORY_ERROR = 53
    END_OF_SERVICE = 54
    CATHETER_REVISED = 16
    POWER_ON_RESET = 55
    MRI_VALVE_RESET = 56
    ALARM_TEST = 43


class LogBolusKind(IntEnum):
    """The ``kind`` argument of the bolus events: what the extra delivery was for."""

    CLINICIAN = 1
    PATIENT = 2
    PERIODIC = 3
    PRIMING = 4
    BRIDGE = 5


class LogTherapyMode(IntEnum):
    """The ``mode`` argument of PROGRAM_CHANGED: the therapy mode of the new program."""

    STOPPED = 0
    CONTINUOUS = 1
    FLEX = 2
    PERIODIC_BOLUS = 3


#: Bolus kinds whose BOLUS_STARTED gives a volume (mL), not a dose (mcg): they move a
#: volume of fluid (the catheter's contents) rather than an amount of drug.
VOLUME_BOLUS_KINDS = frozenset({LogBolusKind.PRIMING, LogBolusKind.BRIDGE})


@dataclass(frozen=True, slots=True)
class EventArg:
    """One argument of an event-log entry.

    ``unit`` is empty for a count or a code; ``codes`` names the enumeration a code argument
    belongs to (``AlarmId``, ``ResultCode``, ``LogBolusKind``, ``LogTherapyMode``).
    """

    name: str
    unit: str = ""
    codes: str | None = None
    note: str = ""


_KIND = EventArg("kind", codes="LogBolusKind")
_ALARM = EventArg("alarm", codes="AlarmId")

#: The arguments of every event, in the order the firmware writes them. Trailing arguments
#: may be absent (see the notes); an entry never has more than these.
EVENT_ARGS: dict[EventCode, tuple[EventArg, ...]] = {
    EventCode.POWER_ON: (),
    EventCode.CLOCK_SET: (
        EventArg("previous", "s since epoch"),
        EventArg("new", "s since epoch"),
    ),
    EventCode.PROGRAM_CHANGED: (
        EventArg("mode", codes="LogTherapyMode"),
        EventArg("mean_daily_dose", "mcg/day"),
    ),
    EventCode.THERAPY_STOPPED: (),
    EventCode.THERAPY_RESUMED: (),
    EventCode.PATIENT_ID_SET: (),
    EventCode.CATHETER_SET: (
        EventArg("length", "cm"),
        EventArg("volume", "uL/cm"),
    ),
    EventCode.ALARM_THRESHOLD_SET: (EventArg("low_reservoir", "mL"),),
    EventCode.BOLUS_STARTED: (
        _KIND,
        EventArg("dose", "mcg", note="a volume in mL for PRIMING and BRIDGE"),
        EventArg("duration", "min"),
    ),
    EventCode.BOLUS_COMPLETED: (
        _KIND,
        EventArg("dose", "mcg", note="absent for PRIMING and BRIDGE"),
    ),
    EventCode.BOLUS_CANCELLED: (
        _KIND,
        EventArg("refusal", codes="ResultCode", note="only when a periodic bolus could not start"),
    ),
    EventCode.PATIENT_BOLUS_DENIED: (EventArg("refusal", codes="ResultCode"),),
    EventCode.REFILL: (
        EventArg("volume", "mL"),
        EventArg("concentration", "mcg/mL"),
        EventArg("aspirated", "mL", note="-1 when not measured"),
        EventArg("expected", "mL", note="the pump's estimate of what was left"),
    ),
    EventCode.CONCENTRATION_CHANGED: (
        EventArg("previous", "mcg/mL"),
        EventArg("new", "mcg/mL"),
    ),
    EventCode.REFILL_DISCREPANCY: (
        EventArg("expected", "mL"),
        EventArg("aspirated", "mL"),
        EventArg(
            "tolerance",
            "mL",
            note="floor plus a fraction of the volume infused since the last refill",
        ),
    ),
    EventCode.ALARM_RAISED: (_ALARM,),
    EventCode.ALARM_CLEARED: (_ALARM,),
    EventCode.ALARM_ACKNOWLEDGED: (_ALARM,),
    EventCode.MOTOR_STALL: (),
    EventCode.MOTOR_RECOVERED: (),
    EventCode.MINIMUM_RATE_MODE: (),
    EventCode.MEMORY_ERROR: (),
    EventCode.END_OF_SERVICE: (),
    EventCode.CATHETER_REVISED: (
        EventArg("length", "cm"),
        EventArg("volume", "uL/cm"),
        EventArg("unprimed", "mL", note="path volume a priming bolus may now push"),
    ),
    EventCode.POWER_ON_RESET: (),
    EventCode.MRI_VALVE_RESET: (),
    EventCode.ALARM_TEST: (),
}

_VOLUME_STARTED = (_KIND, EventArg("volume", "mL"), EventArg("duration", "min"))


def event_args(code: int, values: tuple[float, ...]) -> tuple[EventArg, ...]:
    """The arguments that ``values`` (an entry's arguments, in order) stand for.

    As many as there are values; an unknown code, or a value beyond the table, gets the name
    ``arg<i>`` (a newer pump may log more than this side knows).
    """
    try:
        known = EVENT_ARGS[EventCode(code)]
    except ValueError:
        known = ()
    if code == EventCode.BOLUS_STARTED and values and values[0] in VOLUME_BOLUS_KINDS:
        known = _VOLUME_STARTED
    return tuple(known[i] if i < len(known) else EventArg(f"arg{i}") for i in range(len(values)))
