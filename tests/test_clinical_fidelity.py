"""Issue 10, "wrong today": the clinical stories a programmer must get right."""

from __future__ import annotations

import dataclasses

import pytest

from itpump.emulator.runner import ScenarioRun
from itpump.emulator.scenario import parse_scenario
from itpump.firmware_stubs.alarms import AlarmId
from itpump.firmware_stubs.firmware import Firmware
from itpump.firmware_stubs.projection import PatientBolusUse
from itpump.firmware_stubs.therapy import PatientBolusSettings, TherapyProgram
from tests.pump_helpers import FakeHal, continuous
from tests.test_firmware import CFG, advance, filled_firmware

DAY_S = 86400.0


def _bolus_scenario(boluses_per_day: int) -> dict[str, object]:
    actions: list[dict[str, object]] = [
        {
            "type": "refill",
            "at": 0,
            "volume_ml": 20.0,
            "drug": "baclofen",
            "concentration_mcg_per_ml": 500.0,
        },
        {
            "type": "program",
            "at": "1h",
            "mode": "continuous",
            "dose_mcg_per_day": 215.0,
            "max_daily_dose_mcg": 400.0,
            "patient_bolus": {
                "dose_mcg": 20.0,
                "duration_min": 10,
                "lockout_min": 120,
                "max_per_day": 4,
            },
        },
    ]
    if boluses_per_day:
        actions.append(
            {"type": "patient_bolus", "at": "3h", "every": f"{24 // boluses_per_day}h"}
        )
    return {"scenario": {"name": "pb", "duration": "60d"}, "actions": actions}


def _raised_rtc_s(run: ScenarioRun, alarm: AlarmId) -> float:
    for active in run.pump.firmware.alarms.active():
        if active.alarm is alarm:
            return active.raised_rtc_s
    raise AssertionError(f"{alarm.name} not raised")


def test_projection_counts_patient_boluses_and_matches_the_real_alarms() -> None:
    """The issue's case: 215 mcg/day plus two 20 mcg patient boluses a day. After a week the
    projected low-reservoir and empty dates are within a day of when the alarms come."""
    run = ScenarioRun(parse_scenario(_bolus_scenario(2)))
    run.env.run(until=7 * 24.0)
    status = run.pump.firmware.status()
    assert status.projected_low_reservoir_rtc_s is not None
    assert status.projected_empty_rtc_s is not None
    assert status.projected_empty_rtc_s > status.projected_low_reservoir_rtc_s
    run.env.run(until=59 * 24.0)
    low = _raised_rtc_s(run, AlarmId.LOW_RESERVOIR)
    empty = _raised_rtc_s(run, AlarmId.EMPTY_RESERVOIR)
    assert abs(status.projected_low_reservoir_rtc_s - low) < DAY_S
    assert abs(status.projected_empty_rtc_s - empty) < DAY_S

    # The basal-only projection the pump made before is over a week late in this case.
    basal_only = ScenarioRun(parse_scenario(_bolus_scenario(0)))
    basal_only.env.run(until=7 * 24.0)
    late = basal_only.pump.firmware.status().projected_low_reservoir_rtc_s
    assert late is not None
    assert late - low > 5 * DAY_S


def test_bolus_use_is_a_mean_over_the_window_and_leaves_it() -> None:
    use = PatientBolusUse(window_s=7 * DAY_S, since_s=0.0)
    use.record(3600.0, 20.0)
    # Less than a day tracked: the mean is over one day, not over the hour seen.
    assert use.mean_mcg_per_day(2 * 3600.0) == pytest.approx(20.0)
    for day in range(1, 7):
        use.record(day * DAY_S, 20.0)
    assert use.mean_mcg_per_day(7 * DAY_S) == pytest.approx(140.0 / 7)
    # A week after the last bolus nothing is left in the window.
    assert use.mean_mcg_per_day(13 * DAY_S + 1.0) == 0.0


def test_projection_without_patient_boluses_is_the_programmed_dose() -> None:
    hal, fw = filled_firmware(volume_ml=5.0)
    fw.program(continuous(500.0, 1000.0))  # 1 mL/day
    status = fw.status()
    assert status.projected_low_reservoir_rtc_s == pytest.approx(hal.rtc_s() + 3 * DAY_S)
    empty_ml = CFG.empty_reservoir_alarm_ml
    assert status.projected_empty_rtc_s == pytest.approx(hal.rtc_s() + (5.0 - empty_ml) * DAY_S)


def test_projected_empty_is_none_once_the_pump_is_in_minimum_rate_mode() -> None:
    hal, fw = filled_firmware(volume_ml=3.0)
    fw.program(continuous(500.0, 1000.0))
    advance(hal, fw, 3 * DAY_S)
    status = fw.status()
    assert status.projected_empty_rtc_s is None
    assert status.projected_low_reservoir_rtc_s is None


def test_bolus_use_restarts_when_patient_boluses_are_enabled_again() -> None:
    hal = FakeHal()
    fw = Firmware(CFG, hal, "SN-1")
    fw.refill(20.0, "baclofen", 500.0)
    with_pb = dataclass_with_pb(continuous(215.0, 400.0))
    fw.program(with_pb)
    for _ in range(4):
        fw.patient_bolus()
        advance(hal, fw, hal.t_s + 6 * 3600.0)
    assert fw.projected_daily_dose_mcg(hal.t_s) == pytest.approx(215.0 + 80.0)
    fw.program(continuous(215.0, 400.0))
    assert fw.projected_daily_dose_mcg(hal.t_s) == pytest.approx(215.0)
    fw.program(with_pb)
    assert fw.projected_daily_dose_mcg(hal.t_s) == pytest.approx(215.0)


def dataclass_with_pb(program: TherapyProgram) -> TherapyProgram:
    return dataclasses.replace(program, patient_bolus=PatientBolusSettings(20.0, 10, 60, 4))
