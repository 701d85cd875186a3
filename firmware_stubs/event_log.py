"""The pump's event log: timestamped entries, bounded like device memory (oldest dropped).

The event codes and their arguments are wire codes: `protocol.codes` defines them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from itpump.firmware_stubs.nvm import NonVolatileMemory
from itpump.protocol.codes import EventCode


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
