"""Issue 10, "wrong today": the clinical stories a programmer must get right."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from itpump.emulator.device_profile import load_profile
from itpump.emulator.farm import PortSpec, PumpFarm
from itpump.emulator.faults import Fault, FaultKind
from itpump.emulator.hardware.fluid_path import Parcel
from itpump.emulator.hardware.pump_hardware import PumpHardware
from itpump.emulator.outputs import exposure, run_references, timeseries
from itpump.emulator.pump import EmulatedPump
from itpump.emulator.rig import RigPump
from itpump.emulator.runner import ScenarioRun
from itpump.emulator.scenario import ScenarioError, load_scenario, parse_scenario
from itpump.firmware_stubs.alarms import Severity
from itpump.firmware_stubs.drug_library import DrugLibraryError, parse_library
from itpump.firmware_stubs.errors import Refusal
from itpump.firmware_stubs.firmware import Firmware, TherapyState
from itpump.firmware_stubs.hal import Tone
from itpump.firmware_stubs.power import RESET_CLOCK_EPOCH_S
from itpump.firmware_stubs.priming import PathEmptied
from itpump.firmware_stubs.projection import PatientBolusUse
from itpump.programmer import PumpClient, PumpRefused
from itpump.protocol.codes import AlarmId, EventCode, ResultCode
from itpump.protocol.therapy import PatientBolus, Stopped, TherapyProgram
from itpump.tools.cli import main
from tests.pump_helpers import CATHETER_ML, START_EPOCH_S, FakeHal, continuous, make_pump
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
    use = PatientBolusUse(window_s=7 * DAY_S, since_s=0.0, max_per_day=48)
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
    return dataclasses.replace(program, patient_bolus=PatientBolus(20.0, 10, 60, 4))


# ---------------------------------------------------------------- priming (issue 10)
def test_a_prime_of_a_full_path_is_refused_naming_the_drug_it_would_push() -> None:
    _env, pump = make_pump(conc=2000.0)  # filled and primed at implant
    fw = pump.firmware
    assert fw.status().unprimed_ml == 0.0
    with pytest.raises(Refusal) as refused:
        pump.call(fw.prime)
    assert refused.value.code is ResultCode.INVALID_STATE
    assert "path is full of drug" in refused.value.detail
    assert "972 mcg" in refused.value.detail  # 0.486 mL at 2000 mcg/mL


def test_priming_counts_in_the_24h_dose() -> None:
    _env, pump = make_pump(conc=500.0)
    status = pump.firmware.status()
    path_ml = CATHETER_ML + CFG.internal_path_volume_ml
    assert status.dose_last_24h_mcg == pytest.approx(path_ml * 500.0, rel=1e-9)


def test_basal_delivery_fills_a_new_path_so_a_late_prime_is_refused() -> None:
    env, pump = make_pump(prime=False)
    fw = pump.firmware
    pump.call(fw.program, continuous(500.0, 1000.0))  # 1 mL/day fills 0.486 mL in ~12 h
    env.run(until=6.0)
    left = fw.status().unprimed_ml
    assert 0.0 < left < CATHETER_ML + CFG.internal_path_volume_ml
    assert pump.call(fw.prime) == pytest.approx(left)  # only what is still empty
    env.run(until=7.0)
    assert fw.status().unprimed_ml == 0.0
    with pytest.raises(Refusal):
        pump.call(fw.prime)


def test_catheter_revision_allows_a_prime_of_the_new_catheter_only() -> None:
    env, pump = make_pump(conc=500.0)
    fw = pump.firmware
    pump.call(fw.program, continuous(200.0, 500.0))
    env.run(until=48.0)
    in_path_before = pump.truth().path_mass_mcg
    new_catheter_ml = 80 * 2.6 / 1000
    assert pump.revise_catheter(80.0, 2.6) == pytest.approx(new_catheter_ml)
    truth = pump.truth()
    # The old catheter's drug left with it; the tubing kept its drug.
    assert truth.ledger.explanted_mcg == pytest.approx(in_path_before - 0.2 * 500.0)
    assert truth.path_volume_ml == pytest.approx(new_catheter_ml + 0.2)
    assert abs(truth.ledger.imbalance_mcg) < 1e-9 * truth.ledger.filled_mcg
    assert fw.status().catheter.length_cm == 80.0
    with pytest.raises(Refusal) as too_much:
        pump.call(fw.prime, 0.5)
    assert too_much.value.code is ResultCode.OUT_OF_RANGE
    assert "volume_ml" in too_much.value.detail
    assert pump.call(fw.prime) == pytest.approx(new_catheter_ml)
    assert fw.log.entries()[-1].code is EventCode.BOLUS_STARTED
    revised = [e for e in fw.log.entries() if e.code is EventCode.CATHETER_REVISED]
    assert revised
    assert revised[0].args[0] == 80.0


@pytest.mark.parametrize("basal_hours", [0.0, 12.0])
def test_a_revision_recorded_twice_primes_only_the_new_catheter(basal_hours: float) -> None:
    """The reviewer's case: one revision told to the pump twice (or a second revision after
    the basal partly filled the first new catheter). The old catheter leaves with its empty
    part, so the prime is the new catheter only and pushes no drug into the CSF."""
    env, pump = make_pump(conc=2000.0)
    fw = pump.firmware
    pump.call(fw.program, continuous(600.0, 1200.0))  # 0.3 mL/day
    env.run(until=72.0)
    new_catheter_ml = 100 * 2.6 / 1000
    pump.revise_catheter(100.0, 2.6)
    if basal_hours:
        env.run(until=72.0 + basal_hours)  # 12 h fill ~0.15 mL of the 0.26 mL catheter
    assert pump.revise_catheter(100.0, 2.6) == pytest.approx(new_catheter_ml)
    assert fw.status().unprimed_ml == pytest.approx(new_catheter_ml)
    csf_before_mcg = pump.truth().ledger.to_csf_mcg
    assert pump.call(fw.prime) == pytest.approx(new_catheter_ml)
    env.run(until=env.now + 1.0)
    # One hour of the 600 mcg/day basal, not a path volume of 2000 mcg/mL drug.
    assert pump.truth().ledger.to_csf_mcg - csf_before_mcg < 600.0 / 24 * 1.2


@pytest.mark.parametrize("profile", ["peristaltic-20", "valve-gated-20"])
def test_a_dry_reservoir_keeps_a_motor_pushing_the_path_to_the_tip(profile: str) -> None:
    """A motor keeps stroking with a dry reservoir: nothing enters at the pump end and the
    drug already in tubing and catheter moves on to the tip, so it is all delivered about a
    path volume later. An accumulator pump has no pressure left: its path keeps its drug."""
    prof = load_profile(profile)
    hw = PumpHardware(prof, CATHETER_ML, seed=3)
    hw.refill(0.0, 1.0, 500.0, drug="baclofen")
    rate_ml_per_day = 0.3
    hw.set_stroke_rate(0.0, rate_ml_per_day / 24.0 / hw.strokes.stroke_volume_ml)
    dry_h = 1.0 / rate_ml_per_day * 24.0
    hw.advance_to(dry_h * 1.05)
    assert hw.reservoir_ml == 0.0
    path_ml = hw.path.volume_ml
    held_mcg = hw.path.mass_mcg
    assert held_mcg > 0.5 * path_ml * 500.0
    hw.advance_to(dry_h * 1.05 + 12.0)
    ledger = hw.ledger()
    assert abs(ledger.imbalance_mcg) < 1e-9 * ledger.filled_mcg
    if prof.mechanism.value == "valve_gated":
        assert hw.path.mass_mcg == held_mcg
        return
    # Half a day at 0.3 mL/day pushes ~0.15 mL of the path's drug out (stroke noise ~1 %).
    assert held_mcg - hw.path.mass_mcg == pytest.approx(0.15 * 500.0, rel=0.05)
    hw.advance_to(dry_h * 1.05 + (path_ml / rate_ml_per_day) * 24.0 * 1.1)
    ledger = hw.ledger()
    assert hw.path.mass_mcg == 0.0
    assert not hw.path.holds_drug
    assert ledger.to_csf_mcg == pytest.approx(ledger.filled_mcg, rel=1e-12)
    # A refill now: the path is all empty, so a prime of the tubing pushes no drug out.
    hw.refill(hw.t_h, 5.0, 500.0, drug="baclofen")
    before_mcg = hw.ledger().to_csf_mcg
    hw.set_stroke_rate(hw.t_h, 12.0 / hw.strokes.stroke_volume_ml)  # 12 mL/h
    hw.advance_to(hw.t_h + prof.internal_path_volume_ml / 12.0)
    assert hw.ledger().to_csf_mcg == before_mcg
    assert abs(hw.ledger().imbalance_mcg) < 1e-9 * hw.ledger().filled_mcg


def test_the_empty_alarm_then_a_refill_with_a_residual_refuses_the_tubing_prime() -> None:
    """The reviewer's case: the empty alarm fires with 0.5 mL left by the estimate, so the
    tubing is full of drug; after a refill whose aspirated residual is normal, a prime would
    push the tubing's drug into the CSF. It is refused and nothing extra is delivered."""
    env, pump = make_pump(fill_ml=2.0, conc=2000.0)
    fw = pump.firmware
    pump.call(fw.program, continuous(1000.0, 2000.0))  # 0.5 mL/day: empty alarm after ~3 days
    env.run(until=3.5 * 24.0)
    assert fw.alarms.is_active(AlarmId.EMPTY_RESERVOIR)
    assert fw.status().unprimed_ml == 0.0  # the alarm alone does not make the path primable
    outcome = pump.refill(10.0, "baclofen", 2000.0)  # the true residual is aspirated, told
    assert outcome.aspirated_ml > 4 * CFG.dry_aspirate_ml
    assert fw.status().unprimed_ml == 0.0
    csf_before_mcg = pump.truth().ledger.to_csf_mcg
    with pytest.raises(Refusal) as refused:
        pump.call(fw.prime)
    assert refused.value.code is ResultCode.INVALID_STATE
    assert "path is full of drug" in refused.value.detail
    env.run(until=env.now + 1.0)
    # One hour of the 1000 mcg/day basal, not the tubing's 400 mcg on top.
    delivered_mcg = pump.truth().ledger.to_csf_mcg - csf_before_mcg
    assert delivered_mcg == pytest.approx(1000.0 / 24, rel=0.1)
    assert not any(
        e.code is EventCode.BOLUS_STARTED and e.rtc_s > START_EPOCH_S + 48 * 3600.0
        for e in fw.log.entries()
    )


def test_an_estimate_run_to_zero_allows_a_prime_of_the_tubing_only() -> None:
    hal, fw = filled_firmware(conc=500.0, volume_ml=3.0)
    fw.prime()
    fw.program(continuous(500.0, 1000.0))  # 1 mL/day to the empty alarm at 0.5 mL
    advance(hal, fw, 3 * 86400.0)
    assert fw.alarms.is_active(AlarmId.EMPTY_RESERVOIR)
    assert fw.status().unprimed_ml == 0.0
    # Minimum-rate mode runs the estimated ~0.5 mL dry in about 0.5 / 0.006 = 83 days.
    to_zero_s = fw.reservoir_estimate_ml() / CFG.minimum_rate_mode_ml_per_day * 86400.0
    assert 80 * 86400.0 < to_zero_s < 84 * 86400.0
    advance(hal, fw, 3 * 86400.0 + to_zero_s - 3600.0)
    assert fw.status().unprimed_ml == 0.0
    advance(hal, fw, 3 * 86400.0 + to_zero_s + 1.0)
    status = fw.status()
    assert status.reservoir_estimate_ml == 0.0
    assert status.unprimed_ml == pytest.approx(CFG.internal_path_volume_ml)
    assert status.path_emptied is PathEmptied.EMPTY_RESERVOIR
    fw.refill(10.0, "baclofen", 500.0)  # no residual measured: the estimate's belief stands
    with pytest.raises(Refusal) as too_much:
        fw.prime(CFG.internal_path_volume_ml + 0.1)
    assert too_much.value.code is ResultCode.OUT_OF_RANGE
    assert fw.prime() == pytest.approx(CFG.internal_path_volume_ml)


def test_a_measured_residual_withdraws_the_estimates_dry_belief() -> None:
    hal, fw = filled_firmware(conc=500.0, volume_ml=3.0)
    fw.prime()
    fw.program(continuous(500.0, 1000.0))
    advance(hal, fw, 100 * 86400.0)  # estimate run to 0 in minimum-rate mode
    assert fw.status().unprimed_ml == pytest.approx(CFG.internal_path_volume_ml)
    # An under-infusing pump: the clinician aspirates 1 mL, so the tubing never drew air.
    fw.refill(10.0, "baclofen", 500.0, aspirated_ml=1.0)
    assert fw.status().unprimed_ml == 0.0
    assert fw.status().path_emptied is PathEmptied.NONE
    with pytest.raises(Refusal) as refused:
        fw.prime()
    assert refused.value.code is ResultCode.INVALID_STATE


@pytest.mark.parametrize("aspirated_ml", [0.0, CFG.dry_aspirate_ml])
def test_a_refill_of_a_dry_reservoir_allows_a_tubing_prime(aspirated_ml: float) -> None:
    """A reservoir truly dry (an over-infusing pump) before its estimate says so: the
    clinician's aspirate finds nothing, so the tubing may hold air."""
    env, pump = make_pump(fill_ml=3.0, conc=500.0)
    fw = pump.firmware
    pump.call(fw.program, continuous(500.0, 1000.0))
    env.run(until=24.0)  # ~2 mL left by the estimate, no alarm
    assert fw.status().unprimed_ml == 0.0
    pump.refill(10.0, "baclofen", 500.0, reported_aspirated_ml=aspirated_ml)
    status = fw.status()
    assert status.unprimed_ml == pytest.approx(CFG.internal_path_volume_ml)
    assert status.path_emptied is PathEmptied.EMPTY_RESERVOIR
    assert pump.call(fw.prime) == pytest.approx(CFG.internal_path_volume_ml)


def test_a_refill_just_above_the_dry_threshold_keeps_the_path_full() -> None:
    hal, fw = filled_firmware(conc=500.0, volume_ml=3.0)
    fw.prime()
    advance(hal, fw, 3600.0)
    fw.refill(10.0, "baclofen", 500.0, aspirated_ml=CFG.dry_aspirate_ml + 0.01)
    assert fw.status().unprimed_ml == 0.0


def test_catheter_revision_scenario_action_with_and_without_telling_the_pump() -> None:
    def run(tell: bool) -> ScenarioRun:
        data: dict[str, object] = {
            "scenario": {"name": "rev", "duration": "3d"},
            "actions": [
                {"type": "refill", "at": 0, "volume_ml": 20.0, "concentration_mcg_per_ml": 500.0},
                {"type": "prime", "at": 0},
                {
                    "type": "program",
                    "at": "1h",
                    "mode": "continuous",
                    "dose_mcg_per_day": 200.0,
                    "max_daily_dose_mcg": 800.0,
                },
                {"type": "catheter_revision", "at": "1d", "length_cm": 60, "tell_pump": tell},
                {"type": "prime", "at": "1d"},
            ],
        }
        scenario_run = ScenarioRun(parse_scenario(data))
        scenario_run.run()
        return scenario_run

    told = run(True)
    assert not told.result.refusals
    assert told.pump.firmware.status().catheter.length_cm == 60.0
    untold = run(False)
    assert [(o.type, o.code) for o in untold.result.refusals] == [("prime", "INVALID_STATE")]
    assert untold.pump.firmware.status().catheter.length_cm == 110.0
    assert untold.pump.truth().path_volume_ml == pytest.approx(60 * 2.6 / 1000 + 0.2)


def test_catheter_revision_over_telemetry_and_ctl(
    itpump_pump: RigPump, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The programmer records a revision; the pump (and the emulated body) get the new,
    empty catheter; interrogation shows the primable volume; a prime fills it; a second
    prime is refused."""
    monkeypatch.delenv("ITPUMP_KEY", raising=False)
    with PumpClient(itpump_pump.url, key=itpump_pump.key) as programmer:
        programmer.connect()
        assert programmer.interrogate().unprimed_ml == 0.0
        with pytest.raises(PumpRefused) as refused:
            programmer.prime()
        assert refused.value.code is ResultCode.INVALID_STATE
    key_hex = itpump_pump.key.hex()
    assert main(["ctl", itpump_pump.url, "--key", key_hex, "catheter-revision", "80"]) == 0
    assert "allowed up to 0.208 mL" in capsys.readouterr().out
    assert itpump_pump.truth().path_volume_ml == pytest.approx(80 * 2.6 / 1000 + 0.2)
    assert main(["ctl", itpump_pump.url, "--key", key_hex, "status"]) == 0
    assert "0.208 mL of the path empty (prime allowed)" in capsys.readouterr().out
    with PumpClient(itpump_pump.url, key=itpump_pump.key) as programmer:
        programmer.connect()
        assert programmer.prime().volume_ml == pytest.approx(0.208)
        with pytest.raises(PumpRefused) as running:
            programmer.prime()
        assert "priming bolus in progress" in running.value.detail
    itpump_pump.advance(1.0)  # 0.208 mL at 24 mL/day takes 12.5 min
    with PumpClient(itpump_pump.url, key=itpump_pump.key) as programmer:
        programmer.connect()
        with pytest.raises(PumpRefused) as full:
            programmer.prime()
        assert "path is full of drug" in full.value.detail
    # The device's catheter range is the pump's (its profile), refused in clinical units;
    # only a value the wire cannot carry at all is refused before the port is opened.
    assert main(["ctl", itpump_pump.url, "--key", key_hex, "catheter-revision", "300"]) == 3
    assert "length_cm=300 cm outside allowed range 1..200 cm" in capsys.readouterr().err
    assert main(["ctl", itpump_pump.url, "catheter-revision", "7000"]) == 2
    assert "LENGTH_CM" in capsys.readouterr().err


# ---------------------------------------------------------------- refill entry (issue 10)
def test_a_residual_left_behind_mixes_and_the_entry_is_the_volume_after_the_refill() -> None:
    env, pump = make_pump(conc=500.0)
    fw = pump.firmware
    pump.call(fw.program, continuous(500.0, 1000.0))  # 1 mL/day
    env.run(until=10 * 24.0)
    residual_ml = pump.truth().reservoir_ml
    pump.refill(10.0, "baclofen", 1000.0, aspirate_ml=residual_ml - 3.0, bridge=False)
    truth = pump.truth()
    status = fw.status()
    # The clinician enters the volume now in the reservoir: injected plus what stayed behind.
    assert status.reservoir_estimate_ml == pytest.approx(13.0, abs=1e-6)
    assert truth.reservoir_ml == pytest.approx(13.0, abs=1e-6)
    # The pump believes the new concentration; the reservoir holds the mix.
    assert status.drug.concentration_mcg_per_ml == 1000.0
    assert truth.reservoir_conc_mcg_per_ml == pytest.approx((3 * 500 + 10 * 1000) / 13, rel=1e-9)


def test_a_physical_fill_can_differ_from_the_entry() -> None:
    _env, pump = make_pump(fill_ml=0.0, prime=False)
    pump.refill(
        20.0,
        "morphine",
        2000.0,
        entered_drug="baclofen",
        entered_conc_mcg_per_ml=500.0,
        pocket_fraction=0.25,
    )
    truth = pump.truth()
    status = pump.firmware.status()
    assert (status.drug.name, status.drug.concentration_mcg_per_ml) == ("baclofen", 500.0)
    assert status.reservoir_estimate_ml == 20.0
    assert truth.reservoir_drug == "morphine"
    assert truth.reservoir_ml == pytest.approx(15.0)
    assert truth.reservoir_conc_mcg_per_ml == 2000.0
    assert truth.ledger.to_tissue_mcg == pytest.approx(5.0 * 2000.0)
    with pytest.raises(Refusal) as bad:
        pump.refill(1.0, "baclofen", 500.0, pocket_fraction=1.5)
    assert "pocket_fraction" in bad.value.detail


@pytest.mark.parametrize(
    ("infused_ml", "aspirate_error_ml", "logged"),
    [(2.0, 1.0, True), (14.0, 1.0, False), (14.0, 2.1, True)],
)
def test_the_aspiration_tolerance_grows_with_the_volume_infused(
    infused_ml: float, aspirate_error_ml: float, logged: bool
) -> None:
    hal, fw = filled_firmware(volume_ml=20.0)
    fw.program(continuous(500.0, 1000.0))  # 1 mL/day
    advance(hal, fw, infused_ml * DAY_S)
    expected_ml = fw.status().reservoir_estimate_ml
    fw.refill(20.0, "baclofen", 500.0, aspirated_ml=expected_ml - aspirate_error_ml)
    discrepancies = [e for e in fw.log.entries() if e.code is EventCode.REFILL_DISCREPANCY]
    assert bool(discrepancies) is logged
    if logged:
        tolerance = discrepancies[0].args[2]
        assert tolerance == pytest.approx(
            CFG.refill_tolerance_min_ml + CFG.refill_tolerance_fraction_of_infused * infused_ml
        )


def test_refill_scenario_fields_reach_the_pump_and_the_body() -> None:
    data: dict[str, object] = {
        "scenario": {"name": "mixup", "duration": "1d"},
        "actions": [
            {
                "type": "refill",
                "at": 0,
                "volume_ml": 20.0,
                "drug": "baclofen",
                "concentration_mcg_per_ml": 2000.0,
                "entered_concentration_mcg_per_ml": 500.0,
                "entered_volume_ml": 18.0,
                "pocket_fill_fraction": 0.1,
            }
        ],
    }
    scenario_run = ScenarioRun(parse_scenario(data))
    scenario_run.run()
    status = scenario_run.pump.firmware.status()
    truth = scenario_run.pump.truth()
    assert status.drug.concentration_mcg_per_ml == 500.0
    assert status.reservoir_estimate_ml == pytest.approx(18.0)
    assert truth.reservoir_ml == pytest.approx(18.0)
    assert truth.ledger.to_tissue_mcg == pytest.approx(2.0 * 2000.0)
    data["actions"][0]["pocket_fill_fraction"] = 2  # type: ignore[index]
    with pytest.raises(ScenarioError, match="pocket_fill_fraction"):
        parse_scenario(data)


# ---------------------------------------------------------------- power-on reset (issue 10)
def _reprogram(pump: EmulatedPump) -> None:
    fw = pump.firmware
    pump.call(fw.set_clock, 1_767_700_000.0)
    pump.call(fw.program, continuous(200.0, 500.0))


def test_a_battery_fault_recovered_comes_back_in_the_safe_state() -> None:
    env, pump = make_pump()
    fw = pump.firmware
    pump.call(fw.program, continuous(200.0, 500.0))
    env.run(until=24.0)
    pump.inject(Fault.make("battery_dead"))
    env.run(until=30.0)
    pump.clear(FaultKind.BATTERY_DEAD)
    status = fw.status()
    assert not status.clock_valid
    assert status.rtc_s == pytest.approx(RESET_CLOCK_EPOCH_S)
    assert status.therapy_state is TherapyState.MINIMUM_RATE
    assert status.commanded_rate_ml_per_day == pytest.approx(CFG.minimum_rate_mode_ml_per_day)
    assert isinstance(status.program.mode, Stopped)
    critical = [a for a in status.alarms if a.alarm is AlarmId.POWER_ON_RESET]
    assert critical
    assert critical[0].severity is Severity.CRITICAL
    # Kept in NVM: drug, catheter, reservoir estimate.
    assert status.drug.concentration_mcg_per_ml == 500.0
    assert status.catheter.length_cm == 110.0
    # Every bolus is refused until reprogrammed; a program is refused until the clock is set.
    for command in (lambda: fw.clinician_bolus(10.0, 10.0), fw.prime, fw.bridge_bolus):
        with pytest.raises(Refusal) as refused:
            pump.call(command)
        assert "power-on reset" in refused.value.detail
    with pytest.raises(Refusal) as no_clock:
        pump.call(fw.program, continuous(200.0, 500.0))
    assert "set the clock" in no_clock.value.detail
    _reprogram(pump)
    status = fw.status()
    assert status.clock_valid
    assert status.therapy_state is TherapyState.RUNNING
    assert not any(a.alarm is AlarmId.POWER_ON_RESET for a in status.alarms)
    assert status.commanded_rate_ml_per_day == pytest.approx(200.0 / 500.0)


def test_a_profile_without_power_on_reset_resumes_its_program() -> None:
    profile = load_profile("peristaltic-20").model_copy(update={"power_on_reset": False})
    env, pump = make_pump(profile)
    fw = pump.firmware
    pump.call(fw.program, continuous(200.0, 500.0))
    env.run(until=24.0)
    pump.inject(Fault.make("battery_dead"))
    env.run(until=30.0)
    pump.clear(FaultKind.BATTERY_DEAD)
    status = fw.status()
    assert status.clock_valid
    assert status.therapy_state is TherapyState.RUNNING
    assert [e.code for e in fw.log.entries()][-1] is EventCode.POWER_ON


@pytest.mark.parametrize("policy", ["resume", "power-on-reset"])
async def test_a_restart_after_a_kill_resumes_or_resets_as_configured(
    tmp_path: Path, policy: Literal["resume", "power-on-reset"]
) -> None:
    db = tmp_path / "farm.db"
    scenario = load_scenario("clinic-ready")
    first = PumpFarm(scenario, port=PortSpec("null"), speed=0.0, state=db)
    first.advance(5.0)
    first.save_all()
    assert first.store is not None
    first.store.close()  # as a SIGKILL leaves it: no clean stop recorded
    first.store = None
    second = PumpFarm(
        scenario, port=PortSpec("null"), speed=0.0, state=db, unclean_restart=policy
    )
    reported = second.pumps[0].reported()
    reset = policy == "power-on-reset"
    assert reported.clock_valid is not reset
    assert any(a.alarm is AlarmId.POWER_ON_RESET for a in reported.alarms) is reset
    await second.close()
    # A clean stop is not a power loss: the next start resumes whatever the policy.
    third = PumpFarm(
        scenario, port=PortSpec("null"), speed=0.0, state=db, unclean_restart="power-on-reset"
    )
    assert third.pumps[0].reported().program == reported.program
    assert sum(
        e.code is EventCode.POWER_ON_RESET for e in third.pumps[0].run.pump.firmware.log.entries()
    ) == int(reset)
    await third.close()
    await first.close()


# ---------------------------------------------------------------- valve-gated MRI (issue 10)
def _mri_scenario(profile: str, reset: bool) -> dict[str, object]:
    actions: list[dict[str, object]] = [
        {"type": "refill", "at": 0, "volume_ml": 20.0, "concentration_mcg_per_ml": 500.0},
        {"type": "prime", "at": 0},
        {
            "type": "program",
            "at": "1h",
            "mode": "continuous",
            "dose_mcg_per_day": 500.0,
            "max_daily_dose_mcg": 1000.0,
        },
        {"type": "fault", "at": "2d", "kind": "mri"},
        {"type": "clear_fault", "at": "2d 1h", "kind": "mri"},
    ]
    if reset:
        actions.append({"type": "valve_reset", "at": "3d"})
    return {
        "scenario": {"name": "mri", "profile": profile, "duration": "5d"},
        "actions": actions,
    }


@pytest.mark.parametrize("reset", [False, True])
def test_the_mri_valve_stays_shut_until_a_clinician_resets_it(reset: bool) -> None:
    run = ScenarioRun(parse_scenario(_mri_scenario("valve-gated-20", reset)))
    run.env.run(until=48.0)
    csf_before = run.pump.truth().ledger.to_csf_mcg
    run.env.run(until=72.0)
    # In the field and a day after it: 10 uL at most, whatever the pump commands.
    assert run.pump.truth().ledger.to_csf_mcg - csf_before <= 0.010 * 500.0 + 1e-9
    assert run.pump.hardware.valve_shut
    run.run()
    assert not run.result.refusals
    moved_after_reset = run.pump.truth().ledger.to_csf_mcg - csf_before
    # 2 days of 500 mcg/day after the reset (96.8 % mechanism accuracy), or nothing.
    assert (moved_after_reset > 900.0) is reset
    assert run.pump.hardware.valve_shut is not reset
    assert (
        any(e.code is EventCode.MRI_VALVE_RESET for e in run.pump.firmware.log.entries())
        is reset
    )


def test_a_pump_without_a_safety_valve_dumps_its_reservoir_in_a_field() -> None:
    run = ScenarioRun(parse_scenario(_mri_scenario("valve-gated-20-no-mri-valve", False)))
    run.env.run(until=48.0)
    truth = run.pump.truth()
    reservoir_ml, csf = truth.reservoir_ml, truth.ledger.to_csf_mcg
    run.env.run(until=48.0 + 5 / 60)  # 5 min at 1 mL/min
    dumped = run.pump.truth()
    assert reservoir_ml - dumped.reservoir_ml == pytest.approx(5.0, rel=1e-9)
    assert dumped.ledger.to_csf_mcg - csf == pytest.approx(5.0 * 500.0, rel=1e-6)
    run.env.run(until=49.0)  # the rest of the hour in the field: all of it is gone
    assert run.pump.truth().reservoir_ml == 0.0
    assert abs(run.pump.truth().ledger.imbalance_mcg) < 1e-9 * truth.ledger.filled_mcg
    # No valve: the reset is refused, naming why.
    with pytest.raises(Refusal) as refused:
        run.pump.call(run.pump.firmware.reset_mri_valve)
    assert refused.value.code is ResultCode.NOT_SUPPORTED


@pytest.mark.itpump(profile="valve-gated-20")
def test_valve_reset_over_telemetry(
    itpump_pump: RigPump, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ITPUMP_KEY", raising=False)
    itpump_pump.inject("mri")
    itpump_pump.advance(1.0)
    itpump_pump.clear("mri")
    assert itpump_pump.truth().faults == ()
    key_hex = itpump_pump.key.hex()
    assert main(["ctl", itpump_pump.url, "--key", key_hex, "valve-reset"]) == 0
    assert "valve reset" in capsys.readouterr().out
    with PumpClient(itpump_pump.url, key=itpump_pump.key) as programmer:
        programmer.connect()
        programmer.reset_mri_valve()
        log = programmer.read_log()
    assert [r.event for r in log[:2]] == ["MRI_VALVE_RESET", "MRI_VALVE_RESET"]


# ---------------------------------------------------------------- drug library (issue 10)
def test_20_mg_per_ml_baclofen_is_refused_naming_the_drug_and_range() -> None:
    _env, pump = make_pump(fill_ml=0.0, prime=False)
    with pytest.raises(Refusal) as refused:
        pump.refill(20.0, "baclofen", 20000.0)
    assert refused.value.code is ResultCode.OUT_OF_RANGE
    assert "baclofen: 50..2000 mcg/mL" in refused.value.detail
    assert pump.truth().reservoir_ml == 0.0  # refused: nothing injected
    with pytest.raises(Refusal) as unknown:
        pump.refill(20.0, "baclofenn", 500.0)
    assert "not in the pump's drug library" in unknown.value.detail
    assert "morphine" in unknown.value.detail
    pump.refill(20.0, "Baclofen", 2000.0)  # names match case-insensitively


def test_a_program_beyond_the_drugs_daily_limit_is_refused() -> None:
    _env, pump = make_pump(conc=2000.0)
    fw = pump.firmware
    with pytest.raises(Refusal) as refused:
        pump.call(fw.program, continuous(400.0, 4000.0))  # a 10x slip in the daily maximum
    assert refused.value.code is ResultCode.DAILY_DOSE_EXCEEDED
    assert "baclofen: 0..2000 mcg/day" in refused.value.detail
    pump.call(fw.program, continuous(400.0, 700.0))
    # A refill with a drug whose limit (clonidine: 600) the program exceeds is refused too.
    with pytest.raises(Refusal) as switch:
        pump.refill(5.0, "clonidine", 500.0)
    assert "clonidine" in switch.value.detail


def _one_refill(profile: str, **refill: object) -> dict[str, object]:
    action: dict[str, object] = {"type": "refill", "at": 0, "volume_ml": 20.0}
    action.update({"concentration_mcg_per_ml": 500.0, **refill})
    return {"scenario": {"name": "x", "duration": "1d", "profile": profile}, "actions": [action]}


def test_an_unlisted_physical_drug_is_refused_at_load_naming_the_known_drugs() -> None:
    data = _one_refill("peristaltic-20", drug="fentanyl", entered_drug="baclofen")
    with pytest.raises(ScenarioError) as bad:
        parse_scenario(data)
    message = str(bad.value)
    assert "\n" not in message
    assert "drug='fentanyl'" in message
    assert "known: baclofen, morphine" in message
    # A listed drug other than the entry stays allowed: the wrong-drug story.
    parse_scenario(_one_refill("peristaltic-20", drug="morphine", entered_drug="baclofen"))


def test_an_mri_restart_delay_on_a_valve_gated_pump_is_refused_at_load() -> None:
    def mri(profile: str, value: float | None) -> dict[str, object]:
        fault: dict[str, object] = {"type": "fault", "at": "1h", "kind": "mri"}
        if value is not None:
            fault["value"] = value
        return {"scenario": {"name": "x", "duration": "1d", "profile": profile}, "actions": [fault]}

    with pytest.raises(ScenarioError) as bad:
        parse_scenario(mri("valve-gated-20", 20.0))
    assert "\n" not in str(bad.value)
    assert "value=20" in str(bad.value)
    assert "peristaltic pump only" in str(bad.value)
    parse_scenario(mri("valve-gated-20", None))
    parse_scenario(mri("valve-gated-20", 0.0))
    parse_scenario(mri("peristaltic-20", 20.0))


def test_an_armed_pocket_fill_wins_over_a_fraction_and_an_aspirate_takes_what_is_there() -> None:
    """Documented in docs/scenarios.md (`refill`): the fault puts the whole injection in the
    pocket whatever `pocket_fill_fraction` says; asking to aspirate more than the reservoir
    holds takes all of it."""
    hw = PumpHardware(load_profile("peristaltic-20"), CATHETER_ML, seed=1)
    hw.refill(0.0, 3.0, 500.0, drug="baclofen")
    outcome = hw.refill(1.0, 4.0, 500.0, aspirate_ml=10.0, pocket_fraction=0.5, drug="baclofen")
    assert outcome.aspirated_ml == pytest.approx(3.0)
    assert outcome.injected_to_pocket_ml == pytest.approx(2.0)
    hw.inject(2.0, Fault.make("pocket_fill", None))
    outcome = hw.refill(2.0, 4.0, 500.0, pocket_fraction=0.5, drug="baclofen")
    assert outcome.injected_to_pocket_ml == pytest.approx(4.0)
    assert abs(hw.ledger().imbalance_mcg) < 1e-9 * hw.ledger().filled_mcg


class _TipRates:
    """Collects what the hardware reports at the tip."""

    def __init__(self) -> None:
        self.segments: list[tuple[float, float, float, float]] = []
        self.boluses: list[tuple[float, float]] = []

    def on_tip_segment(
        self, t0_h: float, t1_h: float, csf: float, tissue: float, pk_csf: float, pk_tissue: float
    ) -> None:
        self.segments.append((csf, tissue, pk_csf, pk_tissue))

    def on_tissue_bolus(self, t_h: float, mass_mcg: float, pk_mass_mcg: float) -> None:
        self.boluses.append((mass_mcg, pk_mass_mcg))

    def on_breakpoint(self, t_h: float) -> None:
        pass


def test_a_mixed_reservoir_feeds_the_pk_model_its_baclofen_share() -> None:
    # 5 mL of baclofen 500 left behind, topped up with 15 mL of morphine 1000: the reservoir
    # is 875 mcg/mL of which 125 is baclofen; once that mix reaches the tip the PK model gets
    # 125/875 of the mass rate, the mass balance all of it. A morphine pocket fill reaches
    # tissue without reaching the PK model.
    listener = _TipRates()
    hw = PumpHardware(load_profile("peristaltic-20"), CATHETER_ML, seed=1, listener=listener)
    hw.refill(0.0, 20.0, 500.0, drug="baclofen")
    hw.refill(0.0, 15.0, 1000.0, aspirate_ml=15.0, drug="morphine", pk_modelled=False)
    assert hw.reservoir_drug == "mixed"
    assert hw.reservoir_conc_mcg_per_ml == pytest.approx(875.0)
    assert hw.reservoir_pk_conc_mcg_per_ml == pytest.approx(125.0)
    hw.set_stroke_rate(0.0, 2000.0)
    hw.advance_to(200.0)  # long enough to flush the catheter with the mix
    csf, _, pk_csf, _ = listener.segments[-1]
    assert csf > 0
    assert pk_csf == pytest.approx(csf * 125.0 / 875.0, rel=1e-9)
    hw.refill(200.0, 1.0, 1000.0, aspirate_ml=0.0, drug="morphine", pocket_fraction=1.0,
              pk_modelled=False)
    [(mass_mcg, pk_mass_mcg)] = listener.boluses
    assert mass_mcg == pytest.approx(1000.0)
    assert pk_mass_mcg == 0.0
    assert abs(hw.ledger().imbalance_mcg) < 1e-9 * hw.ledger().filled_mcg


def test_parcels_pickled_before_the_pk_share_load_as_all_modelled() -> None:
    old = Parcel(1.0, 500.0)
    old.__setstate__((2.0, 300.0))  # the state an older Parcel pickled
    assert (old.volume_ml, old.conc_mcg_per_ml, old.pk_conc) == (2.0, 300.0, 300.0)
    mixed = Parcel(1.0, 875.0, 125.0)
    assert pickle.loads(pickle.dumps(mixed)) == mixed


def test_a_valve_reset_inside_the_field_lets_ten_microlitres_through_then_shuts_again() -> None:
    """Documented in docs/scenarios.md (`valve_reset`): the real valve shuts again in a field."""
    env, pump = make_pump("valve-gated-20")
    pump.call(pump.firmware.program, continuous(2000.0))
    env.run(until=5.0)
    reservoir_ml = pump.truth().reservoir_ml
    pump.inject(Fault.make("mri"))
    env.run(until=24.0)
    pump.call(pump.firmware.reset_mri_valve)  # still in the field
    env.run(until=48.0)
    assert reservoir_ml - pump.truth().reservoir_ml == pytest.approx(0.020, abs=1e-9)


def test_the_library_file_is_validated() -> None:
    good = {
        "name": "x",
        "min_concentration_mcg_per_ml": 1.0,
        "max_concentration_mcg_per_ml": 2.0,
        "min_daily_dose_mcg": 0.0,
        "max_daily_dose_mcg": 1.0,
        "pk_model": "none",
    }
    assert parse_library({"drug": [good]}, "lib").find("X") is not None
    for bad, message in [
        ({**good, "pk_model": "aspirin"}, "pk_model one of baclofen, none"),
        ({**good, "min_concentration_mcg_per_ml": 3.0}, "each min must not exceed its max"),
        ({**good, "max_daily_dose_mcg": "1"}, "max_daily_dose_mcg must be a float"),
        ({k: v for k, v in good.items() if k != "name"}, "needs exactly the fields"),
    ]:
        with pytest.raises(DrugLibraryError, match=message):
            parse_library({"drug": [bad]}, "lib")


def _drug_scenario(drug: str, conc: float) -> dict[str, object]:
    return {
        "scenario": {"name": drug, "duration": "3d"},
        "actions": [
            {"type": "refill", "at": 0, "volume_ml": 20.0, "drug": drug,
             "concentration_mcg_per_ml": conc},
            {"type": "prime", "at": 0},
            {"type": "program", "at": "1h", "mode": "continuous", "dose_mcg_per_day": 300.0,
             "max_daily_dose_mcg": 600.0},
        ],
    }


def test_a_drug_without_pk_gets_no_concentrations_not_baclofens() -> None:
    morphine = ScenarioRun(parse_scenario(_drug_scenario("morphine", 1000.0)))
    assert morphine.pk_model is None
    result = morphine.run()
    assert not result.refusals
    columns = timeseries(result, np.array([24.0, 48.0]))
    assert np.isnan(columns["csf_lumbar_ng_per_ml"]).all()
    assert np.isnan(columns["plasma_ng_per_ml"]).all()
    assert result.drugs_without_pk == [("morphine", 0.0)]
    baclofen = ScenarioRun(parse_scenario(_drug_scenario("baclofen", 1000.0))).run()
    assert (timeseries(baclofen, np.array([48.0]))["csf_lumbar_ng_per_ml"] > 100.0).all()
    assert baclofen.drugs_without_pk == []
    assert [f.drug for f in baclofen.pump.drug_fills] == ["baclofen"]


def test_a_wrong_drug_refill_keeps_baclofens_concentrations_and_shows_the_withdrawal() -> None:
    # Baclofen for 3 days, then a refill with morphine entered as baclofen: the PK model is
    # fed baclofen's mass only, so the concentrations are baclofen's for the whole run and
    # fall once morphine reaches the tip (the withdrawal this story is about); the morphine
    # still counts in the mass balance and the doses.
    story = _drug_scenario("baclofen", 500.0)
    story["scenario"] = {"name": "wrong drug", "duration": "8d"}
    actions = story["actions"]
    assert isinstance(actions, list)
    actions.append(
        {"type": "refill", "at": "3d", "volume_ml": 20.0, "drug": "morphine",
         "concentration_mcg_per_ml": 1000.0, "entered_drug": "baclofen",
         "entered_concentration_mcg_per_ml": 500.0}
    )
    run = ScenarioRun(parse_scenario(story))
    assert run.pk_model is not None
    result = run.run()
    assert not result.refusals
    assert result.drugs_without_pk == [("morphine", 72.0)]
    ledger = result.pump.hardware.ledger()
    assert ledger.imbalance_mcg == pytest.approx(0.0, abs=1e-6)
    recorder = result.pump.recorder
    assert recorder is not None
    _, csf_total, _ = recorder.cumulative_points()
    _, csf_pk, _ = recorder.cumulative_points(pk_only=True)
    assert csf_total[-1] == pytest.approx(ledger.to_csf_mcg, rel=1e-9)
    assert csf_pk[-1] < csf_total[-1] - 500.0  # days of morphine are not baclofen's
    columns = timeseries(result, np.array([24.0, 48.0, 70.0, 120.0, 190.0]))
    lumbar = columns["csf_lumbar_ng_per_ml"]
    assert not np.isnan(lumbar).any()
    assert not np.isnan(columns["plasma_ng_per_ml"]).any()
    assert (lumbar[:3] > 300.0).all()  # steady baclofen before the refill
    assert lumbar[3] < lumbar[2] / 10.0
    assert lumbar[4] < lumbar[3]
    refs = run_references(result)
    assert refs.levels is not None
    assert refs.no_pk_drug == "morphine"
    # Morphine reaches the patient only once the path's baclofen has left the tip.
    assert 72.0 < refs.no_pk_from_h < 120.0
    note = refs.no_pk_note(result.scenario.scenario.start)
    assert note is not None
    assert note.startswith("no PK model for morphine from 2026-")
    summary = exposure(result)
    assert summary["reference_levels_of"] == "baclofen"
    assert summary["no_pk_model_for"] == "morphine"
    assert summary["csf_below_range_h"] > 48.0
    assert summary["csf_below_range_first_utc"] is not None


def test_simulate_writes_its_outputs_for_a_drug_without_pk(tmp_path: Path) -> None:
    path = tmp_path / "morphine.toml"
    path.write_text(
        """
[scenario]
name = "morphine"
duration = "3d"

[[actions]]
at = 0
type = "refill"
volume_ml = 20
drug = "morphine"
concentration_mcg_per_ml = 1000

[[actions]]
at = "1h"
type = "program"
mode = "continuous"
dose_mcg_per_day = 300
max_daily_dose_mcg = 600
""",
        encoding="utf-8",
    )
    assert main(["simulate", str(path), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "report.png").stat().st_size > 0


def test_a_live_patient_is_fed_only_baclofen_after_a_refill_with_another_drug() -> None:
    run = ScenarioRun(parse_scenario(_drug_scenario("baclofen", 1000.0)), live_pk=True)
    run.env.run(until=24.0)
    before = run.pump.concentrations()
    assert before is not None
    run.pump.refill(10.0, "morphine", 1000.0)
    run.env.run(until=72.0)
    after = run.pump.concentrations()
    # Still baclofen's model, now starved of baclofen once morphine fills the catheter.
    assert after is not None
    assert after.csf_lumbar_ng_per_ml < before.csf_lumbar_ng_per_ml / 10.0


def test_a_live_patient_with_only_drugs_without_pk_has_no_concentrations() -> None:
    run = ScenarioRun(parse_scenario(_drug_scenario("morphine", 1000.0)), live_pk=True)
    run.env.run(until=24.0)
    assert run.pump.concentrations() is None


# ---------------------------------------------------------------- alarm cadence (issue 10)
NON_CRITICAL = Tone.NON_CRITICAL_SINGLE_1S
CRITICAL = Tone.CRITICAL_TWO_TONE_3S


def test_an_alarm_repeats_on_its_cadence_until_acknowledged() -> None:
    env, pump = make_pump(fill_ml=5.0)
    fw = pump.firmware
    pump.call(fw.program, continuous(500.0, 1000.0))  # 1 mL/day: low alarm at ~3 days
    env.run(until=4 * 24.0)
    low = next(a for a in fw.alarms.active() if a.alarm is AlarmId.LOW_RESERVOIR)
    raised_h = (low.raised_rtc_s - START_EPOCH_S) / 3600.0
    tones = [t for t, tone in pump.tones_between(raised_h, raised_h + 5.5) if tone is NON_CRITICAL]
    # Once at the raise, then every hour (the non-critical cadence).
    assert tones == pytest.approx([raised_h + k for k in range(6)])
    ack_h = pump.now_h
    pump.call(fw.acknowledge_alarm, AlarmId.LOW_RESERVOIR)
    env.run(until=ack_h + 10.0)
    assert not [t for t, tone in pump.tones_between(ack_h, ack_h + 10.0) if tone is NON_CRITICAL]
    assert fw.alarms.is_active(AlarmId.LOW_RESERVOIR)  # acknowledged, still active
    # The empty alarm (critical) repeats every 10 min on its own cadence.
    empty = next(a for a in fw.alarms.active() if a.alarm is AlarmId.EMPTY_RESERVOIR)
    empty_h = (empty.raised_rtc_s - START_EPOCH_S) / 3600.0
    critical = [t for t, tone in pump.tones_between(empty_h, empty_h + 1.0) if tone is CRITICAL]
    assert critical == pytest.approx([empty_h + k / 6 for k in range(6)])


def test_a_resolved_alarm_stops_repeating_and_a_new_one_sounds_again() -> None:
    env, pump = make_pump(fill_ml=5.0)
    fw = pump.firmware
    pump.call(fw.program, continuous(500.0, 1000.0))
    env.run(until=80.0)
    assert fw.alarms.is_active(AlarmId.LOW_RESERVOIR)
    refill_h = pump.now_h
    pump.refill(3.0, "baclofen", 500.0)  # above 2 mL: the condition is resolved
    assert not fw.alarms.is_active(AlarmId.LOW_RESERVOIR)
    after = pump.tones_between(refill_h, refill_h + 0.9)
    assert not [t for t, tone in after if tone is NON_CRITICAL]
    env.run(until=refill_h + 48.0)  # 1 mL/day: low again a day later
    again = [t for t, tone in pump.tones_between(refill_h, refill_h + 48.0) if tone is NON_CRITICAL]
    assert len(again) > 1


def test_alarm_test_sounds_both_patterns_and_is_logged() -> None:
    hal, fw = filled_firmware()
    hal.tones.clear()
    fw.alarm_test()
    assert hal.tones == [CRITICAL, NON_CRITICAL]
    assert fw.log.entries()[-1].code is EventCode.ALARM_TEST
    assert hal.repeating == {}  # a test is not an alarm: nothing repeats


def test_alarm_test_over_telemetry(
    itpump_pump: RigPump, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ITPUMP_KEY", raising=False)
    key_hex = itpump_pump.key.hex()
    assert main(["ctl", itpump_pump.url, "--key", key_hex, "alarms", "test"]) == 0
    assert "Alarm test" in capsys.readouterr().out
    with PumpClient(itpump_pump.url, key=itpump_pump.key) as programmer:
        programmer.connect()
        programmer.alarm_test()
        assert [r.event for r in programmer.read_log()[:2]] == ["ALARM_TEST", "ALARM_TEST"]
    assert main(["ctl", itpump_pump.url, "--key", key_hex, "alarms", "test", "3"]) == 2
    assert "alarms test takes no value" in capsys.readouterr().err
