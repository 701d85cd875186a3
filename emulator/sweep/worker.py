"""What a Dask worker does: build one run from (sweep, run index), run it, reduce it to a row.

Everything here is a pure function of the `Sweep` and the run index, so any worker, in any
order, produces the same row. A run that raises becomes an error row with its seed; the sweep
goes on.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from itpump.emulator.device_profile import ProfileError
from itpump.emulator.hardware.pump_hardware import RefillOutcome
from itpump.emulator.outputs import timeseries
from itpump.emulator.pk import PKModel, PKParameters
from itpump.emulator.pk.parameters import sample_parameter_arrays
from itpump.emulator.pump import EmulatedPump
from itpump.emulator.runner import ScenarioRun
from itpump.emulator.scenario import (
    FaultAction,
    PatientBolusAction,
    RefillAction,
    Scenario,
    parse_scenario,
)
from itpump.emulator.sweep.outcomes import OUTCOME_COLUMNS, outcome_row
from itpump.emulator.sweep.spec import (
    NO_FAULT,
    RunParameters,
    Sweep,
    apply_profile,
    patient_rng,
    run_parameters,
    scenario_data,
)

log = logging.getLogger(__name__)

# Columns every row has before the sweep-specific parameter columns.
ID_COLUMNS: dict[str, str] = {
    "run_id": "int64",
    "grid_point": "int64",
    "replicate": "int64",
    "pump_seed": "int64",
    "status": "string",
    "error": "string",
    "wall_s": "float64",
}
MAX_ERROR_CHARS = 2000


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run's row and, for the runs selected in the sweep, its raw time series."""

    row: dict[str, Any]
    timeseries: dict[str, list[float]] | None = None


def pk_columns(sweep: Sweep) -> list[str]:
    """Names of the per-patient PK parameter columns (the parameters that vary)."""
    return [f"pk_{name}" for name, cv in sweep.pk_variability_cv_percent.items() if cv > 0]


def row_schema(sweep: Sweep) -> dict[str, str]:
    """Column -> arrow type name, identical for every part of a sweep."""
    schema = dict(ID_COLUMNS)
    for name, kind in sweep.param_kinds.items():
        if name == "pump_seed":
            continue
        schema[name] = "string" if kind == "str" else "float64"
    schema["weight_kg"] = "float64"
    for name in pk_columns(sweep):
        schema[name] = "float64"
    schema.update(OUTCOME_COLUMNS)
    return schema


def _scale_program(action: dict[str, Any], factor: float) -> dict[str, Any]:
    # A programming slip multiplies every rate the clinician types; the daily limit is a
    # separate field and stays as it was (it is what should catch the slip).
    out = dict(action)
    if action.get("dose_mcg_per_day") is not None:  # None: not a key of the mode
        out["dose_mcg_per_day"] = action["dose_mcg_per_day"] * factor
    if action.get("steps") is not None:
        out["steps"] = [
            {**s, "dose_mcg_per_day": s["dose_mcg_per_day"] * factor} for s in action["steps"]
        ]
    if action.get("periodic"):
        out["periodic"] = {
            **action["periodic"],
            "dose_mcg": action["periodic"]["dose_mcg"] * factor,
        }
    return out


def build_scenario(sweep: Sweep, p: RunParameters) -> tuple[Scenario, float | None]:
    """The base scenario with this run's variations applied; and the first fault's onset."""
    v = p.values
    base = sweep.scenario
    data = scenario_data(base)
    data["scenario"]["seed"] = p.pump_seed
    if "weight_kg" in v:
        data["patient"]["weight_kg"] = float(v["weight_kg"])
    actions: list[dict[str, Any]] = []
    for action, dumped in zip(base.actions, data["actions"], strict=True):
        if (
            isinstance(action, RefillAction)
            and action.every is not None
            and "refill_interval_h" in v
        ):
            interval = float(v["refill_interval_h"])
            # A repeat that started one interval in keeps doing so at the new interval.
            if math.isclose(action.at, action.every):
                dumped["at"] = interval
            dumped["every"] = interval
        if isinstance(action, PatientBolusAction) and "patient_boluses_per_day" in v:
            continue  # replaced below
        actions.append(dumped)
    if "patient_boluses_per_day" in v:
        per_day = int(v["patient_boluses_per_day"])
        first = v.get("patient_bolus_start_h")
        if first is None:
            presses = [a.at for a in base.actions if isinstance(a, PatientBolusAction)]
            first = min(presses) if presses else 24.0
        for k in range(per_day):
            actions.append(
                {"type": "patient_bolus", "at": float(first) + k * 24.0 / per_day, "every": 24.0}
            )
    if "program_dose_factor" in v:
        factor = float(v["program_dose_factor"])
        from_h = float(v.get("program_dose_factor_from_h", 0.0))
        programs = [a for a in actions if a["type"] == "program"]
        later = [a for a in programs if a["at"] >= from_h]
        if later:
            for a in later:
                actions[actions.index(a)] = _scale_program(a, factor)
        else:
            # No program at that time in the base: the clinician re-enters the last one then.
            last = max(programs, key=lambda a: a["at"])
            actions.append({**_scale_program(last, factor), "at": from_h, "every": None})
    onsets = [a.at for a in base.actions if isinstance(a, FaultAction)]
    for i in range(sweep.n_faults):
        kind = str(v[f"fault{i}_kind"])
        if kind == NO_FAULT:
            continue
        onset = float(v[f"fault{i}_onset_h"])
        onsets.append(onset)
        value = v.get(f"fault{i}_value")
        actions.append(
            {"type": "fault", "at": onset, "kind": kind, "value": None if value is None else value}
        )
        clear = v.get(f"fault{i}_clear_after_h")
        if clear is not None:
            actions.append({"type": "clear_fault", "at": onset + float(clear), "kind": kind})
    data["actions"] = actions
    scenario = parse_scenario(data, f"run {p.run_id}")
    return scenario, (min(onsets) if onsets else None)


def build_pk(
    sweep: Sweep, p: RunParameters, weight_kg: float, catheter_tip_cm: float = 0.0
) -> PKModel:
    """This run's virtual patient: documented variability and weight (docs/pk.md), with the
    catheter tip where the scenario's implant puts it."""
    typical = PKParameters.baclofen(weight_kg).replace(catheter_tip_cm=catheter_tip_cm)
    if not sweep.pk_variability_cv_percent:
        return PKModel(typical)
    arrays = sample_parameter_arrays(
        typical, 1, patient_rng(sweep, p.run_id), sweep.pk_variability_cv_percent, weight_kg
    )
    sampled = {name: float(values[0]) for name, values in arrays.items()}
    return PKModel(PKParameters(**sampled).replace(catheter_tip_cm=catheter_tip_cm))


def _entered_refill(
    pump: EmulatedPump, log_entered: list[tuple[float, float]], factor: float, from_h: float
) -> Any:
    """A replacement for `pump.refill` that tells the firmware `factor` x the filled
    concentration (a wrong entry at the programmer) from `from_h` on, and logs every entered
    concentration for the reported-dose outcome."""
    original = pump.refill

    def refill(
        add_ml: float,
        drug: str,
        conc_mcg_per_ml: float,
        *,
        bridge: bool = True,
        aspirate_ml: float | None = None,
        reported_aspirated_ml: float | Literal["measured"] | None = "measured",
        entered_conc_mcg_per_ml: float | None = None,
        **physical: Any,
    ) -> RefillOutcome:
        # `physical`: the scenario's other entry and fill fields, passed on unchanged.
        now = pump.now_h
        entered = conc_mcg_per_ml if entered_conc_mcg_per_ml is None else entered_conc_mcg_per_ml
        if factor != 1.0 and now >= from_h:
            # The firmware hears the entered concentration, the reservoir gets the filled one.
            entered *= factor
        outcome = original(
            add_ml,
            drug,
            conc_mcg_per_ml,
            bridge=bridge,
            aspirate_ml=aspirate_ml,
            reported_aspirated_ml=reported_aspirated_ml,
            entered_conc_mcg_per_ml=entered,
            **physical,
        )
        log_entered.append((now, entered))
        return outcome

    return refill


def run_row(p: RunParameters, error: str | None = None) -> dict[str, Any]:
    """The columns every row starts with: which run, its seed and varied values, and its
    status (an error, cut to MAX_ERROR_CHARS, makes it an error row)."""
    return {
        "run_id": p.run_id,
        "grid_point": p.grid_point,
        "replicate": p.replicate,
        "pump_seed": p.pump_seed,
        "status": "ok" if error is None else "error",
        "error": None if error is None else error[:MAX_ERROR_CHARS],
        **p.values,
    }


def execute_run(sweep: Sweep, run_id: int) -> RunRecord:
    """Run one member of the sweep; never raises (an exception becomes an error row)."""
    started = time.perf_counter()
    p = run_parameters(sweep, run_id)
    row = run_row(p)
    ts: dict[str, list[float]] | None = None
    try:
        scenario, event_h = build_scenario(sweep, p)
        row["weight_kg"] = scenario.patient.weight_kg
        profile_changes = {
            name.removeprefix("profile_"): value
            for name, value in p.values.items()
            if name.startswith("profile_")
        }
        profile = (
            apply_profile(sweep.profile, profile_changes) if profile_changes else sweep.profile
        )
        model = build_pk(
            sweep, p, scenario.patient.weight_kg, scenario.implant.catheter_tip_cm
        )
        for name in pk_columns(sweep):
            row[name] = getattr(model.parameters, name.removeprefix("pk_"))
        sim = ScenarioRun(scenario, p.pump_seed, profile)
        # Outputs come from the recorded history (no live PK): swapping the patient model
        # before the run gives this run's virtual patient everywhere.
        if sim.pk_model is not None:  # a drug without PK keeps no concentration output
            sim.pk_model = model
            sim.result.pk_model = model
        entered: list[tuple[float, float]] = []
        pump = sim.pump
        pump.refill = _entered_refill(  # type: ignore[method-assign]
            pump,
            entered,
            float(p.values.get("entered_concentration_factor", 1.0)),
            float(p.values.get("entered_concentration_from_h", 0.0)),
        )
        result = sim.run()
        row.update(outcome_row(result, sweep.thresholds, event_h, entered))
        if run_id in sweep.timeseries_runs:
            n = math.floor(scenario.end_h / sweep.timeseries_interval_h + 1e-9) + 1
            columns = timeseries(result, np.arange(n) * sweep.timeseries_interval_h)
            ts = {name: values.tolist() for name, values in columns.items()}
    except (Exception, ProfileError) as exc:
        row["status"] = "error"
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        row["error"] = detail[:MAX_ERROR_CHARS]
        log.info("run %d (pump seed %d) failed: %s", run_id, p.pump_seed, detail)
    row["wall_s"] = time.perf_counter() - started
    return RunRecord(row, ts)


def run_chunk(sweep: Sweep, run_ids: list[int]) -> list[RunRecord]:
    """The Dask task: several runs in a row (amortises the per-task scheduling cost)."""
    return [execute_run(sweep, run_id) for run_id in run_ids]


def dask_setup(worker: object) -> None:
    """Dask's preload hook, run in each worker process of the sweep's local cluster as it
    starts: ignore SIGINT there.

    Ctrl-C in a terminal signals the whole process group. The sweep's own process handles
    it (keeps the finished rows, closes the cluster, prints one line); each worker process
    would otherwise end with a KeyboardInterrupt traceback of its event loop, dozens of lines
    before that one. The workers still stop: the cluster closes them.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
