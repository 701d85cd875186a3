"""What `itpump accuracy` leaves on disk: trumpet.csv, startup.csv, summary.json and plots.

Everything is rendered in memory first and each file is then written through a temporary file
and a rename, so a failure never leaves a half-written file and the same result always gives
the same bytes (no wall-clock time or host details in any output).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from itpump.emulator.accuracy import AccuracyResult
from itpump.emulator.device_profile import Mechanism

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# One colour per mechanism, so plots of the two kinds of pump are told apart at a glance.
_MECHANISM_COLOUR = {Mechanism.PERISTALTIC: "C0", Mechanism.VALVE_GATED: "C3"}
_MECHANISM_UNIT = {Mechanism.PERISTALTIC: "stroke", Mechanism.VALVE_GATED: "pulse"}
# Beyond this ratio of longest to shortest window the trumpet's x axis is logarithmic (the
# standard's 2..31 min stays linear, as it is drawn in device manuals).
_LOG_AXIS_SPAN = 16.0
METHOD = "IEC 60601-2-24 start-up and trumpet curves over stroke-level delivery"


def trumpet_csv(result: AccuracyResult) -> str:
    """window_min, ep_max_pct, ep_min_pct: one row per observation window."""
    lines = ["window_min,ep_max_pct,ep_min_pct"]
    for window, high, low in zip(
        result.settings.windows_min, result.ep_max_pct, result.ep_min_pct, strict=True
    ):
        lines.append(f"{window:g},{high:.4f},{low:.4f}")
    return "\n".join(lines) + "\n"


def startup_csv(result: AccuracyResult) -> str:
    """time_min, volume_ml, flow_ml_per_day: one row per sample interval from the start."""
    lines = ["time_min,volume_ml,flow_ml_per_day"]
    for t, volume, flow in zip(
        result.sample_end_min, result.cumulative_ml, result.flow_ml_per_day, strict=True
    ):
        lines.append(f"{t:g},{volume:.9f},{flow:.6f}")
    return "\n".join(lines) + "\n"


def summary(result: AccuracyResult) -> dict[str, Any]:
    """Overall error, parameters, profile, rate and seed, as written to summary.json."""
    s = result.settings
    p = result.profile
    return {
        "method": METHOD,
        "profile": p.model,
        "mechanism": p.mechanism.value,
        "stroke_volume_ul": p.stroke_volume_ul,
        "rate_ml_per_day": s.rate_ml_per_day,
        "seed": s.seed,
        "parameters": {
            "sample_min": s.sample_min,
            "windows_min": list(s.windows_min),
            "analysis_start_h": s.analysis_start_h,
            "analysis_h": s.analysis_h,
        },
        "overall_error_pct": round(result.mean_error_pct, 6),
        "analysis_delivered_ml": round(result.analysis_delivered_ml, 9),
        "analysis_expected_ml": round(s.rate_ml_per_day * s.analysis_h / 24.0, 9),
        "analysis_strokes": result.analysis_strokes,
        "mean_stroke_volume_ul": (
            round(result.stroke_volume_mean_ml * 1000.0, 6) if result.analysis_strokes else None
        ),
        "trumpet": [
            {
                "window_min": w,
                "ep_max_pct": round(hi, 4),
                "ep_min_pct": round(lo, 4),
                "mean_strokes_per_window": round(n, 3),
            }
            for w, hi, lo, n in zip(
                s.windows_min,
                result.ep_max_pct.tolist(),
                result.ep_min_pct.tolist(),
                result.expected_strokes_per_window.tolist(),
                strict=True,
            )
        ],
    }


def _caption(result: AccuracyResult) -> str:
    p = result.profile
    unit = _MECHANISM_UNIT[p.mechanism]
    return (
        f"{p.model} ({p.mechanism.value.replace('_', '-')}, {p.stroke_volume_ul:g} µL {unit}s) "
        f"at {result.settings.rate_ml_per_day:g} mL/day, seed {result.settings.seed}"
    )


def render_trumpet(result: AccuracyResult) -> Figure:
    """Ep(max) and Ep(min) against window length, with A and zero error for reference."""
    from matplotlib.figure import Figure

    s = result.settings
    colour = _MECHANISM_COLOUR[result.profile.mechanism]
    figure = Figure(figsize=(7.5, 5.0), layout="constrained")
    ax = figure.subplots()
    windows = list(s.windows_min)
    ax.plot(windows, result.ep_max_pct, "-^", color=colour, label="Ep(max)")
    ax.plot(windows, result.ep_min_pct, "-v", color=colour, alpha=0.6, label="Ep(min)")
    ax.axhline(
        result.mean_error_pct,
        color="black",
        linestyle="--",
        linewidth=1.0,
        label=f"overall error A = {result.mean_error_pct:+.2f} %",
    )
    ax.axhline(0.0, color="grey", linewidth=0.6)
    ax.set_xlabel("observation window P (min)")
    ax.set_ylabel("mean flow error over the window (%)")
    if max(windows) / min(windows) > _LOG_AXIS_SPAN:
        # Windows from an hour to days crowd their labels on a linear axis.
        ax.set_xscale("log")
        ax.minorticks_off()
    ax.set_xticks(windows, [f"{w:g}" for w in windows])
    ax.grid(True, alpha=0.3)
    ax.set_title(
        f"analysis period {s.analysis_start_h:g}-{s.end_h:g} h, "
        f"sample interval {s.sample_min:g} min",
        fontsize="medium",
    )
    figure.suptitle(f"Trumpet curve: {_caption(result)}")
    # Below the axes, so the legend never hides a point of the curve.
    figure.legend(loc="outside lower center", ncols=3, fontsize="small")
    return figure


def render_startup(result: AccuracyResult) -> Figure:
    """Flow of each sample interval from the start, the running mean and the set rate."""
    from matplotlib.figure import Figure

    s = result.settings
    colour = _MECHANISM_COLOUR[result.profile.mechanism]
    # Minutes for the standard's 2 h test; hours once a run is long enough to read in hours.
    in_hours = s.end_h > 4.0
    scale = 1.0 / 60.0 if in_hours else 1.0
    t = result.sample_end_min * scale
    starts = (result.sample_end_min - s.sample_min) * scale
    figure = Figure(figsize=(9.0, 5.0), layout="constrained")
    ax = figure.subplots()
    ax.axvspan(
        s.analysis_start_h * 60.0 * scale,
        s.end_h * 60.0 * scale,
        color="grey",
        alpha=0.12,
        linewidth=0,
        label="analysis period",
    )
    # Thousands of intervals merge into a band: lighten it so the lines on top stay readable.
    dense = len(t) > 500
    ax.stairs(
        result.flow_ml_per_day,
        [*starts[:1], *t],
        color=colour,
        linewidth=0.5 if dense else 0.8,
        alpha=0.45 if dense else 1.0,
        label=f"flow per {s.sample_min:g}-min interval (Q_i)",
    )
    running_mean = result.cumulative_ml / result.sample_end_min * 1440.0
    ax.plot(t, running_mean, color="black", linewidth=1.4, zorder=3, label="mean flow since start")
    ax.axhline(
        s.rate_ml_per_day,
        color="darkorange",
        linestyle="--",
        linewidth=1.4,
        zorder=4,
        label=f"set rate {s.rate_ml_per_day:g} mL/day",
    )
    ax.set_xlim(0.0, s.end_h * 60.0 * scale)
    ax.set_ylim(bottom=0.0)
    ax.set_xlabel(f"time from start ({'h' if in_hours else 'min'})")
    ax.set_ylabel("flow (mL/day)")
    ax.grid(True, alpha=0.3)
    figure.suptitle(f"Start-up curve: {_caption(result)}")
    figure.legend(loc="outside lower center", ncols=4, fontsize="small")
    return figure


def _png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    # No timestamp or software tag in the file: the same run gives the same bytes.
    figure.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    return buffer.getvalue()


def render_outputs(result: AccuracyResult, plots: bool = True) -> dict[str, bytes]:
    """File name -> content for every output, rendered before anything touches the disk."""
    files = {
        "trumpet.csv": trumpet_csv(result).encode(),
        "startup.csv": startup_csv(result).encode(),
        "summary.json": (json.dumps(summary(result), indent=2) + "\n").encode(),
    }
    if plots:
        files["trumpet.png"] = _png_bytes(render_trumpet(result))
        files["startup.png"] = _png_bytes(render_startup(result))
    return files


def write_outputs(directory: Path, files: dict[str, bytes]) -> None:
    """Create `directory` if needed and write each file atomically (temporary file, rename)."""
    directory.mkdir(parents=True, exist_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    for name, content in files.items():
        handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(content)
            # mkstemp creates 0600; an output should get the usual mode for the user's umask.
            os.chmod(temporary, 0o666 & ~umask)
            os.replace(temporary, directory / name)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
