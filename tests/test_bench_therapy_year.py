"""The references of the therapy-year benchmark measure what they claim (issue 11)."""

from __future__ import annotations

from benchmarks.bench_therapy_year import bare_simpy, fixed_step_loop


def test_bare_simpy_processes_exactly_the_requested_events() -> None:
    assert bare_simpy(4019) == 4019


def test_fixed_step_loop_moves_the_regimens_volume() -> None:
    # 30 days: ~220 mcg/day basal + 2 x 20 mcg boluses from day 2 at 2000 mcg/mL out of 20 mL.
    reservoir_ml, alarms = fixed_step_loop(30 / 365)
    basal_ml = (30 * (180 * 7 + 260 * 6 + 220 * 7 + 200 * 4) / 24 - 180 / 24) / 2000.0
    bolus_ml = 29 * 2 * 20 / 2000.0
    assert abs((20.0 - reservoir_ml) - (basal_ml + bolus_ml)) < 1e-6
    assert alarms == 0
