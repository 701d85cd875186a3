"""Population and fault sweeps on Dask: many full pump runs, one row of outcomes each
(docs/sweep.md)."""

from itpump.emulator.sweep.engine import SweepClusterError, SweepStats, run_sweep
from itpump.emulator.sweep.spec import Sweep, SweepError, load_sweep, parse_sweep, run_parameters

__all__ = [
    "Sweep",
    "SweepClusterError",
    "SweepError",
    "SweepStats",
    "load_sweep",
    "parse_sweep",
    "run_parameters",
    "run_sweep",
]
