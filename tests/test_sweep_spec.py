"""Sweep files: validation names the field; run parameters are a pure function of the index."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from itpump.emulator.scenario import ProgramAction, parse_scenario
from itpump.emulator.sweep.spec import (
    RunParameters,
    SweepError,
    load_sweep,
    parse_sweep,
    run_parameters,
    shipped_sweeps,
)
from itpump.emulator.sweep.worker import build_scenario, execute_run, row_schema
from itpump.protocol.therapy import (
    MODES,
    Continuous,
    Flex,
    FlexStep,
    Mode,
    PeriodicBolus,
    Stopped,
)
from tests.sweep_helpers import tiny_sweep, tiny_sweep_data


def _refused(data: dict[str, Any]) -> str:
    with pytest.raises(SweepError) as info:
        parse_sweep(data, "s.toml")
    return str(info.value)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["sweep"].update(replicats=3), "sweep.replicats: unknown field"),
        (lambda d: d["sweep"].update(replicates=0), "sweep.replicates"),
        (lambda d: d["sweep"].update(scenario="no-such-scenario"), "sweep.scenario"),
        (lambda d: d.update(pateints={}), "pateints: unknown field"),
        (lambda d: d["faults"][0].update(kind="occlussion"), "faults[0].kind: unknown fault kind"),
        (
            lambda d: d["faults"][0].update(value={"values": [0.5, 3.0]}),
            "faults[0].value: fault occlusion: severity=3",
        ),
        (
            lambda d: d["faults"][0].update(onset={"distribution": "uniform", "low": "3d"}),
            "faults[0].onset: a uniform distribution takes low, high; missing ['high']",
        ),
        (lambda d: d["profile"].update(stroke_volume_ul=500), "profile.stroke_volume_ul"),
        (lambda d: d["profile"].update(modle=1), "profile.modle: not a numeric profile field"),
        (
            lambda d: d["profile"].update(flow_error_random_cv_pct={"values": [1, 30]}),
            "profile.flow_error_random_cv_pct",
        ),
        (
            lambda d: d.update(actions={"refill_interval": "30d"}),
            "actions.refill_interval: the base scenario has no repeating refill",
        ),
        (
            lambda d: d["patients"].update(cv_percent={"csf_clearance": 40}),
            "patients.cv_percent",
        ),
        (lambda d: d.update(output={"timeseries_runs": [99]}), "output.timeseries_runs"),
        (lambda d: d.update(outcomes={"withdrawal_fraction": 1.5}), "outcomes.withdrawal_fraction"),
    ],
)
def test_bad_sweep_is_refused_naming_the_field(change: Any, expected: str) -> None:
    data = copy.deepcopy(tiny_sweep_data())
    change(data)
    message = _refused(data)
    assert expected in message
    assert message.startswith("s.toml: invalid sweep")


def test_run_parameters_are_a_pure_function_of_seed_and_index() -> None:
    sweep = tiny_sweep()
    again = tiny_sweep()
    # Same index, same parameters, whatever was asked before (no shared stream).
    backwards = [run_parameters(again, i) for i in reversed(range(sweep.n_runs))][::-1]
    assert [run_parameters(sweep, i) for i in range(sweep.n_runs)] == backwards
    # Replicates differ; the grid axis is the occlusion severity, in blocks of replicates.
    seeds = {run_parameters(sweep, i).pump_seed for i in range(sweep.n_runs)}
    assert len(seeds) == sweep.n_runs
    severities = [run_parameters(sweep, i).values["fault0_value"] for i in range(sweep.n_runs)]
    assert severities == [0.75] * 4 + [1.0] * 4
    # Another sweep seed gives other draws.
    data = tiny_sweep_data()
    data["sweep"]["seed"] = 12
    other = parse_sweep(data)
    assert (
        run_parameters(other, 0).values["weight_kg"] != run_parameters(sweep, 0).values["weight_kg"]
    )


def test_adding_a_varied_parameter_keeps_the_others_draws() -> None:
    sweep = tiny_sweep()
    data = tiny_sweep_data()
    data["actions"] = {"program_dose_factor": {"distribution": "uniform", "low": 1, "high": 10}}
    wider = parse_sweep(data)
    for i in range(sweep.n_runs):
        before, after = run_parameters(sweep, i), run_parameters(wider, i)
        assert after.pump_seed == before.pump_seed
        assert {k: after.values[k] for k in before.values} == before.values


def test_a_run_that_raises_is_an_error_row_with_its_seed() -> None:
    sweep = tiny_sweep()
    rows = [execute_run(sweep, i).row for i in range(sweep.n_runs)]
    failed = [r for r in rows if r["status"] == "error"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert failed, "the tiny sweep is built to have failing runs"
    assert ok
    for row in failed:
        assert row["profile_flow_error_systematic_pct"] > 50
        assert "flow_error_systematic_pct" in row["error"]
        assert row["pump_seed"] == run_parameters(sweep, row["run_id"]).pump_seed
    for row in ok:
        assert row["error"] is None
        # A complete or 75 % occlusion: CSF falls below half of its pre-occlusion level.
        assert 0 < row["time_to_csf_half_h"] < 24
        assert row["true_dose_mcg"] < row["reported_dose_mcg"]  # the pump does not notice
    assert set(rows[0]) <= set(row_schema(sweep))


def test_program_dose_factor_is_caught_by_the_daily_limit() -> None:
    data = tiny_sweep_data(replicates=1)
    data["profile"] = {}
    data["faults"] = []
    data["actions"] = {"program_dose_factor": {"values": [1, 10]}, "program_dose_factor_from": "2d"}
    sweep = parse_sweep(data)
    normal, tenfold = (execute_run(sweep, i).row for i in range(2))
    assert normal["status"] == tenfold["status"] == "ok"
    assert not normal["program_refused"]
    assert tenfold["program_refused"]
    assert "DAILY" in tenfold["refusal_codes"] or tenfold["refusal_codes"]


def test_entered_concentration_mismatch_shows_in_true_vs_reported_dose() -> None:
    data = tiny_sweep_data(replicates=1)
    data["profile"] = {}
    data["faults"] = []
    data["actions"] = {"entered_concentration_factor": {"values": [1.0, 0.5]}}
    sweep = parse_sweep(data)
    right, half = (execute_run(sweep, i).row for i in range(2))
    assert abs(right["dose_error_pct"]) < 10
    # Entered half the filled concentration: the pump pumps twice the volume it should, so
    # the patient gets about twice the dose the pump reports (priming aside).
    assert half["dose_error_pct"] > 50
    assert half["csf_lumbar_max_ng_per_ml"] > 1.5 * right["csf_lumbar_max_ng_per_ml"]


@pytest.mark.parametrize("name", shipped_sweeps())
def test_shipped_sweeps_load_and_their_first_run_works(name: str) -> None:
    sweep = load_sweep(name)
    assert sweep.n_runs >= 100
    assert sweep.grid_axes
    # Not run here (a year each for one of them): their parameters are.
    assert run_parameters(sweep, sweep.n_runs - 1).run_id == sweep.n_runs - 1


@pytest.mark.parametrize("n", [1, 7, 150, 400, 1000])
def test_wilson_interval_always_contains_the_fraction(n: int) -> None:
    from itpump.emulator.sweep.report import wilson_interval

    for count in (0, 1, n // 2, n - 1, n):
        if not 0 <= count <= n:
            continue
        low, high = wilson_interval(count, n)
        assert 0.0 <= low <= count / n <= high <= 1.0, (count, n, low, high)


@pytest.mark.parametrize("kind", ["occlussion", {"values": ["occlusion", "occlussion"]}])
def test_an_unknown_fault_kind_is_one_line_naming_the_field_and_the_kinds(kind: object) -> None:
    # The fault also has a value: it used to draw a second, misleading line ("faults[0].value:
    # unknown fault kind ...") about a value that is fine.
    data = copy.deepcopy(tiny_sweep_data())
    data["faults"][0]["kind"] = kind
    message = _refused(data)
    assert "\n" not in message, message
    assert "faults[0].value" not in message
    assert "faults[0].kind: unknown fault kind; allowed: motor_stall, occlusion," in message
    assert "or 'none' (got 'occlussion')" in message


#: one program of each therapy mode, in a 500 mcg/mL reservoir (a new mode needs a row here)
_EXAMPLE_MODES: dict[type[Mode], Mode] = {
    Stopped: Stopped(),
    Continuous: Continuous(300.0),
    Flex: Flex((FlexStep(0, 200.0), FlexStep(7 * 60, 260.0))),
    PeriodicBolus: PeriodicBolus(100.0, 50.0, 30, 360, 60),
}


@pytest.mark.parametrize("kind", MODES, ids=lambda kind: kind.KIND)
def test_program_dose_factor_scales_every_dose_of_every_mode(kind: type[Mode]) -> None:
    # The sweep knows no mode's keys: each mode scales its own doses (Mode.scaled).
    mode = _EXAMPLE_MODES[kind]
    base = parse_sweep({**tiny_sweep_data(replicates=1), "profile": {}, "faults": []})
    data = base.scenario.model_dump()
    program = next(a for a in data["actions"] if a["type"] == "program")
    # the base's mode keys go (None: left out); a key of another mode is refused
    program.update(
        {"dose_mcg_per_day": None, "period": None, "steps": None, "periodic": None}
        | mode.table_items()
    )
    sweep = dataclasses.replace(base, scenario=parse_scenario(data))
    values: dict[str, float | str] = {"program_dose_factor": 3.0, "program_dose_factor_from_h": 0}
    scenario, _ = build_scenario(sweep, RunParameters(0, 0, 0, 1, values))
    (scaled,) = (a for a in scenario.actions if isinstance(a, ProgramAction))
    assert scaled.program().mode == mode.scaled(3.0)
    assert scaled.program().mode.mean_dose_mcg_per_day() == pytest.approx(
        3.0 * mode.mean_dose_mcg_per_day()
    )
    assert scaled.max_daily_dose_mcg == 600  # the limit that should catch the slip stays
    if kind is not Stopped:
        assert mode.scaled(3.0) != mode
