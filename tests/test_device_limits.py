"""Device limits live in the profile / FirmwareConfig only: changing one there changes what the
firmware, a scenario file and `itpump ctl` (through the pump) accept. A limit restated as a
literal anywhere else would make one of these cases fail."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from itpump.emulator.device_profile import (
    PROFILE_PATH_ENV,
    SHIPPED_PROFILE_DIR,
    load_profile,
)
from itpump.emulator.farm import PortSpec, PumpFarm
from itpump.emulator.scenario import ScenarioError, load_scenario, parse_scenario
from itpump.emulator.sweep.spec import SweepError, parse_sweep
from itpump.firmware_stubs.command_handler import CommandHandler
from itpump.firmware_stubs.config import FirmwareConfig
from itpump.firmware_stubs.errors import Refusal
from itpump.firmware_stubs.firmware import Firmware
from itpump.firmware_stubs.projection import PatientBolusUse
from itpump.protocol import messages as m
from itpump.protocol.auth import DEFAULT_MASTER_KEY
from itpump.protocol.codes import EventCode, ResultCode
from itpump.protocol.therapy import Continuous, PatientBolus, TherapyProgram
from itpump.tools.cli import main
from tests.pump_helpers import FakeHal
from tests.sweep_helpers import tiny_sweep_data

CFG = load_profile("peristaltic-20").firmware_config()


def _filled(cfg: FirmwareConfig) -> Firmware:
    fw = Firmware(cfg, FakeHal(), "SN-1")
    fw.set_catheter(110, 2.6)
    fw.refill(20.0, "baclofen", 500.0)
    return fw


#: (limit, value below the shipped one, a firmware command that the lower limit must refuse
#: and the shipped one accept)
CASES: list[tuple[str, float, Callable[[Firmware], object]]] = [
    ("name_max_chars", 5, lambda fw: fw.set_patient_id("P-00001")),
    ("catheter_max_length_cm", 50.0, lambda fw: fw.set_catheter(60.0, 2.6)),
    ("catheter_min_length_cm", 70.0, lambda fw: fw.set_catheter(60.0, 2.6)),
    ("catheter_max_volume_ul_per_cm", 2.0, lambda fw: fw.set_catheter(60.0, 2.6)),
    ("catheter_min_volume_ul_per_cm", 3.0, lambda fw: fw.set_catheter(60.0, 2.6)),
    ("catheter_max_length_cm", 50.0, lambda fw: fw.revise_catheter(60.0, 2.6)),
    ("catheter_min_volume_ul_per_cm", 3.0, lambda fw: fw.revise_catheter(60.0, 2.6)),
    ("max_concentration_mcg_per_ml", 400.0, lambda fw: fw.refill(20.0, "baclofen", 450.0)),
    ("min_concentration_mcg_per_ml", 500.0, lambda fw: fw.refill(20.0, "baclofen", 450.0)),
    ("max_priming_volume_ml", 0.1, lambda fw: fw.bridge_bolus(0.2)),
    ("min_priming_volume_ml", 0.3, lambda fw: fw.prime(0.2)),
    ("max_clinician_bolus_min", 20.0, lambda fw: fw.clinician_bolus(10.0, 30.0)),
    (
        "max_daily_dose_mcg",
        300.0,
        lambda fw: fw.program(TherapyProgram(Continuous(200), max_daily_dose_mcg=400)),
    ),
    (
        "patient_bolus_max_per_day",
        2,
        lambda fw: fw.program(TherapyProgram(Continuous(200), 400, PatientBolus(10, 10, 60, 3))),
    ),
]


@pytest.mark.parametrize(("limit", "value", "command"), CASES, ids=[c[0] for c in CASES])
def test_the_firmware_takes_each_limit_from_its_config(
    limit: str, value: float, command: Callable[[Firmware], object]
) -> None:
    lowered: dict[str, Any] = {limit: value}
    for cfg in (CFG, dataclasses.replace(CFG, **lowered)):
        fw = _filled(CFG)
        fw.program(TherapyProgram(Continuous(200), max_daily_dose_mcg=400))
        fw.cfg = cfg  # the same pump state under the shipped, then the lowered limit
        if cfg is CFG:
            command(fw)
    with pytest.raises(Refusal) as info:
        command(fw)
    assert info.value.code is ResultCode.OUT_OF_RANGE
    assert f"{value:g}" in info.value.detail


def test_refill_discrepancy_tolerance_comes_from_the_config() -> None:
    def discrepancies(cfg: FirmwareConfig) -> int:
        fw = _filled(cfg)
        fw.refill(20.0, "baclofen", 500.0, aspirated_ml=18.5)  # 1.5 mL from the estimate
        return sum(e.code is EventCode.REFILL_DISCREPANCY for e in fw.log.entries())

    assert discrepancies(CFG) == 1  # nothing infused yet: the floor alone
    assert discrepancies(dataclasses.replace(CFG, refill_tolerance_min_ml=2.0)) == 0


@pytest.fixture
def low_concentration_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A user profile like the shipped one whose drug concentration is capped at 500 mcg/mL."""
    text = (SHIPPED_PROFILE_DIR / "peristaltic-20.toml").read_text(encoding="utf-8")
    text = text.replace('model = "peristaltic-20"', 'model = "capped-20"')
    (tmp_path / "capped-20.toml").write_text(
        text + "\n[limits]\nmax_concentration_mcg_per_ml = 500\n", encoding="utf-8"
    )
    monkeypatch.setenv(PROFILE_PATH_ENV, str(tmp_path))
    assert load_profile("capped-20").firmware_config().max_concentration_mcg_per_ml == 500
    return "capped-20"


def _scenario(profile: str, concentration: float) -> dict[str, object]:
    return {
        "scenario": {"name": "x", "duration": "1d", "profile": profile},
        "actions": [
            {
                "at": "0h",
                "type": "refill",
                "volume_ml": 20,
                "concentration_mcg_per_ml": concentration,
            }
        ],
    }


def test_a_scenario_is_checked_against_its_profiles_limits(low_concentration_profile: str) -> None:
    parse_scenario(_scenario("peristaltic-20", 600))
    parse_scenario(_scenario(low_concentration_profile, 400))
    with pytest.raises(ScenarioError) as info:
        parse_scenario(_scenario(low_concentration_profile, 600), "capped.toml")
    assert str(info.value) == (
        "capped.toml: invalid scenario: action #1 (refill at 0h): (the action): "
        "concentration_mcg_per_ml=600 mcg/mL outside allowed range 0.1..500 mcg/mL"
    )


def test_a_scenario_patient_id_is_checked_against_the_profiles_name_length() -> None:
    data: dict[str, object] = {
        "scenario": {"name": "x", "duration": "1d"},
        "patient": {"id": "P" * 21},
    }
    with pytest.raises(ScenarioError, match=r"patient: id must be 1\.\.20 printable characters"):
        parse_scenario(data)


async def test_ctl_gets_the_served_profiles_limits(
    low_concentration_profile: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ITPUMP_MASTER_KEY", DEFAULT_MASTER_KEY.decode())
    monkeypatch.delenv("ITPUMP_KEY", raising=False)
    farm = PumpFarm(
        load_scenario("clinic-ready"),
        port=PortSpec.parse("tcp:0"),
        speed=0.0,
        profile=load_profile(low_concentration_profile),
    )
    async with farm:
        url = str(farm.pumps[0].describe()["url"])

        async def refill(concentration: str) -> int:
            argv = ["ctl", url, "refill", "10", "--drug", "baclofen"]
            call = asyncio.to_thread(main, [*argv, "--concentration", concentration])
            return await asyncio.wait_for(call, 30.0)

        assert await refill("600") == 3
        assert "concentration_mcg_per_ml=600 mcg/mL outside allowed range 0.1..500 mcg/mL" in (
            capsys.readouterr().err
        )
        assert await refill("400") == 0, capsys.readouterr().err


def test_a_catheter_revision_over_the_wire_is_bounded_by_the_device_not_the_record() -> None:
    """The wire record carries any u16; a profile allowing a longer catheter than the shipped
    one gets it, and the shipped one refuses it in cm, naming its own range."""
    longer = dataclasses.replace(CFG, catheter_max_length_cm=300.0)
    revision = m.CatheterRevisionRequest(catheter_length_mm=2500, catheter_volume_nl_per_cm=2600)
    accepted = CommandHandler(_filled(longer)).handle(revision)
    assert isinstance(accepted, m.CatheterRevisionResponse)
    assert accepted.unprimed_nl >= 250 * 2600  # the new catheter (and any empty tubing)
    refused = CommandHandler(_filled(CFG)).handle(revision)
    assert isinstance(refused, m.Refusal)
    assert refused.result is ResultCode.OUT_OF_RANGE
    most = CFG.catheter_max_length_cm
    assert refused.detail == f"length_cm=250 cm outside allowed range 1..{most:g} cm"


def test_a_sweeps_patient_bolus_count_is_bounded_by_its_profile() -> None:
    most = CFG.patient_bolus_max_per_day
    data = tiny_sweep_data()
    data["actions"] = {"patient_boluses_per_day": {"values": [0, most]}}
    parse_sweep(data, "s.toml")
    data["actions"] = {"patient_boluses_per_day": {"values": [0, most + 1]}}
    with pytest.raises(SweepError, match=rf"must be 0\.\.{most} \(the profile's"):
        parse_sweep(data, "s.toml")


def test_the_patient_bolus_memory_follows_the_devices_daily_maximum() -> None:
    """Bounded by the config's per-day maximum: a pump allowing 2 a day remembers 2 per day
    of the window plus a day; more (never given by such a pump) drop the oldest first."""
    use = PatientBolusUse(window_s=86400.0, since_s=0.0, max_per_day=2)
    for i in range(10):
        use.record(60.0 * i, 1.0)
    assert use.mean_mcg_per_day(3600.0) == 4.0
