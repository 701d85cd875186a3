"""Optional parts of the install: a clear message, before anything runs, when one is missing."""

from __future__ import annotations

import importlib.util

from itpump.tools.cli import UsageError

PLOT_EXTRA_HINT = "pip install 'itpump[plot]'"


def require_plotting(what: str, instead: str | None = None) -> None:
    """Refuse (`UsageError`) when matplotlib, the `plot` extra, is not installed."""
    if importlib.util.find_spec("matplotlib") is None:
        alternative = f", or {instead}" if instead else ""
        raise UsageError(
            f"matplotlib, needed for {what}, is not installed: {PLOT_EXTRA_HINT}{alternative}"
        )


def require_sweep() -> None:
    """Refuse (`UsageError`) when Dask or pyarrow, the `sweep` extra, is not installed."""
    missing = [m for m in ("distributed", "pyarrow") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(
            f"itpump sweep needs {' and '.join(missing)}, not installed: "
            "pip install 'itpump[sweep]'"
        )
