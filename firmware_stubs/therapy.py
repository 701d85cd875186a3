"""The therapy scheduler: the basal dose rate a program gives at each time of day.

Programs themselves (their modes, units, wire form, checks and daily-dose bounds) are the one
model in :mod:`protocol.therapy`; this module is what only the pump does with them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from itpump.firmware_stubs.config import FirmwareConfig
from itpump.firmware_stubs.errors import Refusal
from itpump.protocol.therapy import Flex, FlexPeriod, ProgramError, TherapyProgram, validate_therapy

S_PER_DAY = 86400.0
# The Unix epoch fell on a Thursday; weekly patterns start on Monday 00:00 UTC.
_EPOCH_TO_MONDAY_S = 4 * S_PER_DAY


@dataclass(frozen=True, slots=True)
class DrugSettings:
    """Drug in the reservoir as entered at the last refill."""

    name: str = ""
    concentration_mcg_per_ml: float = 0.0


@dataclass(slots=True)
class ScheduleSegment:
    """Basal dose rate from now until `until_rtc_s` (inf = no scheduled change)."""

    dose_mcg_per_day: float
    until_rtc_s: float = field(default=math.inf)


def basal_at(program: TherapyProgram, rtc_s: float) -> ScheduleSegment:
    """Basal dose rate in force at `rtc_s` and when it next changes."""
    mode = program.mode
    if not isinstance(mode, Flex):
        return ScheduleSegment(program.basal_mcg_per_day)
    period_s = mode.period.minutes * 60.0
    origin = 0.0 if mode.period is FlexPeriod.DAILY else _EPOCH_TO_MONDAY_S
    period_start = math.floor((rtc_s - origin) / period_s) * period_s + origin
    pos_s = rtc_s - period_start
    steps = mode.steps
    current = steps[0]
    next_start = period_s
    for i, step in enumerate(steps):
        if step.start_min * 60.0 <= pos_s + 1e-6:
            current = step
            next_start = steps[i + 1].start_min * 60.0 if i + 1 < len(steps) else period_s
    return ScheduleSegment(current.dose_mcg_per_day, period_start + next_start)


def validate_program(program: TherapyProgram, conc_mcg_per_ml: float, cfg: FirmwareConfig) -> None:
    """Refuse, with the field and its allowed range, anything this pump must not accept."""
    try:
        validate_therapy(program, conc_mcg_per_ml, cfg)
    except ProgramError as exc:
        raise Refusal(exc.code, str(exc)) from None
