"""Device profiles: one TOML file per pump model, validated into a `DeviceProfile`.

Shipped profiles live in `emulator/profiles/`. Users add their own by passing a file path, or by
putting `*.toml` files in a directory named by the ITPUMP_PROFILE_PATH environment variable
(several directories separated by the OS path separator).
"""

from __future__ import annotations

import dataclasses
import os
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from itpump.emulator.toml_input import read_toml
from itpump.firmware_stubs.config import FirmwareConfig
from itpump.protocol.messages import NAME_MAX_BYTES, SERIAL_MAX_BYTES

SERIAL_SUFFIX_BYTES = len("-000000")
"""What a pump's serial adds to the profile's prefix (`ScenarioRun.serial_for`)."""

SHIPPED_PROFILE_DIR = Path(__file__).with_name("profiles")
PROFILE_PATH_ENV = "ITPUMP_PROFILE_PATH"


class ProfileError(ValueError):
    """A profile that cannot be found or does not validate."""


class Mechanism(StrEnum):
    """How the drive moves drug: motor strokes or accumulator pulses."""

    PERISTALTIC = "peristaltic"
    VALVE_GATED = "valve_gated"


class _Strict(BaseModel):
    # allow_inf_nan=False: TOML has inf and nan literals, and `gt=0` lets inf through (an
    # infinite idle current gives a pump that starts and never answers).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


#: Slowest telemetry link a profile (or `itpump serve --baud`) may have. Below it a full log
#: page takes minutes to arrive and every programmer times out: a server that starts and never
#: works (docs/protocol.md, section 9, has the timing).
MIN_BAUD = 300
#: Shortest battery life at the idle current alone (capacity / idle current), in hours: a
#: profile whose cell is flat within a month at rest is a typing error, not a pump.
MIN_IDLE_BATTERY_LIFE_H = 30 * 24.0


class BatteryProfile(_Strict):
    """Primary cell and the charge the pump draws from it."""

    service_life_years: float = Field(gt=0, le=30)
    eri_to_eos_days: float = Field(gt=0, le=365)
    capacity_mah: float = Field(gt=0, le=100_000)
    idle_current_ua: float = Field(ge=0, le=1000)
    charge_per_ml_mah: float = Field(ge=0, le=100)
    telemetry_current_ma: float = Field(ge=0, le=1000)
    eri_remaining_pct: float = Field(gt=0, lt=100)

    @model_validator(mode="after")
    def _lasts_at_rest(self) -> BatteryProfile:
        idle_ma = self.idle_current_ua / 1000.0
        if idle_ma > 0 and self.capacity_mah / idle_ma < MIN_IDLE_BATTERY_LIFE_H:
            raise ValueError(
                f"capacity_mah / idle_current_ua: the cell would be flat after "
                f"{self.capacity_mah / idle_ma:.3g} h at rest; it must last at least "
                f"{MIN_IDLE_BATTERY_LIFE_H:g} h (capacity_mah >= "
                f"{MIN_IDLE_BATTERY_LIFE_H * idle_ma:g} at this idle current)"
            )
        return self


class TelemetryProfile(_Strict):
    """Link characteristics of the telemetry head."""

    baud: int = Field(ge=MIN_BAUD, le=1_000_000)
    turnaround_ms: float = Field(ge=0, le=1000)
    allow_unauthenticated: bool = False


class LimitsProfile(_Strict):
    """[limits] table: what the model accepts from a clinician. A key left out keeps the
    firmware's default (firmware_stubs/config.py); the bounds here only catch typing errors."""

    name_max_chars: int | None = Field(default=None, ge=1, le=32)
    catheter_min_length_cm: float | None = Field(default=None, gt=0, le=1000)
    catheter_max_length_cm: float | None = Field(default=None, gt=0, le=1000)
    catheter_min_volume_ul_per_cm: float | None = Field(default=None, gt=0, le=65)
    catheter_max_volume_ul_per_cm: float | None = Field(default=None, gt=0, le=65)
    min_refill_volume_ml: float | None = Field(default=None, gt=0, le=100)
    min_concentration_mcg_per_ml: float | None = Field(default=None, gt=0, le=1e6)
    max_concentration_mcg_per_ml: float | None = Field(default=None, gt=0, le=1e6)
    min_priming_volume_ml: float | None = Field(default=None, gt=0, le=100)
    max_priming_volume_ml: float | None = Field(default=None, gt=0, le=100)
    refill_tolerance_min_ml: float | None = Field(default=None, ge=0, le=100)
    refill_tolerance_fraction_of_infused: float | None = Field(default=None, ge=0, le=1)
    dry_aspirate_ml: float | None = Field(default=None, ge=0, le=100)
    max_daily_dose_mcg: float | None = Field(default=None, gt=0, le=1e6)
    patient_bolus_max_per_day: int | None = Field(default=None, ge=1, le=255)
    max_clinician_bolus_min: float | None = Field(default=None, ge=1, le=1440)

    @model_validator(mode="after")
    def _ranges_in_order(self) -> LimitsProfile:
        # A reversed range would refuse every value; a bound left out is the firmware's.
        defaults = {
            f.name: f.default
            for f in dataclasses.fields(FirmwareConfig)
            if isinstance(f.default, int | float)
        }
        for low_key, high_key in _LIMIT_RANGES:
            low = getattr(self, low_key)
            high = getattr(self, high_key)
            low = defaults[low_key] if low is None else low
            high = defaults[high_key] if high is None else high
            if low > high:
                raise ValueError(
                    f"{low_key} ({low:g}) must not exceed {high_key} ({high:g}; "
                    "a key left out is the firmware default)"
                )
        return self


#: (lower, upper) bound pairs of the [limits] table
_LIMIT_RANGES = (
    ("catheter_min_length_cm", "catheter_max_length_cm"),
    ("catheter_min_volume_ul_per_cm", "catheter_max_volume_ul_per_cm"),
    ("min_concentration_mcg_per_ml", "max_concentration_mcg_per_ml"),
    ("min_priming_volume_ml", "max_priming_volume_ml"),
)


class DeviceProfile(_Strict):
    """Everything model-specific about a pump; see docs/architecture.md for each field's role."""

    model: str = Field(min_length=1, max_length=32)
    description: str = ""
    mechanism: Mechanism
    reservoir_capacity_ml: float = Field(gt=0, le=100)
    min_rate_ml_per_day: float = Field(ge=0, le=100)
    max_rate_ml_per_day: float = Field(gt=0, le=100)
    minimum_rate_mode_ml_per_day: float = Field(ge=0, le=100)
    # 10 nL: a smaller stroke means billions of strokes a year for the stroke model.
    stroke_volume_ul: float = Field(ge=0.01, le=100)
    flow_error_systematic_pct: float = Field(ge=-50, le=50)
    flow_error_random_cv_pct: float = Field(ge=0, le=20)
    flow_error_block_strokes: int = Field(ge=1, le=10_000_000)
    internal_path_volume_ml: float = Field(ge=0, le=5)
    low_reservoir_alarm_default_ml: float = Field(ge=0, le=100)
    empty_reservoir_alarm_ml: float = Field(ge=0, le=100)
    flex_max_steps: int = Field(ge=1, le=48)
    event_log_capacity: int = Field(ge=16, le=1_000_000)
    serial_prefix: str = Field(min_length=1, max_length=8)
    # Valve-gated pumps: the flow-activated safety valve shuts after this volume in a strong
    # magnetic field and stays shut until a clinician resets it over telemetry. Unset on a
    # valve-gated profile: no safety valve, and in a field the valves open and the pressurised
    # reservoir empties through the catheter at `mri_dump_ml_per_min`.
    mri_valve_shutoff_ul: float | None = Field(default=None, gt=0, le=100_000)
    mri_dump_ml_per_min: float = Field(default=1.0, gt=0, le=100)
    # A power loss resets the pump: clock and program lost, minimum rate, critical alarm until
    # reprogrammed (firmware_stubs/power.py). False: memory and clock survive it.
    power_on_reset: bool = True
    battery: BatteryProfile
    telemetry: TelemetryProfile
    limits: LimitsProfile = LimitsProfile()

    @field_validator("model", "serial_prefix")
    @classmethod
    def _printable(cls, text: str) -> str:
        # Shown in IDENTIFY, logs and the programmer's display: a NUL or a line break in a
        # name would cut or forge a line there.
        if not text.isprintable():
            raise ValueError("must be printable characters only (no control characters)")
        return text

    @field_validator("model")
    @classmethod
    def _model_fits_the_wire(cls, model: str) -> str:
        # IDENTIFY carries the model in at most NAME_MAX_BYTES UTF-8 bytes: a longer one
        # passed the character count and then stopped every pump from being built.
        size = len(model.encode("utf-8"))
        if size > NAME_MAX_BYTES:
            raise ValueError(
                f"must be at most {NAME_MAX_BYTES} UTF-8 bytes (IDENTIFY carries it); "
                f"got {size} bytes"
            )
        return model

    @field_validator("serial_prefix")
    @classmethod
    def _serial_prefix_fits_the_wire(cls, prefix: str) -> str:
        limit = SERIAL_MAX_BYTES - SERIAL_SUFFIX_BYTES
        size = len(prefix.encode("utf-8"))
        if size > limit:
            raise ValueError(
                f"must be at most {limit} UTF-8 bytes (a serial, prefix and "
                f"'-NNNNNN', is at most {SERIAL_MAX_BYTES}); got {size} bytes"
            )
        return prefix

    @model_validator(mode="after")
    def _check_consistency(self) -> DeviceProfile:
        if self.min_rate_ml_per_day >= self.max_rate_ml_per_day:
            raise ValueError("min_rate_ml_per_day must be below max_rate_ml_per_day")
        if self.low_reservoir_alarm_default_ml >= self.reservoir_capacity_ml:
            raise ValueError("low_reservoir_alarm_default_ml must be below reservoir_capacity_ml")
        if self.empty_reservoir_alarm_ml > self.low_reservoir_alarm_default_ml:
            raise ValueError("empty_reservoir_alarm_ml must not exceed the low-reservoir default")
        min_refill_ml = self.limits.min_refill_volume_ml
        if min_refill_ml is not None and min_refill_ml > self.reservoir_capacity_ml:
            # Every refill would be refused.
            raise ValueError(
                f"limits.min_refill_volume_ml ({min_refill_ml:g}) must not exceed "
                f"reservoir_capacity_ml ({self.reservoir_capacity_ml:g})"
            )
        return self

    def firmware_config(self) -> FirmwareConfig:
        """The subset of the profile that the pump's firmware is built with."""
        return FirmwareConfig(
            model=self.model,
            reservoir_capacity_ml=self.reservoir_capacity_ml,
            min_rate_ml_per_day=self.min_rate_ml_per_day,
            max_rate_ml_per_day=self.max_rate_ml_per_day,
            minimum_rate_mode_ml_per_day=self.minimum_rate_mode_ml_per_day,
            stroke_volume_ml=self.stroke_volume_ul / 1000.0,
            internal_path_volume_ml=self.internal_path_volume_ml,
            low_reservoir_alarm_default_ml=self.low_reservoir_alarm_default_ml,
            empty_reservoir_alarm_ml=self.empty_reservoir_alarm_ml,
            flex_max_steps=self.flex_max_steps,
            event_log_capacity=self.event_log_capacity,
            service_life_s=self.battery.service_life_years * 365.25 * 86400.0,
            eri_to_eos_s=self.battery.eri_to_eos_days * 86400.0,
            battery_capacity_mah=self.battery.capacity_mah,
            idle_current_ma=self.battery.idle_current_ua / 1000.0,
            charge_per_ml_mah=self.battery.charge_per_ml_mah,
            eri_remaining_fraction=self.battery.eri_remaining_pct / 100.0,
            power_on_reset=self.power_on_reset,
            mri_safety_valve=self.has_mri_safety_valve,
            **self.limits.model_dump(exclude_none=True),
        )

    @property
    def has_mri_safety_valve(self) -> bool:
        """A valve-gated pump with a flow-activated valve that shuts in a magnetic field."""
        return self.mechanism is Mechanism.VALVE_GATED and self.mri_valve_shutoff_ul is not None

    @property
    def dumps_in_mri(self) -> bool:
        """A valve-gated pump without the safety valve: a field empties the reservoir."""
        return self.mechanism is Mechanism.VALVE_GATED and self.mri_valve_shutoff_ul is None


def _search_dirs() -> list[Path]:
    extra = os.environ.get(PROFILE_PATH_ENV, "")
    return [Path(p) for p in extra.split(os.pathsep) if p] + [SHIPPED_PROFILE_DIR]


def available_profiles() -> dict[str, Path]:
    """Profile name -> file, user directories first so a user file can shadow a shipped one."""
    found: dict[str, Path] = {}
    for directory in _search_dirs():
        if directory.is_dir():
            for path in sorted(directory.glob("*.toml")):
                found.setdefault(path.stem, path)
    return found


def load_profile_file(path: Path) -> DeviceProfile:
    """Read and validate one profile file."""
    data = read_toml(path, "profile", ProfileError)
    try:
        return DeviceProfile.model_validate(data)
    except ValidationError as exc:
        text = format_validation_error(exc)
        if len(exc.errors()) == 1:
            # One problem, one line (what a CI log or a script reading stderr sees first).
            raise ProfileError(f"profile {path}: {text.strip()}") from exc
        raise ProfileError(f"profile {path}:\n{text}") from exc


def load_profile(name_or_path: str) -> DeviceProfile:
    """Load a profile by name (see `available_profiles`) or by path to a TOML file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists():
        return load_profile_file(candidate)
    profiles = available_profiles()
    if name_or_path not in profiles:
        known = ", ".join(sorted(profiles))
        raise ProfileError(f"unknown profile {name_or_path!r}; known profiles: {known}")
    return load_profile_file(profiles[name_or_path])


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem: dotted field path, what is allowed, what was given."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        given = err.get("input")
        shown = "" if isinstance(given, dict) else f" (got {given!r})"
        msg = str(err["msg"]).removeprefix("Value error, ")
        lines.append(f"  {prefix}{loc + ': ' if loc else ''}{msg}{shown}")
    return "\n".join(lines)
