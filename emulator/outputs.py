"""What a scenario run leaves on disk: timeseries.csv, summary.json, report.png."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from itpump.emulator.patient import concentration_columns
from itpump.emulator.recorder import FloatArray, interp_right
from itpump.emulator.runner import RunResult
from itpump.firmware_stubs.alarms import AlarmId

_ALARM_BITS = {int(a): a.name.lower() for a in AlarmId}


def sample_times_h(result: RunResult) -> FloatArray:
    """Evenly spaced output times from 0 to the scenario end inclusive."""
    end = result.scenario.end_h
    step = result.scenario.scenario.sample_interval
    n = math.floor(end / step + 1e-9)
    times = np.arange(n + 1, dtype=np.float64) * step
    if times[-1] < end - 1e-9:
        times = np.append(times, end)
    return times


def timeseries(result: RunResult, times_h: npt.ArrayLike | None = None) -> dict[str, FloatArray]:
    """Resampled run history (truth and firmware estimate side by side)."""
    recorder = result.pump.recorder
    assert recorder is not None, "run was made without a recorder"
    times = sample_times_h(result) if times_h is None else np.asarray(times_h, dtype=np.float64)
    columns = recorder.grid(times)
    columns.update(concentration_columns(result.pk_model, recorder, times))
    return columns


def alarm_names(mask: float) -> str:
    """Bitmask of active alarms -> 'low_reservoir|motor_stall'."""
    bits = int(mask)
    return "|".join(name for bit, name in _ALARM_BITS.items() if bits & (1 << bit))


def write_timeseries_csv(path: Path, result: RunResult, columns: dict[str, FloatArray]) -> None:
    """One row per sample; times as hours and as UTC wall-clock.

    Formatted a column at a time (the same `%.12g` / `%.9g` text and CRLF rows as the csv
    module writes): a per-row writer was ~0.1 s of a one-year `itpump simulate`.
    """
    start = result.scenario.scenario.start
    names = [n for n in columns if n not in ("time_h", "alarm_mask")]
    times = np.asarray(columns["time_h"], dtype=np.float64)
    masks = np.asarray(columns["alarm_mask"])
    alarm_text = {m: alarm_names(m) for m in np.unique(masks).tolist()}
    fields = [
        np.char.mod("%.12g", times).tolist(),
        _utc_stamps(start, times),
        *(np.char.mod("%.9g", np.asarray(columns[n], dtype=np.float64)).tolist() for n in names),
        [alarm_text[m] for m in masks.tolist()],
    ]
    header = ",".join(["time_h", "time_utc", *names, "alarms"])
    with path.open("w", newline="", encoding="utf-8") as fh:
        fh.write(header + "\r\n")
        fh.writelines(",".join(row) + "\r\n" for row in zip(*fields, strict=True))


def _utc_stamps(start: dt.datetime, times_h: FloatArray) -> list[str]:
    # As `(start + timedelta(hours=t)).strftime("%Y-%m-%dT%H:%M:%SZ")` (start's own wall clock,
    # offsets rounded to the microsecond, the stamp truncated to the second), vectorised.
    base = np.datetime64(start.replace(tzinfo=None), "us")
    offsets_us = np.round(times_h * 3_600_000_000.0).astype("timedelta64[us]")
    stamps = np.datetime_as_string((base + offsets_us).astype("datetime64[s]"), unit="s")
    return [f"{s}Z" for s in stamps.tolist()]


def first_truly_empty_h(result: RunResult) -> float | None:
    """First time the true reservoir volume reached zero after holding drug."""
    recorder = result.pump.recorder
    assert recorder is not None
    had_drug = False
    for t, v in zip(recorder.truth_t_h, recorder.truth_reservoir_ml, strict=True):
        if v > 0:
            had_drug = True
        elif had_drug:
            return t
    return None


def first_alarm_h(result: RunResult, alarm: str) -> float | None:
    """First time an alarm was raised."""
    recorder = result.pump.recorder
    assert recorder is not None
    return next((a.t_h for a in recorder.alarm_transitions if a.alarm == alarm and a.raised), None)


def summary(result: RunResult) -> dict[str, Any]:
    """Machine-readable summary of a run."""
    pump = result.pump
    truth = pump.truth()
    ledger = truth.ledger
    status = pump.firmware.status()
    recorder = pump.recorder
    assert recorder is not None
    start = result.scenario.scenario.start

    def stamp(t_h: float | None) -> str | None:
        if t_h is None:
            return None
        return (start + dt.timedelta(hours=t_h)).strftime("%Y-%m-%dT%H:%M:%SZ")

    filled = ledger.filled_mcg
    mass_balance: dict[str, float] = {
        "filled": filled,
        "in_reservoir": ledger.in_reservoir_mcg,
        "in_catheter_and_tubing": ledger.in_path_mcg,
        "delivered_to_csf": ledger.to_csf_mcg,
        "lost_to_tissue": ledger.to_tissue_mcg,
        "aspirated_at_refill": ledger.aspirated_mcg,
    }
    if ledger.explanted_mcg:
        # Only after a catheter revision: runs without one keep their summary as it was.
        mass_balance["explanted_with_catheter"] = ledger.explanted_mcg
    mass_balance["relative_imbalance"] = abs(ledger.imbalance_mcg) / filled if filled else 0.0
    empty_h = first_truly_empty_h(result)
    low_h = first_alarm_h(result, "low_reservoir")
    return {
        "scenario": result.scenario.scenario.name,
        "description": result.scenario.scenario.description,
        "profile": result.profile.model,
        "serial": pump.serial,
        "seed": result.seed,
        "start_utc": stamp(0.0),
        "duration_h": result.scenario.end_h,
        "wall_time_s": round(result.wall_s, 4),
        "simpy_events": result.env.events_processed,
        "mass_balance_mcg": mass_balance,
        "final": {
            "reservoir_true_ml": truth.reservoir_ml,
            "reservoir_estimated_ml": status.reservoir_estimate_ml,
            "therapy_state": status.therapy_state.value,
            "battery_remaining_pct": 100 * truth.battery_remaining_fraction,
            "active_alarms": [a.alarm.name.lower() for a in status.alarms],
            "active_faults": list(truth.faults),
        },
        "reservoir_truly_empty_h": empty_h,
        "reservoir_truly_empty_utc": stamp(empty_h),
        "first_low_reservoir_alarm_h": low_h,
        "emptied_before_low_reservoir_alarm": empty_h is not None
        and (low_h is None or empty_h < low_h),
        "alarms": [
            {
                "t_h": a.t_h,
                "utc": stamp(a.t_h),
                "alarm": a.alarm,
                "event": "raised" if a.raised else "cleared",
            }
            for a in recorder.alarm_transitions
        ],
        "actions_performed": sum(1 for o in result.outcomes if o.accepted),
        "refusals": [
            {"t_h": o.t_h, "action": o.index, "type": o.type, "code": o.code, "detail": o.detail}
            for o in result.refusals
        ],
    }


def write_dose_records_csv(path: Path, result: RunResult, obs_times_h: FloatArray) -> int:
    """The drug that truly left the catheter, as NONMEM-style records (see `itpump pk`)."""
    from itpump.emulator.pk.records import write_dose_records

    recorder = result.pump.recorder
    assert recorder is not None
    return write_dose_records(
        path,
        recorder.seg_t0_h,
        recorder.seg_t1_h,
        recorder.seg_csf_mcg_per_h,
        recorder.seg_tissue_mcg_per_h,
        bolus_t_h=recorder.tissue_bolus_t_h,
        bolus_csf_mcg=np.zeros(len(recorder.tissue_bolus_t_h)),
        bolus_tissue_mcg=recorder.tissue_bolus_mcg,
        obs_times_h=obs_times_h,
        weight_kg=result.scenario.patient.weight_kg,
    )


def write_summary_json(path: Path, data: dict[str, Any]) -> None:
    """Pretty JSON, stable key order."""
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def write_report_png(path: Path, result: RunResult, columns: dict[str, FloatArray]) -> None:
    """Reservoir truth vs estimate, daily dose, alarm timeline (and PK if present)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t_days = columns["time_h"] / 24.0
    has_pk = "csf_lumbar_ng_per_ml" in columns
    nrows = 4 if has_pk else 3
    fig, axes = plt.subplots(
        nrows,
        1,
        figsize=(11, 2.6 * nrows + 1),
        sharex=True,
        gridspec_kw={"height_ratios": [3, 2, 1] + ([3] if has_pk else [])},
    )
    ax = axes[0]
    ax.plot(t_days, columns["reservoir_true_ml"], label="true volume", color="tab:blue")
    ax.plot(
        t_days,
        columns["reservoir_estimated_ml"],
        label="pump estimate",
        color="tab:orange",
        linestyle="--",
    )
    threshold = result.pump.firmware.status().low_reservoir_threshold_ml
    ax.axhline(
        threshold,
        color="grey",
        linewidth=0.8,
        linestyle=":",
        label=f"low-reservoir alarm {threshold:g} mL",
    )
    ax.set_ylabel("reservoir (mL)")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"{result.scenario.scenario.name} - {result.profile.model}, seed {result.seed}")

    ax = axes[1]
    days = np.arange(0, math.ceil(result.scenario.end_h / 24.0) + 1) * 24.0
    recorder = result.pump.recorder
    assert recorder is not None
    t, csf, tissue = recorder.cumulative_points()
    if len(t):
        cum_csf = interp_right(days, t, csf, left=0.0)
        cum_tis = interp_right(days, t, tissue, left=0.0)
        ax.bar(
            days[:-1] / 24.0,
            np.diff(cum_csf),
            width=0.9,
            align="edge",
            label="to CSF (catheter tip)",
            color="tab:green",
        )
        if cum_tis[-1] > 0:
            ax.bar(
                days[:-1] / 24.0,
                np.diff(cum_tis),
                width=0.9,
                align="edge",
                bottom=np.diff(cum_csf),
                label="to tissue",
                color="tab:red",
            )
    ax.set_ylabel("true dose (mcg/day)")
    ax.legend(loc="upper right", fontsize=8)

    ax = axes[2]
    names = [a.name.lower() for a in AlarmId]
    for row, name in enumerate(names):
        bit = next(b for b, n in _ALARM_BITS.items() if n == name)
        active = (columns["alarm_mask"].astype(np.int64) >> bit) & 1
        ax.fill_between(
            t_days,
            row - 0.4,
            row + 0.4,
            where=active.astype(bool),
            step="post",
            color="tab:red"
            if name in ("empty_reservoir", "end_of_service", "motor_stall", "memory_error")
            else "tab:orange",
        )
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_ylabel("alarms")

    if has_pk:
        ax = axes[3]
        for key, label in (
            ("csf_lumbar_ng_per_ml", "CSF lumbar"),
            ("csf_cisternal_ng_per_ml", "CSF cisternal"),
            ("effect_ng_per_ml", "effect site"),
            ("plasma_ng_per_ml", "plasma"),
        ):
            if key in columns:
                ax.plot(t_days, columns[key], label=label)
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_ylabel("conc. (ng/mL)")
        ax.legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("day")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
