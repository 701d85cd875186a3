"""The sweep's output directory: Parquet parts written atomically, and what they tell about
which runs are done (for resume).

Layout of DIR:
    sweep.json                 the sweep's identity (digest, name, runs) — a resume checks it
    runs/part-NNNNNN.parquet   one file per written batch of rows (any run order)
    timeseries/run-NNNNNNNNN.parquet   raw time series of the selected runs
    summary.json, report.png   written at the end (emulator.sweep.report)

Every file is written to a temporary name in the same directory and renamed, so a killed sweep
leaves whole parts or nothing; the run ids in the parts are the record of finished runs.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from itpump.emulator.sweep.spec import Sweep

RUNS_DIR = "runs"
TIMESERIES_DIR = "timeseries"
MANIFEST = "sweep.json"
_PART_RE = re.compile(r"part-(\d{6})\.parquet")
_ARROW_TYPES = {
    "float64": pa.float64(),
    "int64": pa.int64(),
    "bool": pa.bool_(),
    "string": pa.string(),
}


class SweepDirError(ValueError):
    """The output directory cannot hold this sweep (a file, or another sweep's results)."""


def arrow_schema(columns: dict[str, str]) -> pa.Schema:
    """Arrow schema from column -> type name."""
    return pa.schema([(name, _ARROW_TYPES[kind]) for name, kind in columns.items()])


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` for a temporary file beside `path`, then rename it to `path`."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Pretty JSON, stable key order, atomically; strict JSON (a NaN raises, never written)."""
    text = json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n"

    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    write_atomic(path, write)


def prepare_dir(out: Path, sweep: Sweep, *, restart: bool = False) -> None:
    """Create DIR (or check that it holds this same sweep); remove stray temporary files."""
    if out.exists() and not out.is_dir():
        raise SweepDirError(f"--out {out} is a file, not a directory")
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / MANIFEST
    if manifest.exists():
        try:
            old = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise SweepDirError(f"{manifest}: unreadable ({exc}); use another --out") from None
        if old.get("digest") != sweep.digest and not restart:
            raise SweepDirError(
                f"{out} holds results of another sweep ({old.get('name')!r}, digest "
                f"{old.get('digest')}); use another --out, or --restart to discard them"
            )
    if restart:
        for sub in (RUNS_DIR, TIMESERIES_DIR):
            for path in (out / sub).glob("*.parquet"):
                path.unlink()
    for sub in (RUNS_DIR, TIMESERIES_DIR):
        (out / sub).mkdir(exist_ok=True)
        for tmp in (out / sub).glob(".*.tmp"):
            tmp.unlink()  # left by a killed writer: never renamed, so never counted
    write_json_atomic(
        manifest,
        {
            "name": sweep.name,
            "description": sweep.description,
            "digest": sweep.digest,
            "seed": sweep.seed,
            "runs": sweep.n_runs,
            "grid_points": sweep.n_points,
            "replicates": sweep.replicates,
            "grid_axes": {name: list(values) for name, values in sweep.grid_axes},
        },
    )


def part_paths(out: Path) -> list[Path]:
    """The finished parts, in name order."""
    return sorted(p for p in (out / RUNS_DIR).glob("part-*.parquet") if _PART_RE.fullmatch(p.name))


def done_mask(out: Path, n_runs: int) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """One flag per run id: True when a part holds its row (n_runs bytes, whatever the size)."""
    done = np.zeros(n_runs, dtype=bool)
    for path in part_paths(out):
        ids = pq.read_table(path, columns=["run_id"]).column("run_id").to_numpy()
        done[ids[(ids >= 0) & (ids < n_runs)]] = True
    return done


class PartWriter:
    """Buffers rows and writes them as numbered parts of at most `rows_per_part` rows."""

    def __init__(self, out: Path, columns: dict[str, str], rows_per_part: int) -> None:
        self.dir = out / RUNS_DIR
        self.schema = arrow_schema(columns)
        self.rows_per_part = rows_per_part
        self.buffer: list[dict[str, Any]] = []
        existing = [int(m.group(1)) for p in part_paths(out) if (m := _PART_RE.fullmatch(p.name))]
        self.next_part = max(existing, default=-1) + 1
        self.parts_written = 0

    def add(self, row: dict[str, Any]) -> bool:
        """Buffer a row; write a part when the buffer is full. True when a part was written."""
        self.buffer.append(row)
        if len(self.buffer) >= self.rows_per_part:
            self.flush()
            return True
        return False

    def flush(self) -> None:
        """Write the buffered rows (if any) as one part."""
        if not self.buffer:
            return
        table = pa.Table.from_pylist(self.buffer, schema=self.schema)
        path = self.dir / f"part-{self.next_part:06d}.parquet"
        write_atomic(path, lambda tmp: pq.write_table(table, tmp))
        self.next_part += 1
        self.parts_written += 1
        self.buffer = []


def write_timeseries(out: Path, run_id: int, columns: dict[str, list[float]]) -> None:
    """One selected run's raw time series."""
    table = pa.table({name: pa.array(values, pa.float64()) for name, values in columns.items()})
    path = out / TIMESERIES_DIR / f"run-{run_id:09d}.parquet"
    write_atomic(path, lambda tmp: pq.write_table(table, tmp))


def read_rows(out: Path, columns: list[str] | None = None) -> pa.Table:
    """Every finished row (or some columns of them), sorted by run id."""
    paths = part_paths(out)
    if not paths:
        raise FileNotFoundError(f"no results in {out / RUNS_DIR}")
    wanted = None if columns is None else list(dict.fromkeys(["run_id", *columns]))
    tables = [pq.read_table(p, columns=wanted) for p in paths]
    table = pa.concat_tables(tables)
    return table.sort_by("run_id")


def iter_column(out: Path, name: str) -> Iterator[pa.ChunkedArray]:
    """One column, part by part (bounded memory for very large sweeps)."""
    for path in part_paths(out):
        yield pq.read_table(path, columns=[name]).column(name)
