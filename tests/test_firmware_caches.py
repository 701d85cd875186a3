"""The firmware's per-service shortcuts (issue 11) change nothing it does or stores."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from itpump.emulator.device_profile import load_profile
from itpump.firmware_stubs.command_handler import CommandHandler
from itpump.firmware_stubs.firmware import Firmware
from itpump.firmware_stubs.hal import Tone
from itpump.firmware_stubs.therapy import basal_at
from itpump.protocol import messages as m
from itpump.protocol.codes import AlarmId
from itpump.protocol.therapy import Flex, FlexStep, Program, TherapyProgram
from tests.pump_helpers import FakeHal

CFG = load_profile("peristaltic-20").firmware_config()
FLEX = TherapyProgram(
    Flex((FlexStep(0, 180), FlexStep(7 * 60, 260), FlexStep(13 * 60, 220),
          FlexStep(20 * 60, 200))),
    max_daily_dose_mcg=600,
)


def flex_firmware() -> tuple[FakeHal, Firmware]:
    hal = FakeHal()
    fw = Firmware(CFG, hal, "SN-1")
    fw.set_catheter(110, 2.6)
    fw.refill(20.0, "baclofen", 2000.0)
    fw.program(FLEX)
    return hal, fw


def test_cached_flex_segment_equals_basal_at_at_every_deadline_and_between() -> None:
    hal, fw = flex_firmware()
    for _ in range(40):  # ten days of step changes, checked at and just around each
        deadline = fw.next_deadline_s
        for t_s in (deadline - 1.0, deadline - 1e-4, deadline):
            hal.t_s = t_s
            fw.service()
            expected = basal_at(FLEX, hal.rtc_s())
            assert fw._basal_at(hal.rtc_s()) == expected
            assert fw.commanded_rate_ml_per_h * 24 * 2000.0 == expected.dose_mcg_per_day


def test_cache_follows_a_clock_set_backwards_and_a_new_program() -> None:
    hal, fw = flex_firmware()
    hal.t_s = 8 * 3600.0
    fw.service()
    hal.set_rtc(hal.rtc_s() - 6 * 3600.0)  # back into the night step
    fw.service()
    assert fw._basal_at(hal.rtc_s()) == basal_at(FLEX, hal.rtc_s())
    lower = dataclasses.replace(FLEX, mode=Flex((FlexStep(0, 100),)))
    fw.program(lower)
    assert fw._basal_at(hal.rtc_s()).dose_mcg_per_day == 100


def test_state_is_written_to_nvm_only_when_it_changed() -> None:
    hal = FakeHal()
    fw = Firmware(CFG, hal, "SN-1")  # never filled: nothing changes at its services
    writes = hal.nvm.writes
    for day in range(1, 4):
        hal.t_s = day * 86400.0
        fw.service()
    assert hal.nvm.writes == writes
    fw.set_catheter(110, 2.6)
    assert hal.nvm.writes > writes
    stored = hal.nvm.read("persistent")
    assert stored.catheter.length_cm == 110
    assert stored is not fw._p  # a snapshot, never the live state


def test_an_infusing_pump_keeps_its_estimate_mirrored() -> None:
    hal, fw = flex_firmware()
    hal.t_s = 5 * 3600.0
    fw.service()
    assert hal.nvm.read("persistent").reservoir_estimate_ml == fw.reservoir_estimate_ml()


def test_tone_repeats_follow_every_raise_and_acknowledgement() -> None:
    hal, fw = flex_firmware()
    fw.set_low_reservoir_threshold(10.0)
    fw.refill(5.0, "baclofen", 2000.0)  # below the threshold: the next service finds it low
    hal.t_s = 3600.0
    fw.service()
    assert hal.repeating[Tone.NON_CRITICAL_SINGLE_1S] == CFG.non_critical_tone_repeat_s
    fw.service()  # nothing changed: the buzzer is not told again, and stays on
    assert hal.repeating[Tone.NON_CRITICAL_SINGLE_1S] == CFG.non_critical_tone_repeat_s
    fw.acknowledge_alarm(AlarmId.LOW_RESERVOIR)
    hal.t_s += 1.0
    fw.service()
    assert hal.repeating[Tone.NON_CRITICAL_SINGLE_1S] == 0.0
    assert fw.alarms.is_active(AlarmId.LOW_RESERVOIR)


def test_a_swapped_config_moves_the_service_life_deadline() -> None:
    hal, fw = flex_firmware()
    hal.t_s = 60.0
    fw.service()
    short = dataclasses.replace(CFG, service_life_s=CFG.eri_to_eos_s + 120.0)
    fw.cfg = short
    hal.t_s = 61.0
    assert fw.service() == 120.0  # the service-life date, no longer years away
    hal.t_s = 120.0
    fw.service()
    assert fw.alarms.is_active(AlarmId.ELECTIVE_REPLACEMENT)


def test_interrogation_reports_each_replaced_part_of_the_program() -> None:
    _hal, fw = flex_firmware()
    handler = CommandHandler(fw)

    def reported() -> m.TherapyProgram:
        response = handler.handle(m.InterrogateRequest())
        assert isinstance(response, m.InterrogateResponse)
        return response.program

    first = reported()
    assert reported() is first  # nothing replaced: the same wire record
    changes: list[Callable[[], object]] = [
        lambda: fw.set_patient_id("P-42"),
        lambda: fw.set_catheter(90, 2.0),
        lambda: fw.refill(20.0, "baclofen", 1000.0),
        lambda: fw.program(dataclasses.replace(FLEX, max_daily_dose_mcg=500)),
    ]
    for change in changes:
        before = reported()
        change()
        after = reported()
        assert after != before
        assert after == fw.active_program().to_wire() == Program.of(
            fw._p.program,
            drug=fw._p.drug.name,
            concentration_mcg_per_ml=fw._p.drug.concentration_mcg_per_ml,
            patient_id=fw._p.patient_id,
            catheter=fw._p.catheter,
        ).to_wire()
