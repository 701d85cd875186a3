"""A bounded recorder (served pumps) stays small and resamples exactly what it keeps."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bench_therapy_year import scenario
from itpump.emulator.faults import Fault, FaultKind
from itpump.emulator.patient import concentration_columns
from itpump.emulator.recorder import Recorder, interp_right
from itpump.emulator.runner import ScenarioRun
from tests.tolerances import MODAL_ROUNDING_ULPS, assert_close_to_peak

DAYS = 20


def run_pair(window_h: float) -> tuple[ScenarioRun, ScenarioRun]:
    runs = []
    for window in (None, window_h):
        run = ScenarioRun(scenario(DAYS / 365), live_pk=True, history_window_h=window)
        run.run()
        runs.append(run)
    return runs[0], runs[1]


def test_bounded_history_resamples_exactly_as_the_whole_history() -> None:
    whole, bounded = run_pair(48.0)
    rw, rb = whole.pump.recorder, bounded.pump.recorder
    assert rw is not None
    assert rb is not None
    end_h = DAYS * 24.0
    assert end_h - 2 * 48.0 <= rb.start_h <= end_h - 48.0
    times = np.linspace(rb.start_h, end_h, 500)
    gw, gb = rw.grid(times), rb.grid(times)
    for name, column in gw.items():
        # Element-wise float arithmetic only (no BLAS): the same on every CPU; the carried
        # offsets change the summation order, hence a few hundred ulps of the channel's peak.
        assert_close_to_peak(gb[name], column, peak_ulps=1024.0)
    model = bounded.pump.patient.model if bounded.pump.patient else None
    assert model is not None
    cw = concentration_columns(model, rw, times)
    cb = concentration_columns(model, rb, times)
    for name, column in cw.items():
        # The bounded history starts the PK solution from a carried-forward state instead of
        # from the first dose: two evaluations of the same exact map, which may differ by the
        # modal path's rounding (of the channel's peak, not of a value that decayed).
        assert_close_to_peak(cb[name], column, peak_ulps=MODAL_ROUNDING_ULPS)
    # What was kept is a few days' worth, not the whole run.
    assert len(rb.fw_t_h) < len(rw.fw_t_h) / 4
    assert len(rb.seg_t0_h) < len(rw.seg_t0_h) / 4


def test_an_alarm_still_raised_survives_the_trim() -> None:
    run = ScenarioRun(scenario(DAYS / 365), live_pk=True, history_window_h=24.0)
    run.env.run(until=48.0)
    run.pump.inject(Fault(FaultKind.MOTOR_STALL))
    run.env.run(until=24.0 * 10)
    recorder = run.pump.recorder
    assert recorder is not None
    assert recorder.start_h > 48.0
    raised = [a for a in recorder.alarm_transitions if a.alarm == "motor_stall"]
    assert raised
    assert raised[0].raised
    assert raised[0].t_h == pytest.approx(48.0)


def test_unbounded_recorder_is_the_default_and_window_must_be_positive() -> None:
    assert Recorder().window_h is None
    with pytest.raises(ValueError, match="window_h"):
        Recorder(0.0)


async def test_a_served_pump_keeps_a_bounded_history_its_charts_can_read() -> None:
    from itpump.emulator.control.views import history_view
    from itpump.emulator.farm import PortSpec, PumpFarm
    from itpump.emulator.scenario import load_scenario

    farm = PumpFarm(load_scenario("clinic-ready"), port=PortSpec("null"), speed=0.0)
    assert farm.history_days == 30.0
    farm.advance(24.0 * 70)  # past twice the window: the first trim has happened
    pump = farm.pumps[0].pump
    recorder = pump.recorder
    assert recorder is not None
    assert recorder.window_h == 30 * 24.0
    assert recorder.start_h > 24.0 * 10
    assert recorder.origin_pk_state is not None
    assert pump.patient is not None
    view = history_view(recorder, pump.now_h, 500.0, pk_model=pump.patient.model, points=20)
    assert view["t_h"][0] == pytest.approx(recorder.start_h, abs=1e-4)
    # The chart's last concentration is the live patient's (the chart rounds to 3 decimals).
    live = pump.concentrations()
    assert live is not None
    assert view["csf_lumbar_ng_per_ml"][-1] == pytest.approx(live.csf_lumbar_ng_per_ml, abs=1e-3)


def test_a_tissue_bolus_inside_a_segment_leaves_the_delivery_curves_straight() -> None:
    """A pocket fill in the middle of days of steady delivery: the CSF curve keeps its slope
    through the bolus (it used to be flat up to it, then twice as steep) and tissue jumps."""
    recorder = Recorder()
    recorder.add_segment(0.0, 100.0, 10.0, 1.0)
    recorder.add_segment(100.0, 200.0, 20.0, 0.0)
    recorder.add_tissue_bolus(30.0, 500.0)
    recorder.add_tissue_bolus(60.0, 700.0)
    recorder.add_tissue_bolus(100.0, 50.0)  # on a segment edge: no split needed
    t, csf, tissue = recorder.cumulative_points()
    assert list(t) == sorted(t)
    times_h = [15.0, 29.5, 30.0, 45.0, 59.5, 60.0, 100.0, 150.0, 200.0]
    assert list(interp_right(times_h, t, csf)) == pytest.approx(
        [150.0, 295.0, 300.0, 450.0, 595.0, 600.0, 1000.0, 2000.0, 3000.0]
    )
    # At a bolus the curve takes the value after the jump.
    assert list(interp_right(times_h, t, tissue)) == pytest.approx(
        [15.0, 29.5, 530.0, 545.0, 559.5, 1260.0, 1350.0, 1350.0, 1350.0]
    )
