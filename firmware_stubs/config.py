"""Build-time constants of the firmware for one pump model (set from the device profile)."""

from __future__ import annotations

from dataclasses import dataclass, field

from itpump.firmware_stubs.drug_library import DrugLibrary, default_library


@dataclass(frozen=True, slots=True)
class FirmwareConfig:
    """What the firmware knows about its own hardware; never the true state of it."""

    model: str
    reservoir_capacity_ml: float
    min_rate_ml_per_day: float
    max_rate_ml_per_day: float
    minimum_rate_mode_ml_per_day: float
    stroke_volume_ml: float
    internal_path_volume_ml: float
    low_reservoir_alarm_default_ml: float
    empty_reservoir_alarm_ml: float
    flex_max_steps: int
    event_log_capacity: int
    service_life_s: float
    eri_to_eos_s: float
    battery_capacity_mah: float
    idle_current_ma: float
    charge_per_ml_mah: float
    eri_remaining_fraction: float
    firmware_version: str = "1.0.0"
    # Self-test period: battery measurement and memory check happen at least this often.
    self_test_interval_s: float = 86400.0
    # Patient-bolus use that the reservoir projections add to the programmed dose: the mean
    # over this rolling window (firmware_stubs/projection.py).
    bolus_use_window_s: float = 7 * 86400.0
    # Aspiration check at a refill (firmware_stubs/refill.py): a measured residual further
    # than this floor plus this fraction of the volume infused since the last refill from the
    # estimate is logged as REFILL_DISCREPANCY. The fraction is below the mechanism's
    # +/-14.5 % accuracy spec on purpose: a 15 % over-infusion must show.
    refill_tolerance_min_ml: float = 0.5
    refill_tolerance_fraction_of_infused: float = 0.10
    # A power loss resets the pump (firmware_stubs/power.py); false: it resumes its program.
    power_on_reset: bool = True
    # A valve-gated pump's MRI safety valve, which only a telemetry command reopens.
    mri_safety_valve: bool = False
    # How often an active, unacknowledged alarm sounds again (firmware_stubs/alarms.py). Typical
    # values, not vendor data: the public sources give the two patterns, not their cadence.
    critical_tone_repeat_s: float = 600.0
    non_critical_tone_repeat_s: float = 3600.0
    # The drugs, concentrations and daily doses the firmware accepts (drug_library.py).
    drug_library: DrugLibrary = field(default_factory=default_library)
