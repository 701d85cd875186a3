"""Benchmark: years of therapy in simulated time (issue 2 performance target).

One year with a 4-step flex schedule, two patient boluses a day and refills every 90 days
must take under 1 s of wall time on a 2-core machine. Also reports how time and SimPy events
grow from 1 to 10 years.

So that the figures mean the same on any machine (issue 11), the same process also times two
references and prints the full model's ratio to each:

- a minimal 1-minute fixed-step loop of the same regimen (each minute: the commanded rate from
  the flex step and any patient bolus, the volume moved, the reservoir alarms, the refills), the
  simplest honest implementation a test engineer would write instead of the model;
- bare SimPy processing the same number of timeout events (the floor of any SimPy model).

Run: python3 -m benchmarks.bench_therapy_year [--repeat 5] [--years 1 2 5 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Any

import simpy

from itpump.emulator.runner import ScenarioRun
from itpump.emulator.scenario import Scenario, parse_scenario


def scenario(years: float) -> Scenario:
    """The benchmark regimen, as a scenario."""
    data: dict[str, Any] = {
        "scenario": {"name": f"bench-{years}y", "profile": "peristaltic-20", "seed": 1,
                     "duration": f"{365 * years}d"},
        "actions": [
            {"at": "0h", "type": "refill", "volume_ml": 20, "concentration_mcg_per_ml": 2000},
            {"at": "0h", "type": "prime"},
            {"at": "1h", "type": "program", "mode": "flex", "max_daily_dose_mcg": 600,
             "steps": [{"start": "00:00", "dose_mcg_per_day": 180},
                       {"start": "07:00", "dose_mcg_per_day": 260},
                       {"start": "13:00", "dose_mcg_per_day": 220},
                       {"start": "20:00", "dose_mcg_per_day": 200}],
             "patient_bolus": {"dose_mcg": 20, "duration_min": 15, "lockout_min": 240,
                               "max_per_day": 3}},
            {"at": "1d 1h", "every": "1d", "type": "patient_bolus"},
            {"at": "1d 11h", "every": "1d", "type": "patient_bolus"},
            {"at": "90d", "every": "90d", "type": "refill", "volume_ml": 20,
             "concentration_mcg_per_ml": 2000},
        ],
    }
    return parse_scenario(data)


def measure(years: float, repeat: int) -> tuple[float, float, int, int]:
    """Median wall and CPU seconds of `repeat` runs, SimPy events, refusals."""
    walls, cpus = [], []
    events = refusals = 0
    for _ in range(repeat):
        run = ScenarioRun(scenario(years))
        t0, c0 = time.perf_counter(), time.process_time()
        result = run.run()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        events = result.env.events_processed
        refusals = len(result.refusals)
    return statistics.median(walls), statistics.median(cpus), events, refusals


#: The benchmark regimen in the fixed-step loop's terms (the same numbers as `scenario`).
_FLEX_STEPS_MIN_DOSE = ((0, 180.0), (7 * 60, 260.0), (13 * 60, 220.0), (20 * 60, 200.0))
_CONC_MCG_PER_ML = 2000.0
_REFILL_ML = 20.0
_REFILL_EVERY_MIN = 90 * 1440
_BOLUS_MCG, _BOLUS_MIN, _LOCKOUT_MIN, _BOLUS_MAX_PER_DAY = 20.0, 15, 240, 3
_BOLUS_PRESS_MIN_OF_DAY = (60, 11 * 60)
_LOW_RESERVOIR_ML, _EMPTY_RESERVOIR_ML = 2.0, 0.5


def fixed_step_loop(years: float) -> tuple[float, int]:
    """The regimen as a minimal 1-minute fixed-step loop: (final reservoir mL, alarms raised).

    No hardware, no firmware, no recorder: per minute the commanded rate (flex step of the
    minute of day, plus a patient bolus while one runs, with its lockout and daily maximum),
    the volume moved, the low/empty reservoir checks and the 90-day refills.
    """
    minutes = round(365 * years * 1440)
    reservoir_ml = _REFILL_ML
    low = empty = False
    alarms = 0
    bolus_left_min = 0
    last_bolus_min = -10**9
    bolus_starts: list[int] = []
    bolus_rate_mcg_per_min = _BOLUS_MCG / _BOLUS_MIN
    for minute in range(minutes):
        if minute and minute % _REFILL_EVERY_MIN == 0:
            reservoir_ml = _REFILL_ML
            low = empty = False
        day_min = minute % 1440
        dose_mcg_per_day = 0.0
        if minute >= 60:  # programmed at 1 h
            for start_min, dose in _FLEX_STEPS_MIN_DOSE:
                if day_min >= start_min:
                    dose_mcg_per_day = dose
        if minute >= 1440 and day_min in _BOLUS_PRESS_MIN_OF_DAY:
            bolus_starts = [m for m in bolus_starts if m > minute - 1440]
            if (
                minute - last_bolus_min >= _LOCKOUT_MIN
                and len(bolus_starts) < _BOLUS_MAX_PER_DAY
                and bolus_left_min == 0
            ):
                bolus_left_min = _BOLUS_MIN
                last_bolus_min = minute
                bolus_starts.append(minute)
        mcg_per_min = dose_mcg_per_day / 1440.0
        if bolus_left_min:
            mcg_per_min += bolus_rate_mcg_per_min
            bolus_left_min -= 1
        reservoir_ml = max(reservoir_ml - mcg_per_min / _CONC_MCG_PER_ML, 0.0)
        if not low and reservoir_ml <= _LOW_RESERVOIR_ML:
            low = True
            alarms += 1
        if not empty and reservoir_ml <= _EMPTY_RESERVOIR_ML:
            empty = True
            alarms += 1
    return reservoir_ml, alarms


def bare_simpy(events: int) -> int:
    """Bare SimPy processing `events` timeout events (one process, nothing else)."""
    env = simpy.Environment()

    def ticker() -> Any:
        for _ in range(events - 2):  # the process's start and end are events too
            yield env.timeout(1.0)

    env.process(ticker())
    count = 0
    while env.peek() != float("inf"):
        env.step()
        count += 1
    return count


def median_wall(fn: Any, repeat: int) -> tuple[float, float]:
    """Median wall and CPU seconds of `repeat` calls of `fn()`."""
    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    """Print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--years", type=float, nargs="+", default=[1, 2, 5, 10])
    args = parser.parse_args()
    print(
        f"python {platform.python_version()}, {platform.machine()}, repeat {args.repeat}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    # CPU time (this process) beside wall time: on a shared machine the wall time includes
    # waiting for a core, the CPU time much less so.
    print(
        "| years | median wall (s) | median CPU (s) | SimPy events | us/event (CPU) "
        "| refused actions | fixed-step loop wall / CPU (s) | bare SimPy wall / CPU (s) "
        "| model / loop (wall, CPU) | model / SimPy (wall, CPU) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for years in args.years:
        wall, cpu, events, refusals = measure(years, args.repeat)
        loop, loop_cpu = median_wall(lambda y=years: fixed_step_loop(y), args.repeat)
        bare, bare_cpu = median_wall(lambda n=events: bare_simpy(n), args.repeat)
        print(
            f"| {years:g} | {wall:.4f} | {cpu:.4f} | {events} | {cpu / events * 1e6:.1f} "
            f"| {refusals} | {loop:.4f} / {loop_cpu:.4f} | {bare:.4f} / {bare_cpu:.4f} "
            f"| {wall / loop:.3f}, {cpu / loop_cpu:.3f} | {wall / bare:.1f}, {cpu / bare_cpu:.1f} |"
        )


if __name__ == "__main__":
    main()
