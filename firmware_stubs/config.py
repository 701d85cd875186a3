"""Build-time constants of the firmware for one pump model (set from the device profile)."""

from __future__ import annotations

from dataclasses import dataclass, field

from itpump.firmware_stubs.drug_library import DrugLibrary, default_library
from itpump.firmware_stubs.errors import Refusal, check_range
from itpump.protocol.codes import ResultCode
from itpump.protocol.messages import NAME_MAX_BYTES


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
    # Device limits: what this model accepts from a clinician. The defaults are the
    # shipped models'; a profile's [limits] table overrides them (emulator/device_profile.py).
    # Scenario files are checked against them too, so they live here and nowhere else.
    #: names stored and reported: drug, patient id (characters; the wire also caps bytes)
    name_max_chars: int = 20
    catheter_min_length_cm: float = 1.0
    catheter_max_length_cm: float = 200.0
    catheter_min_volume_ul_per_cm: float = 0.1
    catheter_max_volume_ul_per_cm: float = 20.0
    min_refill_volume_ml: float = 0.1
    min_concentration_mcg_per_ml: float = 0.1
    max_concentration_mcg_per_ml: float = 100_000.0
    #: a bridge bolus volume (a catheter plus pump tubing is well below); a priming bolus is
    #: bounded above by the part of the path the pump knows is empty (priming.py)
    min_priming_volume_ml: float = 0.001
    max_priming_volume_ml: float = 5.0
    #: the largest daily maximum (and single bolus dose) a program may set
    max_daily_dose_mcg: float = 100_000.0
    patient_bolus_max_per_day: int = 48
    max_clinician_bolus_min: float = 1440.0
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
    # A refill whose measured aspirated residual is at most this found a dry reservoir: the
    # tubing may have drawn air, so a tubing prime is allowed (firmware_stubs/priming.py).
    # Typical value, not vendor data: what a syringe draws from a reservoir that ran dry.
    dry_aspirate_ml: float = 0.1
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

    # -- checks against the device limits (the firmware's, and a scenario file's before a run)

    def check_name(self, field: str, text: str) -> None:
        """Refuse a name (patient id, drug) the pump cannot store and report.

        Characters are what a clinician counts; bytes are what the status carries (UTF-8, at
        most NAME_MAX_BYTES), and a name the status cannot carry would make every
        INTERROGATE fail.
        """
        size = len(text.encode("utf-8"))
        if (
            not 0 < len(text) <= self.name_max_chars
            or not text.isprintable()
            or (size > NAME_MAX_BYTES)
        ):
            raise Refusal(
                ResultCode.OUT_OF_RANGE,
                f"{field} must be 1..{self.name_max_chars} printable characters "
                f"and at most {NAME_MAX_BYTES} UTF-8 bytes",
            )

    def check_catheter(self, length_cm: float, volume_ul_per_cm: float, prefix: str = "") -> None:
        """Refuse catheter settings outside this model's ranges (fields named with `prefix`)."""
        check_range(
            f"{prefix}length_cm",
            length_cm,
            self.catheter_min_length_cm,
            self.catheter_max_length_cm,
            "cm",
        )
        check_range(
            f"{prefix}volume_ul_per_cm",
            volume_ul_per_cm,
            self.catheter_min_volume_ul_per_cm,
            self.catheter_max_volume_ul_per_cm,
            "uL/cm",
        )

    def check_concentration(self, field: str, concentration_mcg_per_ml: float) -> None:
        """Refuse a drug concentration this model does not take."""
        check_range(
            field,
            concentration_mcg_per_ml,
            self.min_concentration_mcg_per_ml,
            self.max_concentration_mcg_per_ml,
            "mcg/mL",
        )

    def check_priming_volume(self, field: str, volume_ml: float) -> None:
        """Refuse a priming or bridge volume outside this model's range."""
        check_range(field, volume_ml, self.min_priming_volume_ml, self.max_priming_volume_ml, "mL")
