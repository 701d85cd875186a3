"""The clinical stories the shipped scenarios tell, checked on their key outcome.

Each test runs a shipped scenario (shortened where the story allows) and asserts what its
description promises; docs/clinical.md lists which test shows which behaviour.
"""

from __future__ import annotations

import numpy as np

from itpump.emulator.outputs import first_alarm_h, first_truly_empty_h
from itpump.emulator.runner import RunResult, ScenarioRun
from itpump.emulator.scenario import Scenario, load_scenario

DAY_H = 24.0


def _run(name: str, days: float | None = None) -> RunResult:
    scenario = load_scenario(name)
    if days is not None:
        scenario = _shortened(scenario, days)
    return ScenarioRun(scenario).run()


def _shortened(scenario: Scenario, days: float) -> Scenario:
    header = scenario.scenario.model_copy(update={"duration": days * DAY_H})
    return scenario.model_copy(update={"scenario": header})


def test_clinic_ready_stays_filled_for_its_whole_battery_life() -> None:
    result = _run("clinic-ready")
    recorder = result.pump.recorder
    assert recorder is not None
    assert result.scenario.end_h == 365 * 7 * DAY_H
    assert result.refusals == []
    # Never dry: at least a millilitre left at every refill, to the end of the run.
    after_prime = np.asarray(recorder.truth_t_h) > 1.0
    assert min(np.asarray(recorder.truth_reservoir_ml)[after_prime]) > 1.0
    assert first_truly_empty_h(result) is None
    assert first_alarm_h(result, "empty_reservoir") is None
    # The low-reservoir alarm comes once per 46-day cycle, before the refill that clears it.
    raised = [a.t_h for a in recorder.alarm_transitions if a.alarm == "low_reservoir" and a.raised]
    assert len(raised) == int(result.scenario.end_h // (46 * DAY_H))
    assert raised[0] == first_alarm_h(result, "low_reservoir")
    assert 43 * DAY_H < raised[0] < 46 * DAY_H
