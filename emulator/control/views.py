"""The dashboard's data views: pure functions from the farm's records to the JSON the page draws.

Nothing here reads the farm, the clock or the network: each view takes plain values (a
`Truth`, a `PumpStatus`, a `Recorder`, capture records) and returns JSON-able data, so every
view is unit-tested on its own (tests/test_dashboard_views.py) and the live layer
(`emulator.control.dashboard`) only decides *when* to call them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from itpump.emulator.capture import CaptureRecord, Direction
from itpump.emulator.conversation import EventKind, decode_records, to_jsonable
from itpump.emulator.patient import concentration_columns
from itpump.emulator.pk import PKModel
from itpump.emulator.pk.parameters import LABEL_CSF_CLEARANCE_ML_PER_H
from itpump.emulator.pump import Truth
from itpump.emulator.recorder import Recorder
from itpump.firmware_stubs.event_log import LogEntry
from itpump.firmware_stubs.firmware import PumpStatus
from itpump.programmer.models import format_arg
from itpump.protocol.codes import event_args

Row = dict[str, Any]
"""One pump's line of the overview (JSON-able)."""

SILENT = "silent"
"""Therapy state shown for a pump that does not answer (no power)."""

ROW_SORT_KEYS = (
    "serial",
    "model",
    "t_h",
    "therapy",
    "alarm_count",
    "reservoir_reported_ml",
    "reservoir_true_ml",
    "reservoir_gap_ml",
    "battery_pct",
)
"""Columns the overview sorts by (the page sorts in the browser; the API sorts the same way)."""


@dataclass(frozen=True, slots=True)
class Band:
    """A documented concentration range drawn behind a chart, with where it comes from."""

    column: str
    low_ng_per_ml: float
    high_ng_per_ml: float
    label: str
    source: str


# Steady-state CSF concentration = dose rate / CSF clearance (docs/pk.md): the monograph's
# 50-1200 mcg/day with the label's 30 mL/h. The effect site tends to the tip concentration at
# steady state, and with the tip at the lumbar sampling level (the default) that is the lumbar
# value, so both share the band.
_MCG_PER_DAY_TO_NG_PER_ML = 1000.0 / 24.0 / LABEL_CSF_CLEARANCE_ML_PER_H
_CSF_LOW = 50.0 * _MCG_PER_DAY_TO_NG_PER_ML
_CSF_HIGH = 1200.0 * _MCG_PER_DAY_TO_NG_PER_ML
_CSF_SOURCE = (
    "steady state of the monograph's 50-1200 mcg/day at the label's CSF clearance of "
    "30 mL/h (docs/pk.md)"
)

BANDS: tuple[Band, ...] = (
    Band("csf_lumbar_ng_per_ml", _CSF_LOW, _CSF_HIGH, "therapeutic CSF range", _CSF_SOURCE),
    Band("effect_ng_per_ml", _CSF_LOW, _CSF_HIGH, "therapeutic CSF range", _CSF_SOURCE),
    Band(
        "plasma_ng_per_ml",
        0.0,
        5.0,
        "label plasma range",
        "the label: plasma 0-5 ng/mL during intrathecal administration (docs/pk.md)",
    ),
)
"""The bands the concentration charts draw (one per concentration shown)."""


def _round(value: float, digits: int) -> float:
    # Rounded values keep rows equal when nothing visible changed, so the live stream sends
    # nothing for them (and fewer bytes when it does).
    return round(float(value), digits)


def _iso(epoch_s: float | None) -> str | None:
    if epoch_s is None:
        return None
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------- overview
def overview_row(
    *,
    serial: str,
    model: str,
    url: str,
    t_h: float,
    head_placed: bool,
    truth: Truth,
    status: PumpStatus | None,
) -> Row:
    """One pump's overview line; `status` None means the pump is silent (no power)."""
    reported = None if status is None else status.reservoir_estimate_ml
    alarms = [] if status is None else sorted(a.alarm.name.lower() for a in status.alarms)
    critical = status is not None and any(a.severity.value == "critical" for a in status.alarms)
    return {
        "serial": serial,
        "model": model,
        "url": url,
        "t_h": _round(t_h, 3),
        "therapy": SILENT if status is None else status.therapy_state.value,
        "alarms": alarms,
        "alarm_count": len(alarms),
        "critical": critical,
        "reservoir_reported_ml": None if reported is None else _round(reported, 3),
        "reservoir_true_ml": _round(truth.reservoir_ml, 3),
        "reservoir_gap_ml": None if reported is None else _round(reported - truth.reservoir_ml, 3),
        "battery_pct": _round(truth.battery_remaining_fraction * 100.0, 1),
        "faults": list(truth.faults),
        "head_placed": head_placed,
    }


def filter_rows(rows: Iterable[Row], query: str) -> list[Row]:
    """Rows whose serial, model, URL, therapy state, alarms or faults contain every word of
    `query` (case-insensitive); an empty query keeps every row."""
    words = query.lower().split()
    if not words:
        return list(rows)

    def text(row: Row) -> str:
        parts = [row["serial"], row["model"], row["url"], row["therapy"]]
        return " ".join([*parts, *row["alarms"], *row["faults"]]).lower()

    return [row for row in rows if all(word in text(row) for word in words)]


def sort_rows(rows: Iterable[Row], key: str, *, descending: bool = False) -> list[Row]:
    """Rows ordered by one of `ROW_SORT_KEYS`; missing values (a silent pump) go last either
    way, and ties keep serial order."""
    if key not in ROW_SORT_KEYS:
        raise ValueError(f"sort key must be one of {', '.join(ROW_SORT_KEYS)} (got {key!r})")
    by_serial = sorted(rows, key=lambda row: row["serial"])
    present = [row for row in by_serial if row[key] is not None]
    missing = [row for row in by_serial if row[key] is None]
    return sorted(present, key=lambda row: row[key], reverse=descending) + missing


def row_changes(
    sent: Mapping[str, Row], rows: Sequence[Row], limit: int, start: int = 0
) -> tuple[list[Row], int]:
    """The rows that differ from what the browser was `sent`, at most `limit` of them.

    The scan starts at index `start` and wraps around, and the returned cursor is where the
    next scan should start: when more than `limit` rows change every time (time running on
    1000 pumps) each row still gets its turn, instead of the first `limit` forever.
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1 (got {limit})")
    count = len(rows)
    if count == 0:
        return [], 0
    changed: list[Row] = []
    index = start % count
    for step in range(count):
        i = (index + step) % count
        row = rows[i]
        if sent.get(row["serial"]) != row:
            changed.append(row)
            if len(changed) == limit:
                return changed, (i + 1) % count
    return changed, index


def summary(rows: Sequence[Row]) -> dict[str, int]:
    """Counts for the overview's header line."""
    return {
        "pumps": len(rows),
        "alarming": sum(1 for row in rows if row["alarm_count"]),
        "faulted": sum(1 for row in rows if row["faults"]),
        "silent": sum(1 for row in rows if row["therapy"] == SILENT),
    }


# ---------------------------------------------------------------------- one pump
def _cumulative_step(times: np.ndarray, t: np.ndarray, rate_per_h: np.ndarray) -> np.ndarray:
    """Integral of a step function (value `rate_per_h[i]` from `t[i]` on) at `times`."""
    if len(t) == 0:
        return np.zeros_like(times)
    area = np.concatenate([[0.0], np.cumsum(rate_per_h[:-1] * np.diff(t))])
    i = np.clip(np.searchsorted(t, times, side="right") - 1, 0, len(t) - 1)
    return np.asarray(area[i] + rate_per_h[i] * np.maximum(times - t[i], 0.0))


def _column(values: np.ndarray, digits: int) -> list[float | None]:
    # Vectorised rounding: a Python round() per value was most of a pump page's cost.
    out: list[float | None] = np.round(np.asarray(values, dtype=np.float64), digits).tolist()
    if not np.isfinite(values).all():
        out = [None if not np.isfinite(v) else r for v, r in zip(values, out, strict=True)]
    return out


def alarm_intervals(recorder: Recorder) -> list[dict[str, Any]]:
    """Each alarm's raised-to-cleared spans (`end_h` None while still active), oldest first."""
    open_since: dict[str, float] = {}
    spans: list[dict[str, Any]] = []
    for change in recorder.alarm_transitions:
        if change.raised:
            open_since.setdefault(change.alarm, change.t_h)
        elif change.alarm in open_since:
            start_h = open_since.pop(change.alarm)
            spans.append({"alarm": change.alarm, "start_h": start_h, "end_h": change.t_h})
    spans.extend({"alarm": a, "start_h": t, "end_h": None} for a, t in open_since.items())
    spans.sort(key=lambda span: (span["start_h"], span["alarm"]))
    return spans


def history_view(
    recorder: Recorder,
    now_h: float,
    concentration_mcg_per_ml: float,
    *,
    pk_model: PKModel | None = None,
    points: int = 240,
) -> dict[str, Any]:
    """Chart columns over the pump's recorded history, on `points` evenly spaced times.

    Reservoir: true (hardware) and reported (firmware estimate). Dose: drug that truly left
    the catheter tip into CSF, and the dose the pump programmed (its commanded volume times
    the concentration it reports now, so a concentration change at a refill is drawn at the
    new concentration). Concentrations from the PK engine fed with the true tip history, with
    the documented bands. Resampling is exact: the recorder's columns are linear or constant
    between recorded points.
    """
    if points < 2:
        raise ValueError(f"points must be >= 2 (got {points})")
    # A bounded recorder (a served pump) holds only its last days: chart what it holds.
    first = max(recorder.truth_t_h[0], recorder.start_h) if recorder.truth_t_h else now_h
    first = min(first, now_h)
    times = np.linspace(first, max(now_h, first + 1e-9), points)
    grid = recorder.grid(times)
    fw_t = np.asarray(recorder.fw_t_h, dtype=np.float64)
    rate_ml_per_h = np.asarray(recorder.fw_rate_ml_per_day, dtype=np.float64) / 24.0
    programmed = _cumulative_step(times, fw_t, rate_ml_per_h) * concentration_mcg_per_ml
    delivered = grid["delivered_csf_mcg"]
    out: dict[str, Any] = {
        "t_h": _column(times, 4),
        "reservoir_true_ml": _column(grid["reservoir_true_ml"], 4),
        "reservoir_reported_ml": _column(grid["reservoir_estimated_ml"], 4),
        "delivered_true_mcg": _column(delivered - delivered[0], 2),
        "programmed_mcg": _column(programmed - programmed[0], 2),
        "alarms": alarm_intervals(recorder),
        "bands": [
            {
                "column": b.column,
                "low": round(b.low_ng_per_ml, 2),
                "high": round(b.high_ng_per_ml, 2),
                "label": b.label,
                "source": b.source,
            }
            for b in BANDS
        ],
    }
    if pk_model is not None:
        conc = concentration_columns(pk_model, recorder, times)
        for band in BANDS:
            out[band.column] = _column(conc[band.column], 3)
    return out


def event_log_view(entries: Sequence[LogEntry], limit: int = 50) -> list[dict[str, Any]]:
    """The pump's event log, newest first, at most `limit` entries."""
    return [
        {
            "index": entry.index,
            "rtc": _iso(entry.rtc_s),
            "code": entry.code.name.lower(),
            "args": [round(a, 4) for a in entry.args],
            # Labelled as `itpump ctl log` shows them: the same table, the same formatting.
            "labels": [
                format_arg(arg, value)
                for arg, value in zip(
                    event_args(int(entry.code), entry.args), entry.args, strict=True
                )
            ],
        }
        for entry in list(entries)[::-1][:limit]
    ]


def _brief(value: Any, width: int) -> str:
    text = json.dumps(value, separators=(", ", ": "), default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def conversation_view(
    records: Iterable[CaptureRecord], limit: int = 100, width: int = 160
) -> list[dict[str, Any]]:
    """The telemetry conversation in `records` decoded (the capture machinery's decoder),
    newest last, at most `limit` items; each message shortened to `width` characters."""
    items: list[dict[str, Any]] = []
    for event in decode_records(records):
        message: Any = None
        if event.message is not None:
            message = to_jsonable(event.message)
            if isinstance(message, dict):
                message = {k: v for k, v in message.items() if k != "type"}
        items.append(
            {
                "sim_time_h": round(event.sim_time_h, 6),
                "direction": "to_pump" if event.direction is Direction.TO_PUMP else "from_pump",
                "name": event.name,
                "ok": event.kind is EventKind.FRAME and event.error is None,
                "counter": event.counter,
                "detail": event.error if message is None else _brief(message, width),
            }
        )
    return items[-limit:]
