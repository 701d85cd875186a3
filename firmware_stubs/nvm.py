"""Non-volatile memory: the one place firmware state survives a power cycle.

Everything the firmware must remember goes through `NonVolatileMemory`; the in-memory
implementation here keeps values as they are (immutable values only), so a later persistent
implementation can serialise them without touching firmware logic.
"""

from __future__ import annotations

from typing import Any, Protocol


class NonVolatileMemory(Protocol):
    """Key/value records with an integrity check, as a flash or EEPROM driver would offer."""

    def write(self, key: str, value: Any) -> None:
        """Store one record (the value must be immutable or never mutated afterwards)."""
        ...

    def read(self, key: str, default: Any = None) -> Any:
        """Read one record, or `default` if never written."""
        ...

    def integrity_ok(self) -> bool:
        """False once the memory's checksum no longer matches (a memory error)."""
        ...


class InMemoryNvm:
    """Volatile stand-in for the pump's flash; `corrupt()` makes the integrity check fail."""

    def __init__(self) -> None:
        self._records: dict[str, Any] = {}
        self._corrupted = False
        self.writes = 0

    def write(self, key: str, value: Any) -> None:
        """Store one record."""
        self._records[key] = value
        self.writes += 1

    def read(self, key: str, default: Any = None) -> Any:
        """Read one record, or `default`."""
        return self._records.get(key, default)

    def integrity_ok(self) -> bool:
        """False after `corrupt()`."""
        return not self._corrupted

    def corrupt(self) -> None:
        """Fault injection: the next integrity check fails."""
        self._corrupted = True

    def keys(self) -> list[str]:
        """Record names written so far (diagnostics and tests)."""
        return sorted(self._records)
