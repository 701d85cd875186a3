"""Run a sweep on Dask: a local cluster (one worker process per core) or any existing one.

Why Dask (dask.distributed) rather than a scheduler of our own: it already does what a sweep
past one machine needs — worker processes on many hosts, task placement, retries when a worker
dies, a dashboard — and the same code runs on a laptop's `LocalCluster` and on a cluster
started with `dask scheduler` / `dask worker`.

Bounded memory whatever the number of runs: tasks are submitted in a bounded window
(`as_completed`, a few tasks per worker thread in flight), finished rows are buffered only up
to one Parquet part, and which runs are done is one byte per run.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from itpump.emulator.sweep.spec import Sweep, run_parameters
from itpump.emulator.sweep.store import PartWriter, done_mask, prepare_dir, write_timeseries
from itpump.emulator.sweep.worker import RunRecord, row_schema, run_chunk, run_row

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
# Runs per task: enough simulated time per task (about this many hours) that Dask's per-task
# cost (~ms) stays small next to the simulation, but one run per task for runs of months.
TASK_SIMULATED_H = 24.0 * 120
MAX_CHUNK_RUNS = 32
TASKS_IN_FLIGHT_PER_THREAD = 3


class SweepClusterError(RuntimeError):
    """The Dask scheduler cannot be reached or has no workers."""


@dataclass(slots=True)
class SweepStats:
    """What one call of `run_sweep` did."""

    n_runs: int
    already_done: int = 0
    executed: int = 0
    errors: int = 0
    parts_written: int = 0
    wall_s: float = 0.0
    worker_threads: int = 0


def default_workers() -> int:
    """One worker process per core this process may use."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return max(os.cpu_count() or 1, 1)


def chunk_runs_for(sweep: Sweep, remaining: int, threads: int) -> int:
    """Default runs per task (see TASK_SIMULATED_H), never so many that workers starve."""
    by_time = max(1, math.floor(TASK_SIMULATED_H / max(sweep.scenario.end_h, 1e-9)))
    by_spread = max(1, math.ceil(remaining / max(2 * threads, 1)))
    return max(1, min(by_time, by_spread, MAX_CHUNK_RUNS))


def _chunks(ids: Iterator[int], size: int) -> Iterator[list[int]]:
    chunk: list[int] = []
    for run_id in ids:
        chunk.append(run_id)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _failed_records(sweep: Sweep, run_ids: list[int], exc: BaseException) -> list[RunRecord]:
    # The task itself failed (a worker died running it, say): each of its runs gets an error
    # row with its seed, computed here (parameters are a pure function of the run index).
    error = f"task failed: {type(exc).__name__}: {exc}"
    return [RunRecord(run_row(run_parameters(sweep, run_id), error)) for run_id in run_ids]


def connect(
    workers: int | None = None, scheduler: str | None = None, *, timeout_s: float = 20.0
) -> tuple[Any, Any]:
    """(client, cluster or None): a new local cluster, or a client of `scheduler`."""
    from distributed import Client, LocalCluster

    if not log.isEnabledFor(logging.INFO):
        # distributed logs every connection at INFO on its own handler: keep the CLI quiet
        # unless the user asked for more (-v).
        logging.getLogger("distributed").setLevel(logging.WARNING)
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=f"{timeout_s}s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise SweepClusterError(f"cannot reach the Dask scheduler {scheduler}: {exc}") from None
        return client, None
    n = workers or default_workers()
    # Processes, one thread each: a run is pure Python and holds the GIL throughout.
    cluster = LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",  # any free port: 8787 may be taken by another cluster
        silence_logs=logging.ERROR,
        # Workers ignore Ctrl-C (worker.dask_setup): this process handles it for them.
        preload=["itpump.emulator.sweep.worker"],
    )
    return Client(cluster), cluster


def run_sweep(
    sweep: Sweep,
    out: Path,
    *,
    client: Any = None,
    workers: int | None = None,
    scheduler: str | None = None,
    chunk_runs: int | None = None,
    rows_per_part: int = 1000,
    restart: bool = False,
    on_progress: ProgressCallback | None = None,
) -> SweepStats:
    """Run every run of `sweep` not yet in `out`, writing Parquet parts as they finish.

    Give a Dask `client`, or a `scheduler` address, or neither for a local cluster of
    `workers` processes (default: one per core). An exception from `on_progress` (e.g.
    KeyboardInterrupt) stops the sweep after writing the rows already finished.
    """
    started = time.perf_counter()
    prepare_dir(out, sweep, restart=restart)
    done = done_mask(out, sweep.n_runs)
    stats = SweepStats(n_runs=sweep.n_runs, already_done=int(done.sum()))
    remaining = sweep.n_runs - stats.already_done
    if on_progress is not None:
        on_progress(stats.already_done, sweep.n_runs)
    if remaining == 0:
        return stats
    own = client is None
    cluster = None
    if own:
        client, cluster = connect(workers, scheduler)
    writer = PartWriter(out, row_schema(sweep), rows_per_part)
    try:
        threads = sum(client.nthreads().values())
        if threads == 0:
            raise SweepClusterError("the Dask cluster has no workers")
        stats.worker_threads = threads
        size = chunk_runs or chunk_runs_for(sweep, remaining, threads)
        log.info(
            "sweep %s: %d runs to do (%d done), %d worker threads, %d runs per task",
            sweep.name,
            remaining,
            stats.already_done,
            threads,
            size,
        )
        _drive(client, sweep, out, writer, done, size, threads, stats, on_progress)
    finally:
        # Finished rows are kept even when the sweep is interrupted: a resume skips them.
        writer.flush()
        stats.parts_written = writer.parts_written
        if own:
            client.close()
            if cluster is not None:
                cluster.close()
        stats.wall_s = time.perf_counter() - started
    return stats


def _drive(
    client: Any,
    sweep: Sweep,
    out: Path,
    writer: PartWriter,
    done: Any,
    size: int,
    threads: int,
    stats: SweepStats,
    on_progress: ProgressCallback | None,
) -> None:
    from distributed import as_completed

    # Shipped once to every worker instead of with every task.
    sweep_future = client.scatter(sweep, broadcast=True, hash=False)
    todo = _chunks((i for i in range(sweep.n_runs) if not done[i]), size)
    window = max(TASKS_IN_FLIGHT_PER_THREAD * threads, 2)
    in_flight: dict[Any, list[int]] = {}
    queue = as_completed()

    def submit_next() -> bool:
        chunk = next(todo, None)
        if chunk is None:
            return False
        future = client.submit(
            run_chunk,
            sweep_future,
            chunk,
            pure=False,
            key=f"itpump-sweep-{chunk[0]}-{os.urandom(4).hex()}",
        )
        in_flight[future] = chunk
        queue.add(future)
        return True

    for _ in range(window):
        if not submit_next():
            break
    count = stats.already_done
    try:
        for future in queue:
            chunk = in_flight.pop(future)
            try:
                records: list[RunRecord] = future.result()
            except Exception as exc:
                log.warning("task for runs %d..%d failed: %s", chunk[0], chunk[-1], exc)
                records = _failed_records(sweep, chunk, exc)
            future.release()
            for record in records:
                if record.timeseries is not None:
                    write_timeseries(out, int(record.row["run_id"]), record.timeseries)
                if record.row["status"] != "ok":
                    stats.errors += 1
                writer.add(record.row)
                stats.executed += 1
            count += len(records)
            submit_next()
            if on_progress is not None:
                on_progress(count, sweep.n_runs)
    finally:
        for future in in_flight:
            future.cancel()
        sweep_future.release()
