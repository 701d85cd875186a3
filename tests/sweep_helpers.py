"""A tiny sweep for the sweep tests: a few 4-day runs, with some runs that fail on purpose."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from itpump.emulator.sweep.spec import SHIPPED_SWEEP_DIR, Sweep, parse_sweep
from itpump.emulator.sweep.store import read_rows

BASE_SCENARIO = SHIPPED_SWEEP_DIR / "scenarios" / "continuous-10d.toml"


def tiny_sweep_data(replicates: int = 4) -> dict[str, Any]:
    """2 grid points x `replicates`; a normal draw of systematic flow error around 45 % puts
    about a third of the runs above the profile's 50 % limit: those runs fail (error rows)."""
    return {
        "sweep": {
            "name": "tiny",
            "scenario": str(BASE_SCENARIO),
            "duration": "4d",
            "seed": 11,
            "replicates": replicates,
        },
        "patients": {"weight_kg": {"distribution": "normal", "mean": 75, "sd": 15, "low": 40}},
        "profile": {"flow_error_systematic_pct": {"distribution": "normal", "mean": 45, "sd": 10}},
        "faults": [
            {
                "kind": "occlusion",
                "value": {"values": [0.75, 1.0]},
                "onset": {"distribution": "uniform", "low": "2d", "high": "3d"},
            }
        ],
        "output": {"timeseries_runs": [0]},
    }


def tiny_sweep(replicates: int = 4) -> Sweep:
    """The tiny sweep, validated."""
    return parse_sweep(tiny_sweep_data(replicates), "tiny")


def tiny_sweep_toml(replicates: int = 4) -> str:
    """The same sweep as a file."""
    return f"""\
[sweep]
name = "tiny"
scenario = "{BASE_SCENARIO.as_posix()}"
duration = "4d"
seed = 11
replicates = {replicates}

[patients]
weight_kg = {{ distribution = "normal", mean = 75, sd = 15, low = 40 }}

[profile]
flow_error_systematic_pct = {{ distribution = "normal", mean = 45, sd = 10 }}

[[faults]]
kind = "occlusion"
value = {{ values = [0.75, 1.0] }}
onset = {{ distribution = "uniform", low = "2d", high = "3d" }}

[output]
timeseries_runs = [0]
"""


def rows_without_timing(out: Path) -> list[dict[str, Any]]:
    """Every row sorted by run id, without the wall-time column (the only non-deterministic one)."""
    table: pa.Table = read_rows(out)
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in table.to_pylist()]
