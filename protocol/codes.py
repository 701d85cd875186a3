"""Result codes shared by the wire protocol and the firmware's command handling.

One enum so that a refusal raised deep in the firmware reaches the programmer unchanged.
Ranges: 0x00 success, 0x01-0x1F link/session faults, 0x20-0x5F therapy refusals.
"""

from __future__ import annotations

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
    SEQUENCE_ERROR = 0x09
    SESSION_BUSY = 0x0A
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
