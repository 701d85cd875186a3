"""Benchmark: `itpump sweep` throughput on Dask (issue 12).

Measures, for one-year runs of the low-reservoir-margin example (flex schedule, patient
boluses, refills, a virtual patient each):
- runs per second with 1 and 2 local worker processes (cluster start excluded);
- Dask's overhead per run: the same runs called in a loop in this process vs through Dask
  with 1 worker;
- peak memory of a 10,000-run sweep (short runs, so it finishes quickly; memory is what
  grows with the number of runs): the client's peak RSS and each worker's;
- an estimate of wall time for 1,000,000 one-year runs on 10 machines of 16 cores.

Run: python3 -m benchmarks.bench_sweep [--runs 40] [--memory-runs 10000]
"""

from __future__ import annotations

import argparse
import logging
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from itpump.emulator.sweep.engine import run_sweep
from itpump.emulator.sweep.spec import Sweep, load_sweep
from itpump.emulator.sweep.worker import execute_run


def year_sweep(runs: int) -> Sweep:
    """The shipped low-reservoir-margin sweep cut to `runs` runs (one grid point)."""
    sweep = load_sweep("low-reservoir-margin")
    return replace(sweep, grid_axes=(), replicates=runs, params={
        k: v for k, v in sweep.params.items() if not v.is_grid
    })  # fmt: skip


def timed_dask(sweep: Sweep, workers: int) -> float:
    """Wall seconds of the sweep on a started local cluster (start and stop excluded)."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True,
            dashboard_address=None, silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
        tempfile.TemporaryDirectory() as tmp,
    ):  # fmt: skip
        # Warm the workers (imports) so the figure is the steady state.
        warm = replace(sweep, replicates=workers)
        run_sweep(warm, Path(tmp) / "warm", client=client)
        started = time.perf_counter()
        run_sweep(sweep, Path(tmp) / "run", client=client, chunk_runs=1)
        return time.perf_counter() - started


def peak_memory(runs: int, workers: int) -> tuple[float, float, float]:
    """(wall s, client peak RSS MiB, worker peak RSS MiB) of a sweep of short runs."""
    from distributed import Client, LocalCluster

    sweep = load_sweep("occlusion-withdrawal")
    sweep = replace(sweep, replicates=runs // sweep.n_points)
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True,
            dashboard_address=None, silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
        tempfile.TemporaryDirectory() as tmp,
    ):  # fmt: skip
        started = time.perf_counter()
        run_sweep(sweep, Path(tmp), client=client)
        wall = time.perf_counter() - started
        worker_peak = max(
            client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss).values()
        )
    client_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return wall, client_peak / 1024, worker_peak / 1024


def main() -> None:
    """Print the figures as Markdown."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=40, help="one-year runs per measurement")
    parser.add_argument("--memory-runs", type=int, default=10_000)
    parser.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_only:
        wall, client_mib, worker_mib = peak_memory(args.memory_runs, 2)
        print(f"{args.memory_runs} runs (10-day runs, 2 workers): {wall:.0f} s, client peak "
              f"RSS {client_mib:.0f} MiB, worker peak RSS {worker_mib:.0f} MiB")
        return
    sweep = year_sweep(args.runs)
    print(f"python {platform.python_version()}, {platform.machine()}, {args.runs} one-year runs")
    started = time.perf_counter()
    for i in range(sweep.n_runs):
        execute_run(sweep, i)
    loop_s = time.perf_counter() - started
    one_s = timed_dask(sweep, 1)
    two_s = timed_dask(sweep, 2)
    n = sweep.n_runs
    print("| setting | wall (s) | runs/s | ratio to 1 worker |")
    print("|---|---|---|---|")
    print(f"| loop in one process (no Dask) | {loop_s:.2f} | {n / loop_s:.2f} | - |")
    print(f"| Dask, 1 local worker | {one_s:.2f} | {n / one_s:.2f} | 1.00 |")
    print(f"| Dask, 2 local workers | {two_s:.2f} | {n / two_s:.2f} | {one_s / two_s:.2f} |")
    overhead_ms = (one_s - loop_s) / n * 1000
    print(f"\nDask overhead per run (1 worker vs loop): {overhead_ms:.1f} ms "
          f"({100 * (one_s - loop_s) / loop_s:.1f} % of a run)")
    per_run_core_s = loop_s / n
    cores = 10 * 16
    estimate_h = 1_000_000 * per_run_core_s / cores / 3600
    print(f"Estimate, 1,000,000 one-year runs on 10 x 16 cores at {per_run_core_s:.3f} "
          f"core-s per run: {estimate_h:.2f} h (perfect scaling; see BENCHMARKS.md)")
    # Peak RSS is a process's high-water mark: measured in a fresh process.
    print()
    subprocess.run([sys.executable, "-m", "benchmarks.bench_sweep", "--memory-only",
                    "--memory-runs", str(args.memory_runs)], check=True)


if __name__ == "__main__":
    main()
