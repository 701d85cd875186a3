"""Alarm manager: which alarms exist, their severity and tone, raise / clear / acknowledge."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from itpump.firmware_stubs.event_log import EventLog
from itpump.firmware_stubs.hal import Tone
from itpump.protocol.codes import AlarmId, EventCode


class Severity(StrEnum):
    """Critical alarms mean therapy is or will be interrupted."""

    CRITICAL = "critical"
    NON_CRITICAL = "non_critical"


SEVERITY: dict[AlarmId, Severity] = {
    AlarmId.LOW_RESERVOIR: Severity.NON_CRITICAL,
    AlarmId.ELECTIVE_REPLACEMENT: Severity.NON_CRITICAL,
    AlarmId.EMPTY_RESERVOIR: Severity.CRITICAL,
    AlarmId.END_OF_SERVICE: Severity.CRITICAL,
    AlarmId.MOTOR_STALL: Severity.CRITICAL,
    AlarmId.MEMORY_ERROR: Severity.CRITICAL,
    AlarmId.POWER_ON_RESET: Severity.CRITICAL,
}


@dataclass(frozen=True, slots=True)
class ActiveAlarm:
    """An alarm that is raised and not yet cleared."""

    alarm: AlarmId
    raised_rtc_s: float
    acknowledged: bool = False

    @property
    def severity(self) -> Severity:
        """Critical or non-critical."""
        return SEVERITY[self.alarm]

    @property
    def tone(self) -> Tone:
        """The audible pattern for this alarm."""
        if self.severity is Severity.CRITICAL:
            return Tone.CRITICAL_TWO_TONE_3S
        return Tone.NON_CRITICAL_SINGLE_1S


def repeating_tones(
    active: list[ActiveAlarm], critical_every_s: float, non_critical_every_s: float
) -> dict[Tone, float]:
    """The repeat period of each tone: an alarm sounds again on its cadence while it is
    active and not acknowledged (0: that tone is silent). Acknowledging silences the repeats;
    the alarm stays active until its condition is resolved, and one raised again (a new
    condition) sounds again."""
    periods = {Tone.CRITICAL_TWO_TONE_3S: 0.0, Tone.NON_CRITICAL_SINGLE_1S: 0.0}
    for alarm in active:
        if not alarm.acknowledged:
            periods[alarm.tone] = (
                critical_every_s if alarm.severity is Severity.CRITICAL else non_critical_every_s
            )
    return periods


class AlarmManager:
    """Keeps the set of active alarms and logs every transition."""

    def __init__(self, log: EventLog) -> None:
        self._active: dict[AlarmId, ActiveAlarm] = {}
        self._log = log
        #: Bumped on every raise, clear and acknowledgement: a reader that derives something
        #: from the active set (the firmware's tone periods) recomputes only when it moved.
        self.changes = 0

    def raise_(self, alarm: AlarmId, rtc_s: float) -> ActiveAlarm | None:
        """Raise an alarm; returns it if newly raised, None if it was already active."""
        if alarm in self._active:
            return None
        active = ActiveAlarm(alarm, rtc_s)
        self._active[alarm] = active
        self.changes += 1
        self._log.add(rtc_s, EventCode.ALARM_RAISED, int(alarm))
        return active

    def clear(self, alarm: AlarmId, rtc_s: float) -> bool:
        """Clear an alarm whose condition is gone; returns whether it was active."""
        if self._active.pop(alarm, None) is None:
            return False
        self.changes += 1
        self._log.add(rtc_s, EventCode.ALARM_CLEARED, int(alarm))
        return True

    def acknowledge(self, alarm: AlarmId | None, rtc_s: float) -> int:
        """Silence one alarm (or all with None); the condition stays. Returns how many."""
        count = 0
        for key, active in list(self._active.items()):
            if (alarm is None or key is alarm) and not active.acknowledged:
                self._active[key] = replace(active, acknowledged=True)
                self.changes += 1
                self._log.add(rtc_s, EventCode.ALARM_ACKNOWLEDGED, int(key))
                count += 1
        return count

    def is_active(self, alarm: AlarmId) -> bool:
        """Whether the alarm is raised."""
        return alarm in self._active

    def mask(self) -> int:
        """Bit i set for each active alarm id i (the emulator reads it at every event)."""
        mask = 0
        for alarm in self._active:
            mask |= 1 << alarm
        return mask

    def active(self) -> list[ActiveAlarm]:
        """Active alarms, by id."""
        return [self._active[k] for k in sorted(self._active)]
