"""Profile one year of the therapy benchmark (issue 11): top 25 by cumulative and by own time.

Run: python3 -m benchmarks.profile_year [--years 1] [--top 25]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats

from benchmarks.bench_therapy_year import scenario
from itpump.emulator.runner import ScenarioRun


def main() -> None:
    """Print the two profile tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--years", type=float, default=1.0)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    run = ScenarioRun(scenario(args.years))  # built outside the profile, as in the benchmark
    profiler = cProfile.Profile()
    profiler.enable()
    result = run.run()
    profiler.disable()
    print(f"{args.years:g} year(s), {result.env.events_processed} SimPy events")
    stats = pstats.Stats(profiler)
    for key in ("cumulative", "tottime"):
        stats.sort_stats(key).print_stats(args.top)


if __name__ == "__main__":
    main()
