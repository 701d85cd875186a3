"""Single-patient PK engine speed, for coupling into `itpump simulate`.

- `PKModel.predict` over a year: ~5,000 rate segments, 50 boluses, ~10,000 output times
  (target from the lead engineer: well under 0.2 s);
- `PKModel.advance` called once per event, as an event-driven simulation would (5,000 calls).
Median of `--repeat` runs.

Run: python3 -m benchmarks.bench_pk_predict [--repeat 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from itpump.emulator.pk import PKModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    model = PKModel.baclofen_default()
    rng = np.random.default_rng(0)
    starts = np.sort(rng.uniform(0.0, 8760.0, 5000))
    rates = rng.uniform(0.0, 40.0, 5000)
    bolus_times = np.sort(rng.uniform(0.0, 8760.0, 50))
    times = np.linspace(0.0, 8760.0, 10_000)

    walls = []
    for _ in range(args.repeat):
        began = time.perf_counter()
        model.predict(starts, rates, None, bolus_times, np.full(50, 50.0), None, times)
        walls.append(time.perf_counter() - began)
    print(
        f"predict, 1 year (5,000 segments, 50 boluses, 10,000 times): "
        f"median {statistics.median(walls) * 1e3:.1f} ms"
    )

    walls = []
    for _ in range(args.repeat):
        state = model.initial_state()
        began = time.perf_counter()
        for k in range(starts.size - 1):
            state = model.advance(state, starts[k + 1] - starts[k], rates[k])
        walls.append(time.perf_counter() - began)
    per_call_us = statistics.median(walls) / (starts.size - 1) * 1e6
    print(
        f"advance, 4,999 calls: median {statistics.median(walls) * 1e3:.0f} ms "
        f"({per_call_us:.1f} us per call)"
    )


if __name__ == "__main__":
    main()
