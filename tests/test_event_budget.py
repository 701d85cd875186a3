"""The therapy model's work per simulated year stays bounded (issue 11).

Counts, not wall time: SimPy events are what a year costs, whatever the machine.
"""

from __future__ import annotations

from benchmarks.bench_therapy_year import scenario
from itpump.emulator.runner import ScenarioRun


def test_a_year_of_the_benchmark_regimen_stays_under_its_event_budget() -> None:
    result = ScenarioRun(scenario(1)).run()
    # 4 flex steps + 2 bolus ends a day, the daily self-test, 730 bolus presses and the
    # refills: ~3,290. It was 4,019 while every superseded timer was queued again.
    assert result.env.events_processed <= 3300
    assert not result.refusals


def test_a_superseded_timer_is_reused_not_queued_twice() -> None:
    run = ScenarioRun(scenario(2 / 365))
    result = run.run()
    pump = result.pump
    # At most one queued timer per distinct deadline, and the armed deadline is among them.
    assert pump._armed_deadline_h in pump._queued_timers
    assert len(pump._queued_timers) <= 2
