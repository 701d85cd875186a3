"""Benchmark: years of therapy in simulated time (issue 2 performance target).

One year with a 4-step flex schedule, two patient boluses a day and refills every 90 days
must take under 1 s of wall time on a 2-core machine. Also reports how time and SimPy events
grow from 1 to 10 years.

Run: python3 -m benchmarks.bench_therapy_year [--repeat 5] [--years 1 2 5 10]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Any

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


def measure(years: float, repeat: int) -> tuple[float, int, int]:
    """Median wall seconds of `repeat` runs, SimPy events, refusals."""
    walls = []
    events = refusals = 0
    for _ in range(repeat):
        run = ScenarioRun(scenario(years))
        t0 = time.perf_counter()
        result = run.run()
        walls.append(time.perf_counter() - t0)
        events = result.env.events_processed
        refusals = len(result.refusals)
    return statistics.median(walls), events, refusals


def main() -> None:
    """Print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--years", type=float, nargs="+", default=[1, 2, 5, 10])
    args = parser.parse_args()
    print(f"python {platform.python_version()}, {platform.machine()}, repeat {args.repeat}")
    print("| years | median wall (s) | SimPy events | events/s | refused actions |")
    print("|---|---|---|---|---|")
    for years in args.years:
        wall, events, refusals = measure(years, args.repeat)
        print(f"| {years:g} | {wall:.3f} | {events} | {events / wall:,.0f} | {refusals} |")


if __name__ == "__main__":
    main()
