"""Firmware behaviour against a fake HAL: limits, refusals, alarms, log, estimate."""

from __future__ import annotations

import dataclasses

import pytest

from itpump.emulator.device_profile import load_profile
from itpump.firmware_stubs.errors import Refusal
from itpump.firmware_stubs.firmware import Firmware, TherapyState
from itpump.firmware_stubs.hal import Tone
from itpump.firmware_stubs.therapy import basal_at
from itpump.protocol.codes import AlarmId, EventCode, ResultCode
from itpump.protocol.therapy import (
    Flex,
    FlexPeriod,
    FlexStep,
    PatientBolus,
    PeriodicBolus,
    TherapyProgram,
    max_24h_dose_mcg,
)
from tests.pump_helpers import START_EPOCH_S, FakeHal, continuous

CFG = load_profile("peristaltic-20").firmware_config()


def filled_firmware(conc: float = 500.0, volume_ml: float = 20.0) -> tuple[FakeHal, Firmware]:
    hal = FakeHal()
    fw = Firmware(CFG, hal, "SN-1")
    fw.set_catheter(110, 2.6)
    fw.refill(volume_ml, "baclofen", conc)
    return hal, fw


def advance(hal: FakeHal, fw: Firmware, until_s: float) -> None:
    """Play the firmware's own deadlines up to `until_s`, as the emulator host does."""
    while fw.next_deadline_s <= until_s:
        hal.t_s = fw.next_deadline_s
        fw.service()
    hal.t_s = until_s
    fw.service()


def snapshot(fw: Firmware) -> tuple[object, ...]:
    status = fw.status()
    return (dataclasses.replace(status, rtc_s=0.0), len(fw.log), fw.commanded_rate_ml_per_h)


@pytest.mark.parametrize(
    ("program", "code", "field"),
    [
        (continuous(20000.0, 30000.0), ResultCode.RATE_OUT_OF_RANGE, "dose_mcg_per_day"),
        (continuous(300.0, 200.0), ResultCode.DAILY_DOSE_EXCEEDED, "max_daily_dose_mcg"),
        (
            TherapyProgram(
                Flex(tuple(FlexStep(i * 60, 100) for i in range(11))),
                max_daily_dose_mcg=5000,
            ),
            ResultCode.TOO_MANY_STEPS,
            "steps",
        ),
        (
            TherapyProgram(
                Flex((FlexStep(0, 100), FlexStep(0, 200))),
                max_daily_dose_mcg=5000,
            ),
            ResultCode.OUT_OF_RANGE,
            "steps[1].start",
        ),
        (
            dataclasses.replace(
                continuous(200.0, 400.0), patient_bolus=PatientBolus(50, 10, 60, 5)
            ),
            ResultCode.DAILY_DOSE_EXCEEDED,
            "patient boluses",
        ),
    ],
)
def test_invalid_programs_are_refused_with_field_and_change_nothing(
    program: TherapyProgram, code: ResultCode, field: str
) -> None:
    _hal, fw = filled_firmware()
    fw.program(continuous(100.0, 500.0))
    before = snapshot(fw)
    with pytest.raises(Refusal) as info:
        fw.program(program)
    assert info.value.code is code
    assert field in info.value.detail
    assert snapshot(fw) == before


def test_rate_refusal_names_allowed_range() -> None:
    _, fw = filled_firmware()
    with pytest.raises(Refusal) as info:
        fw.program(continuous(10.0))  # 0.02 mL/day < 0.048
    assert "0.048..24 mL/day" in info.value.detail


def test_refill_over_capacity_is_refused() -> None:
    _, fw = filled_firmware(volume_ml=10.0)
    before = snapshot(fw)
    with pytest.raises(Refusal) as info:
        fw.refill(25.0, "baclofen", 500.0)
    assert info.value.code is ResultCode.RESERVOIR_CAPACITY_EXCEEDED
    assert snapshot(fw) == before


def test_flex_schedule_follows_time_of_day() -> None:
    program = TherapyProgram(
        Flex((FlexStep(0, 100), FlexStep(8 * 60, 300), FlexStep(20 * 60, 200))),
        max_daily_dose_mcg=1000,
    )
    midnight = 1_767_571_200.0  # 2026-01-05 00:00 UTC
    assert basal_at(program, midnight + 7.5 * 3600).dose_mcg_per_day == 100
    seg = basal_at(program, midnight + 9 * 3600)
    assert seg.dose_mcg_per_day == 300
    assert seg.until_rtc_s == midnight + 20 * 3600
    assert basal_at(program, midnight + 23 * 3600).until_rtc_s == midnight + 86400


def test_weekly_flex_starts_monday() -> None:
    program = TherapyProgram(
        Flex((FlexStep(0, 100), FlexStep(5 * 1440, 200)), FlexPeriod.WEEKLY),
        max_daily_dose_mcg=1000,
    )
    monday = 1_767_571_200.0  # 2026-01-05 was a Monday
    assert basal_at(program, monday + 4.9 * 86400).dose_mcg_per_day == 100
    assert basal_at(program, monday + 5.1 * 86400).dose_mcg_per_day == 200
    assert basal_at(program, monday + 7.1 * 86400).dose_mcg_per_day == 100


def test_max_24h_dose_finds_worst_window_across_midnight() -> None:
    # 600 mcg/day from 18:00 to 06:00, 0.1 otherwise: the worst 24 h window is 12 h at 600.
    program = TherapyProgram(
        Flex((FlexStep(0, 600), FlexStep(360, 100), FlexStep(1080, 600))),
        max_daily_dose_mcg=1000,
    )
    assert max_24h_dose_mcg(program) == pytest.approx(600 * 12 / 24 + 100 * 12 / 24)


def test_patient_bolus_lockout_and_daily_maximum() -> None:
    hal, fw = filled_firmware()
    program = dataclasses.replace(
        continuous(200.0, 400.0), patient_bolus=PatientBolus(25, 10, 120, 2)
    )
    fw.program(program)
    fw.patient_bolus()
    advance(hal, fw, hal.t_s + 60 * 60)
    with pytest.raises(Refusal) as info:
        fw.patient_bolus()
    assert info.value.code is ResultCode.LOCKOUT_ACTIVE
    advance(hal, fw, hal.t_s + 61 * 60)
    fw.patient_bolus()
    advance(hal, fw, hal.t_s + 3 * 3600)
    with pytest.raises(Refusal) as info:
        fw.patient_bolus()
    assert info.value.code is ResultCode.PATIENT_BOLUS_DAILY_MAX
    denied = [e for e in fw.log.entries() if e.code is EventCode.PATIENT_BOLUS_DENIED]
    assert [int(e.args[0]) for e in denied] == [
        ResultCode.LOCKOUT_ACTIVE,
        ResultCode.PATIENT_BOLUS_DAILY_MAX,
    ]
    advance(hal, fw, hal.t_s + 86400)
    fw.patient_bolus()  # the rolling 24 h window has moved on


def test_clinician_bolus_respects_daily_maximum() -> None:
    hal, fw = filled_firmware()
    fw.program(continuous(300.0, 400.0))
    advance(hal, fw, 86400.0)
    with pytest.raises(Refusal) as info:
        fw.clinician_bolus(150.0, 30.0)
    assert info.value.code is ResultCode.DAILY_DOSE_EXCEEDED
    fw.clinician_bolus(50.0, 30.0)
    assert fw.therapy_state() is TherapyState.BOLUS


def test_a_second_clinician_bolus_is_refused_while_one_runs() -> None:
    hal, fw = filled_firmware()
    fw.program(
        dataclasses.replace(
            continuous(200.0, 500.0), patient_bolus=PatientBolus(25, 10, 120, 4)
        )
    )
    advance(hal, fw, 3600.0)
    fw.clinician_bolus(50.0, 30.0)
    advance(hal, fw, 3600.0 + 600.0)
    with pytest.raises(Refusal) as info:
        fw.clinician_bolus(50.0, 30.0)  # back to back: it must not stack on the first
    assert info.value.code is ResultCode.INVALID_STATE
    assert info.value.detail == (
        "clinician bolus of 50 mcg in progress, ends in 20.0 min: cancel it first"
    )
    # Only one bolus runs: the commanded rate is the basal plus one bolus.
    one_bolus_ml_per_h = (200.0 / 24.0 + 50.0 / 0.5) / 500.0
    assert fw.commanded_rate_ml_per_h == pytest.approx(one_bolus_ml_per_h)
    # Nor can the patient add one; the refusal is logged as a denied patient bolus.
    with pytest.raises(Refusal) as info:
        fw.patient_bolus()
    assert info.value.code is ResultCode.INVALID_STATE
    assert fw.log.entries()[-1].code is EventCode.PATIENT_BOLUS_DENIED


def test_a_bolus_may_follow_once_the_first_ends_or_is_cancelled() -> None:
    hal, fw = filled_firmware()
    fw.program(continuous(200.0, 500.0))
    fw.clinician_bolus(20.0, 30.0)
    advance(hal, fw, 1800.0)  # the first bolus ends exactly now
    fw.clinician_bolus(20.0, 30.0)
    fw.cancel_bolus()
    fw.clinician_bolus(20.0, 30.0)
    assert fw.therapy_state() is TherapyState.BOLUS


def test_estimate_falls_with_commanded_rate_and_low_alarm_fires_on_time() -> None:
    hal, fw = filled_firmware(volume_ml=5.0)
    fw.program(continuous(500.0, 1000.0))  # 1 mL/day
    advance(hal, fw, 2.5 * 86400)
    assert fw.status().reservoir_estimate_ml == pytest.approx(2.5, abs=1e-9)
    assert not fw.alarms.is_active(AlarmId.LOW_RESERVOIR)
    projected = fw.status().projected_low_reservoir_rtc_s
    assert projected == pytest.approx(START_EPOCH_S + 3 * 86400, abs=1.0)
    advance(hal, fw, 3 * 86400 + 1)
    low = [a for a in fw.alarms.active() if a.alarm is AlarmId.LOW_RESERVOIR]
    assert low
    assert low[0].raised_rtc_s == pytest.approx(START_EPOCH_S + 3 * 86400, abs=1e-3)
    assert Tone.NON_CRITICAL_SINGLE_1S in hal.tones


def test_empty_estimate_switches_to_minimum_rate_and_refill_clears() -> None:
    hal, fw = filled_firmware(volume_ml=3.0)
    fw.program(continuous(500.0, 1000.0))
    advance(hal, fw, 3 * 86400)
    assert fw.therapy_state() is TherapyState.MINIMUM_RATE
    assert fw.commanded_rate_ml_per_h == pytest.approx(CFG.minimum_rate_mode_ml_per_day / 24)
    assert Tone.CRITICAL_TWO_TONE_3S in hal.tones
    fw.refill(20.0, "baclofen", 500.0, aspirated_ml=0.4)
    assert fw.alarms.active() == []
    assert fw.therapy_state() is TherapyState.RUNNING


def test_eri_then_end_of_service_after_90_days() -> None:
    hal, fw = filled_firmware()
    fw.program(continuous(300.0, 600.0))
    hal.battery = CFG.eri_remaining_fraction - 0.01
    advance(hal, fw, 86400.0 + 1)
    assert fw.alarms.is_active(AlarmId.ELECTIVE_REPLACEMENT)
    assert fw.commanded_rate_ml_per_h > 0  # ERI: the pump keeps running
    eri_at = hal.t_s
    advance(hal, fw, eri_at + 89 * 86400)
    assert not fw.alarms.is_active(AlarmId.END_OF_SERVICE)
    advance(hal, fw, eri_at + 90 * 86400)
    assert fw.alarms.is_active(AlarmId.END_OF_SERVICE)
    assert fw.commanded_rate_ml_per_h == 0
    with pytest.raises(Refusal) as info:
        fw.program(continuous(300.0, 600.0))
    assert info.value.code is ResultCode.THERAPY_DISABLED


def test_service_life_limit_forces_eri() -> None:
    hal, fw = filled_firmware()
    fw.program(continuous(100.0, 600.0))
    advance(hal, fw, CFG.service_life_s - CFG.eri_to_eos_s + 86400)
    assert fw.alarms.is_active(AlarmId.ELECTIVE_REPLACEMENT)


def test_memory_error_disables_therapy() -> None:
    hal, fw = filled_firmware()
    fw.program(continuous(300.0, 600.0))
    hal.nvm.corrupt()
    fw.run_self_test()
    assert fw.alarms.is_active(AlarmId.MEMORY_ERROR)
    assert fw.therapy_state() is TherapyState.DISABLED
    assert fw.commanded_rate_ml_per_h == 0


def test_event_log_is_bounded_and_pages_newest_first() -> None:
    _hal, fw = filled_firmware()
    for i in range(CFG.event_log_capacity + 50):
        fw.set_patient_id(f"P{i}")
    assert len(fw.log) == CFG.event_log_capacity
    page, pages = fw.read_log(0, 16)
    assert pages == CFG.event_log_capacity // 16 + (CFG.event_log_capacity % 16 > 0)
    assert page[0].index == fw.log.total_written - 1
    with pytest.raises(Refusal) as info:
        fw.read_log(pages, 16)
    assert info.value.code is ResultCode.LOG_PAGE_OUT_OF_RANGE


def test_persistent_state_goes_through_nvm() -> None:
    hal, fw = filled_firmware()
    fw.program(continuous(300.0, 600.0))
    saved = hal.nvm.read("persistent")
    assert saved.program == continuous(300.0, 600.0)
    assert saved.drug.concentration_mcg_per_ml == 500.0
    assert saved.reservoir_estimate_ml == pytest.approx(20.0)
    assert set(hal.nvm.keys()) == {"persistent", "event_log"}


def test_stall_stops_the_estimate_and_raises_critical_alarm() -> None:
    hal, fw = filled_firmware()
    fw.program(continuous(500.0, 1000.0))
    advance(hal, fw, 86400.0)
    hal.stalled = True
    fw.on_motor_stall()
    est = fw.status().reservoir_estimate_ml
    advance(hal, fw, 2 * 86400.0)
    assert fw.status().reservoir_estimate_ml == pytest.approx(est)
    assert fw.alarms.is_active(AlarmId.MOTOR_STALL)


def test_clock_set_moves_flex_schedule_but_not_delivery_accounting() -> None:
    _hal, fw = filled_firmware()
    fw.program(
        TherapyProgram(
            Flex((FlexStep(0, 100), FlexStep(720, 400))),
            max_daily_dose_mcg=1000,
        )
    )
    est = fw.status().reservoir_estimate_ml
    fw.set_clock(START_EPOCH_S + 6 * 3600)  # jump from 08:00 to 14:00
    assert fw.status().reservoir_estimate_ml == est
    assert fw.commanded_rate_ml_per_h == pytest.approx(400 / 500 / 24)
    assert fw.log.entries()[-1].code is EventCode.CLOCK_SET


def test_committing_a_program_starts_stopped_therapy() -> None:
    _, fw = filled_firmware()
    fw.stop_therapy()
    assert fw.commanded_rate_ml_per_h == 0
    fw.program(continuous(240.0, 500.0))
    assert fw.therapy_state() is TherapyState.RUNNING
    assert fw.commanded_rate_ml_per_h == pytest.approx(240 / 500 / 24)


def test_bridge_bolus_cancels_a_running_clinician_bolus() -> None:
    hal, fw = filled_firmware()
    fw.program(continuous(200.0, 500.0))
    advance(hal, fw, 3600.0)
    fw.clinician_bolus(50.0, 30.0)
    fw.refill(20.0, "baclofen", 1000.0)
    assert fw.therapy_state() is TherapyState.BRIDGING
    codes = [e.code for e in fw.log.entries()[-6:]]
    assert EventCode.BOLUS_CANCELLED in codes
    # Nothing is counted as delivered for the cancelled bolus once the bridge runs.
    advance(hal, fw, 3600.0 + 1800.0)
    assert fw.status().dose_last_24h_mcg < 200.0 / 24 * 1.5 + 5.0


# --- regressions from a code review ---------------------------------------------------------


def test_clinician_bolus_counts_the_basal_still_to_come() -> None:
    _, fw = filled_firmware()
    fw.program(continuous(90.0, 100.0))
    with pytest.raises(Refusal) as info:
        fw.clinician_bolus(100.0, 30.0)  # 100 + the next 24 h of basal (90) > 100
    assert info.value.code is ResultCode.DAILY_DOSE_EXCEEDED
    fw.clinician_bolus(10.0, 30.0)


def test_no_bolus_without_a_daily_maximum_and_stopped_programs_carry_no_patient_bolus() -> None:
    _, fw = filled_firmware()
    with pytest.raises(Refusal) as info:
        fw.clinician_bolus(50.0, 30.0)  # the factory program: max daily dose 0
    assert info.value.code is ResultCode.DAILY_DOSE_EXCEEDED
    stopped_with_bolus = dataclasses.replace(
        TherapyProgram(), patient_bolus=PatientBolus(8, 10, 0, 255)
    )
    with pytest.raises(Refusal, match="patient_bolus: must be off"):
        fw.program(stopped_with_bolus)


def test_recommitting_a_periodic_program_keeps_its_schedule() -> None:
    hal, fw = filled_firmware(conc=2000.0)
    program = TherapyProgram(PeriodicBolus(100.0, 800.0, 60, 1440, 0), max_daily_dose_mcg=1000)
    fw.program(program)
    for hours in (2, 4, 6):
        advance(hal, fw, hours * 3600.0)
        fw.program(program)
    advance(hal, fw, 23 * 3600.0)
    assert fw.status().dose_last_24h_mcg <= 1000.0


def test_commanded_rate_never_exceeds_the_drive_maximum() -> None:
    hal, fw = filled_firmware(conc=50.0)
    fw.program(
        TherapyProgram(
            Flex((FlexStep(0, 100), FlexStep(9 * 60, 1100))),
            max_daily_dose_mcg=2000,
        )
    )
    fw.clinician_bolus(30.0, 120.0)  # fits at the 08:00 basal, not after the 09:00 step
    advance(hal, fw, 1.5 * 3600)
    assert fw.commanded_rate_ml_per_h * 24 <= CFG.max_rate_ml_per_day + 1e-9


def test_refusing_a_program_commit_changes_no_setting() -> None:
    from itpump.protocol.therapy import Catheter

    _, fw = filled_firmware()
    before = fw.status().catheter
    with pytest.raises(Refusal):
        fw.program_with_settings(continuous(100.0, 500.0), "X" * 25, Catheter(50, 1.0))
    assert fw.status().catheter == before


def test_no_bridge_bolus_while_therapy_is_stopped() -> None:
    hal, fw = filled_firmware()
    fw.program(continuous(200.0, 500.0))
    advance(hal, fw, 3600.0)
    fw.stop_therapy()
    fw.refill(20.0, "baclofen", 1000.0)
    assert fw.therapy_state() is TherapyState.STOPPED
    assert fw.commanded_rate_ml_per_h == 0


def test_service_life_eri_is_raised_on_the_day() -> None:
    hal, fw = filled_firmware()
    fw.program(continuous(100.0, 600.0))
    limit_s = CFG.service_life_s - CFG.eri_to_eos_s
    advance(hal, fw, limit_s + 1.0)
    eri = [a for a in fw.alarms.active() if a.alarm is AlarmId.ELECTIVE_REPLACEMENT]
    assert eri
    assert eri[0].raised_rtc_s == pytest.approx(START_EPOCH_S + limit_s, abs=1.0)


def test_interrogating_an_infusing_pump_keeps_the_dose_history_bounded() -> None:
    hal, fw = filled_firmware()
    fw.prime()
    fw.program(continuous(240.0, 500.0))
    advance(hal, fw, 2 * 86_400.0)
    base = fw.status().dose_last_24h_mcg
    for _ in range(5000):  # a rig polling every 2 s for almost three hours
        hal.t_s += 2.0
        status = fw.status()
    # Constant rate: one history entry however often the pump is asked, and the sum is exact.
    assert len(fw._dose_history) <= 3
    assert status.dose_last_24h_mcg == pytest.approx(base, rel=1e-9)
    assert base == pytest.approx(240.0, rel=1e-6)
