"""`itpump serve` option checks that must fail before any pump is built or port opened."""

from __future__ import annotations

import pytest

from itpump.tools.cli import main
from itpump.tools.serve import SPEED_MAX, SPEED_MIN, _speed


@pytest.mark.parametrize(
    "text", ["nan", "NaN", "inf", "-inf", "1e308", "1e7000", "0", "-1", "0.0001", "fast", ""]
)
def test_unusable_speeds_exit_2_with_one_line_naming_flag_and_range(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # --speed=VALUE: argparse would take "-inf" for an option of its own
    assert main(["serve", "--port", "tcp:0", f"--speed={text}"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("itpump serve: error: --speed must be 'max' or a number")
    assert "from 0.001 to 1e+07 simulated seconds per real second" in lines[0]
    assert repr(text) in lines[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", 1.0), ("3600", 3600.0), ("1e7", SPEED_MAX), ("0.001", SPEED_MIN), ("max", None)],
)
def test_usable_speeds_are_accepted(text: str, expected: float | None) -> None:
    assert _speed(text) == expected


def test_help_states_the_speed_range(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "0.001..1e7, or 'max'" in " ".join(capsys.readouterr().out.split())


def test_battery_warning_when_the_cell_is_flat_within_an_hour_of_real_time() -> None:
    from itpump.emulator.device_profile import load_profile
    from itpump.tools.serve import battery_life_h, battery_warning

    profile = load_profile("peristaltic-20")  # 1500 mAh at 15 uA idle: 100,000 h
    life_h = battery_life_h(profile, 100.0)
    assert life_h == pytest.approx(100_000.0)
    assert battery_life_h(profile, 10.0) == pytest.approx(10_000.0)
    # 1e5 x: (100,000 - 24) h x 3600 / 1e5 = 59.98 min of real time: warned
    warning = battery_warning(life_h, 24.0, 1e5, profile.model)
    assert warning is not None
    assert warning.startswith("--speed 100000: the battery of peristaltic-20 is flat")
    assert "60 min of real time" in warning
    # 3600 x (the README's example): about 28 real hours, no warning; stepped never warns
    assert battery_warning(life_h, 24.0, 3600.0, profile.model) is None
    assert battery_warning(life_h, 24.0, 0.0, profile.model) is None
    # 'max' always warns: a pump-year takes well under a real second
    max_warning = battery_warning(life_h, 24.0, None, profile.model)
    assert max_warning is not None
    assert max_warning.startswith("--speed max")


@pytest.mark.parametrize("value", ["-1", "nan", "5000", "soon"])
def test_turnaround_ms_is_checked(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    from itpump.tools.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--turnaround-ms", value])
    assert exit_info.value.code == 2
    assert "--turnaround-ms" in capsys.readouterr().err


def test_an_explicit_turnaround_replaces_the_profiles() -> None:
    from itpump.emulator.farm import PortSpec, PumpFarm
    from itpump.emulator.scenario import load_scenario
    from itpump.emulator.transports import LinkConfig

    scenario = load_scenario("clinic-ready")
    # What `serve --turnaround-ms 2` builds: the profile's 5 ms replaced, not added to.
    farm = PumpFarm(
        scenario,
        port=PortSpec("null"),
        speed=0.0,
        turnaround=False,
        link_config=LinkConfig(turnaround_s=0.002),
    )
    assert farm.pumps[0].link.config.turnaround_s == 0.002
