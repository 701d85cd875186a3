"""The pump's event log: timestamped entries, bounded like device memory (oldest dropped)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import IntEnum

from firmware_stubs.nvm import NonVolatileMemory


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


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One log record; `index` counts every entry ever written, so pages stay stable."""

    index: int
    rtc_s: float
    code: EventCode
    args: tuple[float, ...] = ()


class EventLog:
    """Ring buffer of `LogEntry`, mirrored to non-volatile memory."""

    NVM_KEY = "event_log"

    def __init__(self, capacity: int, nvm: NonVolatileMemory) -> None:
        self._entries: deque[LogEntry] = deque(maxlen=capacity)
        self._next_index = 0
        self._nvm = nvm

    def add(self, rtc_s: float, code: EventCode, *args: float) -> LogEntry:
        """Append an entry; the oldest is dropped once the log is full."""
        entry = LogEntry(self._next_index, rtc_s, code, tuple(args))
        self._next_index += 1
        self._entries.append(entry)
        self._nvm.write(self.NVM_KEY, self._entries)
        return entry

    @property
    def total_written(self) -> int:
        """Entries written since manufacture, including those dropped."""
        return self._next_index

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[LogEntry]:
        """All retained entries, oldest first."""
        return list(self._entries)

    def page(self, number: int, page_size: int) -> list[LogEntry]:
        """Retained entries, newest first, page `number` (0-based) of `page_size`."""
        newest_first = list(reversed(self._entries))
        return newest_first[number * page_size : (number + 1) * page_size]
