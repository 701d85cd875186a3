"""Scenario files: a pump, an implant and a list of timed actions, in TOML.

The schema is documented in docs/scenarios.md. Validation is complete before anything runs;
a bad file gets one line per problem naming the action, the field and what is allowed.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from itpump.emulator.device_profile import DeviceProfile, Mechanism, ProfileError, load_profile
from itpump.emulator.faults import Fault, FaultKind
from itpump.emulator.pk.parameters import MAX_CATHETER_TIP_CM
from itpump.emulator.toml_input import read_toml, resolve_shipped, shipped_names
from itpump.firmware_stubs.config import FirmwareConfig
from itpump.firmware_stubs.errors import Refusal
from itpump.firmware_stubs.firmware import CLOCK_MAX_EPOCH_S, CLOCK_MIN_EPOCH_S
from itpump.protocol import messages as m
from itpump.protocol import units
from itpump.protocol.therapy import (
    TYPICAL_CATHETER_VOLUME_UL_PER_CM,
    ProgramError,
    ProgramTable,
    field_path,
    wire_range,
)

SHIPPED_SCENARIO_DIR = Path(__file__).with_name("scenarios")
DEFAULT_SCENARIO = "baclofen-180d"
DEFAULT_PROFILE = "peristaltic-20"


class ScenarioError(ValueError):
    """A scenario file that cannot be read or does not validate."""


# Limits that keep a run's time and memory bounded (docs/scenarios.md, "Limits").
#: Longest simulated time: 30 years, the longest battery service life a profile may have.
#: Also caps every action time and `--warmup`.
MAX_DURATION_H = 30 * 365.25 * 24.0
#: Most output samples (rows of timeseries.csv): about 100 MB of columns in memory.
MAX_SAMPLES = 1_000_000
#: Most action occurrences after `every` is expanded (each is a SimPy event and an outcome).
MAX_ACTION_OCCURRENCES = 100_000
#: The pump's clock range (the firmware's set_clock range): scenario start and set_clock times.
EARLIEST_CLOCK = dt.datetime.fromtimestamp(CLOCK_MIN_EPOCH_S, dt.UTC)
LATEST_CLOCK = dt.datetime.fromtimestamp(CLOCK_MAX_EPOCH_S, dt.UTC)
# Wire limits of the telemetry protocol (protocol/messages.py), in scenario units: values
# beyond them could never be programmed and overflow the mass arithmetic.
_MAX_MCG = wire_range(m.ClinicianBolus, "dose_ng")[1]
_MAX_ML = wire_range(m.RefillRequest, "volume_nl")[1]
_MAX_MCG_PER_ML = wire_range(m.RefillRequest, "concentration_ng_per_ml")[1]
_MAX_MINUTES = wire_range(m.ClinicianBolus, "duration_min")[1]


def parse_duration_h(value: object) -> float:
    """'90d', '1d 8h', '30m', '2w' (or a bare number of hours) -> hours, at most 30 years."""
    return units.parse_duration_h(value, MAX_DURATION_H)


DurationH = Annotated[float, BeforeValidator(parse_duration_h), Field(ge=0, le=MAX_DURATION_H)]


def _device_check(info: ValidationInfo, check: Callable[[FirmwareConfig], None]) -> None:
    """Check values against the device limits of the scenario's profile (the pump checks
    them again when the action runs; a file that names no loadable profile is checked then)."""
    limits = info.context.get("limits") if isinstance(info.context, dict) else None
    if limits is None:
        return
    try:
        check(limits)
    except Refusal as refusal:
        raise ValueError(refusal.detail) from None


class _Model(BaseModel):
    # allow_inf_nan=False: TOML has inf and nan literals, and `gt=0` lets inf through.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _clock_in_range(value: dt.datetime) -> dt.datetime:
    aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if not EARLIEST_CLOCK <= aware < LATEST_CLOCK:
        raise ValueError(
            f"must be from {EARLIEST_CLOCK:%Y-%m-%d} to before {LATEST_CLOCK:%Y-%m-%d} "
            "(the pump clock's range)"
        )
    return value


ClockTime = Annotated[dt.datetime, AfterValidator(_clock_in_range)]


def _serial_bytes(value: str | None) -> str | None:
    limit = m.SERIAL_MAX_BYTES
    if value is not None and (len(value.encode("utf-8")) > limit or not value.isprintable()):
        raise ValueError(
            f"must be 1..{limit} printable characters ({limit} UTF-8 bytes on the wire)"
        )
    return value


class ScenarioHeader(_Model):
    """[scenario] table."""

    name: str = Field(min_length=1)
    description: str = ""
    profile: str = DEFAULT_PROFILE
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    start: ClockTime = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)
    duration: DurationH | None = None
    sample_interval: DurationH = Field(default=1.0, gt=0)
    serial: Annotated[str | None, AfterValidator(_serial_bytes)] = Field(default=None, min_length=1)


class Implant(_Model):
    """[implant] table: what the surgeon put in."""

    catheter_length_cm: float = Field(default=110.0, gt=0)
    catheter_volume_ul_per_cm: float = Field(default=TYPICAL_CATHETER_VOLUME_UL_PER_CM, gt=0)
    # Where the tip sits, cm cranial (+) or caudal (-) of the lumbar level where the label's
    # CSF samples were taken: the patient's PK model puts the drug in there (docs/pk.md).
    catheter_tip_cm: float = Field(default=0.0, ge=-MAX_CATHETER_TIP_CM, le=MAX_CATHETER_TIP_CM)
    battery_remaining_pct: float = Field(default=100.0, gt=0, le=100)

    @model_validator(mode="after")
    def _device_limits(self, info: ValidationInfo) -> Implant:
        _device_check(
            info,
            lambda cfg: cfg.check_catheter(
                self.catheter_length_cm, self.catheter_volume_ul_per_cm, prefix="catheter_"
            ),
        )
        return self


class Patient(_Model):
    """[patient] table."""

    id: str = Field(default="PATIENT-001", min_length=1)
    weight_kg: float = Field(default=70.0, gt=0, le=300)

    @model_validator(mode="after")
    def _device_limits(self, info: ValidationInfo) -> Patient:
        _device_check(info, lambda cfg: cfg.check_name("id", self.id))
        return self


class _Timed(_Model):
    at: DurationH
    every: DurationH | None = Field(default=None, gt=0)
    until: DurationH | None = None

    @model_validator(mode="after")
    def _repeat_fields(self) -> _Timed:
        if self.until is not None and self.every is None:
            raise ValueError("'until' needs 'every'")
        return self


class RefillAction(_Timed):
    """Aspirate the residual and fill the reservoir; tell the pump."""

    type: Literal["refill"]
    volume_ml: float = Field(gt=0, le=_MAX_ML)
    drug: str = Field(default="baclofen", min_length=1)
    concentration_mcg_per_ml: float = Field(gt=0, le=_MAX_MCG_PER_ML)
    bridge: bool = True
    aspirate_ml: float | None = Field(default=None, ge=0, le=_MAX_ML)
    # What the clinician enters, when it differs from what was physically done (entry errors,
    # a wrong drug or concentration in the syringe): default, what was filled.
    entered_volume_ml: float | None = Field(default=None, gt=0, le=_MAX_ML)
    entered_drug: str | None = Field(default=None, min_length=1)
    entered_concentration_mcg_per_ml: float | None = Field(default=None, gt=0, le=_MAX_MCG_PER_ML)
    # Part of the injection that misses the septum and lands in the pocket (partial pocket fill).
    pocket_fill_fraction: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _device_limits(self, info: ValidationInfo) -> RefillAction:
        def check(cfg: FirmwareConfig) -> None:
            cfg.check_name("drug", self.drug)
            # What was physically filled may differ from the entry (a wrong-drug story), but
            # only among drugs the emulator knows: an unknown one would be accepted silently.
            cfg.drug_library.require("drug", self.drug)
            cfg.check_concentration("concentration_mcg_per_ml", self.concentration_mcg_per_ml)
            if self.entered_drug is not None:
                cfg.check_name("entered_drug", self.entered_drug)
            if self.entered_concentration_mcg_per_ml is not None:
                entered = self.entered_concentration_mcg_per_ml
                cfg.check_concentration("entered_concentration_mcg_per_ml", entered)

        _device_check(info, check)
        return self


class PrimeAction(_Timed):
    """Priming bolus: fill the catheter after implant or catheter revision."""

    type: Literal["prime"]
    volume_ml: float | None = Field(default=None, gt=0, le=_MAX_ML)


class CatheterRevisionAction(_Timed):
    """Surgery replaces the catheter with a new, empty one (its drug leaves with the explant);
    with `tell_pump` the clinician records it over telemetry, so that a prime is allowed."""

    type: Literal["catheter_revision"]
    length_cm: float = Field(gt=0)
    volume_ul_per_cm: float = Field(default=TYPICAL_CATHETER_VOLUME_UL_PER_CM, gt=0)
    tell_pump: bool = True

    @model_validator(mode="after")
    def _device_limits(self, info: ValidationInfo) -> CatheterRevisionAction:
        _device_check(info, lambda cfg: cfg.check_catheter(self.length_cm, self.volume_ul_per_cm))
        return self


class ProgramAction(_Timed, ProgramTable):
    """Program a therapy (validated and committed in one step); the keys are those of a
    program document (protocol/therapy.py, docs/programmer.md)."""

    type: Literal["program"]
    # strict like every program document (ProgramTable): _Timed's lax config comes first in
    # the merge and would otherwise read `dose_mcg_per_day = true` as 1.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)

    @model_validator(mode="after")
    def _device_limits(self, info: ValidationInfo) -> ProgramAction:
        def check(cfg: FirmwareConfig) -> None:
            if self.patient_id is not None:
                cfg.check_name("patient_id", self.patient_id)
            if self.catheter is not None:
                catheter = self.catheter
                cfg.check_catheter(
                    catheter.length_cm, catheter.volume_ul_per_cm, prefix="catheter."
                )

        _device_check(info, check)
        return self


class BolusAction(_Timed):
    """Clinician bolus."""

    type: Literal["bolus"]
    dose_mcg: float = Field(gt=0, le=_MAX_MCG)
    duration_min: float = Field(gt=0, le=_MAX_MINUTES)
    then: Literal["resume", "stop"] = "resume"


class BridgeBolusAction(_Timed):
    """Explicit bridge bolus at the old-drug equivalent rate."""

    type: Literal["bridge_bolus"]
    old_concentration_mcg_per_ml: float = Field(gt=0, le=_MAX_MCG_PER_ML)
    volume_ml: float | None = Field(default=None, gt=0, le=_MAX_ML)

    @model_validator(mode="after")
    def _device_limits(self, info: ValidationInfo) -> BridgeBolusAction:
        def check(cfg: FirmwareConfig) -> None:
            conc = self.old_concentration_mcg_per_ml
            cfg.check_concentration("old_concentration_mcg_per_ml", conc)
            if self.volume_ml is not None:
                cfg.check_priming_volume("volume_ml", self.volume_ml)

        _device_check(info, check)
        return self


class PatientBolusAction(_Timed):
    """The patient presses the button."""

    type: Literal["patient_bolus"]


class FaultAction(_Timed):
    """Inject a hardware fault (see emulator/faults.py for kinds and parameters)."""

    type: Literal["fault"]
    kind: str
    value: float | None = None

    @model_validator(mode="after")
    def _known_fault(self, info: ValidationInfo) -> FaultAction:
        Fault.make(self.kind, self.value)  # FaultError is a ValueError: reported per field
        mechanism = info.context.get("mechanism") if isinstance(info.context, dict) else None
        if (
            self.kind == FaultKind.MRI.value
            and self.value
            and mechanism is Mechanism.VALVE_GATED
        ):
            # The restart delay holds a motor; a valve-gated pump has none (its valve stays
            # shut until a valve_reset), so a delay would be silently ignored.
            raise ValueError(
                f"value={self.value:g}: an mri restart delay applies to a peristaltic pump "
                "only; this profile is valve-gated (its valve stays shut until a valve_reset)"
            )
        return self


class ClearFaultAction(_Timed):
    """End a hardware fault."""

    type: Literal["clear_fault"]
    kind: str

    @model_validator(mode="after")
    def _known_fault(self) -> ClearFaultAction:
        try:
            FaultKind(self.kind)
        except ValueError:
            allowed = ", ".join(k.value for k in FaultKind)
            raise ValueError(f"unknown fault kind {self.kind!r}; allowed: {allowed}") from None
        return self


class SimpleAction(_Timed):
    """Commands without parameters."""

    type: Literal[
        "stop",
        "resume",
        "cancel_bolus",
        "acknowledge_alarms",
        "valve_reset",
        "alarm_test",
        "interrogate",
    ]


class AlarmThresholdAction(_Timed):
    """Program the low-reservoir alarm."""

    type: Literal["set_alarm_threshold"]
    low_reservoir_ml: float = Field(gt=0, le=_MAX_ML)


class SetClockAction(_Timed):
    """Set the pump clock (e.g. a daylight-saving or wrong-clock test)."""

    type: Literal["set_clock"]
    time: ClockTime


class RunUntilAction(_Model):
    """End of the scenario."""

    type: Literal["run_until"]
    at: DurationH


Action = Annotated[
    RefillAction
    | PrimeAction
    | CatheterRevisionAction
    | ProgramAction
    | BolusAction
    | BridgeBolusAction
    | PatientBolusAction
    | FaultAction
    | ClearFaultAction
    | SimpleAction
    | AlarmThresholdAction
    | SetClockAction
    | RunUntilAction,
    Field(discriminator="type"),
]


class Scenario(_Model):
    """A whole scenario file."""

    scenario: ScenarioHeader
    patient: Patient = Patient()
    implant: Implant = Implant()
    actions: list[Action] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _defaults_meet_the_device(cls, data: object) -> object:
        # A default [patient] / [implant] is validated like a written one, so the profile's
        # limits apply to it too (a catheter of 110 cm on a model that takes 50 cm at most).
        if isinstance(data, dict):
            return {"patient": {}, "implant": {}, **data}
        return data

    @model_validator(mode="after")
    def _has_end(self) -> Scenario:
        if self.end_h <= 0:
            raise ValueError("set scenario.duration or add a 'run_until' action")
        samples = self.end_h / self.scenario.sample_interval
        if samples > MAX_SAMPLES:
            raise ValueError(
                f"scenario.sample_interval: {self.scenario.sample_interval:g} h over "
                f"{self.end_h:g} h gives {samples:.3g} samples, more than {MAX_SAMPLES}; "
                f"use a sample_interval of at least {self.end_h / MAX_SAMPLES:.3g} h"
            )
        occurrences = 0
        for index, action in enumerate(self.actions, start=1):
            if isinstance(action, RunUntilAction) or action.every is None:
                occurrences += 1
                continue
            last = min(self.end_h, action.until if action.until is not None else self.end_h)
            occurrences += max(math.floor((last - action.at) / action.every + 1e-9) + 1, 0)
            if occurrences > MAX_ACTION_OCCURRENCES:
                raise ValueError(
                    f"action #{index} ({action.type} every {action.every:g} h): the actions "
                    f"repeat more than {MAX_ACTION_OCCURRENCES} times in {self.end_h:g} h; "
                    "use a longer 'every' or an 'until'"
                )
        return self

    @property
    def end_h(self) -> float:
        """When the run stops: the earlier of duration and the first run_until."""
        ends = [a.at for a in self.actions if isinstance(a, RunUntilAction)]
        if self.scenario.duration is not None:
            ends.append(self.scenario.duration)
        return min(ends) if ends else 0.0


def _describe_loc(loc: tuple[int | str, ...], data: object) -> str:
    if len(loc) >= 2 and loc[0] == "actions" and isinstance(loc[1], int):
        index = loc[1]
        kind = "?"
        at = ""
        if isinstance(data, dict):
            actions = data.get("actions")
            if (
                isinstance(actions, list)
                and index < len(actions)
                and isinstance(actions[index], dict)
            ):
                kind = str(actions[index].get("type", "?"))
                at = f" at {actions[index].get('at', '?')}"
        rest = loc[3:] if len(loc) > 2 and loc[2] == kind else loc[2:]
        field = field_path(rest) or "(the action)"
        return f"action #{index + 1} ({kind}{at}): {field}"
    return field_path(loc) or "(top level)"


def parse_scenario(
    data: dict[str, object], source: str = "<scenario>", profile: DeviceProfile | None = None
) -> Scenario:
    """Validate a scenario mapping; errors list action number, field and what is allowed.

    Values are checked against the device limits of ``profile`` when given (a run that
    replaces the scenario's profile), else of the profile the scenario names."""
    limits, mechanism = (
        _profile_limits(data)
        if profile is None
        else (profile.firmware_config(), profile.mechanism)
    )
    if profile is not None:
        source = f"{source} (with profile {profile.model})"
    try:
        return Scenario.model_validate(
            data, context={"limits": limits, "mechanism": mechanism}
        )
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            given = err.get("input")
            shown = "" if isinstance(given, dict | list) or given is None else f" (got {given!r})"
            msg = str(err["msg"]).removeprefix("Value error, ")
            loc = tuple(err["loc"])
            cause = err.get("ctx", {}).get("error")
            if isinstance(cause, ProgramError):  # a program check names its own field
                loc, msg = (*loc, cause.field), cause.message
            where = f"{_describe_loc(loc, data)}: " if loc else ""
            lines.append(f"{where}{msg}{shown}")
        if len(lines) == 1:
            # One problem, one line: what a CI log or a script reading stderr shows first.
            raise ScenarioError(f"{source}: invalid scenario: {lines[0]}") from exc
        raise ScenarioError(
            f"{source}: invalid scenario\n" + "\n".join(f"  {line}" for line in lines)
        ) from exc


def _profile_limits(data: dict[str, object]) -> tuple[FirmwareConfig | None, Mechanism | None]:
    """The device limits and drive of the profile a scenario names (None if it does not load:
    the run reports that when it loads the profile)."""
    header = data.get("scenario")
    name = header.get("profile", DEFAULT_PROFILE) if isinstance(header, dict) else None
    if not isinstance(name, str):
        return None, None
    try:
        profile = load_profile(name)
    except ProfileError:
        return None, None
    return profile.firmware_config(), profile.mechanism


def load_scenario(name_or_path: str, profile: DeviceProfile | None = None) -> Scenario:
    """Load a shipped scenario by name or a TOML file by path, checked against the limits
    of ``profile`` when the run replaces the scenario's profile with it."""
    path = resolve_shipped(name_or_path, SHIPPED_SCENARIO_DIR, "scenario", ScenarioError)
    return parse_scenario(read_toml(path, "scenario", ScenarioError), str(path), profile)


def shipped_scenarios() -> list[str]:
    """Names of the scenarios shipped with the package."""
    return shipped_names(SHIPPED_SCENARIO_DIR)
