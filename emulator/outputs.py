"""What a scenario run leaves on disk: timeseries.csv, summary.json, report.png."""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from itpump.emulator.patient import concentration_columns
from itpump.emulator.pk import thresholds
from itpump.emulator.recorder import FloatArray
from itpump.emulator.runner import RunResult
from itpump.emulator.scenario import RefillAction
from itpump.protocol.codes import AlarmId, EventCode

_ALARM_BITS = {int(a): a.name.lower() for a in AlarmId}



LAST_STAMP = "9999-12-31T23:59:59Z"
"""What a time beyond the calendar is written as ("at or after"), as the wire saturates its
dates: a pump projecting its reservoir at 0.001 mcg/day projects past year 9999."""


def utc_stamp(start: dt.datetime, t_h: float | None) -> str | None:
    """ISO 8601 UTC of ``start`` + ``t_h`` hours; None stays None; beyond 9999, LAST_STAMP."""
    if t_h is None:
        return None
    try:
        return (start + dt.timedelta(hours=t_h)).strftime("%Y-%m-%dT%H:%M:%SZ")
    except OverflowError:
        return LAST_STAMP


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


@dataclass(frozen=True, slots=True)
class RunReferences:
    """The reference levels a run's concentrations are read against, or why there are none."""

    levels: thresholds.ReferenceLevels | None
    no_pk_drug: str | None = None  # the drug filled that has no PK model
    no_pk_from_h: float = 0.0  # when it was filled

    def no_pk_note(self, start: dt.datetime) -> str | None:
        """'no PK model for morphine' (with 'from <date>' after the start), None when every
        drug that reached the patient has the run's PK model."""
        if self.no_pk_drug is None:
            return None
        note = f"no PK model for {self.no_pk_drug}"
        if self.no_pk_from_h > 0:
            when = start + dt.timedelta(hours=self.no_pk_from_h)
            note += f" from {when:%Y-%m-%d %H:%M}"
        return note


def other_drug_reached_h(result: RunResult) -> float | None:
    """When drug without the PK model first reached the patient (left the tip or reached
    tissue), from the recorded history; None if it never did (or before what is kept)."""
    recorder = result.pump.recorder
    if recorder is None:
        return None
    times = [
        t0
        for t0, csf, pk_csf, tissue, pk_tissue in zip(
            recorder.seg_t0_h,
            recorder.seg_csf_mcg_per_h,
            recorder.seg_pk_csf_mcg_per_h,
            recorder.seg_tissue_mcg_per_h,
            recorder.seg_pk_tissue_mcg_per_h,
            strict=True,
        )
        if pk_csf < csf or pk_tissue < tissue
    ][:1]
    times += [
        t
        for t, mass, pk_mass in zip(
            recorder.tissue_bolus_t_h,
            recorder.tissue_bolus_mcg,
            recorder.tissue_bolus_pk_mcg,
            strict=True,
        )
        if pk_mass < mass
    ][:1]
    return min(times) if times else None


def run_references(result: RunResult) -> RunReferences:
    """The reference levels of the PK model the run's patient had (`RunResult.pk_model`).

    The whole run has one model (the label's baclofen model when any drug filled has it, fed
    that drug's mass only): its levels, and the first drug filled without one with when it
    reached the patient (its mass is in the doses, not in the concentrations). Without a
    model, no levels, naming the first accepted fill of a drug without one.
    """
    library = result.profile.firmware_config().drug_library
    fills = [
        (o.t_h, action.drug)
        for o in result.outcomes
        if o.accepted
        and isinstance(action := result.scenario.actions[o.index - 1], RefillAction)
    ]
    if result.pk_model is not None:
        levels = thresholds.BACLOFEN  # the model the runner builds
        for _, drug in fills:
            entry = library.find(drug)
            if entry is not None and (found := thresholds.for_pk_model(entry.pk_model)):
                levels = found
                break
        others = result.drugs_without_pk
        if not others:
            return RunReferences(levels)
        drug, filled_h = others[0]
        reached_h = other_drug_reached_h(result)
        return RunReferences(levels, drug, filled_h if reached_h is None else reached_h)
    for t_h, drug in fills:
        entry = library.find(drug)
        if entry is None or thresholds.for_pk_model(entry.pk_model) is None:
            return RunReferences(None, drug, t_h)
    drugs = [a.drug for a in result.scenario.actions if isinstance(a, RefillAction)]
    return RunReferences(None, drugs[0] if drugs else None, 0.0)


#: Exposure grid step: finer than any PK time constant (CSF half-life 1.51 h, a reservoir
#: dump's rise of minutes), so peaks and hours do not depend on the output sample interval.
EXPOSURE_STEP_H = 5.0 / 60.0
#: Bound on the grid's points (a 7-year run would be 735,000 at 5 min): longer runs get a
#: coarser step, plus the exact instants where the input changes.
MAX_EXPOSURE_POINTS = 200_000


def exposure_times_h(result: RunResult) -> FloatArray:
    """Where exposure is computed: a 5-minute grid over the run (coarser only past
    `MAX_EXPOSURE_POINTS`), plus every instant the delivery to the patient changed and a few
    minutes after each (a dump or bolus peaks within minutes), independent of the scenario's
    `sample_interval`."""
    end = result.scenario.end_h
    step = max(EXPOSURE_STEP_H, end / MAX_EXPOSURE_POINTS)
    grid = np.arange(0.0, end, step, dtype=np.float64)
    recorder = result.pump.recorder
    assert recorder is not None
    changes = np.concatenate(
        [
            np.asarray(recorder.seg_t0_h, dtype=np.float64),
            np.asarray(recorder.seg_t1_h, dtype=np.float64),
            np.asarray(recorder.tissue_bolus_t_h, dtype=np.float64),
        ]
    )
    if changes.size > MAX_EXPOSURE_POINTS:
        changes = np.array([], dtype=np.float64)  # a served years-long run: the grid alone
    after = (changes[:, None] + np.array([0.0, 0.25, 0.5, 1.0])[None, :] * step).ravel()
    times = np.unique(np.concatenate([grid, after, [end]]))
    lo = recorder.start_h if recorder.start_h > 0 else 0.0
    return times[(times >= lo) & (times <= end)]


def exposure(result: RunResult, columns: dict[str, FloatArray] | None = None) -> dict[str, Any]:
    """Plasma and lumbar CSF against the reference levels of the drug's PK model
    (`emulator/pk/thresholds.py`); all null, naming the drug, for a drug without one.

    Computed from the PK model on `exposure_times_h` (5-minute grid plus the instants
    delivery changed), not at the output samples: an overdose between two hourly samples
    counts. Each point counts for the interval that follows it. `columns`, when given, must
    hold those times (tests pass their own).
    """
    start = result.scenario.scenario.start
    refs = run_references(result)
    if refs.levels is None:
        return _no_pk_exposure(refs)
    if columns is None:
        columns = timeseries(result, exposure_times_h(result))
    levels = refs.levels
    times = np.asarray(columns["time_h"], dtype=np.float64)
    plasma = np.asarray(columns["plasma_ng_per_ml"], dtype=np.float64)
    lumbar = np.asarray(columns["csf_lumbar_ng_per_ml"], dtype=np.float64)
    widths = np.diff(times, append=times[-1])

    def stamp(t_h: float | None) -> str | None:
        return utc_stamp(start, t_h)

    def first(mask: npt.NDArray[np.bool_]) -> float | None:
        hits = np.flatnonzero(mask)
        return float(times[hits[0]]) if len(hits) else None

    cns = plasma >= levels.plasma_cns_depression_ng_per_ml
    severe = plasma >= levels.plasma_severe_toxicity_ng_per_ml
    high = lumbar > levels.csf_high_ng_per_ml
    # Below the range only counts once the patient was in it: not the first hours of therapy.
    reached = np.maximum.accumulate(lumbar >= levels.csf_low_ng_per_ml)
    low = reached & (lumbar < levels.csf_low_ng_per_ml)
    peak = int(np.argmax(plasma))
    peak_ng_per_ml = finite_or_none(float(plasma[peak]))
    cns_h = first(cns)
    return {
        "reference_levels_of": levels.pk_model,
        # Another drug reached the patient: its mass is not in these figures.
        "no_pk_model_for": refs.no_pk_drug,
        "plasma_peak_ng_per_ml": peak_ng_per_ml,
        "plasma_peak_utc": None if peak_ng_per_ml is None else stamp(float(times[peak])),
        "plasma_cns_depression_threshold_ng_per_ml": levels.plasma_cns_depression_ng_per_ml,
        "plasma_severe_toxicity_threshold_ng_per_ml": levels.plasma_severe_toxicity_ng_per_ml,
        "plasma_above_cns_depression_h": float(widths[cns].sum()),
        "plasma_above_cns_depression_first_utc": stamp(cns_h),
        "plasma_above_severe_toxicity_h": float(widths[severe].sum()),
        "csf_lumbar_peak_ng_per_ml": finite_or_none(float(lumbar.max())),
        "csf_therapeutic_range_ng_per_ml": [levels.csf_low_ng_per_ml, levels.csf_high_ng_per_ml],
        "csf_above_range_h": float(widths[high].sum()),
        "csf_above_range_first_utc": stamp(first(high)),
        "csf_below_range_h": float(widths[low].sum()),
        "csf_below_range_first_utc": stamp(first(low)),
        "systemic_overdose": cns_h is not None,
    }


def _no_pk_exposure(refs: RunReferences) -> dict[str, Any]:
    """exposure() of a run without a PK model: the same keys, every level and figure null."""
    keys = (
        "plasma_peak_ng_per_ml",
        "plasma_peak_utc",
        "plasma_cns_depression_threshold_ng_per_ml",
        "plasma_severe_toxicity_threshold_ng_per_ml",
        "plasma_above_cns_depression_h",
        "plasma_above_cns_depression_first_utc",
        "plasma_above_severe_toxicity_h",
        "csf_lumbar_peak_ng_per_ml",
        "csf_therapeutic_range_ng_per_ml",
        "csf_above_range_h",
        "csf_above_range_first_utc",
        "csf_below_range_h",
        "csf_below_range_first_utc",
        "systemic_overdose",
    )
    return {
        "reference_levels_of": None,
        "no_pk_model_for": refs.no_pk_drug,
        **dict.fromkeys(keys),
    }


def refill_discrepancies(result: RunResult) -> list[dict[str, float]]:
    """The pump's aspiration-discrepancy checks that failed (REFILL_DISCREPANCY in its event
    log): at which refill (`t_h`), the residual it expected, what was aspirated, the tolerance.

    The log entry carries the pump's clock, which a power-on reset or set_clock moves; the
    refill it belongs to is the REFILL entry just before it, and REFILL entries pair with the
    accepted refill actions counted from the end (the log is a ring: old entries drop first).
    """
    entries = result.pump.firmware.log.entries()
    refills = [o.t_h for o in result.outcomes if o.accepted and o.type == "refill"]
    refill_entries = [e.index for e in entries if e.code is EventCode.REFILL]
    refill_t_h = dict(zip(reversed(refill_entries), reversed(refills), strict=False))
    found = []
    for entry in entries:
        if entry.code is EventCode.REFILL_DISCREPANCY and entry.index - 1 in refill_t_h:
            expected_ml, aspirated_ml, tolerance_ml = entry.args[:3]
            found.append(
                {
                    "t_h": refill_t_h[entry.index - 1],
                    "expected_ml": expected_ml,
                    "aspirated_ml": aspirated_ml,
                    "tolerance_ml": tolerance_ml,
                }
            )
    return found


def finite_or_none(value: float) -> float | None:
    """`value`, or None (JSON null) when it is NaN or infinite: a drug without a PK model has
    no concentrations, and a bare NaN is not JSON (strict parsers refuse the whole file)."""
    return value if math.isfinite(value) else None


def summary(result: RunResult, columns: dict[str, FloatArray] | None = None) -> dict[str, Any]:
    """Machine-readable summary of a run; `columns` (from `timeseries`) adds the patient's
    exposure against the toxicity and therapeutic levels (computed when not given)."""
    pump = result.pump
    truth = pump.truth()
    ledger = truth.ledger
    status = pump.firmware.status()
    recorder = pump.recorder
    assert recorder is not None
    start = result.scenario.scenario.start

    def stamp(t_h: float | None) -> str | None:
        return utc_stamp(start, t_h)

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
    discrepancies = [{**d, "utc": stamp(d["t_h"])} for d in refill_discrepancies(result)]
    warnings = [
        f"{d['utc']}: aspiration discrepancy at refill: {d['aspirated_ml']:.2f} mL aspirated, "
        f"{d['expected_ml']:.2f} mL expected (tolerance {d['tolerance_ml']:.2f} mL)"
        for d in discrepancies
    ]
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
        "warnings": warnings,
        # The dates the pump showed after each refill, program and interrogation (what a
        # clinic books the next refill from).
        "projections": [
            {
                "t_h": o.t_h,
                "utc": stamp(o.t_h),
                "after": o.type,
                "low_reservoir_utc": stamp(o.projected_low_reservoir_h),
                "empty_utc": stamp(o.projected_empty_h),
            }
            for o in result.outcomes
            if o.accepted and o.type in ("refill", "program", "interrogate")
        ],
        "refill_discrepancies": discrepancies,
        "actions_performed": sum(1 for o in result.outcomes if o.accepted),
        "refusals": [
            {"t_h": o.t_h, "action": o.index, "type": o.type, "code": o.code, "detail": o.detail}
            for o in result.refusals
        ],
        # Its own fine grid, not `columns`: peaks and hours must not depend on the samples.
        "exposure": exposure(result),
    }


def write_dose_records_csv(path: Path, result: RunResult, obs_times_h: FloatArray) -> int:
    """The PK-modelled drug (baclofen) that truly left the catheter, as NONMEM-style records
    (see `itpump pk`); another drug filled reaches the patient but not these records."""
    from itpump.emulator.pk.records import write_dose_records

    recorder = result.pump.recorder
    assert recorder is not None
    return write_dose_records(
        path,
        recorder.seg_t0_h,
        recorder.seg_t1_h,
        recorder.seg_pk_csf_mcg_per_h,
        recorder.seg_pk_tissue_mcg_per_h,
        bolus_t_h=recorder.tissue_bolus_t_h,
        bolus_csf_mcg=np.zeros(len(recorder.tissue_bolus_t_h)),
        bolus_tissue_mcg=recorder.tissue_bolus_pk_mcg,
        obs_times_h=obs_times_h,
        weight_kg=result.scenario.patient.weight_kg,
    )


def write_summary_json(path: Path, data: dict[str, Any]) -> None:
    """Pretty JSON, stable key order; strict JSON (a NaN or infinity raises, never written)."""
    path.write_text(json_text(data) + "\n", encoding="utf-8")


def json_text(data: dict[str, Any]) -> str:
    """`data` as indented strict JSON: `allow_nan=False`, so a NaN that slipped into an output
    fails here instead of producing a file that strict parsers (jq, browsers) reject."""
    return json.dumps(data, indent=2, allow_nan=False)


def write_report_png(path: Path, result: RunResult, columns: dict[str, FloatArray]) -> None:
    """The run on one page (emulator/report.py): reservoir, true vs programmed dose, CSF and
    plasma against their reference levels, alarms and actions on a calendar axis."""
    from itpump.emulator.report import report_figure

    figure = report_figure(result, columns)
    figure.savefig(path, dpi=100)
