"""Population view of a finished sweep: DIR/summary.json and DIR/report.png.

Reads the Parquet parts one column at a time, so memory grows with the number of runs times
one column (8 bytes a run), not with the row width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from itpump.emulator.recorder import FloatArray
from itpump.emulator.sweep.spec import Sweep
from itpump.emulator.sweep.store import read_rows, write_atomic, write_json_atomic


@dataclass(frozen=True, slots=True)
class KeyOutcome:
    """An outcome column shown with its distribution."""

    column: str
    title: str
    unit: str


KEY_OUTCOMES = (
    KeyOutcome("reservoir_true_at_low_alarm_ml", "true reservoir at the low-reservoir alarm", "mL"),
    KeyOutcome("low_alarm_margin_h", "low-reservoir alarm to truly empty", "h"),
    KeyOutcome("time_to_csf_half_h", "fault onset to lumbar CSF below withdrawal level", "h"),
    KeyOutcome("longest_withdrawal_h", "longest withdrawal window", "h"),
    KeyOutcome("dose_error_pct", "true pumped vs reported dose, (true - reported) / reported", "%"),
    KeyOutcome("csf_lumbar_max_ng_per_ml", "peak lumbar CSF", "ng/mL"),
    KeyOutcome("plasma_max_ng_per_ml", "peak plasma", "ng/mL"),
    KeyOutcome("first_low_reservoir_alarm_h", "first low-reservoir alarm", "h"),
)


def _column(out: Path, name: str) -> FloatArray:
    table = read_rows(out, [name, "status"])
    ok = np.asarray(table.column("status").to_pylist()) == "ok"
    values = table.column(name).to_numpy(zero_copy_only=False)
    return np.asarray(values[ok], dtype=np.float64)


def _bool_column(out: Path, name: str) -> np.ndarray[Any, np.dtype[np.bool_]]:
    table = read_rows(out, [name, "status"])
    ok = np.asarray(table.column("status").to_pylist()) == "ok"
    values = np.asarray(table.column(name).to_pylist(), dtype=object)[ok]
    return np.asarray([bool(v) for v in values], dtype=bool)


def wilson_interval(count: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (sound at 0 and at n, unlike +/- 2 SE)."""
    if n == 0:
        return (math.nan, math.nan)
    p = count / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # At 0 and n the exact bound is p itself; float rounding can leave it a hair beyond p
    # (1.7e-18 above 0 at n = 150), which no interval around p may do.
    return (min(max(0.0, centre - half), p), max(min(1.0, centre + half), p))


def hazards(sweep: Sweep, out: Path) -> dict[str, dict[str, Any]]:
    """Fraction of successful runs in each hazard, with its definition and 95 % interval."""
    t = sweep.thresholds
    definitions: list[tuple[str, str, np.ndarray[Any, np.dtype[np.bool_]]]] = [
        (
            "empty_before_low_reservoir_alarm",
            "the true reservoir ran dry before any low-reservoir alarm",
            _bool_column(out, "emptied_before_low_reservoir_alarm"),
        ),
        (
            f"withdrawal_window_over_{t.withdrawal_window_h:g}h",
            f"lumbar CSF stayed below {t.withdrawal_fraction:g} x its reference level for more "
            f"than {t.withdrawal_window_h:g} h at a stretch",
            np.nan_to_num(_column(out, "longest_withdrawal_h"), nan=0.0) > t.withdrawal_window_h,
        ),
        (
            f"plasma_above_{t.plasma_threshold_ng_per_ml:g}_ng_per_ml",
            f"plasma concentration above {t.plasma_threshold_ng_per_ml:g} ng/mL at any sample "
            "(toxic-exposure marker; a sweep-file choice, see docs/sweep.md)",
            np.nan_to_num(_column(out, "plasma_max_ng_per_ml"), nan=0.0)
            > t.plasma_threshold_ng_per_ml,
        ),
        (
            f"csf_above_{t.csf_high_factor:g}x_reference",
            f"lumbar CSF above {t.csf_high_factor:g} x its reference level at any sample",
            np.nan_to_num(_column(out, "hours_csf_above_high"), nan=0.0) > 0,
        ),
        (
            "program_refused",
            "the pump refused a program (e.g. a programming error caught by its dose limits)",
            _bool_column(out, "program_refused"),
        ),
        (
            "any_action_refused",
            "the pump refused at least one action",
            _column(out, "refusals") > 0,
        ),
    ]
    result: dict[str, dict[str, Any]] = {}
    for name, text, flags in definitions:
        n = int(flags.size)
        count = int(np.count_nonzero(flags))
        low, high = wilson_interval(count, n)
        result[name] = {
            "definition": text,
            "runs": count,
            "of": n,
            "fraction": count / n if n else None,
            "ci95": [low, high] if n else None,
        }
    return result


def build_summary(sweep: Sweep, out: Path) -> dict[str, Any]:
    """summary.json's content."""
    table = read_rows(out, ["status", "error", "pump_seed"])
    status = np.asarray(table.column("status").to_pylist())
    n_ok = int(np.count_nonzero(status == "ok"))
    errors = [
        {"run_id": r["run_id"], "pump_seed": r["pump_seed"], "error": r["error"]}
        for r in table.filter(np.asarray(status != "ok")).slice(0, 20).to_pylist()
    ]
    levels = sweep.percentiles
    outcomes: dict[str, Any] = {}
    for key in KEY_OUTCOMES:
        values = _column(out, key.column)
        finite = values[np.isfinite(values)]
        entry: dict[str, Any] = {"title": key.title, "unit": key.unit, "n": int(finite.size)}
        if finite.size:
            entry.update(
                {
                    "min": float(finite.min()),
                    "mean": float(finite.mean()),
                    "max": float(finite.max()),
                    "percentiles": {
                        f"p{level:g}": float(np.percentile(finite, level)) for level in levels
                    },
                }
            )
        outcomes[key.column] = entry
    t = sweep.thresholds
    return {
        "sweep": sweep.name,
        "description": sweep.description,
        "digest": sweep.digest,
        "seed": sweep.seed,
        "runs_planned": sweep.n_runs,
        "runs_recorded": int(status.size),
        "runs_ok": n_ok,
        "runs_failed": int(status.size - n_ok),
        "grid_axes": {name: list(values) for name, values in sweep.grid_axes},
        "replicates": sweep.replicates,
        "thresholds": {
            "outcome_sample_interval_h": t.sample_interval_h,
            "withdrawal_fraction_of_reference": t.withdrawal_fraction,
            "withdrawal_window_h": t.withdrawal_window_h,
            "plasma_threshold_ng_per_ml": t.plasma_threshold_ng_per_ml,
            "csf_high_factor": t.csf_high_factor,
            "reference_settle_h": t.reference_settle_h,
        },
        "hazards": hazards(sweep, out),
        "outcomes": outcomes,
        "failed_runs": errors,
    }


def write_summary(sweep: Sweep, out: Path) -> dict[str, Any]:
    """Write DIR/summary.json and return it."""
    data = build_summary(sweep, out)
    write_json_atomic(out / "summary.json", data)
    return data


def write_report_png(sweep: Sweep, out: Path, data: dict[str, Any]) -> None:
    """Histograms of the key outcomes with percentile lines, and the hazard fractions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [k for k in KEY_OUTCOMES if data["outcomes"][k.column]["n"] > 0][:6]
    n_panels = len(shown) + 1
    ncols = 2
    nrows = math.ceil(n_panels / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(12, 3.4 * nrows + 0.8), squeeze=False)
    flat = list(axes.ravel())
    colours = ("tab:green", "tab:orange", "tab:red", "tab:purple", "tab:brown")
    for ax, key in zip(flat, shown, strict=False):
        values = _column(out, key.column)
        finite = values[np.isfinite(values)]
        ax.hist(finite, bins=min(50, max(5, int(math.sqrt(finite.size)) + 1)), color="tab:blue")
        entry = data["outcomes"][key.column]
        for i, (label, value) in enumerate(entry["percentiles"].items()):
            ax.axvline(
                value,
                color=colours[i % len(colours)],
                linestyle="--",
                linewidth=1.2,
                label=f"{label} = {value:.3g} {key.unit}",
            )
        ax.set_title(f"{key.title} (n = {finite.size})", fontsize=10)
        ax.set_xlabel(key.unit)
        ax.set_ylabel("runs")
        ax.legend(fontsize=8, loc="upper right")
    ax = flat[len(shown)]
    names = list(data["hazards"])
    fractions = [100 * (data["hazards"][n]["fraction"] or 0.0) for n in names]
    low = [100 * (data["hazards"][n]["ci95"] or [0, 0])[0] for n in names]
    high = [100 * (data["hazards"][n]["ci95"] or [0, 0])[1] for n in names]
    err = np.array([np.subtract(fractions, low), np.subtract(high, fractions)])
    y = np.arange(len(names))
    ax.barh(y, fractions, xerr=err, color="tab:red", alpha=0.8, capsize=3)
    ax.set_yticks(y, [n.replace("_", " ") for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of successful runs (bars: 95 % Wilson interval)")
    ax.set_title("hazards", fontsize=10)
    for yi, f in zip(y, fractions, strict=True):
        inside = f > 85  # a long bar: label inside it, or it would run off the axes
        ax.text(
            f - 1 if inside else f + 1,
            yi,
            f"{f:.1f} %",
            va="center",
            fontsize=8,
            ha="right" if inside else "left",
            color="white" if inside else "black",
        )
    for extra in flat[len(shown) + 1 :]:
        extra.set_visible(False)
    fig.suptitle(
        f"sweep {sweep.name}: {data['runs_ok']} runs ok, {data['runs_failed']} failed "
        f"(base {sweep.scenario.scenario.name}, {sweep.scenario.end_h / 24:g} days each)",
        fontsize=12,
    )
    fig.tight_layout()
    write_atomic(out / "report.png", lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
