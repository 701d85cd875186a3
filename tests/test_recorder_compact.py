"""A served pump's history does not grow with telemetry requests (issue 11).

Each request brings the pump to now and records a point; on a steady infusion those points
lie on straight lines. A bounded recorder (served pumps) keeps only the corners; the stroke
track keeps one point per constant-rate stretch. `itpump simulate`'s recorder keeps all.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from itpump.emulator.farm import PortSpec, PumpFarm
from itpump.emulator.recorder import BATTERY_TOLERANCE, VOLUME_TOLERANCE_ML, Recorder
from itpump.emulator.scenario import load_scenario
from itpump.protocol import messages as m
from itpump.protocol.auth import seeded_nonce_source
from itpump.protocol.connection import ProgrammerConnection, ResponseReceived


def _line(recorder: Recorder, times: list[float], rate: float = 1.0, mask: int = 0) -> None:
    for t in times:
        recorder.add_truth(t, 10.0 - t, 0.9 - 1e-3 * t)
        recorder.add_firmware(t, 10.0 - t, rate, mask, {0: "a"})


def test_a_bounded_recorder_keeps_the_corners_of_straight_lines_only() -> None:
    recorder = Recorder(window_h=1000.0)
    _line(recorder, [float(t) for t in range(10)])
    assert recorder.truth_t_h == [0.0, 9.0]
    assert recorder.fw_t_h == [0.0, 9.0]
    # A bend (the reservoir falls faster from 9 h) is a corner: kept.
    for t in (10.0, 11.0, 12.0):
        recorder.add_truth(t, 1.0 - 2 * (t - 9.0), 0.9 - 1e-3 * t)
    assert recorder.truth_t_h == [0.0, 9.0, 12.0]
    # A jump at one instant (a refill) is never merged.
    recorder.add_truth(12.0, 15.0, 0.9 - 1e-3 * 12)
    recorder.add_truth(13.0, 14.0, 0.9 - 1e-3 * 13)
    assert recorder.truth_t_h == [0.0, 9.0, 12.0, 12.0, 13.0]


def test_a_rate_or_alarm_change_keeps_the_firmware_point() -> None:
    recorder = Recorder(window_h=1000.0)
    _line(recorder, [0.0, 1.0, 2.0])
    # The rate changes at 3 h (a point's rate holds from it on): 2 h was interior, 3 h is a
    # corner and stays once 4 h continues at the new rate.
    _line(recorder, [3.0], rate=2.0)
    _line(recorder, [4.0, 5.0], rate=2.0)
    _line(recorder, [6.0], rate=2.0, mask=1)  # an alarm from 6 h: 5 h was interior
    _line(recorder, [7.0], rate=2.0, mask=1)
    assert recorder.fw_t_h == [0.0, 3.0, 6.0, 7.0]
    assert recorder.fw_rate_ml_per_day == [1.0, 2.0, 2.0, 2.0]
    assert recorder.fw_alarm_mask == [0, 0, 1, 1]
    grid = recorder.grid(np.array([2.5, 5.5, 6.5]))
    assert grid["rate_ml_per_day"].tolist() == [1.0, 2.0, 2.0]
    assert grid["alarm_mask"].tolist() == [0.0, 0.0, 1.0]
    assert grid["reservoir_estimated_ml"] == pytest.approx([7.5, 4.5, 3.5])


def test_off_the_line_by_more_than_the_tolerance_is_kept() -> None:
    recorder = Recorder(window_h=1000.0)
    recorder.add_truth(0.0, 10.0, 0.9)
    recorder.add_truth(1.0, 9.0 + 4 * VOLUME_TOLERANCE_ML, 0.9)
    recorder.add_truth(2.0, 8.0, 0.9)
    recorder.add_truth(3.0, 7.0, 0.9 - 4 * BATTERY_TOLERANCE)
    recorder.add_truth(4.0, 6.0, 0.9 - 4 * BATTERY_TOLERANCE)
    assert recorder.truth_t_h == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_the_whole_history_keeps_every_point() -> None:
    recorder = Recorder()
    _line(recorder, [float(t) for t in range(10)])
    assert len(recorder.truth_t_h) == 10
    assert len(recorder.fw_t_h) == 10


def test_an_infusing_served_pump_does_not_grow_with_requests() -> None:
    clock = [0.0]
    # Speed 1 on a clock the test moves: each request finds the pump 50 ms further on.
    farm = PumpFarm(
        load_scenario("clinic-ready"),
        port=PortSpec("null"),
        turnaround=False,
        clock=lambda: clock[0],
    )
    served = farm.pumps[0]
    conn = ProgrammerConnection(seeded_nonce_source(0), key=served.key)

    def request(req: m.Request) -> m.Response:
        clock[0] += 0.05
        conn.receive_data(served.handler(conn.send(req, time.monotonic())))
        event = conn.next_event()
        assert isinstance(event, ResponseReceived)
        return event.response

    request(m.IdentifyRequest())
    request(conn.auth_begin(m.Role.CLINICIAN))
    request(conn.auth_proof())

    def sizes() -> tuple[int, int, int, int]:
        recorder = served.pump.recorder
        assert recorder is not None
        hw = served.pump.hardware
        return (len(recorder.truth_t_h), len(recorder.fw_t_h), len(recorder.seg_t0_h),
                len(hw.stroke_track_t_h))

    first = request(m.InterrogateRequest())
    assert isinstance(first, m.InterrogateResponse)
    assert first.therapy_state is m.TherapyState.RUNNING
    before = sizes()
    for _ in range(2000):
        status = request(m.InterrogateRequest())
    after = sizes()
    assert isinstance(status, m.InterrogateResponse)
    assert status.reservoir_volume_nl < first.reservoir_volume_nl  # it is infusing
    # Stroke-volume blocks end now and then (a corner each): a few points, not 2000.
    assert all(a - b <= 20 for a, b in zip(after, before, strict=True)), (before, after)
    # What is kept still resamples to the pump's state now.
    recorder = served.pump.recorder
    assert recorder is not None
    now_h = served.pump.now_h
    grid = recorder.grid(np.array([now_h]))
    truth = served.pump.truth()
    assert grid["reservoir_true_ml"][0] == pytest.approx(truth.reservoir_ml, abs=1e-9)
    # (The last request's own telemetry draw comes after its point: one step below the bound.)
    assert grid["battery_remaining_pct"][0] == pytest.approx(
        100 * truth.battery_remaining_fraction, abs=100 * BATTERY_TOLERANCE
    )
