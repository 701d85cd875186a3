"""A program document (scenario `type = "program"` action, `itpump ctl program --file`) says
exactly what is programmed: a mode's keys are required and typed, another mode's keys are
refused, and the device's limits apply at load and at VERIFY as at commit (issue 8 review)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from itpump.emulator.device_profile import (
    PROFILE_PATH_ENV,
    SHIPPED_PROFILE_DIR,
    ProfileError,
    load_profile,
)
from itpump.emulator.farm import PortSpec, PumpFarm
from itpump.emulator.scenario import ScenarioError, load_scenario, parse_scenario
from itpump.firmware_stubs.errors import Refusal
from itpump.firmware_stubs.firmware import Firmware
from itpump.protocol.auth import DEFAULT_MASTER_KEY
from itpump.protocol.codes import ResultCode
from itpump.protocol.therapy import Catheter, Continuous, Program, ProgramError, ProgramTable
from itpump.tools.cli import main
from tests.pump_helpers import FakeHal

GUARD_S = 60.0
NO_PORT = "/nonexistent/ttyPUMP9"  # reaching it would exit 4: a 2 means refused before


def _profile_file(directory: Path, model: str, limits: str) -> str:
    """A user profile like valve-gated-20 with a [limits] table; its name."""
    text = (SHIPPED_PROFILE_DIR / "valve-gated-20.toml").read_text(encoding="utf-8")
    text = text.replace('model = "valve-gated-20"', f'model = "{model}"')
    (directory / f"{model}.toml").write_text(f"{text}\n[limits]\n{limits}\n", encoding="utf-8")
    return model


@pytest.fixture
def small_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Names of at most 8 characters and catheters of at most 120 cm."""
    monkeypatch.setenv(PROFILE_PATH_ENV, str(tmp_path))
    return _profile_file(tmp_path, "small-20", "name_max_chars = 8\ncatheter_max_length_cm = 120")


def _scenario(profile: str, **program: Any) -> dict[str, object]:
    return {
        "scenario": {"name": "x", "duration": "1d", "profile": profile},
        "patient": {"id": "P1"},
        "actions": [{"at": "0h", "type": "program", **program}],
    }


# --- H1: a mode's own keys are required --------------------------------------------------------

MISSING = [
    ({"mode": "continuous", "max_daily_dose_mcg": 480}, "dose_mcg_per_day", "> 0"),
    ({"mode": "continuous", "dose_mcg_per_day": 0}, "dose_mcg_per_day", "> 0"),
    ({"mode": "flex", "max_daily_dose_mcg": 480}, "steps", "at least one step"),
    ({"mode": "periodic_bolus", "dose_mcg_per_day": 100}, "periodic", "'periodic' table"),
    (
        {
            "mode": "periodic_bolus",
            "periodic": {"dose_mcg": 10, "duration_min": 10, "interval": "6h"},
        },
        "dose_mcg_per_day",
        "basal",
    ),
]


@pytest.mark.parametrize(("doc", "field", "needs"), MISSING)
def test_a_modes_keys_are_required_not_zero(doc: dict[str, Any], field: str, needs: str) -> None:
    with pytest.raises(ProgramError) as info:
        ProgramTable.read(doc)
    assert info.value.field == field
    assert f"mode '{doc['mode']}' needs" in info.value.message
    assert needs in info.value.message


def test_a_scenario_program_without_its_dose_is_refused_at_load() -> None:
    data = _scenario("valve-gated-20", mode="continuous", max_daily_dose_mcg=480)
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data, "s.toml")
    assert str(info.value) == (
        "s.toml: invalid scenario: action #1 (program at 0h): dose_mcg_per_day: "
        "mode 'continuous' needs dose_mcg_per_day > 0 (mcg/day)"
    )


def test_a_scenario_program_dumped_and_read_again_means_the_same() -> None:
    # Keys of other modes dump as None (the sweep re-reads dumped scenarios).
    data = _scenario("valve-gated-20", mode="continuous", dose_mcg_per_day=300)
    scenario = parse_scenario(data)
    assert parse_scenario(scenario.model_dump()) == scenario


# --- M2: strict types; other modes' keys refused ------------------------------------------------

BAD = [
    ({"mode": "continuous", "dose_mcg_per_day": True}, "dose_mcg_per_day", "True"),
    ({"mode": "continuous", "dose_mcg_per_day": "100"}, "dose_mcg_per_day", "'100'"),
    (
        {
            "mode": "continuous",
            "dose_mcg_per_day": 100,
            "patient_bolus": dict.fromkeys(
                ("dose_mcg", "duration_min", "lockout_min", "max_per_day"), True
            ),
        },
        "patient_bolus.dose_mcg",
        "True",
    ),
    ({"mode": "continuous", "dose_mcg_per_day": 100, "max_daily_dose_mcg": "600"}, "max", "'600'"),
    (
        {"mode": "flex", "steps": [{"start": "00:00", "dose_mcg_per_day": False}]},
        "steps[0].dose_mcg_per_day",
        "False",
    ),
    (
        {"mode": "continuous", "dose_mcg_per_day": 100, "steps": []},
        "steps",
        "not a key of mode 'continuous'",
    ),
    (
        {"mode": "continuous", "dose_mcg_per_day": 100, "period": "weekly"},
        "period",
        "not a key of mode 'continuous'",
    ),
    (
        {
            "mode": "continuous",
            "dose_mcg_per_day": 100,
            "periodic": {"dose_mcg": 10, "duration_min": 10, "interval": "6h"},
        },
        "periodic",
        "not a key of mode 'continuous'",
    ),
    (
        {"mode": "flex", "steps": [{"start": 0, "dose_mcg_per_day": 1}], "dose_mcg_per_day": 5},
        "dose_mcg_per_day",
        "not a key of mode 'flex' (its keys: period, steps)",
    ),
    ({"mode": "stopped", "dose_mcg_per_day": 5}, "dose_mcg_per_day", "its keys: none"),
]


@pytest.mark.parametrize(("doc", "field", "says"), BAD)
def test_wrong_types_and_other_modes_keys_are_refused(
    doc: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(ProgramError) as info:
        ProgramTable.read(doc)
    assert info.value.field.startswith(field)
    assert says in info.value.message


def test_an_integer_is_a_number_where_a_decimal_is_allowed() -> None:
    table = ProgramTable.read({"mode": "continuous", "dose_mcg_per_day": 300})
    assert table.program().mode == Continuous(300.0)


@pytest.mark.parametrize(("doc", "field", "says"), BAD)
def test_a_scenario_program_action_is_as_strict(doc: dict[str, Any], field: str, says: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(_scenario("valve-gated-20", **doc), "s.toml")
    message = str(info.value)
    # a scenario lists every problem (one line when there is one)
    assert message.startswith("s.toml: invalid scenario")
    assert f"action #1 (program at 0h): {field}" in message
    assert says in message


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


async def _ctl(*argv: str) -> int:
    return await asyncio.wait_for(asyncio.to_thread(main, ["ctl", *argv]), GUARD_S)


@pytest.mark.parametrize(
    ("doc", "field", "says"),
    [*[(d, f, s) for d, f, s in MISSING[:1]], *BAD[:1], *BAD[5:6]],
)
async def test_ctl_program_file_refuses_them_in_one_line(
    doc: dict[str, Any],
    field: str,
    says: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "p.toml"
    path.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in doc.items()), encoding="utf-8")
    assert await _ctl(NO_PORT, "program", "--file", str(path), "--dry-run") == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert f"{path}: {field}" in lines[0]
    assert says in lines[0]


# --- M1: VERIFY checks everything commit checks ---------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [{"patient_id": "ABCDEFGHIJ"}, {"catheter": Catheter(130.0, 2.6)}],
    ids=["patient_id", "catheter"],
)
def test_verify_refuses_what_commit_refuses(small_profile: str, change: dict[str, Any]) -> None:
    fw = Firmware(load_profile(small_profile).firmware_config(), FakeHal(), "SN-1")
    fw.refill(20.0, "baclofen", 500.0)
    program = Program(
        drug="baclofen",
        concentration_mcg_per_ml=500.0,
        max_daily_dose_mcg=400.0,
        mode=Continuous(200.0),
    )
    fw.check_program(program)  # the program alone fits
    bad = dataclasses.replace(program, **change)
    for step in (fw.check_program, fw.commit_program):
        with pytest.raises(Refusal) as info:
            step(bad)
        assert info.value.code is ResultCode.OUT_OF_RANGE


async def test_ctl_dry_run_is_refused_like_the_commit(
    small_profile: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ITPUMP_MASTER_KEY", DEFAULT_MASTER_KEY.decode())
    monkeypatch.delenv("ITPUMP_KEY", raising=False)
    farm = PumpFarm(
        load_scenario("clinic-ready", load_profile("valve-gated-20")),
        port=PortSpec.parse("tcp:0"),
        speed=0.0,
        profile=load_profile(small_profile),
    )
    async with farm:
        url = str(farm.pumps[0].describe()["url"])
        for flags in (["--patient-id", "ABCDEFGHIJ"], ["--catheter", "130,2.6"]):
            assert await _ctl(url, "program", *flags, "--dry-run") == 3
            err = capsys.readouterr().err
            assert "OUT_OF_RANGE" in err or "outside" in err or "1..8" in err, err


# --- M3: a scenario's program action is checked against the profile at load ---------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"patient_id": "ABCDEFGHIJ"}, "patient_id must be 1..8 printable characters"),
        (
            {"catheter": {"length_cm": 130, "volume_ul_per_cm": 2.6}},
            "catheter.length_cm=130 cm outside allowed range 1..120 cm",
        ),
    ],
)
def test_a_scenario_program_action_is_checked_against_the_profile(
    small_profile: str, extra: dict[str, Any], message: str
) -> None:
    program = {"mode": "continuous", "dose_mcg_per_day": 100, **extra}
    parse_scenario(_scenario("valve-gated-20", **program))
    with pytest.raises(ScenarioError) as info:
        parse_scenario(_scenario(small_profile, **program), "s.toml")
    assert str(info.value).startswith("s.toml: invalid scenario: action #1 (program at 0h): ")
    assert message in str(info.value)


# --- M4: serve --profile checks the scenario against that profile -------------------------------


def test_serve_with_a_profile_the_scenario_does_not_fit_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(PROFILE_PATH_ENV, str(tmp_path))
    short = _profile_file(tmp_path, "short-cath", "catheter_max_length_cm = 50")
    assert main(["serve", "--port", "tcp:0", "--profile", short]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    assert "with profile short-cath" in lines[0]
    assert "catheter_length_cm=110 cm outside allowed range 1..50 cm" in lines[0]


# --- lows: bounded reader, one path style, ordered limit ranges ----------------------------------


async def test_ctl_program_file_is_read_within_the_bounds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await _ctl(NO_PORT, "program", "--file", "/dev/zero", "--dry-run") == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert "more than the" in lines[0]


@pytest.mark.parametrize(
    ("limits", "low", "high"),
    [
        (
            "min_concentration_mcg_per_ml = 500\nmax_concentration_mcg_per_ml = 400",
            "min_conc",
            "max_conc",
        ),
        ("catheter_min_length_cm = 300", "catheter_min_length_cm", "catheter_max_length_cm"),
        # A minimum refill above the reservoir would refuse every refill.
        ("min_refill_volume_ml = 50", "min_refill_volume_ml", "reservoir_capacity_ml"),
    ],
)
def test_a_profile_refuses_a_reversed_limit_range(
    tmp_path: Path, limits: str, low: str, high: str
) -> None:
    name = _profile_file(tmp_path, "reversed", limits)
    with pytest.raises(ProfileError) as info:
        load_profile(str(tmp_path / f"{name}.toml"))
    message = str(info.value)
    assert "\n" not in message
    assert low in message
    assert high in message
    assert "must not exceed" in message


# --- a continuous dose that is 0 on the wire, however it was written (recheck N1) --------------


@pytest.mark.parametrize("dose_mcg_per_day", [0.0, 0.0004])
def test_a_continuous_dose_of_zero_on_the_wire_is_refused_everywhere(
    dose_mcg_per_day: float,
) -> None:
    mode = Continuous(dose_mcg_per_day)
    with pytest.raises(ProgramError, match="needs a dose > 0"):
        mode.check_wire()  # what ctl checks before it sends
    with pytest.raises(ValueError, match="needs a dose > 0"):  # a program document
        ProgramTable.model_validate({"mode": "continuous", "dose_mcg_per_day": dose_mcg_per_day})
    # A valve-gated pump has no minimum rate: the pump refuses it itself.
    fw = Firmware(load_profile("valve-gated-20").firmware_config(), FakeHal(), "SN-1")
    fw.refill(20.0, "baclofen", 500.0)
    program = Program(
        drug="baclofen", concentration_mcg_per_ml=500.0, max_daily_dose_mcg=400.0, mode=mode
    )
    for step in (fw.check_program, fw.commit_program):
        with pytest.raises(Refusal) as info:
            step(program)
        assert info.value.code is ResultCode.OUT_OF_RANGE
        assert "needs a dose > 0" in info.value.detail


async def test_ctl_continuous_zero_is_refused_before_the_port_is_opened(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await _ctl(NO_PORT, "program", "--continuous", "0", "--dry-run") == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "needs a dose > 0" in line


async def test_a_json_program_with_a_key_given_twice_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # JSON would keep the last dose silently (TOML refuses duplicates itself).
    path = tmp_path / "p.json"
    path.write_text(
        '{"mode": "continuous", "dose_mcg_per_day": 100, "dose_mcg_per_day": 1000}',
        encoding="utf-8",
    )
    assert await _ctl(NO_PORT, "program", "--file", str(path), "--dry-run") == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "'dose_mcg_per_day' given twice" in line
