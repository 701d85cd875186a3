"""The sweep on Dask: same rows whatever the workers, resume without redoing, atomic parts."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from distributed import Client, LocalCluster

from itpump.emulator.sweep.engine import run_sweep
from itpump.emulator.sweep.store import RUNS_DIR, TIMESERIES_DIR, SweepDirError, part_paths
from tests.sweep_helpers import rows_without_timing, tiny_sweep


@pytest.fixture(scope="module")
def two_process_client() -> Iterator[Client]:
    """Two worker processes, as `itpump sweep --workers 2` starts them."""
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # any free port: 8787 may be taken by another cluster
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def one_worker_client() -> Iterator[Client]:
    """One worker (in this process: cheap to start; still a Dask worker)."""
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=False,
            dashboard_address=":0",  # any free port: 8787 may be taken by another cluster
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def test_same_rows_with_one_and_two_workers(
    tmp_path: Path, one_worker_client: Client, two_process_client: Client
) -> None:
    sweep = tiny_sweep()
    one = run_sweep(
        sweep, tmp_path / "one", client=one_worker_client, rows_per_part=3, chunk_runs=1
    )
    two = run_sweep(sweep, tmp_path / "two", client=two_process_client, rows_per_part=3)
    assert one.executed == two.executed == sweep.n_runs
    assert one.worker_threads == 1
    assert two.worker_threads == 2
    rows = rows_without_timing(tmp_path / "one")
    assert rows == rows_without_timing(tmp_path / "two")
    assert [r["run_id"] for r in rows] == list(range(sweep.n_runs))
    assert one.errors == two.errors == sum(r["status"] == "error" for r in rows) > 0
    # Raw time series only for the selected run, and identical too.
    for out in ("one", "two"):
        assert [p.name for p in (tmp_path / out / TIMESERIES_DIR).iterdir()] == [
            "run-000000000.parquet"
        ]
    ts_one = pq.read_table(tmp_path / "one" / TIMESERIES_DIR / "run-000000000.parquet")
    ts_two = pq.read_table(tmp_path / "two" / TIMESERIES_DIR / "run-000000000.parquet")
    assert ts_one.equals(ts_two)
    assert "csf_lumbar_ng_per_ml" in ts_one.column_names


class _Stop(KeyboardInterrupt):
    """Stands for Ctrl-C arriving mid-sweep."""


def test_interrupted_sweep_resumes_without_redoing_finished_runs(
    tmp_path: Path, one_worker_client: Client
) -> None:
    sweep = tiny_sweep()
    reference = tmp_path / "reference"
    run_sweep(sweep, reference, client=one_worker_client, chunk_runs=1, rows_per_part=2)
    out = tmp_path / "interrupted"

    def stop_after_three(done: int, total: int) -> None:
        if done >= 3:
            raise _Stop

    with pytest.raises(_Stop):
        run_sweep(
            sweep,
            out,
            client=one_worker_client,
            chunk_runs=1,
            rows_per_part=2,
            on_progress=stop_after_three,
        )
    first = {r["run_id"] for r in rows_without_timing(out)}
    assert 3 <= len(first) < sweep.n_runs  # rows finished before the stop were kept
    # A killed writer's temporary file is never counted (and is cleaned up).
    stray = out / RUNS_DIR / ".part-000099.parquet.abc.tmp"
    stray.write_bytes(b"half a file")
    seen: list[tuple[int, int]] = []
    stats = run_sweep(
        sweep,
        out,
        client=one_worker_client,
        chunk_runs=1,
        rows_per_part=2,
        on_progress=lambda d, n: seen.append((d, n)),
    )
    assert not stray.exists()
    assert stats.already_done == len(first)
    assert stats.executed == sweep.n_runs - len(first)
    assert seen[0] == (len(first), sweep.n_runs)
    assert rows_without_timing(out) == rows_without_timing(reference)
    # Run once more: nothing left to do, nothing rewritten.
    parts = part_paths(out)
    again = run_sweep(sweep, out, client=one_worker_client)
    assert again.executed == 0
    assert part_paths(out) == parts


def test_a_directory_of_another_sweep_is_refused(tmp_path: Path, one_worker_client: Client) -> None:
    sweep = tiny_sweep(replicates=1)
    run_sweep(sweep, tmp_path, client=one_worker_client)
    other = tiny_sweep(replicates=2)
    with pytest.raises(SweepDirError, match="another sweep"):
        run_sweep(other, tmp_path, client=one_worker_client)
    stats: Any = run_sweep(other, tmp_path, client=one_worker_client, restart=True)
    assert stats.executed == other.n_runs
    assert len(rows_without_timing(tmp_path)) == other.n_runs
