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
