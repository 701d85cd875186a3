"""The clinical stories the shipped scenarios tell, checked on their key outcome.

Each test runs a shipped scenario (shortened where the story allows) and asserts what its
description promises; docs/clinical.md lists which test shows which behaviour.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from itpump.emulator.outputs import first_alarm_h, first_truly_empty_h, summary, timeseries
from itpump.emulator.pk import thresholds
from itpump.emulator.recorder import FloatArray
from itpump.emulator.runner import RunResult, ScenarioRun
from itpump.emulator.scenario import Scenario, load_scenario

DAY_H = 24.0
DAY_S = DAY_H * 3600.0


def _run(name: str, days: float | None = None) -> RunResult:
    scenario = load_scenario(name)
    if days is not None:
        scenario = _shortened(scenario, days)
    return ScenarioRun(scenario).run()


def _shortened(scenario: Scenario, days: float) -> Scenario:
    header = scenario.scenario.model_copy(update={"duration": days * DAY_H})
    return scenario.model_copy(update={"scenario": header})


def test_clinic_ready_stays_filled_for_its_whole_battery_life() -> None:
    result = _run("clinic-ready")
    recorder = result.pump.recorder
    assert recorder is not None
    assert result.scenario.end_h == 365 * 7 * DAY_H
    assert result.refusals == []
    # Never dry: at least a millilitre left at every refill, to the end of the run.
    after_prime = np.asarray(recorder.truth_t_h) > 1.0
    assert min(np.asarray(recorder.truth_reservoir_ml)[after_prime]) > 1.0
    assert first_truly_empty_h(result) is None
    assert first_alarm_h(result, "empty_reservoir") is None
    # The low-reservoir alarm comes once per 46-day cycle, before the refill that clears it.
    raised = [a.t_h for a in recorder.alarm_transitions if a.alarm == "low_reservoir" and a.raised]
    assert len(raised) == int(result.scenario.end_h // (46 * DAY_H))
    assert raised[0] == first_alarm_h(result, "low_reservoir")
    assert 43 * DAY_H < raised[0] < 46 * DAY_H


def _exposure(result: RunResult) -> dict[str, Any]:
    data = summary(result, timeseries(result))
    exposure: dict[str, Any] = data["exposure"]
    return exposure


def _lumbar(result: RunResult, t0_h: float, t1_h: float, step_h: float = 0.25) -> FloatArray:
    times = np.arange(t0_h, t1_h, step_h)
    return timeseries(result, times)["csf_lumbar_ng_per_ml"]


def _alarm_times_h(result: RunResult, alarm: str) -> list[tuple[float, bool]]:
    recorder = result.pump.recorder
    assert recorder is not None
    return [(a.t_h, a.raised) for a in recorder.alarm_transitions if a.alarm == alarm]


def test_catheter_fracture_is_a_withdrawal_the_pump_reports_as_normal_delivery() -> None:
    result = _run("catheter-fracture", 10)
    status = result.pump.firmware.status()
    assert status.alarms == ()
    assert status.therapy_state.value == "running"
    assert status.dose_last_24h_mcg == pytest.approx(300.0, rel=0.01)  # what the pump reports
    ledger = result.pump.truth().ledger
    assert ledger.to_tissue_mcg == pytest.approx(3 * 300.0, rel=0.05)  # where it truly went
    exposure = _exposure(result)
    assert exposure["csf_below_range_first_utc"].startswith("2026-02-09T")  # hours after day 7
    assert not exposure["systemic_overdose"]


def test_pocket_fill_is_a_systemic_overdose_then_a_silent_withdrawal() -> None:
    result = _run("pocket-fill", 13)
    exposure = _exposure(result)
    assert exposure["systemic_overdose"]
    assert exposure["plasma_above_cns_depression_first_utc"].startswith("2026-03-12T")
    # The dry drive keeps pushing the path's drug (0.486 mL, 1.6 days at 0.3 mL/day) first.
    assert exposure["csf_below_range_first_utc"].startswith("2026-03-14T")
    assert result.pump.truth().reservoir_ml == 0.0
    status = result.pump.firmware.status()
    assert status.reservoir_estimate_ml > 18.0
    assert status.alarms == ()


def test_a_stronger_refill_without_bridge_halves_the_dose_while_the_catheter_flushes() -> None:
    result = _run("refill-no-bridge-stronger", 14)
    before = float(np.mean(_lumbar(result, 8 * DAY_H, 10 * DAY_H)))
    dip = float(np.min(_lumbar(result, 10 * DAY_H, 12 * DAY_H)))
    after = float(np.mean(_lumbar(result, 13 * DAY_H, 14 * DAY_H)))
    assert dip / before == pytest.approx(0.5, abs=0.04)
    assert after / before == pytest.approx(1.0, abs=0.04)


def test_a_weaker_refill_without_bridge_doubles_the_dose_while_the_catheter_flushes() -> None:
    result = _run("refill-no-bridge-weaker", 13)
    before = float(np.mean(_lumbar(result, 8 * DAY_H, 10 * DAY_H)))
    peak = float(np.max(_lumbar(result, 10 * DAY_H, 12 * DAY_H)))
    after = float(np.mean(_lumbar(result, 12 * DAY_H, 13 * DAY_H)))
    assert peak / before == pytest.approx(2.0, abs=0.08)
    assert after / before == pytest.approx(1.0, abs=0.04)


def test_a_tenfold_program_is_caught_by_the_dose_limit_until_the_limit_is_raised_too() -> None:
    result = _run("programming-error-10x", 7)
    (refused,) = result.refusals
    assert (refused.t_h, refused.code) == (72.0, "DAILY_DOSE_EXCEEDED")
    exposure = _exposure(result)
    assert exposure["csf_above_range_first_utc"].startswith("2026-01-09T")  # day 4
    assert exposure["csf_lumbar_peak_ng_per_ml"] > 1.5 * thresholds.CSF_THERAPEUTIC_HIGH_NG_PER_ML
    assert not exposure["systemic_overdose"]  # the overdose is intrathecal, not systemic


def test_mri_on_a_peristaltic_pump_stalls_it_until_20_h_after_the_scan() -> None:
    result = _run("mri-peristaltic", 7)
    scan_start, scan_end = 5 * DAY_H + 2.0, 5 * DAY_H + 3.0
    (raised_h, raised), (cleared_h, cleared) = _alarm_times_h(result, "motor_stall")
    assert raised
    assert not cleared
    assert raised_h == pytest.approx(scan_start)
    assert cleared_h == pytest.approx(scan_end + 20.0)
    assert _exposure(result)["csf_below_range_h"] > 10.0


def test_mri_on_a_valve_gated_pump_never_reset_is_a_silent_withdrawal() -> None:
    result = _run("mri-valve-not-reset", 8)
    recorder = result.pump.recorder
    assert recorder is not None
    at_scan = float(np.interp(5 * DAY_H + 2.0, recorder.truth_t_h, recorder.truth_reservoir_ml))
    # At most the valve's 10 uL passed after the scan began; the pump thinks it kept going.
    assert at_scan - result.pump.truth().reservoir_ml <= 0.010 + 1e-9
    status = result.pump.firmware.status()
    assert status.alarms == ()
    assert status.reservoir_estimate_ml < result.pump.truth().reservoir_ml - 1.0
    assert _exposure(result)["csf_below_range_h"] > 24.0


def test_battery_eri_is_followed_by_eos_90_days_later_with_drug_left() -> None:
    result = _run("battery-eri-to-eos")
    ((eri_h, _),) = _alarm_times_h(result, "elective_replacement")
    ((eos_h, _),) = _alarm_times_h(result, "end_of_service")
    assert eri_h < 7 * DAY_H
    assert eos_h - eri_h == pytest.approx(90 * DAY_H)
    assert result.pump.truth().reservoir_ml > 13.0
    assert _exposure(result)["csf_below_range_first_utc"] is not None


def test_an_under_infusing_pump_reaches_minimum_rate_mode_with_drug_left() -> None:
    result = _run("under-infusion")
    empty_h = first_alarm_h(result, "empty_reservoir")
    assert empty_h is not None
    assert 47 * DAY_H < empty_h < 48 * DAY_H
    recorder = result.pump.recorder
    assert recorder is not None
    truly_left = float(np.interp(empty_h, recorder.truth_t_h, recorder.truth_reservoir_ml))
    assert truly_left > 5.0
    exposure = _exposure(result)
    assert exposure["csf_lumbar_peak_ng_per_ml"] < 0.8 * 278.0  # under-dosed from the start
    assert exposure["csf_below_range_h"] > 24.0


def test_a_concentration_entry_error_is_a_fourfold_overdose_the_pump_reports_as_normal() -> None:
    run = ScenarioRun(load_scenario("concentration-entry-error"))
    run.env.run(until=7 * DAY_H)
    csf_day7_mcg = run.pump.truth().ledger.to_csf_mcg
    run.env.run(until=8 * DAY_H)
    status = run.pump.firmware.status()
    # The pump, told 500 mcg/mL, reports the programmed dose; 2000 mcg/mL reach the CSF.
    assert status.dose_last_24h_mcg == pytest.approx(400.0, rel=0.01)
    assert status.drug.concentration_mcg_per_ml == 500.0
    assert run.pump.truth().ledger.to_csf_mcg - csf_day7_mcg == pytest.approx(1600.0, rel=0.02)
    result = run.run()
    assert result.refusals == []
    assert result.pump.recorder is not None
    assert result.pump.recorder.alarm_transitions == []
    exposure = _exposure(result)
    # Above the range from the day after the day-5 refill, until the day after the day-9 fix.
    assert exposure["csf_above_range_first_utc"].startswith("2026-04-12T")
    assert 4 * DAY_H - 6.0 < exposure["csf_above_range_h"] < 4 * DAY_H + 6.0
    before = float(np.mean(_lumbar(result, 3 * DAY_H, 5 * DAY_H)))
    assert exposure["csf_lumbar_peak_ng_per_ml"] / before == pytest.approx(4.0, rel=0.05)
    assert not exposure["systemic_overdose"]  # intrathecal: the danger is in the CSF


def test_a_partial_pocket_fill_is_systemic_exposure_then_a_withdrawal_the_pump_does_not_see() -> (
    None
):
    result = _run("pocket-fill-partial")
    assert result.pump.truth().ledger.to_tissue_mcg == pytest.approx(10 * 2000.0)
    # Delivery to the CSF goes on at 600 mcg/day through the refill day.
    delivered = timeseries(result, np.array([9, 10, 11, 12]) * DAY_H)["delivered_csf_mcg"]
    assert list(np.diff(delivered)) == pytest.approx([600.0] * 3, rel=0.02)
    exposure = _exposure(result)
    # Far above the label's intrathecal 0-5 ng/mL, short of the CNS-depression level.
    assert exposure["plasma_peak_utc"].startswith("2026-03-12T")
    assert 50 * 5.0 < exposure["plasma_peak_ng_per_ml"] < thresholds.PLASMA_CNS_DEPRESSION_NG_PER_ML
    assert not exposure["systemic_overdose"]
    # 10 mL truly in the reservoir at 0.3 mL/day: dry about 33 days after the day-10 refill.
    empty_h = first_truly_empty_h(result)
    assert empty_h is not None
    assert 43 * DAY_H < empty_h < 44 * DAY_H
    recorder = result.pump.recorder
    assert recorder is not None
    believed_ml = float(np.interp(empty_h, recorder.fw_t_h, recorder.fw_reservoir_ml))
    assert believed_ml == pytest.approx(10.0, abs=0.3)
    assert recorder.alarm_transitions == []
    # After the path's drug (1.6 days at 0.3 mL/day) has been pushed out by the dry drive.
    assert exposure["csf_below_range_first_utc"].startswith("2026-04-16T")


def test_a_catheter_revision_told_to_the_pump_is_primed_counted_and_keeps_csf_in_range() -> None:
    run = ScenarioRun(load_scenario("catheter-revision-prime"))
    run.env.run(until=5 * DAY_H + 2.0)
    status = run.pump.firmware.status()
    assert status.catheter.length_cm == 100.0
    assert status.unprimed_ml == 0.0
    new_catheter_mcg = 100 * 2.6 / 1000 * 2000.0
    assert status.dose_last_24h_mcg == pytest.approx(300.0 + new_catheter_mcg, abs=10.0)
    result = run.run()
    (refused,) = result.refusals
    assert (refused.t_h, refused.type, refused.code) == (5 * DAY_H + 1.0, "prime", "INVALID_STATE")
    assert "920 mcg into the CSF" in refused.detail
    # Drug leaves the new tip again within two hours of the surgery, at the basal rate.
    revision_h = 5 * DAY_H
    times_h = np.array([revision_h, revision_h + 1.5, revision_h + 2.0, revision_h + 4.0])
    delivered = timeseries(result, times_h)["delivered_csf_mcg"]
    assert delivered[1] == pytest.approx(delivered[0])  # the new catheter is filling
    assert np.diff(delivered)[-1] == pytest.approx(300.0 / 12, rel=0.05)
    exposure = _exposure(result)
    assert exposure["csf_below_range_h"] == 0.0
    assert exposure["csf_above_range_h"] == 0.0


def test_a_catheter_revision_not_told_refuses_the_prime_and_leaves_a_withdrawal_gap() -> None:
    result = _run("catheter-revision-untold")
    (refused,) = result.refusals
    assert (refused.t_h, refused.type, refused.code) == (5 * DAY_H, "prime", "INVALID_STATE")
    status = result.pump.firmware.status()
    assert status.catheter.length_cm == 110.0  # the pump's record still has the old catheter
    assert status.dose_last_24h_mcg == pytest.approx(300.0, rel=0.01)
    exposure = _exposure(result)
    # The new catheter fills at 0.15 mL/day: 1.7 days with no drug at the tip.
    assert exposure["csf_below_range_first_utc"].startswith("2026-05-09T")
    assert 30.0 < exposure["csf_below_range_h"] < 1.7 * DAY_H


def test_the_refill_date_projection_counts_patient_boluses_where_basal_only_was_a_week_late() -> (
    None
):
    scenario = load_scenario("refill-date-boluses")
    run = ScenarioRun(scenario)
    run.env.run(until=7 * DAY_H)
    status = run.pump.firmware.status()
    projected_low_s = status.projected_low_reservoir_rtc_s
    projected_empty_s = status.projected_empty_rtc_s
    assert projected_low_s is not None
    assert projected_empty_s is not None
    basal_only = ScenarioRun(
        scenario.model_copy(
            update={"actions": [a for a in scenario.actions if a.type != "patient_bolus"]}
        )
    )
    basal_only.env.run(until=7 * DAY_H)
    basal_low_s = basal_only.pump.firmware.status().projected_low_reservoir_rtc_s
    assert basal_low_s is not None

    result = run.run()
    start_s = scenario.scenario.start.timestamp()
    low_h = first_alarm_h(result, "low_reservoir")
    empty_h = first_alarm_h(result, "empty_reservoir")
    assert low_h is not None
    assert empty_h is not None
    assert abs(projected_low_s - (start_s + low_h * 3600.0)) < DAY_S
    assert abs(projected_empty_s - (start_s + empty_h * 3600.0)) < DAY_S
    assert basal_low_s - (start_s + low_h * 3600.0) > 6 * DAY_S
    # The run ends the day before the basal-only alarm date, in minimum-rate mode.
    assert result.scenario.end_h * 3600.0 + start_s < basal_low_s
    assert result.pump.firmware.status().therapy_state.value == "minimum_rate"
    assert [o.type for o in result.refusals] == ["patient_bolus"] * 4
    assert _exposure(result)["csf_below_range_first_utc"].startswith("2026-03-11T")
