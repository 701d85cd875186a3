"""The friendly program builder: clinical units <-> wire record, flag and document parsing."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import pytest

from itpump.programmer import (
    Catheter,
    Continuous,
    Flex,
    FlexPeriod,
    FlexStep,
    PatientBolusLimits,
    PeriodicBolus,
    Program,
    ProgramError,
    Stopped,
    load_program,
    parse_key,
    to_data,
)
from itpump.programmer.program import format_start, parse_start
from itpump.protocol import messages as m
from tests.test_programmer_fakepump import PROGRAM

TOML_DOC = """
drug = "baclofen"
concentration_mcg_per_ml = 2000
max_daily_dose_mcg = 600
patient_id = "P-0001"
mode = "flex"
period = "weekly"
steps = [
  { start = "Mon 00:00", dose_mcg_per_day = 180 },
  { start = "Mon 07:00", dose_mcg_per_day = 260.5 },
  { start = "Sat 09:30", dose_mcg_per_day = 220 },
]

[patient_bolus]
dose_mcg = 25
duration_min = 10
lockout_min = 180
max_per_day = 4

[catheter]
length_cm = 110
volume_ul_per_cm = 2.6
"""


def test_wire_round_trip_of_the_reference_program() -> None:
    friendly = Program.from_wire(PROGRAM)
    assert friendly.mode == Continuous(400)
    assert friendly.patient_bolus == PatientBolusLimits(25, 10, 180, 4)
    assert friendly.catheter == Catheter(110, 2.6)
    assert friendly.to_wire() == PROGRAM


def test_flex_parsing_and_units() -> None:
    flex = Flex.parse("00:00=180, 07:00=260,22:30=200.5")
    assert flex.steps == (FlexStep(0, 180), FlexStep(420, 260), FlexStep(1350, 200.5))
    wire = flex.to_wire()
    assert wire.period is m.FlexPeriod.DAILY
    assert [s.dose_ng_per_day for s in wire.steps] == [180_000, 260_000, 200_500]
    assert str(flex) == "flex (daily) 00:00 180, 07:00 260, 22:30 200.5 mcg/day"
    assert flex.mean_dose_mcg_per_day() == pytest.approx(
        (180 * 420 + 260 * 930 + 200.5 * 90) / 1440
    )
    weekly = Flex.parse("Mon 00:00=100,Sat 09:00=150", "weekly")
    assert weekly.steps[1].start_min == 5 * 1440 + 540
    assert format_start(weekly.steps[1].start_min, FlexPeriod.WEEKLY) == "Sat 09:00"
    assert parse_start("90") == 90


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("00:00", "expected START=MCG_PER_DAY"),
        ("7am=100", "expected HH:MM"),
        ("25:00=100", "not a time of day"),
        ("Mon 00:00=100", "weekly"),
        ("00:00=lots", "not a number"),
        ("", "at least one step"),
    ],
)
def test_flex_parse_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Flex.parse(text)


def test_out_of_range_values_are_refused_before_sending() -> None:
    with pytest.raises(ValueError, match="start_min"):
        Flex.parse("07:00=100").to_wire()  # the first step must start at 00:00
    bad = Program("baclofen", 2000, 600, Continuous(-1))
    with pytest.raises(ValueError, match="dose_ng_per_day"):
        bad.to_wire()
    with pytest.raises(ValueError, match="bolus_duration_min"):
        PeriodicBolus(100, 50, 90, 60).to_wire()


def test_flag_parsers() -> None:
    assert PatientBolusLimits.parse("25,10,180,4") == PatientBolusLimits(25, 10, 180, 4)
    assert Catheter.parse("110, 2.6") == Catheter(110, 2.6)
    assert Catheter(110, 2.6).volume_ml == pytest.approx(0.286)
    with pytest.raises(ValueError, match="DOSE_MCG,DURATION_MIN"):
        PatientBolusLimits.parse("25,10")
    with pytest.raises(ValueError, match="LENGTH_CM,UL_PER_CM"):
        Catheter.parse("110")


def test_toml_document_round_trip(tmp_path: Path) -> None:
    program = Program.from_mapping(tomllib.loads(TOML_DOC))
    assert isinstance(program.mode, Flex)
    assert program.mode.period is FlexPeriod.WEEKLY
    assert program.mode.steps[2] == FlexStep(5 * 1440 + 570, 220)
    assert Program.from_mapping(program.to_mapping()) == program
    path = tmp_path / "program.json"
    path.write_text(json.dumps(program.to_mapping()))
    assert load_program(path) == program
    toml_path = tmp_path / "program.toml"
    toml_path.write_text(TOML_DOC)
    assert load_program(toml_path) == program
    program.to_wire()  # valid on the wire


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"drug": "x"}, "mode: Field required"),
        (
            {"mode": "turbo"},
            "mode: expected one of stopped, continuous, flex, periodic_bolus (got 'turbo')",
        ),
        (
            {"mode": "stopped", "concentration_mcg_per_ml": "a lot"},
            "concentration_mcg_per_ml: Input should be a valid number",
        ),
        ({"mode": "stopped", "colour": "blue"}, "colour: Extra inputs are not permitted"),
        ({"mode": "flex"}, "steps: mode 'flex' needs at least one step"),
        (
            {"mode": "flex", "steps": [{"start": "07:00", "dose_mcg_per_day": 1}]},
            "steps[0].start: the first step must start at 00:00",
        ),
        (
            {"mode": "flex", "steps": [{"start": "Tue 00:00", "dose_mcg_per_day": 1}]},
            "steps[0].start: start 'Tue 00:00': a day of the week needs a weekly flex period",
        ),
        (
            {"mode": "flex", "steps": [{"start": 0, "dose_mcg_per_day": 2e9}]},
            "steps[0].dose_mcg_per_day: 2e+09 mcg/day outside 0..1e+06 mcg/day (wire limit)",
        ),
        ({"mode": "periodic_bolus"}, "periodic: mode 'periodic_bolus' needs a 'periodic' table"),
        (
            {
                "mode": "periodic_bolus",
                "periodic": {"dose_mcg": 5, "duration_min": 30, "interval": "8d"},
            },
            "periodic.interval: '8d' is longer than the 168 h limit (got '8d')",
        ),
        (
            {
                "mode": "periodic_bolus",
                "dose_mcg_per_day": 0,
                "periodic": {"dose_mcg": 5, "duration_min": 30, "interval": 0.01},
            },
            "periodic.interval: 0.01 h is not a whole number of minutes",
        ),
        (
            {
                "mode": "continuous",
                "dose_mcg_per_day": 100,
                "patient_bolus": {
                    "dose_mcg": 1,
                    "duration_min": 10,
                    "lockout_min": 60,
                    "max_per_day": 300,
                },
            },
            "patient_bolus.max_per_day: 300 outside 1..255 (wire limit)",
        ),
        (
            {"mode": "stopped", "catheter": {"length_cm": -5, "volume_ul_per_cm": 2.6}},
            "catheter.length_cm: -5 cm outside 0.1..6553.5 cm (wire limit)",
        ),
        ({"mode": "stopped", "drug": "x" * 40}, "drug: 40 UTF-8 bytes outside 0..32"),
    ],
)
def test_document_errors_name_the_field_path_and_the_range(
    doc: dict[str, object], message: str
) -> None:
    with pytest.raises(ProgramError) as info:
        Program.from_mapping(doc)
    assert str(info.value).startswith(message), str(info.value)


def test_keys_a_document_leaves_out_come_from_the_base() -> None:
    base = Program("baclofen", 2000, 600, Continuous(400), "P-1", None, Catheter(110, 2.6))
    new = Program.from_mapping({"mode": "continuous", "dose_mcg_per_day": 300}, base)
    assert new == dataclasses.replace(base, mode=Continuous(300))


def test_other_modes_and_json_data() -> None:
    periodic = PeriodicBolus(100, 50, 30, 360, 60)
    assert Program.from_wire(Program("d", 1000, 500, periodic).to_wire()).mode == periodic
    assert Program.from_wire(Program("d", 1000, 500, Stopped()).to_wire()).mode == Stopped()
    data = to_data(Program("d", 1000, 500, periodic))
    assert data["mode"] == "periodic_bolus"
    assert data["periodic"] == {
        "dose_mcg": 50,
        "duration_min": 30,
        "interval": "360m",
        "first_offset": "60m",
    }
    assert Program.from_mapping(data) == Program("d", 1000, 500, periodic)
    assert json.loads(json.dumps(data)) == data


def test_parse_key() -> None:
    assert parse_key("00 01:02" + "03" * 13) == bytes([0, 1, 2]) + b"\x03" * 13
    with pytest.raises(ValueError, match="at least 16"):
        parse_key("0011")
    with pytest.raises(ValueError, match="hexadecimal"):
        parse_key("zz" * 16)
