"""Concentration plots for `itpump pk --plot` (matplotlib's object API: no global state)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from matplotlib.figure import Figure

from itpump.emulator.pk.batch import PredictionRun, percentile_column


def supported_plot_suffixes() -> frozenset[str]:
    """File name suffixes (without the dot) the plot can be saved as."""
    return frozenset(Figure().canvas.get_supported_filetypes())


def _panel_columns() -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    return (
        ("CSF (ng/mL)", (("CSF_LUMBAR", "-"), ("CSF_CISTERNAL", "--"))),
        ("plasma (ng/mL)", (("PLASMA", "-"),)),
        ("effect site (ng/mL)", (("CE", "-"),)),
    )


def render_predictions(run: PredictionRun) -> Figure:
    """One panel each for CSF (lumbar solid, cisternal dashed), plasma and effect site; one
    colour per subject; with a population, the median and a 5-95 % band."""
    figure = Figure(figsize=(8.0, 9.0), layout="constrained")
    axes = figure.subplots(3, 1, sharex=True)
    colours = [f"C{i % 10}" for i in range(len(run.subjects))]
    for (title, series), ax in zip(_panel_columns(), axes, strict=True):
        for subject, colour in zip(run.subjects, colours, strict=True):
            times = subject.curve_times_h
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
        ax.set_ylabel(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small", loc="upper right")
    axes[-1].set_xlabel("time (h)")
    if run.population is not None:
        levels = run.percentile_levels
        figure.suptitle(
            f"{run.population} virtual patients per subject: median, "
            f"{levels[0]:g}-{levels[-1]:g} % band"
        )
    return figure


def save_plot(run: PredictionRun, path: str | os.PathLike[str]) -> None:
    """Render and save atomically (temporary file beside `path`, then rename)."""
    target = Path(path)
    suffix = target.suffix.lower().lstrip(".")
    if suffix not in supported_plot_suffixes():
        raise ValueError(f"cannot save a plot as {target.suffix or 'a file without suffix'}")
    figure = render_predictions(run)
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
