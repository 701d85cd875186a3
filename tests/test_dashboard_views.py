"""The dashboard's data views: pure functions from records to the JSON the page draws."""

from __future__ import annotations

from typing import Any

import pytest

from itpump.emulator.capture import CaptureRecord, Direction
from itpump.emulator.control.views import (
    BANDS,
    alarm_intervals,
    conversation_view,
    event_log_view,
    filter_rows,
    history_view,
    overview_row,
    row_changes,
    sort_rows,
    summary,
)
from itpump.emulator.farm import PortSpec, PumpFarm
from itpump.emulator.recorder import Recorder
from itpump.emulator.scenario import load_scenario
from itpump.firmware_stubs.event_log import LogEntry
from itpump.protocol import messages as m
from itpump.protocol.auth import seeded_nonce_source
from itpump.protocol.codes import EventCode
from itpump.protocol.connection import ProgrammerConnection


def _row(serial: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "serial": serial,
        "model": "peristaltic-20",
        "url": f"socket://127.0.0.1:{7000 + int(serial[-1])}",
        "t_h": 24.0,
        "therapy": "running",
        "alarms": [],
        "alarm_count": 0,
        "critical": False,
        "reservoir_reported_ml": 10.0,
        "reservoir_true_ml": 10.0,
        "reservoir_gap_ml": 0.0,
        "battery_pct": 99.0,
        "faults": [],
        "head_placed": True,
    }
    row.update(values)
    return row


async def test_overview_row_reports_beside_truth_and_a_silent_pump() -> None:
    farm = PumpFarm(load_scenario("clinic-ready"), port=PortSpec("null"), speed=0.0)
    served = farm.pumps[0]
    served.inject("occlusion")
    farm.advance(24.0)
    truth, status = served.truth(), served.reported()
    row = overview_row(
        serial=served.serial,
        model="peristaltic-20",
        url=served.url,
        t_h=truth.t_h,
        head_placed=True,
        truth=truth,
        status=status,
    )
    assert row["therapy"] == "running"
    assert row["faults"] == ["occlusion"]
    assert row["reservoir_true_ml"] == pytest.approx(truth.reservoir_ml, abs=1e-3)
    assert row["reservoir_reported_ml"] == pytest.approx(status.reservoir_estimate_ml, abs=1e-3)
    # The pump believes it delivered a day's 0.4 mL; the occluded catheter let nothing out.
    assert row["reservoir_gap_ml"] == pytest.approx(-0.4, abs=0.01)
    assert row["t_h"] == 48.0
    silent = overview_row(
        serial="X-1", model="m", url="u", t_h=1.0, head_placed=False, truth=truth, status=None
    )
    assert silent["therapy"] == "silent"
    assert silent["reservoir_reported_ml"] is None
    assert silent["reservoir_gap_ml"] is None
    assert silent["alarms"] == []


def test_filter_matches_every_word_in_any_field() -> None:
    rows = [
        _row("P-1", faults=["leak"]),
        _row("P-2", alarms=["low_reservoir"], alarm_count=1),
        _row("P-3", therapy="stopped", faults=["leak"]),
    ]
    assert [r["serial"] for r in filter_rows(rows, "LEAK")] == ["P-1", "P-3"]
    assert [r["serial"] for r in filter_rows(rows, "leak stopped")] == ["P-3"]
    assert [r["serial"] for r in filter_rows(rows, "low_res")] == ["P-2"]
    assert [r["serial"] for r in filter_rows(rows, "7002")] == ["P-2"]  # the port
    assert filter_rows(rows, "   ") == rows


def test_sort_puts_missing_values_last_either_way_and_refuses_unknown_keys() -> None:
    rows = [
        _row("P-3", battery_pct=50.0, reservoir_gap_ml=None),
        _row("P-1", battery_pct=80.0, reservoir_gap_ml=-0.4),
        _row("P-2", battery_pct=50.0, reservoir_gap_ml=0.1),
    ]
    assert [r["serial"] for r in sort_rows(rows, "battery_pct")] == ["P-2", "P-3", "P-1"]
    assert [r["serial"] for r in sort_rows(rows, "battery_pct", descending=True)] == [
        "P-1",
        "P-2",
        "P-3",
    ]
    assert [r["serial"] for r in sort_rows(rows, "reservoir_gap_ml")] == ["P-1", "P-2", "P-3"]
    assert [r["serial"] for r in sort_rows(rows, "reservoir_gap_ml", descending=True)] == [
        "P-2",
        "P-1",
        "P-3",
    ]
    with pytest.raises(ValueError, match="sort key must be one of"):
        sort_rows(rows, "key")


def test_row_changes_sends_only_changes_capped_and_gives_every_row_its_turn() -> None:
    rows = [_row(f"P-{i}") for i in range(5)]
    changed, cursor = row_changes({}, rows, limit=2)
    assert [r["serial"] for r in changed] == ["P-0", "P-1"]
    sent = {r["serial"]: r for r in changed}
    changed, cursor = row_changes(sent, rows, limit=2, start=cursor)
    assert [r["serial"] for r in changed] == ["P-2", "P-3"]
    sent.update((r["serial"], r) for r in changed)
    changed, cursor = row_changes(sent, rows, limit=2, start=cursor)
    assert [r["serial"] for r in changed] == ["P-4"]
    sent.update((r["serial"], r) for r in changed)
    assert row_changes(sent, rows, limit=2, start=cursor)[0] == []
    # Every row changes every time (time running): the scan rotates instead of starving P-4.
    moved = [_row(f"P-{i}", t_h=25.0) for i in range(5)]
    seen: list[str] = []
    cursor = 0
    for _ in range(3):
        changed, cursor = row_changes(sent, moved, limit=2, start=cursor)
        seen += [r["serial"] for r in changed]
    assert seen[:5] == ["P-0", "P-1", "P-2", "P-3", "P-4"]
    with pytest.raises(ValueError, match="limit"):
        row_changes(sent, rows, limit=0)
    assert row_changes({}, [], limit=3) == ([], 0)


def test_summary_counts() -> None:
    rows = [
        _row("P-1", alarm_count=1, alarms=["low_reservoir"]),
        _row("P-2", faults=["leak"]),
        _row("P-3", therapy="silent"),
    ]
    assert summary(rows) == {"pumps": 3, "alarming": 1, "faulted": 1, "silent": 1}


def _recorder() -> Recorder:
    rec = Recorder()
    names = {1: "low_reservoir", 5: "motor_stall"}
    # Truth: 20 mL at 0 h, 19 mL at 10 h, unchanged to 20 h (occluded from 10 h).
    for t, v in ((0.0, 20.0), (10.0, 19.0), (20.0, 19.0)):
        rec.add_truth(t, v, 1.0)
    # Firmware: 2.4 mL/day throughout, estimate falls on; low reservoir from 10 h to 15 h.
    rec.add_firmware(0.0, 20.0, 2.4, 0, names)
    rec.add_firmware(10.0, 19.0, 2.4, 1 << 1, names)
    rec.add_firmware(15.0, 18.5, 2.4, 0, names)
    rec.add_firmware(20.0, 18.0, 2.4, 1 << 5, names)
    rec.add_segment(0.0, 10.0, 50.0, 0.0)  # 500 mcg to CSF, then nothing
    return rec


def test_history_view_is_exact_on_its_grid() -> None:
    view = history_view(_recorder(), 20.0, concentration_mcg_per_ml=500.0, points=21)
    assert view["t_h"][0] == 0.0
    assert view["t_h"][-1] == 20.0
    assert len(view["t_h"]) == 21
    assert view["reservoir_true_ml"][5] == pytest.approx(19.5)
    assert view["reservoir_true_ml"][15] == pytest.approx(19.0)
    assert view["reservoir_reported_ml"][15] == pytest.approx(18.5)
    assert view["reservoir_reported_ml"][-1] == pytest.approx(18.0)
    # Programmed: 0.1 mL/h x 500 mcg/mL = 50 mcg/h throughout; delivered stops at 10 h.
    assert view["programmed_mcg"][-1] == pytest.approx(1000.0)
    assert view["programmed_mcg"][4] == pytest.approx(200.0)
    assert view["delivered_true_mcg"][4] == pytest.approx(200.0)
    assert view["delivered_true_mcg"][-1] == pytest.approx(500.0)
    assert view["alarms"] == [
        {"alarm": "low_reservoir", "start_h": 10.0, "end_h": 15.0},
        {"alarm": "motor_stall", "start_h": 20.0, "end_h": None},
    ]
    assert "csf_lumbar_ng_per_ml" not in view  # no patient model given
    with pytest.raises(ValueError, match="points"):
        history_view(_recorder(), 20.0, 500.0, points=1)


def test_alarm_intervals_keep_a_raise_after_a_clear_apart() -> None:
    rec = _recorder()
    names = {1: "low_reservoir", 5: "motor_stall"}
    rec.add_firmware(21.0, 18.0, 2.4, 1 << 1, names)  # motor_stall clears, low_reservoir again
    spans = alarm_intervals(rec)
    assert spans == [
        {"alarm": "low_reservoir", "start_h": 10.0, "end_h": 15.0},
        {"alarm": "motor_stall", "start_h": 20.0, "end_h": 21.0},
        {"alarm": "low_reservoir", "start_h": 21.0, "end_h": None},
    ]


async def test_history_view_concentrations_follow_the_documented_bands() -> None:
    farm = PumpFarm(load_scenario("clinic-ready"), port=PortSpec("null"), speed=0.0)
    farm.advance(48.0)  # three days at 200 mcg/day: CSF near its steady state
    pump = farm.pumps[0].pump
    assert pump.recorder is not None
    assert pump.patient is not None
    view = history_view(pump.recorder, pump.now_h, 500.0, pk_model=pump.patient.model, points=50)
    bands = {b.column: b for b in BANDS}
    lumbar = view["csf_lumbar_ng_per_ml"][-1]
    # 200 mcg/day / 30 mL/h = 278 ng/mL, inside the 50-1200 mcg/day band (69-1667 ng/mL).
    assert lumbar == pytest.approx(200 / 24 / 30 * 1000, rel=0.02)
    band = bands["csf_lumbar_ng_per_ml"]
    assert band.low_ng_per_ml == pytest.approx(69.44, abs=0.01)
    assert band.high_ng_per_ml == pytest.approx(1666.67, abs=0.01)
    assert band.low_ng_per_ml < lumbar < band.high_ng_per_ml
    assert 0 < view["plasma_ng_per_ml"][-1] < bands["plasma_ng_per_ml"].high_ng_per_ml
    assert [b["column"] for b in view["bands"]] == [b.column for b in BANDS]


def test_event_log_newest_first_and_bounded() -> None:
    entries = [LogEntry(i, 1_767_600_000.0 + i, EventCode.REFILL, (20.0, 500.0)) for i in range(5)]
    view = event_log_view(entries, limit=2)
    assert [e["index"] for e in view] == [4, 3]
    assert view[0] == {
        "index": 4,
        "rtc": "2026-01-05T08:00:04Z",
        "code": "refill",
        "args": [20.0, 500.0],
        "labels": ["volume=20 mL", "concentration=500 mcg/mL"],
    }


def _record(data: bytes, direction: Direction, t_h: float = 24.0) -> CaptureRecord:
    return CaptureRecord(0, "PP20-000001", direction, 0, t_h, data)


def test_conversation_reassembles_split_frames_and_flags_bad_ones() -> None:
    programmer = ProgrammerConnection(seeded_nonce_source(1), key=b"k" * 32)
    frame = programmer.send(m.IdentifyRequest(), 0.0)
    half = len(frame) // 2
    records = [
        _record(frame[:half], Direction.TO_PUMP),
        _record(frame[half:], Direction.TO_PUMP, 24.5),
        _record(b"\x01\x02", Direction.FROM_PUMP),  # bytes before any flag
    ]
    items = conversation_view(records)
    assert items[0]["name"] == "IDENTIFY request"
    assert items[0]["ok"] is True
    assert items[0]["direction"] == "to_pump"
    assert items[0]["sim_time_h"] == 24.5  # stamped where the frame ended
    assert items[0]["detail"].startswith("{")
    assert items[1]["name"] == "garbage"
    assert items[1]["ok"] is False
    assert len(conversation_view(records, limit=1)) == 1
    long = conversation_view(records, width=10)[0]["detail"]
    assert len(long) == 10
    assert long.endswith("…")
