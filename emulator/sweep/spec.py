"""Sweep files: a base scenario and what varies across runs, in TOML (docs/sweep.md).

The whole file is validated before anything runs; every problem is reported as
`section.field: what is allowed (got VALUE)`. A run's parameters are a pure function of
(sweep seed, run index) — `run_parameters` — so results do not depend on how many workers
there are or in which order runs finish.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from itpump.emulator.device_profile import DeviceProfile, ProfileError, load_profile
from itpump.emulator.faults import Fault, FaultError, FaultKind
from itpump.emulator.pk.parameters import BACLOFEN_VARIABILITY_CV_PERCENT, VARIABLE_PARAMETERS
from itpump.emulator.pk.timing import EFFECT_THRESHOLD_FRACTION
from itpump.emulator.scenario import (
    MAX_SAMPLES,
    ProgramAction,
    RefillAction,
    Scenario,
    ScenarioError,
    load_scenario,
    parse_duration_h,
)
from itpump.emulator.toml_input import read_toml, resolve_shipped, shipped_names

SHIPPED_SWEEP_DIR = Path(__file__).resolve().parent.parent / "sweeps"
NO_FAULT = "none"  # a fault kind value meaning "no fault in this run" (for grids with a baseline)
MAX_TIMESERIES_RUNS = 1000  # raw time series are for a few selected runs, not for the population
# Defaults of the outcome thresholds that are choices, not documented clinical figures (see
# docs/sweep.md, "Outcomes and thresholds"): named here so the docs and the code agree.
DEFAULT_WITHDRAWAL_WINDOW_H = 12.0
DEFAULT_PLASMA_THRESHOLD_NG_PER_ML = 10.0
DEFAULT_CSF_HIGH_FACTOR = 2.0

ValueKind = Literal["float", "int", "duration", "str"]


class SweepError(ValueError):
    """A sweep file that cannot be read or does not validate."""


def _invalid(source: str, problems: list[str]) -> SweepError:
    # One problem fits on one line (what a CLI user sees first); several get one line each.
    if len(problems) == 1:
        return SweepError(f"{source}: invalid sweep: {problems[0].strip()}")
    return SweepError(f"{source}: invalid sweep\n" + "\n".join(problems))


# --------------------------------------------------------------------------- value specs
@dataclass(frozen=True, slots=True)
class ParamSpec:
    """How one parameter varies: a constant, a grid axis, or a seeded random draw.

    Numbers are already converted (durations to hours). `kind` is one of "const", "grid",
    "choice", "uniform", "normal", "lognormal", "randint".
    """

    kind: str
    values: tuple[float | str, ...] = ()
    weights: tuple[float, ...] | None = None
    a: float = 0.0  # uniform/randint low, normal mean, lognormal median
    b: float = 0.0  # uniform/randint high, normal sd, lognormal CV %
    low: float | None = None  # truncation of a normal draw (clipped)
    high: float | None = None

    @property
    def is_grid(self) -> bool:
        """True for a `{values = [...]}` axis of the grid."""
        return self.kind == "grid"

    def draw(self, rng: np.random.Generator) -> float | str:
        """One value; grid axes are resolved by the caller, constants ignore `rng`."""
        if self.kind in ("const", "grid"):
            return self.values[0]
        if self.kind == "choice":
            p = None if self.weights is None else np.asarray(self.weights) / sum(self.weights)
            return self.values[int(rng.choice(len(self.values), p=p))]
        if self.kind == "uniform":
            return float(rng.uniform(self.a, self.b))
        if self.kind == "randint":
            return float(rng.integers(int(self.a), int(self.b), endpoint=True))
        if self.kind == "normal":
            value = float(rng.normal(self.a, self.b))
            if self.low is not None:
                value = max(value, self.low)
            if self.high is not None:
                value = min(value, self.high)
            return value
        # lognormal: median and CV %, like the PK engine's inter-individual variability
        omega = math.sqrt(math.log1p((self.b / 100.0) ** 2))
        return float(self.a * math.exp(omega * rng.standard_normal()))

    def extremes(self) -> tuple[float | str, ...]:
        """Values worth validating up front: every grid/choice value, bounds of a range."""
        if self.kind in ("const", "grid", "choice"):
            return self.values
        if self.kind in ("uniform", "randint"):
            return (self.a, self.b)
        if self.kind == "normal":
            return tuple(v for v in (self.a, self.low, self.high) if v is not None)
        return (self.a,)


_SPEC_KEYS = {
    "values": "grid",
    "choice": "choice",
}
_DIST_FIELDS = {
    "uniform": ("low", "high"),
    "randint": ("low", "high"),
    "normal": ("mean", "sd"),
    "lognormal": ("median", "cv_percent"),
}
_HELP = (
    "expected a value, {values = [...]} (grid), {choice = [...]} or "
    "{distribution = 'uniform'|'normal'|'lognormal'|'randint', ...}"
)


def _convert(raw: object, kind: ValueKind) -> float | str:
    if kind == "str":
        if not isinstance(raw, str):
            raise ValueError(f"expected a string (got {raw!r})")
        return raw
    if kind == "duration":
        return parse_duration_h(raw)
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError(f"expected a number (got {raw!r})")
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number (got {raw!r})")
    if kind == "int" and value != int(value):
        raise ValueError(f"expected a whole number (got {raw!r})")
    return value


def parse_param(raw: object, kind: ValueKind) -> ParamSpec:
    """A sweep-file value (constant, grid, choice or distribution table) -> `ParamSpec`."""
    if not isinstance(raw, dict):
        if isinstance(raw, list):
            raise ValueError("a list is ambiguous here; write {values = [...]} for a grid")
        return ParamSpec("const", (_convert(raw, kind),))
    keys = set(raw)
    for key, spec_kind in _SPEC_KEYS.items():
        if key in keys:
            allowed = {key, "weights"} if key == "choice" else {key}
            if keys - allowed:
                raise ValueError(f"unexpected keys {sorted(keys - allowed)} beside {key!r}")
            values = raw[key]
            if not isinstance(values, list) or not values:
                raise ValueError(f"{key!r} must be a non-empty list")
            converted = tuple(_convert(v, kind) for v in values)
            weights = None
            if "weights" in raw:
                w = raw["weights"]
                if (
                    not isinstance(w, list)
                    or len(w) != len(values)
                    or not all(isinstance(x, int | float) and x >= 0 for x in w)
                    or sum(w) <= 0
                ):
                    raise ValueError("'weights' must be one number >= 0 per choice, not all 0")
                weights = tuple(float(x) for x in w)
            return ParamSpec(spec_kind, converted, weights)
    dist = raw.get("distribution")
    if dist not in _DIST_FIELDS:
        raise ValueError(_HELP + f" (got {raw!r})")
    if kind == "str":
        raise ValueError(f"a {dist} distribution needs a numeric parameter; use {{choice = [...]}}")
    first, second = _DIST_FIELDS[str(dist)]
    optional = {"low", "high"} if dist == "normal" else set()
    unknown = keys - {"distribution", first, second} - optional
    missing = {first, second} - keys
    if unknown or missing:
        raise ValueError(
            f"a {dist} distribution takes {first}, {second}"
            + (" (and optional low, high)" if optional else "")
            + f"; missing {sorted(missing)}, unexpected {sorted(unknown)}"
        )
    # Spreads (sd, CV %) are plain numbers even when the parameter is a duration.
    a = float(_convert(raw[first], kind))
    b = float(_convert(raw[second], kind if dist in ("uniform", "randint") else "float"))
    low = None if "low" not in raw else float(_convert(raw["low"], kind))
    high = None if "high" not in raw else float(_convert(raw["high"], kind))
    if dist in ("uniform", "randint") and not a < b:
        raise ValueError(f"low must be below high (got {a:g} and {b:g})")
    if dist == "randint" and (a != int(a) or b != int(b)):
        raise ValueError("randint bounds must be whole numbers")
    if dist in ("normal", "lognormal") and b < 0:
        raise ValueError(f"{second} must be >= 0")
    if dist == "lognormal" and a <= 0:
        raise ValueError("median must be > 0")
    if low is not None and high is not None and not low < high:
        raise ValueError("low must be below high")
    if kind == "int" and dist != "randint":
        raise ValueError("a whole-number parameter takes {values}, {choice} or randint")
    return ParamSpec(str(dist), (), None, a, b, low, high)


# --------------------------------------------------------------------------- file schema
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SweepHeader(_Model):
    """[sweep] table."""

    name: str = Field(min_length=1)
    description: str = ""
    scenario: str = Field(min_length=1)
    duration: str | float | None = None
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    replicates: int = Field(default=1, ge=1, le=100_000_000)
    pump_seed: Any = None


class PatientsTable(_Model):
    """[patients] table: virtual patients of the PK engine."""

    variability: bool = True
    cv_percent: dict[str, float] = Field(default_factory=dict)
    weight_kg: Any = None

    @field_validator("cv_percent")
    @classmethod
    def _known_parameters(cls, cv_percent: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(cv_percent) - set(VARIABLE_PARAMETERS))
        if unknown:
            raise ValueError(
                f"no variability allowed on {unknown}; allowed: " + ", ".join(VARIABLE_PARAMETERS)
            )
        if any(not math.isfinite(v) or v < 0 for v in cv_percent.values()):
            raise ValueError("every CV % must be finite and >= 0")
        return cv_percent


class FaultTable(_Model):
    """One [[faults]] entry: a fault injected at `onset` (and cleared after `clear_after`)."""

    kind: Any
    value: Any = None
    onset: Any
    clear_after: Any = None


class ActionsTable(_Model):
    """[actions] table: variations of the base scenario's actions."""

    refill_interval: Any = None
    patient_boluses_per_day: Any = None
    patient_bolus_start: Any = None
    entered_concentration_factor: Any = None
    entered_concentration_from: Any = None
    program_dose_factor: Any = None
    program_dose_factor_from: Any = None


class OutcomesTable(_Model):
    """[outcomes] table: thresholds of the outcome metrics and hazards (docs/sweep.md)."""

    sample_interval: str | float = "10m"
    withdrawal_fraction: float = Field(default=EFFECT_THRESHOLD_FRACTION, gt=0, lt=1)
    withdrawal_window_h: float = Field(default=DEFAULT_WITHDRAWAL_WINDOW_H, gt=0)
    plasma_threshold_ng_per_ml: float = Field(default=DEFAULT_PLASMA_THRESHOLD_NG_PER_ML, gt=0)
    csf_high_factor: float = Field(default=DEFAULT_CSF_HIGH_FACTOR, gt=1)
    reference_settle: str | float = "1d"


class OutputTable(_Model):
    """[output] table."""

    timeseries_runs: list[int] = Field(default_factory=list, max_length=MAX_TIMESERIES_RUNS)
    timeseries_interval: str | float = "1h"
    percentiles: list[float] = Field(default_factory=lambda: [5.0, 50.0, 95.0], min_length=1)

    @model_validator(mode="after")
    def _levels(self) -> OutputTable:
        if any(not 0 <= p <= 100 for p in self.percentiles):
            raise ValueError("percentiles must be within 0-100")
        if any(r < 0 for r in self.timeseries_runs):
            raise ValueError("timeseries_runs must be run ids >= 0")
        return self


class SweepFile(_Model):
    """A whole sweep file as written."""

    sweep: SweepHeader
    patients: PatientsTable = PatientsTable()
    profile: dict[str, Any] = Field(default_factory=dict)
    faults: list[FaultTable] = Field(default_factory=list)
    actions: ActionsTable = ActionsTable()
    outcomes: OutcomesTable = OutcomesTable()
    output: OutputTable = OutputTable()


# --------------------------------------------------------------------------- resolved sweep
@dataclass(frozen=True, slots=True)
class Thresholds:
    """Outcome thresholds, resolved to numbers (hours, ng/mL, fractions)."""

    sample_interval_h: float
    withdrawal_fraction: float
    withdrawal_window_h: float
    plasma_threshold_ng_per_ml: float
    csf_high_factor: float
    reference_settle_h: float


@dataclass(frozen=True, slots=True)
class Sweep:
    """A validated sweep: everything a worker needs, with no file access (picklable)."""

    name: str
    description: str
    seed: int
    replicates: int
    scenario: Scenario
    profile: DeviceProfile
    params: dict[str, ParamSpec]
    param_kinds: dict[str, ValueKind]
    pk_variability_cv_percent: dict[str, float]
    n_faults: int
    thresholds: Thresholds
    timeseries_runs: frozenset[int]
    timeseries_interval_h: float
    percentiles: tuple[float, ...]
    grid_axes: tuple[tuple[str, tuple[float | str, ...]], ...] = field(default=())
    digest: str = ""

    @property
    def n_points(self) -> int:
        """Grid points (1 without any grid axis)."""
        return math.prod(len(values) for _, values in self.grid_axes)

    @property
    def n_runs(self) -> int:
        """Total runs: grid points x replicates."""
        return self.n_points * self.replicates


@dataclass(frozen=True, slots=True)
class RunParameters:
    """Everything that distinguishes one run: a pure function of (sweep seed, run index)."""

    run_id: int
    grid_point: int
    replicate: int
    pump_seed: int
    values: dict[str, float | str]




def scenario_data(scenario: Scenario) -> dict[str, Any]:
    """A scenario as the mapping a scenario file gives (validates back into the same one)."""
    return scenario.model_dump()


def _param_rng(seed: int, run_id: int, name: str) -> np.random.Generator:
    # One independent stream per (run, parameter): adding or removing a varied parameter does
    # not change the draws of the others, and no run depends on any other run's draws.
    key = zlib.crc32(name.encode())
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(run_id, key)))


def run_parameters(sweep: Sweep, run_id: int) -> RunParameters:
    """The parameters of run `run_id` (0 <= run_id < n_runs); same sweep, same answer."""
    if not 0 <= run_id < sweep.n_runs:
        raise IndexError(f"run id {run_id} outside 0..{sweep.n_runs - 1}")
    point, replicate = divmod(run_id, sweep.replicates)
    values: dict[str, float | str] = {}
    rest = point
    # Mixed-radix digits of the grid point, last axis fastest.
    for name, axis in reversed(sweep.grid_axes):
        rest, digit = divmod(rest, len(axis))
        values[name] = axis[digit]
    for name, spec in sweep.params.items():
        if not spec.is_grid:
            values[name] = spec.draw(_param_rng(sweep.seed, run_id, name))
    seed_value = values.pop("pump_seed", None)
    if seed_value is None:
        pump_seed = int(_param_rng(sweep.seed, run_id, "pump_seed").integers(0, 2**31))
    else:
        pump_seed = int(seed_value)
    return RunParameters(run_id, point, replicate, pump_seed, dict(sorted(values.items())))


def patient_rng(sweep: Sweep, run_id: int) -> np.random.Generator:
    """The stream of a run's PK inter-individual variability draws."""
    return _param_rng(sweep.seed, run_id, "patient")


# --------------------------------------------------------------------------- loading
_PROFILE_NUMERIC = {
    name: ("int" if info.annotation is int else "float")
    for name, info in DeviceProfile.model_fields.items()
    if info.annotation in (int, float)
}


def _collect_params(data: SweepFile, errors: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(name -> raw value, name -> kind) of every varied parameter, with sweep-file paths."""
    raw: dict[str, tuple[object, ValueKind, str]] = {}
    if data.sweep.pump_seed is not None:
        raw["pump_seed"] = (data.sweep.pump_seed, "int", "sweep.pump_seed")
    if data.patients.weight_kg is not None:
        raw["weight_kg"] = (data.patients.weight_kg, "float", "patients.weight_kg")
    for name, value in data.profile.items():
        if name not in _PROFILE_NUMERIC:
            errors.append(
                f"  profile.{name}: not a numeric profile field; allowed: "
                + ", ".join(sorted(_PROFILE_NUMERIC))
            )
            continue
        kind: ValueKind = "int" if _PROFILE_NUMERIC[name] == "int" else "float"
        raw[f"profile_{name}"] = (value, kind, f"profile.{name}")
    for i, fault in enumerate(data.faults):
        where = f"faults[{i}]"
        raw[f"fault{i}_kind"] = (fault.kind, "str", f"{where}.kind")
        if fault.value is not None:
            raw[f"fault{i}_value"] = (fault.value, "float", f"{where}.value")
        raw[f"fault{i}_onset_h"] = (fault.onset, "duration", f"{where}.onset")
        if fault.clear_after is not None:
            raw[f"fault{i}_clear_after_h"] = (fault.clear_after, "duration", f"{where}.clear_after")
    kinds: dict[str, ValueKind] = {
        "refill_interval": "duration",
        "patient_boluses_per_day": "int",
        "patient_bolus_start": "duration",
        "entered_concentration_factor": "float",
        "entered_concentration_from": "duration",
        "program_dose_factor": "float",
        "program_dose_factor_from": "duration",
    }
    for name, kind in kinds.items():
        value = getattr(data.actions, name)
        if value is not None:
            column = f"{name}_h" if kind == "duration" else name
            raw[column] = (value, kind, f"actions.{name}")
    specs: dict[str, Any] = {}
    out_kinds: dict[str, str] = {}
    for column, (value, kind, where) in raw.items():
        try:
            specs[column] = parse_param(value, kind)
            out_kinds[column] = kind
        except ValueError as exc:
            errors.append(f"  {where}: {exc}")
    return specs, out_kinds


def _check_values(sweep: Sweep, errors: list[str]) -> None:
    """Refuse values that cannot work in any run: bad fault kinds/values, profile fields out
    of range, actions the base scenario does not have."""
    for name, spec in sweep.params.items():
        for value in spec.extremes():
            problem = _value_problem(sweep, name, value)
            if problem:
                errors.append(f"  {_file_path(name)}: {problem} (got {value!r})")
                break
    actions = sweep.scenario.actions
    if "refill_interval_h" in sweep.params and not any(
        isinstance(a, RefillAction) and a.every is not None for a in actions
    ):
        errors.append(
            "  actions.refill_interval: the base scenario has no repeating refill action "
            "(a refill with 'every') to vary"
        )
    if "program_dose_factor" in sweep.params and not any(
        isinstance(a, ProgramAction) for a in actions
    ):
        errors.append("  actions.program_dose_factor: the base scenario has no program action")
    if "entered_concentration_factor" in sweep.params and not any(
        isinstance(a, RefillAction) for a in actions
    ):
        errors.append(
            "  actions.entered_concentration_factor: the base scenario has no refill action"
        )


def _file_path(column: str) -> str:
    if column.startswith("profile_"):
        return "profile." + column.removeprefix("profile_")
    if column.startswith("fault"):
        index, _, rest = column.removeprefix("fault").partition("_")
        return f"faults[{index}].{rest.removesuffix('_h')}"
    if column in ("weight_kg",):
        return "patients.weight_kg"
    if column == "pump_seed":
        return "sweep.pump_seed"
    return "actions." + column.removesuffix("_h")


_FAULT_KINDS = tuple(kind.value for kind in FaultKind)


def _value_problem(sweep: Sweep, name: str, value: float | str) -> str | None:
    if name.startswith("profile_"):
        field_name = name.removeprefix("profile_")
        try:
            apply_profile(sweep.profile, {field_name: value})
        except ProfileError as exc:
            return str(exc).splitlines()[-1].strip()
        return None
    if name.startswith("fault") and name.endswith("_kind"):
        if value == NO_FAULT or value in _FAULT_KINDS:
            return None
        return f"unknown fault kind; allowed: {', '.join(_FAULT_KINDS)}, or {NO_FAULT!r}"
    if name.startswith("fault") and name.endswith("_value"):
        kind_spec = sweep.params[name.removesuffix("_value") + "_kind"]
        for kind in kind_spec.extremes():
            if kind == NO_FAULT or kind not in _FAULT_KINDS:
                continue  # an unknown kind is reported once, on the kind's own line
            try:
                Fault.make(str(kind), float(value))
            except FaultError as exc:
                return str(exc)
        return None
    if name == "weight_kg" and not 0 < float(value) <= 300:
        return "weight must be > 0 and <= 300 kg"
    if name == "pump_seed" and not 0 <= float(value) <= 2**63 - 1:
        return "seed must be >= 0"
    if name in ("refill_interval_h",) and float(value) <= 0:
        return "must be > 0"
    if name == "patient_boluses_per_day":
        most = sweep.profile.firmware_config().patient_bolus_max_per_day
        if not 0 <= float(value) <= most:
            return f"must be 0..{most} (the profile's patient_bolus_max_per_day)"
    if name in ("entered_concentration_factor", "program_dose_factor") and float(value) <= 0:
        return "must be > 0"
    if name.endswith("_h") and float(value) < 0:
        return "must be >= 0"
    return None


def apply_profile(profile: DeviceProfile, changes: Mapping[str, float | str]) -> DeviceProfile:
    """The profile with some numeric fields changed, validated again (ProfileError if not)."""
    from itpump.emulator.device_profile import format_validation_error

    data = profile.model_dump()
    for name, value in changes.items():
        data[name] = int(value) if isinstance(profile.model_dump()[name], int) else value
    try:
        return DeviceProfile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(format_validation_error(exc)) from exc


def _describe(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        given = err.get("input")
        shown = "" if isinstance(given, dict | list) or given is None else f" (got {given!r})"
        msg = str(err["msg"]).removeprefix("Value error, ")
        if msg.startswith("Extra inputs"):
            msg = "unknown field"
        lines.append(f"  {loc}: {msg}{shown}")
    return lines


def parse_sweep(
    data: dict[str, Any], source: str = "<sweep>", base_dir: Path | None = None
) -> Sweep:
    """Validate a sweep mapping (base scenario, profile, every varied value) -> `Sweep`."""
    try:
        parsed = SweepFile.model_validate(data)
    except ValidationError as exc:
        raise _invalid(source, _describe(exc)) from exc
    errors: list[str] = []
    scenario_ref = parsed.sweep.scenario
    candidate = (base_dir / scenario_ref) if base_dir is not None else Path(scenario_ref)
    try:
        scenario = load_scenario(str(candidate) if candidate.exists() else scenario_ref)
        if parsed.sweep.duration is not None:
            duration_h = parse_duration_h(parsed.sweep.duration)
            if duration_h <= 0:
                raise ValueError("must be > 0")
            dumped = scenario_data(scenario)
            dumped["scenario"]["duration"] = duration_h
            dumped["actions"] = [a for a in dumped["actions"] if a["type"] != "run_until"]
            scenario = Scenario.model_validate(dumped)
        profile = load_profile(scenario.scenario.profile)
    except (ScenarioError, ProfileError) as exc:
        raise _invalid(source, [f"sweep.scenario: {exc}"]) from None
    except ValueError as exc:
        raise _invalid(source, [f"sweep.duration: {exc}"]) from None
    params, kinds = _collect_params(parsed, errors)
    thresholds = None
    try:
        out = parsed.outcomes
        thresholds = Thresholds(
            sample_interval_h=_positive_duration(out.sample_interval, "outcomes.sample_interval"),
            withdrawal_fraction=out.withdrawal_fraction,
            withdrawal_window_h=out.withdrawal_window_h,
            plasma_threshold_ng_per_ml=out.plasma_threshold_ng_per_ml,
            csf_high_factor=out.csf_high_factor,
            reference_settle_h=parse_duration_h(out.reference_settle),
        )
        ts_interval_h = _positive_duration(
            parsed.output.timeseries_interval, "output.timeseries_interval"
        )
        # The same bound as a scenario's own samples (a 1 s interval over a year is 31.5
        # million samples a run, held in memory): refused before anything is written.
        for where, step_h in (
            ("outcomes.sample_interval", thresholds.sample_interval_h),
            ("output.timeseries_interval", ts_interval_h),
        ):
            samples = scenario.end_h / step_h
            if samples > MAX_SAMPLES:
                errors.append(
                    f"  {where}: {step_h:g} h over {scenario.end_h:g} h gives {samples:.3g} "
                    f"samples a run, more than {MAX_SAMPLES}; use an interval of at least "
                    f"{scenario.end_h / MAX_SAMPLES:.3g} h"
                )
    except ValueError as exc:
        errors.append(f"  {exc}")
    if errors or thresholds is None:
        raise _invalid(source, errors)
    cv = dict(BACLOFEN_VARIABILITY_CV_PERCENT) if parsed.patients.variability else {}
    cv.update(parsed.patients.cv_percent)
    axes = tuple((name, spec.values) for name, spec in params.items() if spec.is_grid)
    sweep = Sweep(
        name=parsed.sweep.name,
        description=parsed.sweep.description,
        seed=parsed.sweep.seed,
        replicates=parsed.sweep.replicates,
        scenario=scenario,
        profile=profile,
        params=params,
        param_kinds=kinds,  # type: ignore[arg-type]
        pk_variability_cv_percent=cv,
        n_faults=len(parsed.faults),
        thresholds=thresholds,
        timeseries_runs=frozenset(parsed.output.timeseries_runs),
        timeseries_interval_h=ts_interval_h,
        percentiles=tuple(parsed.output.percentiles),
        grid_axes=axes,
    )
    _check_values(sweep, errors)
    too_big = [r for r in sweep.timeseries_runs if r >= sweep.n_runs]
    if too_big:
        errors.append(
            f"  output.timeseries_runs: run ids must be below {sweep.n_runs} (got {too_big[:5]})"
        )
    if errors:
        raise _invalid(source, errors)
    # The digest names the exact sweep (base scenario and profile included): resuming into a
    # directory written by a different sweep is refused.
    canonical = json.dumps(
        {
            "file": data,
            "scenario": scenario.model_dump(mode="json"),
            "profile": profile.model_dump(mode="json"),
        },
        sort_keys=True,
        default=str,
    )
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return _with_digest(sweep, digest)


def _with_digest(sweep: Sweep, digest: str) -> Sweep:
    from dataclasses import replace

    return replace(sweep, digest=digest)


def _positive_duration(value: str | float, where: str) -> float:
    try:
        hours = parse_duration_h(value)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if hours <= 0:
        raise ValueError(f"{where}: must be > 0 (got {value!r})")
    return hours


def load_sweep(name_or_path: str) -> Sweep:
    """Load a shipped sweep by name or a sweep TOML file by path (scenario paths in the file
    are relative to the file)."""
    path = resolve_shipped(name_or_path, SHIPPED_SWEEP_DIR, "sweep", SweepError)
    if path.is_dir():
        raise SweepError(f"cannot read sweep {path}: it is a directory")
    data = read_toml(path, "sweep", SweepError)
    return parse_sweep(data, str(path), path.parent)


def shipped_sweeps() -> list[str]:
    """Names of the example sweeps shipped with the package."""
    return shipped_names(SHIPPED_SWEEP_DIR)
