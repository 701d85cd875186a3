"""The one therapy program model (protocol/therapy.py): wire and document round trips for
every mode, and one document format for scenario actions and `itpump ctl program --file`."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from itpump.emulator.scenario import (
    SHIPPED_SCENARIO_DIR,
    ProgramAction,
    load_scenario,
    shipped_scenarios,
)
from itpump.programmer import load_program
from itpump.protocol import messages as m
from itpump.protocol.therapy import (
    Catheter,
    Continuous,
    Flex,
    FlexPeriod,
    FlexStep,
    Mode,
    PatientBolus,
    PeriodicBolus,
    Program,
    ProgramTable,
    Stopped,
    TherapyProgram,
    max_24h_dose_mcg,
    mean_daily_dose_mcg,
)

MODES: list[Mode] = [
    Stopped(),
    Continuous(412.5),
    Flex((FlexStep(0, 180), FlexStep(420, 260.25), FlexStep(1350, 200))),
    Flex((FlexStep(0, 100), FlexStep(5 * 1440 + 540, 220)), FlexPeriod.WEEKLY),
    PeriodicBolus(200.0, 50.5, 30, 360, 60),
]


def _program(mode: Mode) -> Program:
    return Program(
        drug="baclofen",
        concentration_mcg_per_ml=2000,
        max_daily_dose_mcg=900,
        mode=mode,
        patient_id="P-0001",
        patient_bolus=PatientBolus(25, 10, 180, 4),
        catheter=Catheter(110, 2.6),
    )


@pytest.mark.parametrize("mode", MODES, ids=lambda mode: str(mode))
def test_wire_round_trip_of_every_mode(mode: Mode) -> None:
    program = _program(mode)
    program.check_wire()
    wire = program.to_wire()
    assert m.TherapyProgram.decode(wire.encode()) == wire
    assert Program.from_wire(wire) == program


@pytest.mark.parametrize("mode", MODES, ids=lambda mode: str(mode))
def test_document_round_trip_of_every_mode(mode: Mode) -> None:
    program = _program(mode)
    assert Program.from_mapping(program.to_mapping()) == program
    bare = Program("x", 1, 900, mode)  # no patient bolus, no catheter
    assert Program.from_mapping(bare.to_mapping()) == bare


def test_an_unset_catheter_and_an_empty_patient_id_keep_the_pumps() -> None:
    current = _program(Continuous(100))
    sent = Program("baclofen", 2000, 600, Continuous(300))
    wire = sent.to_wire()
    assert (wire.catheter_length_mm, wire.catheter_volume_nl_per_cm, wire.patient_id) == (0, 0, "")
    kept = Program.from_wire(wire).applied_to(current)
    assert kept.catheter == current.catheter
    assert kept.patient_id == current.patient_id
    assert kept.mode == Continuous(300)


def test_daily_dose_bounds_of_each_mode() -> None:
    flex = TherapyProgram(Flex((FlexStep(0, 600), FlexStep(360, 100), FlexStep(1080, 600))), 1000)
    assert mean_daily_dose_mcg(flex) == pytest.approx((600 * 6 + 100 * 12 + 600 * 6) / 24)
    assert max_24h_dose_mcg(flex) == pytest.approx(600 * 12 / 24 + 100 * 12 / 24)
    periodic = TherapyProgram(PeriodicBolus(100, 50, 30, 360), 1000, PatientBolus(10, 5, 60, 3))
    assert mean_daily_dose_mcg(periodic) == pytest.approx(100 + 4 * 50)
    assert max_24h_dose_mcg(periodic) == pytest.approx(100 + 4 * 50 + 3 * 10)
    assert mean_daily_dose_mcg(TherapyProgram()) == 0.0


def _program_actions() -> list[tuple[str, dict[str, object]]]:
    found = []
    paths = sorted(SHIPPED_SCENARIO_DIR.glob("*.toml")) + sorted(
        (SHIPPED_SCENARIO_DIR.parent / "sweeps" / "scenarios").glob("*.toml")
    )
    for path in paths:
        actions = tomllib.loads(path.read_text(encoding="utf-8")).get("actions", [])
        found += [(path.stem, a) for a in actions if a.get("type") == "program"]
    return found


@pytest.mark.parametrize(("name", "action"), _program_actions(), ids=lambda x: str(x)[:20])
def test_a_scenario_program_action_is_a_program_file(
    name: str, action: dict[str, object], tmp_path: Path
) -> None:
    """Every shipped program action, its timing keys removed, is a valid `ctl --file` and
    reads as the same program the scenario runs."""
    table = {k: v for k, v in action.items() if k not in ("at", "every", "until", "type")}
    lines = [f"{key} = {_toml(value)}" for key, value in table.items()]
    path = tmp_path / "program.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    from_file = load_program(path)
    from_action = ProgramTable.read(table).program()
    assert from_file == from_action
    if name in shipped_scenarios():
        scenario_actions = load_scenario(name).actions
        programs = [a.program() for a in scenario_actions if isinstance(a, ProgramAction)]
        assert from_action in programs


def _toml(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def test_there_are_program_actions_to_check() -> None:
    modes = {str(action["mode"]) for _, action in _program_actions()}
    assert {"continuous", "flex"} <= modes
