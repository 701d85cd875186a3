"""Primary cell: charge drawn by the idle electronics, the drive and telemetry."""

from __future__ import annotations

from itpump.emulator.device_profile import BatteryProfile


class Battery:
    """Remaining charge in closed form; the fuel gauge the firmware reads."""

    def __init__(self, profile: BatteryProfile, initial_fraction: float = 1.0) -> None:
        self.profile = profile
        self.capacity_mah = profile.capacity_mah
        self.used_mah = (1.0 - initial_fraction) * profile.capacity_mah

    def draw_idle(self, hours: float) -> None:
        """Quiescent current over `hours`."""
        self.used_mah += self.profile.idle_current_ua / 1000.0 * hours

    def draw_drive(self, nominal_volume_ml: float) -> None:
        """Energy of the strokes that would move `nominal_volume_ml` (moved or not)."""
        self.used_mah += self.profile.charge_per_ml_mah * nominal_volume_ml

    def current_ma(self, nominal_ml_per_h: float) -> float:
        """Average current while the drive moves `nominal_ml_per_h` (idle included)."""
        p = self.profile
        return p.idle_current_ua / 1000.0 + p.charge_per_ml_mah * nominal_ml_per_h

    def draw_telemetry(self, seconds: float) -> None:
        """Radio / inductive link time."""
        self.used_mah += self.profile.telemetry_current_ma * seconds / 3600.0

    def set_remaining_fraction(self, fraction: float) -> None:
        """Fault injection: the cell suddenly holds only `fraction` of its capacity."""
        self.used_mah = (1.0 - min(max(fraction, 0.0), 1.0)) * self.capacity_mah

    @property
    def remaining_fraction(self) -> float:
        """0..1 of rated capacity."""
        return max(0.0, 1.0 - self.used_mah / self.capacity_mah)
