"""Concentration plots for `itpump pk --plot` (matplotlib's object API: no global state)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from itpump.emulator.pk.batch import PredictionRun, percentile_column
from itpump.emulator.pk.system import ROUTE_CSF, ROUTE_TISSUE


def supported_plot_suffixes() -> frozenset[str]:
    """File name suffixes (without the dot) the plot can be saved as."""
    return frozenset(Figure().canvas.get_supported_filetypes())


def _panel_columns() -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    return (
        ("CSF (ng/mL)", (("CSF_LUMBAR", "-"), ("CSF_CISTERNAL", "--"))),
        ("plasma (ng/mL)", (("PLASMA", "-"),)),
        ("effect site (ng/mL)", (("CE", "-"),)),
    )


#: Runs longer than this are plotted in days, shorter ones in hours.
DAYS_AXIS_AFTER_H = 72.0
#: Most infusion starts marked one by one per subject (a run's dose records hold thousands of
#: segments); more are drawn as a rug of thin ticks.
MAX_INFUSION_MARKERS = 100


def render_predictions(run: PredictionRun, title: str | None = None) -> Figure:
    """One panel each for CSF (lumbar solid, cisternal dashed), plasma and effect site; one
    colour per subject; with a population, the median and a 5-95 % band. Doses are marked
    on the CSF panel (boluses: triangles into CSF, diamonds into tissue; infusion starts:
    ticks); runs longer than three days are plotted in days."""
    figure = Figure(figsize=(9.5, 9.0), layout="constrained")
    axes = figure.subplots(3, 1, sharex=True)
    colours = [f"C{i % 10}" for i in range(len(run.subjects))]
    span_h = max(
        (float(s.curve_times_h[-1]) for s in run.subjects if len(s.curve_times_h)), default=0.0
    )
    in_days = span_h > DAYS_AXIS_AFTER_H
    scale = 1.0 / 24.0 if in_days else 1.0
    for (panel, series), ax in zip(_panel_columns(), axes, strict=True):
        for subject, colour in zip(run.subjects, colours, strict=True):
            times = subject.curve_times_h * scale
            for column, style in series:
                label = f"ID {subject.subject_id} {column}"
                if run.population is None:
                    ax.plot(times, subject.curves[column], style, color=colour, label=label)
                else:
                    low, mid, high = (
                        subject.curves[percentile_column(column, level)]
                        for level in run.percentile_levels
                    )
                    ax.plot(times, mid, style, color=colour, label=f"{label} median")
                    ax.fill_between(times, low, high, color=colour, alpha=0.15, linewidth=0)
        ax.set_ylabel(panel)
        ax.grid(True, alpha=0.3)
    _mark_doses(axes[0], run, colours, scale)
    for ax in axes:
        # Beside the panel, not on the curves.
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    axes[-1].set_xlabel("time (days)" if in_days else "time (h)")
    heading = title or "Predicted intrathecal baclofen concentrations"
    subjects = f"{len(run.subjects)} subject{'s' if len(run.subjects) != 1 else ''}"
    if run.population is not None:
        levels = run.percentile_levels
        detail = (
            f"{subjects}, {run.population} virtual patients each: median, "
            f"{levels[0]:g}-{levels[-1]:g} % band"
        )
    else:
        detail = f"{subjects}, typical parameters"
    figure.suptitle(f"{heading}\n{detail}")
    return figure


def _mark_doses(ax: Axes, run: PredictionRun, colours: list[str], scale: float) -> None:
    # Along the top edge of the CSF panel, in axes coordinates vertically.
    transform = ax.get_xaxis_transform()
    for subject, colour in zip(run.subjects, colours, strict=True):
        for route, marker, name in (
            (ROUTE_CSF, "v", "bolus into CSF"),
            (ROUTE_TISSUE, "D", "dose into tissue"),
        ):
            times = [t * scale for t, cmt in subject.boluses if cmt == route]
            if times:
                ax.plot(
                    times,
                    [0.95] * len(times),
                    marker,
                    color=colour,
                    markersize=5,
                    transform=transform,
                    linestyle="none",
                    label=f"ID {subject.subject_id} {name}",
                )
        starts = [t * scale for t, _cmt in subject.infusion_starts]
        if 0 < len(starts) <= MAX_INFUSION_MARKERS:
            ax.plot(
                starts,
                [0.985] * len(starts),
                "|",
                color=colour,
                markersize=8,
                transform=transform,
                linestyle="none",
                label=f"ID {subject.subject_id} infusion start",
            )
        elif starts:
            # Too many for markers (a simulated run's records hold a segment per rate
            # change): a rug of thin ticks along the bottom edge, where gaps are stretches
            # with no infusion, instead of nothing.
            ax.vlines(
                starts,
                0.0,
                0.035,
                color=colour,
                linewidth=0.4,
                alpha=0.5,
                transform=transform,
                label=f"ID {subject.subject_id} infusion starts (rug, {len(starts)})",
            )


def save_plot(run: PredictionRun, path: str | os.PathLike[str], title: str | None = None) -> None:
    """Render and save atomically (temporary file beside `path`, then rename)."""
    target = Path(path)
    suffix = target.suffix.lower().lstrip(".")
    if suffix not in supported_plot_suffixes():
        raise ValueError(f"cannot save a plot as {target.suffix or 'a file without suffix'}")
    figure = render_predictions(run, title)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=f".{suffix}", dir=target.parent
    )
    os.close(handle)
    try:
        figure.savefig(temporary, format=suffix, dpi=120)
        _chmod_like_new_file(temporary)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _chmod_like_new_file(path: str) -> None:
    # mkstemp creates 0600; an output file should get the usual mode for the user's umask.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
