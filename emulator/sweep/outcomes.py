"""One finished run -> one row of outcome metrics (definitions: docs/sweep.md).

Every column is defined here once (`OUTCOME_COLUMNS`), with its type, so each Parquet part of
a sweep has the same schema whether its runs succeeded or failed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from itpump.emulator.outputs import first_alarm_h, first_truly_empty_h
from itpump.emulator.patient import concentration_columns
from itpump.emulator.recorder import FloatArray, interp_right
from itpump.emulator.runner import RunResult
from itpump.emulator.sweep.spec import Thresholds

# name -> arrow type name ("float64", "int64", "bool", "string"); None/NaN = not applicable.
OUTCOME_COLUMNS: dict[str, str] = {
    "duration_h": "float64",
    "first_low_reservoir_alarm_h": "float64",
    "first_empty_reservoir_alarm_h": "float64",
    "reservoir_truly_empty_h": "float64",
    "emptied_before_low_reservoir_alarm": "bool",
    "low_alarm_margin_h": "float64",
    "reservoir_true_at_low_alarm_ml": "float64",
    "true_dose_mcg": "float64",
    "true_pumped_mcg": "float64",
    "delivered_to_csf_mcg": "float64",
    "lost_to_tissue_mcg": "float64",
    "reported_dose_mcg": "float64",
    "dose_error_pct": "float64",
    "mass_imbalance_relative": "float64",
    "event_h": "float64",
    "csf_reference_ng_per_ml": "float64",
    "csf_lumbar_min_ng_per_ml": "float64",
    "csf_lumbar_max_ng_per_ml": "float64",
    "csf_lumbar_max_h": "float64",
    "plasma_max_ng_per_ml": "float64",
    "plasma_max_h": "float64",
    "time_to_csf_half_h": "float64",
    "hours_csf_below_withdrawal": "float64",
    "longest_withdrawal_h": "float64",
    "hours_csf_above_high": "float64",
    "hours_plasma_above_threshold": "float64",
    "refusals": "int64",
    "refusal_codes": "string",
    "program_refused": "bool",
    "alarms_raised": "string",
    "simpy_events": "int64",
}


def _reported_dose_mcg(result: RunResult, entered: list[tuple[float, float]]) -> float:
    """Drug the pump believes it moved: each fall of its reservoir estimate (not the jumps at a
    refill) times the concentration entered at the last refill before it (`entered`: accepted
    refills as (t_h, entered mcg/mL), in time order)."""
    recorder = result.pump.recorder
    assert recorder is not None
    if not entered:
        return 0.0
    t = np.asarray(recorder.fw_t_h)
    v = np.asarray(recorder.fw_reservoir_ml)
    fall = np.maximum(v[:-1] - v[1:], 0.0)
    fall[np.diff(t) <= 0] = 0.0  # same-instant steps are refills/aspirations, not delivery
    refill_t = np.asarray([e[0] for e in entered])
    conc = np.asarray([e[1] for e in entered])
    which = np.searchsorted(refill_t, t[:-1], side="right") - 1
    at_time = np.where(which >= 0, conc[np.clip(which, 0, None)], 0.0)
    return float(np.sum(fall * at_time))


def _longest_true_run(mask: np.ndarray[Any, np.dtype[np.bool_]]) -> int:
    if not mask.any():
        return 0
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return int(np.max(edges[1::2] - edges[0::2]))


def _first_crossing_below(
    times: FloatArray, values: FloatArray, level: float, after_h: float
) -> float | None:
    """First time after `after_h` the curve goes below `level` (linear between samples)."""
    start = int(np.searchsorted(times, after_h, side="right"))
    below = np.flatnonzero(values[start:] < level)
    if not len(below):
        return None
    i = start + int(below[0])
    if i == 0 or values[i - 1] < level:
        return float(times[i])
    t0, t1, v0, v1 = times[i - 1], times[i], values[i - 1], values[i]
    return float(t0 + (v0 - level) / (v0 - v1) * (t1 - t0))


def outcome_row(
    result: RunResult,
    thresholds: Thresholds,
    event_h: float | None,
    entered: list[tuple[float, float]],
) -> dict[str, Any]:
    """The outcome metrics of a finished run (`event_h`: first fault onset, if any;
    `entered`: the concentrations entered at accepted refills, as (t_h, mcg/mL))."""
    recorder = result.pump.recorder
    assert recorder is not None
    ledger = result.pump.truth().ledger
    end_h = result.scenario.end_h
    empty_h = first_truly_empty_h(result)
    low_h = first_alarm_h(result, "low_reservoir")
    true_dose = ledger.to_csf_mcg + ledger.to_tissue_mcg
    # What truly left the reservoir (priming included, like the pump's own estimate).
    pumped = ledger.filled_mcg - ledger.aspirated_mcg - ledger.in_reservoir_mcg
    reported = _reported_dose_mcg(result, entered)
    row: dict[str, Any] = {
        "duration_h": end_h,
        "first_low_reservoir_alarm_h": low_h,
        "first_empty_reservoir_alarm_h": first_alarm_h(result, "empty_reservoir"),
        "reservoir_truly_empty_h": empty_h,
        "emptied_before_low_reservoir_alarm": empty_h is not None
        and (low_h is None or empty_h < low_h),
        "low_alarm_margin_h": None if empty_h is None or low_h is None else empty_h - low_h,
        "reservoir_true_at_low_alarm_ml": None
        if low_h is None
        else float(interp_right([low_h], recorder.truth_t_h, recorder.truth_reservoir_ml)[0]),
        "true_dose_mcg": true_dose,
        "true_pumped_mcg": pumped,
        "delivered_to_csf_mcg": ledger.to_csf_mcg,
        "lost_to_tissue_mcg": ledger.to_tissue_mcg,
        "reported_dose_mcg": reported,
        "dose_error_pct": 100.0 * (pumped - reported) / reported if reported > 0 else None,
        "mass_imbalance_relative": abs(ledger.imbalance_mcg) / ledger.filled_mcg
        if ledger.filled_mcg
        else 0.0,
        "event_h": event_h,
        "refusals": len(result.refusals),
        "refusal_codes": "|".join(sorted({o.code for o in result.refusals})),
        "program_refused": any(o.type == "program" for o in result.refusals),
        "alarms_raised": "|".join(
            sorted({a.alarm for a in recorder.alarm_transitions if a.raised})
        ),
        "simpy_events": result.env.events_processed,
    }
    row.update(_concentration_outcomes(result, thresholds, event_h))
    return row


def _concentration_outcomes(
    result: RunResult, thresholds: Thresholds, event_h: float | None
) -> dict[str, Any]:
    recorder = result.pump.recorder
    assert recorder is not None
    end_h = result.scenario.end_h
    step_h = thresholds.sample_interval_h
    times = np.arange(math.floor(end_h / step_h + 1e-9) + 1, dtype=np.float64) * step_h
    extra = [] if event_h is None or event_h > end_h else [event_h]
    conc = concentration_columns(result.pk_model, recorder, np.concatenate([times, extra]))
    csf = conc["csf_lumbar_ng_per_ml"][: len(times)]
    plasma = conc["plasma_ng_per_ml"][: len(times)]
    out: dict[str, Any] = {
        "csf_lumbar_max_ng_per_ml": float(csf.max()),
        "csf_lumbar_max_h": float(times[int(csf.argmax())]),
        "plasma_max_ng_per_ml": float(plasma.max()),
        "plasma_max_h": float(times[int(plasma.argmax())]),
        "hours_plasma_above_threshold": float(
            np.count_nonzero(plasma > thresholds.plasma_threshold_ng_per_ml) * step_h
        ),
    }
    # Reference level: just before the event (the level the patient was on), or without an
    # event the median after the settling time (robust to a dry spell shorter than half the run).
    if extra:
        reference = float(conc["csf_lumbar_ng_per_ml"][-1])
    else:
        settled = csf[times >= thresholds.reference_settle_h]
        reference = float(np.median(settled)) if len(settled) else 0.0
    out["csf_reference_ng_per_ml"] = reference
    empty = {
        "csf_lumbar_min_ng_per_ml": None,
        "time_to_csf_half_h": None,
        "hours_csf_below_withdrawal": None,
        "longest_withdrawal_h": None,
        "hours_csf_above_high": None,
    }
    if not reference > 0:
        out.update(empty)
        return out
    low = thresholds.withdrawal_fraction * reference
    # Only count after therapy first reached the withdrawal level: the start-up is not a gap.
    reached = np.flatnonzero(csf >= low)
    if not len(reached):
        out.update(empty)
        return out
    after = csf[int(reached[0]) :]
    below = after < low
    out["csf_lumbar_min_ng_per_ml"] = float(after.min())
    out["hours_csf_below_withdrawal"] = float(np.count_nonzero(below) * step_h)
    out["longest_withdrawal_h"] = float(_longest_true_run(below) * step_h)
    out["hours_csf_above_high"] = float(
        np.count_nonzero(csf > thresholds.csf_high_factor * reference) * step_h
    )
    crossing = None if not extra else _first_crossing_below(times, csf, low, extra[0])
    out["time_to_csf_half_h"] = None if crossing is None else crossing - extra[0]
    return out
