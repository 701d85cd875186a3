"""`itpump accuracy`: output files, byte-for-byte determinism, and bad input refused cleanly."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from itpump.emulator import accuracy
from itpump.tools.accuracy import (
    DEFAULT_ANALYSIS_H,
    DEFAULT_ANALYSIS_START_H,
    DEFAULT_SAMPLE_MIN,
    DEFAULT_WINDOWS_MIN,
)
from itpump.tools.cli import main

OUTPUTS = ("trumpet.csv", "startup.csv", "summary.json", "trumpet.png", "startup.png")


def _run(out: Path, *extra: str) -> int:
    return main(
        ["accuracy", "--profile", "valve-gated-20", "--rate", "0.5", "--out", str(out), *extra]
    )


def test_writes_every_output_and_the_same_seed_gives_the_same_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(tmp_path / "a", "--seed", "4") == 0
    assert "overall error A = " in capsys.readouterr().out
    assert _run(tmp_path / "b", "--seed", "4") == 0
    for name in OUTPUTS:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    rows = list(csv.DictReader(io.StringIO((tmp_path / "a" / "trumpet.csv").read_text())))
    assert [row["window_min"] for row in rows] == ["2", "5", "11", "19", "31"]
    assert all(float(r["ep_min_pct"]) <= float(r["ep_max_pct"]) for r in rows)
    startup = (tmp_path / "a" / "startup.csv").read_text().splitlines()
    assert startup[0] == "time_min,volume_ml,flow_ml_per_day"
    assert len(startup) == 1 + 240  # the first two hours in 0.5-min intervals
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert (summary["profile"], summary["rate_ml_per_day"], summary["seed"]) == (
        "valve-gated-20",
        0.5,
        4,
    )
    assert summary["parameters"]["windows_min"] == [2, 5, 11, 19, 31]
    assert isinstance(summary["overall_error_pct"], float)
    assert (tmp_path / "a" / "trumpet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_another_seed_gives_other_volumes(tmp_path: Path) -> None:
    assert _run(tmp_path / "a", "--seed", "1", "--no-plot") == 0
    assert _run(tmp_path / "b", "--seed", "2", "--no-plot") == 0
    assert (tmp_path / "a" / "startup.csv").read_bytes() != (
        tmp_path / "b" / "startup.csv"
    ).read_bytes()
    assert not (tmp_path / "a" / "trumpet.png").exists()


def test_options_in_hours_for_implanted_rates(tmp_path: Path) -> None:
    args = (
        "--sample-min",
        "5",
        "--windows-min",
        "60,240,1440",
        "--analysis-start-h",
        "24",
        "--analysis-h",
        "48",
        "--no-plot",
    )
    assert _run(tmp_path, *args) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["parameters"] == {
        "sample_min": 5.0,
        "windows_min": [60.0, 240.0, 1440.0],
        "analysis_start_h": 24.0,
        "analysis_h": 48.0,
    }
    # Two days of pulses: the mean error is the profile's systematic -3.2 % give or take the
    # block-to-block variation (cv 1.5 %), not the discreteness of a 2-min window.
    assert -8.0 < summary["overall_error_pct"] < 1.5


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--profile", "no-such-pump"], "--profile: unknown profile 'no-such-pump'"),
        (["--rate", "30"], "--rate: must be > 0 and <= 28.8 mL/day for valve-gated-20"),
        (["--rate", "0"], "--rate: must be > 0 and <= 28.8 mL/day"),
        (["--rate", "-1"], "--rate: must be > 0"),
        (["--rate", "nan"], "--rate: must be > 0 and <= 28.8 mL/day for valve-gated-20 (got nan)"),
        (["--profile", "peristaltic-20", "--rate", "0.01"], "--rate: must be 0.048..24 mL/day"),
        (["--sample-min", "0"], "--sample-min: must be > 0 min"),
        (["--sample-min", "inf"], "--sample-min: must be > 0 min"),
        (["--analysis-h", "-1"], "--analysis-h: must be > 0 h"),
        (["--analysis-h", "nan"], "--analysis-h: must be > 0 h"),
        (["--analysis-start-h", "-0.5"], "--analysis-start-h: must be >= 0 h"),
        (["--windows-min", "2,61"], "--windows-min: each window must be > 0 and <= the 60-min"),
        (["--windows-min", "0"], "--windows-min: each window must be > 0"),
        (["--windows-min", "2.2"], "--windows-min: each window must be a multiple of the 0.5"),
        (["--seed", "-1"], "--seed: must be >= 0"),
        (["--rate", "24", "--analysis-h", "30"], "--analysis-h: the run to 31 h would empty"),
    ],
)
def test_bad_input_is_one_line_naming_the_flag_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    options = {"--profile": "valve-gated-20", "--rate": "0.5"}
    pairs = dict(zip(argv[::2], argv[1::2], strict=True))
    options.update(pairs)
    out = tmp_path / "out"
    args = ["accuracy", "--out", str(out)] + [x for kv in options.items() for x in kv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"itpump accuracy: error: {expected}"), err
    assert err.count("\n") == 1
    assert not out.exists()


def test_unparsable_numbers_are_refused_by_the_parser(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        _run(tmp_path / "out", "--windows-min", "2,,5")
    assert info.value.code == 2
    assert "argument --windows-min" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_out_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "taken"
    target.write_text("keep me")
    assert _run(target) == 2
    assert "--out:" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def test_help_states_the_rate_unit_and_the_emulator_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["accuracy", "--help"])
    text = capsys.readouterr().out
    assert "rate in mL/day" in text
    # The parser writes the defaults out (no numpy at start-up); they must be the emulator's.
    assert float(DEFAULT_SAMPLE_MIN) == accuracy.IEC_SAMPLE_MIN
    assert tuple(float(w) for w in DEFAULT_WINDOWS_MIN.split(",")) == accuracy.IEC_WINDOWS_MIN
    assert float(DEFAULT_ANALYSIS_START_H) == accuracy.IEC_ANALYSIS_START_H
    assert float(DEFAULT_ANALYSIS_H) == accuracy.IEC_ANALYSIS_H
