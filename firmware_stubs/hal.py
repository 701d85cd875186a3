"""The hardware abstraction layer: all the firmware may know of the physical pump.

The emulator implements it over the SimPy hardware model; tests implement it with fakes.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from itpump.firmware_stubs.nvm import NonVolatileMemory


class Tone(StrEnum):
    """Audible alarm patterns (confirmed: a 3 s two-tone and a 1 s single tone)."""

    CRITICAL_TWO_TONE_3S = "critical_two_tone_3s"
    NON_CRITICAL_SINGLE_1S = "non_critical_single_1s"


class Hal(Protocol):
    """Timers, drive, battery gauge, buzzer and non-volatile memory as seen from firmware."""

    @property
    def nvm(self) -> NonVolatileMemory:
        """The non-volatile memory driver."""
        ...

    def monotonic_s(self) -> float:
        """Seconds since power-on from the crystal timer; never jumps."""
        ...

    def rtc_s(self) -> float:
        """Real-time clock, seconds since the Unix epoch (UTC); jumps when set."""
        ...

    def set_rtc(self, epoch_s: float) -> None:
        """Set the real-time clock."""
        ...

    def set_stroke_rate(self, strokes_per_h: float) -> None:
        """Command the drive; 0 stops it. Strokes are pulses on valve-gated pumps."""
        ...

    def motor_stalled(self) -> bool:
        """True while the drive's position sensor reports no movement despite a command."""
        ...

    def battery_remaining_fraction(self) -> float:
        """Fuel-gauge reading, 0..1 of rated capacity."""
        ...

    def sound(self, tone: Tone) -> None:
        """Sound an alarm pattern once."""
        ...

    def repeat_tone(self, tone: Tone, every_s: float) -> None:
        """Have the buzzer's timer sound `tone` every `every_s` seconds from now on (the first
        repeat `every_s` from now); 0 stops it. The timer runs without waking the firmware."""
        ...

    def reset_valve(self) -> None:
        """Reopen the MRI safety valve of a valve-gated pump (latched shut by a field)."""
        ...
