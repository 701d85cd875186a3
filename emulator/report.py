"""report.png of `itpump simulate`: one page a clinician can review a run from.

Panels share a calendar time axis: reservoir (true vs the pump's estimate), daily dose (what
truly left the catheter vs what was programmed), CSF concentrations against the therapeutic
range, plasma against the CNS-depression threshold, and a timeline of alarms and of what was
done to the pump (refills, primes, catheter revisions, programs, boluses, faults; refused
actions greyed). Fault periods are shaded across every panel. Built with matplotlib's object
API (no pyplot state), so tests can inspect the figure's artists without looking at pixels.
"""

from __future__ import annotations

import datetime as dt
import math
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from itpump.emulator.pk import thresholds
from itpump.emulator.recorder import FloatArray, interp_right
from itpump.emulator.scenario import (
    BolusAction,
    CatheterRevisionAction,
    ClearFaultAction,
    FaultAction,
    PatientBolusAction,
    ProgramAction,
    RefillAction,
    Scenario,
    SimpleAction,
)
from itpump.firmware_stubs.alarms import SEVERITY, Severity
from itpump.protocol.codes import AlarmId
from itpump.protocol.therapy import mean_daily_dose_mcg

if TYPE_CHECKING:
    from collections.abc import Sequence

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from itpump.emulator.runner import ActionOutcome, RunResult

_CRITICAL = frozenset(a.name.lower() for a, s in SEVERITY.items() if s is Severity.CRITICAL)
# Faults that are one event, not a period: a marker, no shaded span.
_ONE_OFF_FAULTS = ("pocket_fill", "battery_drop")
EVENT_ROWS = ("refill", "prime", "program", "bolus", "fault")
_EVENT_ROW_OF = {
    "refill": "refill",
    "prime": "prime",
    # A new catheter is what makes a prime allowed (or refused): on the prime row.
    "catheter_revision": "prime",
    "program": "program",
    "bolus": "bolus",
    "patient_bolus": "bolus",
    "bridge_bolus": "bolus",
    "fault": "fault",
    "clear_fault": "fault",
    # Clinician commands that end a fault's effect or a reset: beside them, on their rows.
    "valve_reset": "fault",
    "set_clock": "program",
}


def _refill_mismatch(action: RefillAction) -> str:
    """What a refill physically did that the clinician did not enter (empty when none)."""
    notes = []
    if action.entered_drug is not None and action.entered_drug != action.drug:
        notes.append(f"filled {action.drug}, entered {action.entered_drug}")
    entered_conc = action.entered_concentration_mcg_per_ml
    if entered_conc is not None and entered_conc != action.concentration_mcg_per_ml:
        notes.append(f"filled {action.concentration_mcg_per_ml:g} mcg/mL, entered {entered_conc:g}")
    if action.pocket_fill_fraction > 0:
        notes.append(f"{100 * action.pocket_fill_fraction:g} % into the pocket")
    return "; ".join(notes)


def _mean_daily_mcg(action: ProgramAction) -> float:
    """The programmed dose as a daily total (a flex pattern's total over its period / days)."""
    return mean_daily_dose_mcg(action.program().therapy)


@dataclass(frozen=True, slots=True)
class ProgrammedDose:
    """What the clinician programmed, from the accepted scenario actions."""

    change_t_h: FloatArray  # basal rate changes
    basal_mcg_per_day: FloatArray
    bolus_t_h: FloatArray
    bolus_mcg: FloatArray

    def daily_totals_mcg(self, day_edges_h: FloatArray) -> FloatArray:
        """Programmed mcg in each [edge_i, edge_i+1): basal over the day plus boluses in it."""
        times = np.concatenate([self.change_t_h, day_edges_h])
        times.sort()
        idx = np.clip(np.searchsorted(self.change_t_h, times, side="right") - 1, 0, None)
        rates = np.where(times >= self.change_t_h[0], self.basal_mcg_per_day[idx] / 24.0, 0.0)
        cumulative = np.concatenate([[0.0], np.cumsum(rates[:-1] * np.diff(times))])
        basal = np.diff(np.interp(day_edges_h, times, cumulative))
        boluses, _ = np.histogram(self.bolus_t_h, bins=day_edges_h, weights=self.bolus_mcg)
        return np.asarray(basal + boluses, dtype=np.float64)


def programmed_dose(
    scenario: Scenario, outcomes: list[ActionOutcome], reset_t_h: Sequence[float] = ()
) -> ProgrammedDose:
    """The programmed basal (a step function) and boluses, from the actions the pump accepted.

    A concentration entry error, a pocket fill, an occlusion or a stalled motor leave this
    unchanged: it is what the pump was told to deliver, to put beside what truly left it. A
    power-on reset (`reset_t_h`, the times the pump raised POWER_ON_RESET) loses the program:
    nothing is programmed from then until the next program is committed.
    """
    change_t = [0.0]
    basal = [0.0]
    bolus_t: list[float] = []
    bolus_mcg: list[float] = []
    program: ProgramAction | None = None
    running = True

    def set_basal(t_h: float) -> None:
        change_t.append(t_h)
        basal.append(_mean_daily_mcg(program) if program is not None and running else 0.0)

    resets = sorted(reset_t_h)
    for outcome in outcomes:
        while resets and resets[0] <= outcome.t_h:
            program = None
            set_basal(resets.pop(0))
        if not outcome.accepted:
            continue
        action = scenario.actions[outcome.index - 1]
        if isinstance(action, ProgramAction):
            program, running = action, True
            set_basal(outcome.t_h)
        elif isinstance(action, BolusAction):
            bolus_t.append(outcome.t_h)
            bolus_mcg.append(action.dose_mcg)
            if action.then == "stop":
                running = False
                set_basal(outcome.t_h)
        elif isinstance(action, PatientBolusAction):
            if program is not None and program.patient_bolus is not None:
                bolus_t.append(outcome.t_h)
                bolus_mcg.append(program.patient_bolus.dose_mcg)
        elif isinstance(action, SimpleAction) and action.type in ("stop", "resume"):
            running = action.type == "resume"
            set_basal(outcome.t_h)
    for t_h in resets:
        program = None
        set_basal(t_h)
    return ProgrammedDose(
        np.asarray(change_t), np.asarray(basal), np.asarray(bolus_t), np.asarray(bolus_mcg)
    )


def fault_periods(
    scenario: Scenario, outcomes: list[ActionOutcome], end_h: float
) -> list[tuple[str, float, float]]:
    """(kind, start h, end h) of every lasting fault the run injected (end: clear or run end)."""
    open_at: dict[str, float] = {}
    periods: list[tuple[str, float, float]] = []
    for outcome in outcomes:
        action = scenario.actions[outcome.index - 1]
        if not outcome.accepted:
            continue
        if isinstance(action, FaultAction) and action.kind not in _ONE_OFF_FAULTS:
            open_at.setdefault(action.kind, outcome.t_h)
        elif isinstance(action, ClearFaultAction) and action.kind in open_at:
            periods.append((action.kind, open_at.pop(action.kind), outcome.t_h))
    periods.extend((kind, t0, end_h) for kind, t0 in open_at.items())
    return sorted(periods, key=lambda p: p[1])


def times_h_of(columns: dict[str, FloatArray]) -> FloatArray:
    """The sample times of `columns`."""
    return np.asarray(columns["time_h"], dtype=np.float64)


def mdates_num(start: dt.datetime, t_h: float) -> float:
    """Matplotlib's date number (days) of scenario time `t_h`."""
    import matplotlib.dates as mdates

    return float(mdates.date2num(start + dt.timedelta(hours=t_h)))  # type: ignore[no-untyped-call]


def _dates(start: dt.datetime, times_h: FloatArray) -> np.ndarray:
    base = np.datetime64(start.astimezone(dt.UTC).replace(tzinfo=None), "us")
    return base + np.round(np.asarray(times_h) * 3.6e9).astype("timedelta64[us]")


def report_figure(result: RunResult, columns: dict[str, FloatArray]) -> Figure:
    """The whole report as a matplotlib Figure (not saved)."""
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure

    scenario = result.scenario
    header = scenario.scenario
    start = header.start if header.start.tzinfo else header.start.replace(tzinfo=dt.UTC)
    times_h = np.asarray(columns["time_h"], dtype=np.float64)
    x = _dates(start, times_h)
    has_pk = "csf_lumbar_ng_per_ml" in columns
    ratios = [3, 2] + ([3, 2] if has_pk else []) + [2.6]
    figure = Figure(figsize=(12.5, 2.2 * sum(ratios) / 2.2 + 1.6), layout="constrained")
    axes = figure.subplots(len(ratios), 1, sharex=True, gridspec_kw={"height_ratios": ratios})
    description = textwrap.fill(header.description, 150) if header.description else ""
    figure.suptitle(
        f"{header.name}: {result.profile.model}, seed {result.seed}, "
        f"from {start:%Y-%m-%d %H:%M} UTC\n{description}",
        fontsize=10,
    )

    # Fault periods: start and clear lines across every data panel (a shade over a whole run
    # would wash out the reference bands), a bar on the timeline's fault row.
    periods = fault_periods(scenario, result.outcomes, scenario.end_h)
    fault_row = len(AlarmId) + EVENT_ROWS.index("fault")
    for kind, t0, t1 in periods:
        for ax in axes[:-1]:
            ax.axvline(
                mdates_num(start, t0),
                color="m",
                linestyle="-.",
                linewidth=0.9,
                label=f"fault {kind}: start",
            )
            if t1 < scenario.end_h:
                ax.axvline(
                    mdates_num(start, t1),
                    color="m",
                    linestyle=":",
                    linewidth=0.9,
                    label=f"fault {kind}: cleared",
                )
        axes[-1].broken_barh(
            [(mdates_num(start, t0), (t1 - t0) / 24.0)],
            (fault_row - 0.25, 0.5),
            facecolors="tab:red",
            alpha=0.25,
        )

    _reservoir_panel(axes[0], result, columns, x)
    _dose_panel(axes[1], result, start)
    if has_pk:
        from itpump.emulator.outputs import run_references

        refs = run_references(result)
        if refs.levels is None:
            note = refs.no_pk_note(start) or "no PK model"
            for ax, unit in ((axes[2], "CSF (ng/mL)"), (axes[3], "plasma (ng/mL)")):
                _no_pk_panel(ax, note, unit)
        else:
            _csf_panel(axes[2], columns, x, refs.levels)
            _plasma_panel(axes[3], columns, x, refs.levels)
            other = refs.no_pk_note(start)
            if other is not None:
                # Another drug reached the patient: the curves are the modelled drug's alone.
                for ax in (axes[2], axes[3]):
                    _other_drug_note(ax, f"{refs.levels.pk_model} only: {other}")
    _timeline_panel(axes[-1], result, columns, start, x)

    locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
    axes[-1].xaxis.set_major_locator(locator)
    formatter = mdates.ConciseDateFormatter(locator)  # type: ignore[no-untyped-call]
    axes[-1].xaxis.set_major_formatter(formatter)
    # A margin either side, so markers at the first and last instants are not cut in half.
    pad = (x[-1] - x[0]) * 0.01
    axes[-1].set_xlim(x[0] - pad, x[-1] + pad)
    for ax in axes:
        ax.grid(True, alpha=0.25)
    return figure


def _legend(ax: Axes) -> None:
    # Outside the plotting area, so no curve is ever hidden; duplicates (one per span) merged.
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(
        list(unique.values()),
        list(unique.keys()),
        loc="upper left",
        bbox_to_anchor=(1.005, 1.0),
        fontsize=7,
        frameon=False,
    )


def _reservoir_panel(
    ax: Axes, result: RunResult, columns: dict[str, FloatArray], x: np.ndarray
) -> None:
    ax.plot(x, columns["reservoir_true_ml"], color="tab:blue", label="true volume")
    ax.plot(
        x,
        columns["reservoir_estimated_ml"],
        color="tab:orange",
        linestyle="--",
        label="pump estimate",
    )
    threshold = result.pump.firmware.status().low_reservoir_threshold_ml
    ax.axhline(
        threshold,
        color="grey",
        linewidth=0.8,
        linestyle=":",
        label=f"low-reservoir alarm {threshold:g} mL",
    )
    ax.set_ylim(bottom=0.0)
    ax.set_ylabel("reservoir (mL)")
    _legend(ax)


def dose_bin_days(end_h: float) -> int:
    """Days per dose bar: one a day up to ~4 months, then wider so about 120 bars remain."""
    return max(1, math.ceil(end_h / 24.0 / 120.0))


def dose_bin_edges_h(end_h: float) -> FloatArray:
    """Dose bar edges: every `dose_bin_days` from 0, the last one cut at the run's end (a
    partial last bar is a mean over the time it covers, not over a whole bin)."""
    days = dose_bin_days(end_h)
    edges = np.arange(0, math.ceil(end_h / (24.0 * days) - 1e-9) + 1, dtype=np.float64)
    edges = np.minimum(edges * 24.0 * days, end_h)
    return np.unique(edges)


def cumulative_before(x: npt.ArrayLike, xp: npt.ArrayLike, fp: npt.ArrayLike) -> FloatArray:
    """A cumulative curve (`xp` repeated at a jump, the value before it first) just before
    each `x`: 0 before the first point, and a jump exactly at `x` excluded, so an event on a
    bin edge counts in the bin it opens, not in the one it closes."""
    x_a = np.asarray(x, dtype=np.float64)
    xp_a = np.asarray(xp, dtype=np.float64)
    fp_a = np.asarray(fp, dtype=np.float64)
    i = np.searchsorted(xp_a, x_a, side="left")  # first point at or after x
    hi = np.clip(i, 0, len(xp_a) - 1)
    lo = np.clip(i - 1, 0, len(xp_a) - 1)
    span = xp_a[hi] - xp_a[lo]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(span > 0, (x_a - xp_a[lo]) / span, 1.0)
    out: FloatArray = fp_a[lo] + np.clip(frac, 0.0, 1.0) * (fp_a[hi] - fp_a[lo])
    out[i == 0] = 0.0
    return out


def binned_daily_mcg(
    edges_h: FloatArray, t_h: FloatArray, cumulative_mcg: FloatArray
) -> FloatArray:
    """mcg/day in each [edge_i, edge_i+1): events on an edge go to the bin they open, an
    event at the last edge (the run's end) to the last bin; each bin's own width divides."""
    at_edges = cumulative_before(edges_h, t_h, cumulative_mcg)
    at_edges[-1] = interp_right(edges_h[-1:], t_h, cumulative_mcg, left=0.0)[0]
    return np.asarray(np.diff(at_edges) / (np.diff(edges_h) / 24.0), dtype=np.float64)


def _dose_panel(ax: Axes, result: RunResult, start: dt.datetime) -> None:
    end_h = result.scenario.end_h
    days = dose_bin_days(end_h)
    edges = dose_bin_edges_h(end_h)
    recorder = result.pump.recorder
    assert recorder is not None
    t, csf, tissue = recorder.cumulative_points()
    # Filled stairs, not bars: hundreds of bars alias into a moire at report resolution.
    edge_x = [mdates_num(start, float(e)) for e in edges]
    if len(t):
        per_day_csf = binned_daily_mcg(edges, t, csf)
        per_day_tissue = binned_daily_mcg(edges, t, tissue)
        others = result.drugs_without_pk if result.pk_model is not None else []
        if others:
            # Two drugs: the modelled one's share of the CSF dose, the other drug above it.
            t_pk, csf_pk, _ = recorder.cumulative_points(pk_only=True)
            per_day_pk = binned_daily_mcg(edges, t_pk, csf_pk)
            ax.stairs(
                per_day_pk,
                edge_x,
                fill=True,
                color="tab:green",
                alpha=0.8,
                label="true: to CSF (PK-modelled drug)",
            )
            ax.stairs(
                per_day_csf,
                edge_x,
                baseline=per_day_pk,
                fill=True,
                color="tab:purple",
                alpha=0.6,
                label=f"true: to CSF, {', '.join(d for d, _ in others)} (no PK model)",
            )
        else:
            ax.stairs(
                per_day_csf, edge_x, fill=True, color="tab:green", alpha=0.8, label="true: to CSF"
            )
        if per_day_tissue.max(initial=0.0) > 0:
            ax.stairs(
                per_day_csf + per_day_tissue,
                edge_x,
                baseline=per_day_csf,
                fill=True,
                color="tab:red",
                alpha=0.8,
                label="true: to tissue",
            )
    resets = [
        a.t_h for a in recorder.alarm_transitions if a.alarm == "power_on_reset" and a.raised
    ]
    programmed = programmed_dose(result.scenario, result.outcomes, resets)
    programmed_per_day = programmed.daily_totals_mcg(edges) / (np.diff(edges) / 24.0)
    ax.stairs(
        programmed_per_day,
        edge_x,
        baseline=None,
        color="black",
        linewidth=1.2,
        label="programmed (what the pump was told)",
    )
    ax.set_ylim(bottom=0.0)
    if len(t):
        _clip_outliers(ax, edge_x, per_day_csf + per_day_tissue, max(programmed_per_day.max(), 1.0))
    ax.set_ylabel("dose (mcg/day)" if days == 1 else f"dose (mcg/day,\nmean of {days} days)")
    _legend(ax)


def _clip_outliers(
    ax: Axes, edge_x: list[float], totals: FloatArray, programmed_max: float
) -> None:
    # A pocket fill puts a month of drug into one day: scaled to it, every other day (and the
    # programmed line) would sit on the axis. Cut the axis at 5x the programmed dose and
    # write the clipped day's amount on it instead; 5x keeps a fourfold overdose (2000 mcg/mL
    # entered as 500) drawn to scale beside the programmed line.
    top = 5.0 * programmed_max
    if totals.max(initial=0.0) <= top:
        return
    ax.set_ylim(0.0, top)
    for i in np.flatnonzero(totals > top):
        ax.annotate(
            f"{totals[i]:,.0f} ↑",
            ((edge_x[i] + edge_x[i + 1]) / 2.0, top),
            xytext=(0, -10),
            textcoords="offset points",
            ha="center",
            fontsize=7,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0},
        )


def _other_drug_note(ax: Axes, note: str) -> None:
    ax.text(
        0.01,
        0.97,
        note,
        transform=ax.transAxes,
        ha="left",
        va="top",
        fontsize=7,
        bbox={"facecolor": "white", "edgecolor": "grey", "pad": 2.0},
    )


def _no_pk_panel(ax: Axes, note: str, unit: str) -> None:
    # No curve and no reference level: another drug's bands would read as this drug's.
    ax.text(
        0.5,
        0.5,
        note,
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=10,
        color="dimgrey",
    )
    ax.set_yticks([])
    ax.set_ylabel(unit)


def _csf_panel(
    ax: Axes, columns: dict[str, FloatArray], x: np.ndarray, levels: thresholds.ReferenceLevels
) -> None:
    low = levels.csf_low_ng_per_ml
    high = levels.csf_high_ng_per_ml
    ax.axhspan(
        low,
        high,
        color="tab:green",
        alpha=0.08,
        linewidth=0,
        label=f"therapeutic range {low:g}-{high:g} (50-1200 mcg/day, monograph)",
    )
    ax.axhspan(
        0.0,
        low,
        color="tab:orange",
        alpha=0.10,
        linewidth=0,
        label=f"below range (< {low:g}): withdrawal risk on therapy",
    )
    ax.axhline(
        high,
        color="tab:red",
        linewidth=0.8,
        linestyle="--",
        label=f"above range (> {high:g}): intrathecal overdose",
    )
    for key, label, style in (
        ("csf_lumbar_ng_per_ml", "lumbar CSF", "-"),
        ("csf_cisternal_ng_per_ml", "cisternal CSF", "--"),
        ("effect_ng_per_ml", "effect site", ":"),
    ):
        ax.plot(x, columns[key], style, label=label)
    _shade_below_range(ax, np.asarray(columns["csf_lumbar_ng_per_ml"], dtype=np.float64), x, low)
    peak = _finite_max(columns["csf_lumbar_ng_per_ml"])
    cap = CSF_AXIS_CAP_OF_RANGE_TOP * high
    if peak > cap:
        # A reservoir dump peaks ~65x the range top: scaled to it, the band and the later
        # withdrawal would be a line on the axis. Cut the axis, write the peak on it.
        ax.set_ylim(0.0, cap)
        lumbar = np.asarray(columns["csf_lumbar_ng_per_ml"], dtype=np.float64)
        at = int(np.nanargmax(lumbar))
        ax.annotate(
            f"lumbar peak {peak:,.0f} ng/mL ↑ (axis cut at {cap:,.0f})",
            (x[at], cap),
            xytext=(4, -12),
            textcoords="offset points",
            fontsize=7,
            color="tab:red",
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0},
        )
    else:
        ax.set_ylim(0.0, max(peak, high) * 1.12)
    ax.set_ylabel("CSF (ng/mL)\nlinear")
    _legend(ax)


def _shade_below_range(ax: Axes, lumbar: FloatArray, x: np.ndarray, low: float) -> None:
    # Periods below the range once the patient was in it (exposure's rule), shaded over the
    # panel's height: a few ng/mL under the band is invisible on an axis that shows an
    # overdose, a shaded stretch is not.
    below = np.maximum.accumulate(lumbar >= low) & (lumbar < low)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], below.astype(np.int8), [0]])))
    for first, stop in zip(edges[0::2], edges[1::2], strict=True):
        ax.axvspan(
            x[first],
            x[min(stop, len(x) - 1)],
            color="tab:orange",
            alpha=0.12,
            linewidth=0,
            label="lumbar CSF below range (withdrawal risk)",
        )


#: The CSF axis stops at this multiple of the therapeutic range's top (the peak is written).
CSF_AXIS_CAP_OF_RANGE_TOP = 3.0


def _finite_max(values: npt.ArrayLike) -> float:
    """Largest finite value, 0 when there is none: a drug without a PK model has NaN
    concentration columns, and NaN axis limits make matplotlib refuse the whole figure."""
    array = np.asarray(values, dtype=np.float64)
    finite = array[np.isfinite(array)]
    return float(finite.max()) if finite.size else 0.0


def _plasma_panel(
    ax: Axes, columns: dict[str, FloatArray], x: np.ndarray, levels: thresholds.ReferenceLevels
) -> None:
    floor = 0.1  # a log axis cannot show 0: drug-free stretches sit on the floor
    plasma = np.maximum(np.asarray(columns["plasma_ng_per_ml"]), floor)
    ax.axhspan(
        floor,
        levels.label_intrathecal_plasma_max_ng_per_ml,
        color="grey",
        alpha=0.10,
        linewidth=0,
        label=f"intrathecal therapy 0-{levels.label_intrathecal_plasma_max_ng_per_ml:g} (label)",
    )
    ax.axhline(
        levels.plasma_cns_depression_ng_per_ml,
        color="tab:orange",
        linestyle="--",
        linewidth=1.0,
        label=f"CNS depression {levels.plasma_cns_depression_ng_per_ml:g} (oral-therapy level)",
    )
    ax.axhline(
        levels.plasma_severe_toxicity_ng_per_ml,
        color="tab:red",
        linestyle="--",
        linewidth=1.0,
        label=f"severe toxicity {levels.plasma_severe_toxicity_ng_per_ml:g} (200 mg oral)",
    )
    ax.plot(x, plasma, color="tab:purple", label="plasma")
    ax.set_yscale("log")
    top = max(_finite_max(plasma), levels.plasma_severe_toxicity_ng_per_ml) * 2.0
    ax.set_ylim(floor, top)
    ax.set_ylabel("plasma (ng/mL)\nlog")
    _legend(ax)


def _timeline_panel(
    ax: Axes,
    result: RunResult,
    columns: dict[str, FloatArray],
    start: dt.datetime,
    x: np.ndarray,
) -> None:
    alarm_names = [a.name.lower() for a in AlarmId]
    rows = [*alarm_names, *EVENT_ROWS]
    recorder = result.pump.recorder
    assert recorder is not None
    # From the exact transitions, not the samples: an alarm shorter than a sample still shows,
    # and an edge line keeps a span narrower than a pixel visible on a years-long axis.
    raised_at: dict[str, float] = {}
    spans: dict[str, list[tuple[float, float]]] = {name: [] for name in alarm_names}
    for change in recorder.alarm_transitions:
        if change.raised:
            raised_at.setdefault(change.alarm, change.t_h)
        elif change.alarm in raised_at:
            spans[change.alarm].append((raised_at.pop(change.alarm), change.t_h))
    end_h = float(times_h_of(columns)[-1])
    for name, t0 in raised_at.items():
        spans[name].append((t0, end_h))
    for row, name in enumerate(alarm_names):
        if not spans[name]:
            continue
        colour = "tab:red" if name in _CRITICAL else "tab:orange"
        ax.broken_barh(
            [(mdates_num(start, t0), (t1 - t0) / 24.0) for t0, t1 in spans[name]],
            (row - 0.35, 0.7),
            facecolors=colour,
            edgecolors=colour,
            linewidth=0.8,
        )
    scenario = result.scenario
    styles = {
        "refill": ("v", "tab:blue"),
        "prime": ("D", "tab:cyan"),
        "catheter_revision": ("P", "tab:purple"),
        "program": ("s", "black"),
        "bolus": ("^", "tab:green"),
        "patient_bolus": ("^", "tab:olive"),
        "bridge_bolus": ("^", "tab:brown"),
        "fault": ("X", "tab:red"),
        "clear_fault": ("o", "tab:red"),
        "valve_reset": ("*", "tab:blue"),
        "set_clock": ("d", "grey"),
    }
    from itpump.emulator.outputs import refill_discrepancies

    # The pump's own check of the aspirated residual: what a clinician must not miss.
    for found in refill_discrepancies(result):
        at = _dates(start, np.array([found["t_h"]]))[0]
        ax.plot(
            [at],
            [rows.index("refill")],
            marker="o",
            markersize=11,
            markerfacecolor="none",
            markeredgecolor="tab:red",
            linestyle="none",
            label="aspiration discrepancy",
        )
        ax.annotate(
            f"aspirated {found['aspirated_ml']:.1f} mL, expected {found['expected_ml']:.1f}",
            (at, rows.index("refill")),
            xytext=(3, -10),
            textcoords="offset points",
            fontsize=6,
            color="tab:red",
        )
    labelled: set[str] = {"aspiration discrepancy"}
    placed: dict[int, list[float]] = {i: [] for i in range(len(rows))}
    overlap_h = 0.006 * max(result.scenario.end_h, 1.0)
    for outcome in result.outcomes:
        row_name = _EVENT_ROW_OF.get(outcome.type)
        if row_name is None:
            continue
        row = rows.index(row_name)
        # Events on one row closer than a marker's width (set_clock under a program, a
        # revision and its prime) are stacked a little upwards instead of drawn on each other.
        near = [t for t in placed[row] if abs(t - outcome.t_h) < overlap_h]
        placed[row].append(outcome.t_h)
        y = row + (0.0, 0.28, -0.28)[len(near) % 3]
        marker, colour = styles[outcome.type]
        at = _dates(start, np.array([outcome.t_h]))[0]
        label = outcome.type.replace("_", " ") if outcome.accepted else "refused"
        if outcome.accepted:
            ax.plot(
                [at],
                [y],
                marker=marker,
                color=colour,
                linestyle="none",
                markersize=6,
                markerfacecolor=colour if outcome.type != "clear_fault" else "none",
                label=label if label not in labelled else "_",
            )
        else:
            ax.plot(
                [at],
                [y],
                marker="x",
                color="grey",
                linestyle="none",
                markersize=7,
                label=label if label not in labelled else "_",
            )
        labelled.add(label)
        action = scenario.actions[outcome.index - 1]
        if isinstance(action, FaultAction | ClearFaultAction):
            ax.annotate(
                action.kind if isinstance(action, FaultAction) else f"{action.kind} cleared",
                (at, y),
                xytext=(3, 5 if isinstance(action, FaultAction) else -9),
                textcoords="offset points",
                fontsize=6,
                color="tab:red",
            )
        elif isinstance(action, RefillAction) and (note := _refill_mismatch(action)):
            ax.annotate(
                note,
                (at, y),
                xytext=(3, 5),
                textcoords="offset points",
                fontsize=6,
                color="tab:red",
            )
        elif isinstance(action, CatheterRevisionAction):
            told = "" if action.tell_pump else ", pump not told"
            ax.annotate(
                f"new catheter {action.length_cm:g} cm{told}",
                (at, y),
                xytext=(3, 5),
                textcoords="offset points",
                fontsize=6,
                color="tab:purple",
            )
    ax.set_yticks(range(len(rows)), [r.replace("_", " ") for r in rows], fontsize=7)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.axhline(len(alarm_names) - 0.5, color="grey", linewidth=0.6)
    ax.set_ylabel("alarms | actions")
    if ax.get_legend_handles_labels()[1]:
        _legend(ax)
