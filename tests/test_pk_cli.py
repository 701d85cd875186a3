"""`itpump pk`: the command line over emulator.pk (parsing, output files, errors)."""

from __future__ import annotations

import csv
import io
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from itpump.emulator.pk import DoseSchedule, PKModel
from itpump.tools.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "emulator" / "pk" / "examples"
BOLUS_EXAMPLE = EXAMPLES / "baclofen_bolus.csv"


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_predictions_go_to_stdout_one_row_per_observation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["pk", str(BOLUS_EXAMPLE)]) == 0
    rows = _rows(capsys.readouterr().out)
    assert list(rows[0]) == ["ID", "TIME", "CSF_LUMBAR", "CSF_CISTERNAL", "PLASMA", "CE"]
    assert len(rows) == 17  # observation records in the example
    first = rows[:9]
    assert [row["TIME"] for row in first] == ["0", "0.5", "1", "2", "4", "6", "8", "12", "24"]
    # The t = 0 observation precedes the dose record: pre-dose, so zero.
    assert float(first[0]["CSF_LUMBAR"]) == 0.0
    expected = PKModel.baclofen_default(weight_kg=70.0).predict(DoseSchedule.bolus(50.0), [4.0])
    assert float(first[4]["CSF_LUMBAR"]) == pytest.approx(
        expected.csf_lumbar_ng_per_ml[0], rel=1e-5
    )
    assert float(first[4]["CE"]) == pytest.approx(expected.effect_ng_per_ml[0], rel=1e-5)


def test_population_writes_percentile_columns_reproducibly(tmp_path: Path) -> None:
    out = tmp_path / "pred.csv"
    args = ["pk", str(BOLUS_EXAMPLE), "--out", str(out), "--population", "200", "--seed", "7"]
    assert main(args) == 0
    first = out.read_text()
    assert main(args) == 0
    assert out.read_text() == first
    rows = _rows(first)
    assert list(rows[0])[:5] == [
        "ID",
        "TIME",
        "CSF_LUMBAR_P05",
        "CSF_LUMBAR_P50",
        "CSF_LUMBAR_P95",
    ]
    assert list(rows[0])[-1] == "CE_P95"
    for row in rows[1:]:
        for name in ("CSF_LUMBAR", "CSF_CISTERNAL", "PLASMA", "CE"):
            low, mid, high = (float(row[f"{name}_P{p}"]) for p in ("05", "50", "95"))
            assert low <= mid <= high
            assert high > low  # variability is on
    assert main([*args[:-1], "8"]) == 0
    assert out.read_text() != first


def test_plot_is_written(tmp_path: Path) -> None:
    plot = tmp_path / "pred.png"
    out = tmp_path / "pred.csv"
    doses = EXAMPLES / "baclofen_infusion_pocket_fill.csv"
    assert main(["pk", str(doses), "--out", str(out), "--plot", str(plot)]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = _rows(out.read_text())
    plasma = np.array([float(row["PLASMA"]) for row in rows])
    assert plasma.max() > 50.0 * plasma[5]  # the pocket fill's spike


def test_malformed_file_names_line_and_column_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doses = tmp_path / "doses.csv"
    doses.write_text("ID,TIME,AMT,RATE,EVID,CMT\n1,0,.,.,0,.\n1,1,fifty,0,1,1\n")
    out = tmp_path / "pred.csv"
    out.write_text("previous results\n")
    plot = tmp_path / "pred.png"
    status = main(["pk", str(doses), "--out", str(out), "--plot", str(plot)])
    assert status == 2
    captured = capsys.readouterr()
    assert "line 3, column AMT" in captured.err
    assert "'fifty' is not a number" in captured.err
    assert captured.out == ""
    assert out.read_text() == "previous results\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["doses.csv", "pred.csv"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--plot", "{tmp}/pred.xyz"], "unsupported file type"),
        (["--out", "{tmp}/missing-dir/pred.csv"], "does not exist"),
        (["--catheter-tip-cm", "nan"], "--catheter-tip-cm: 'nan' is not a number"),
    ],
)
def test_bad_options_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    resolved = [value.format(tmp=tmp_path) for value in extra]
    try:
        status = main(["pk", str(BOLUS_EXAMPLE), *resolved])
    except SystemExit as exc:  # refused by the option's argparse type
        status = int(str(exc.code))
    assert status == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_missing_input_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pk", str(tmp_path / "nope.csv")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_population_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["pk", str(BOLUS_EXAMPLE), "--population", "0"])
    assert caught.value.code == 2
    assert "--population: must be 1..100000 (got 0)" in capsys.readouterr().err


def test_help_explains_the_file_format(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["pk", "--help"])
    assert caught.value.code == 0
    help_text = capsys.readouterr().out
    for fragment in ("EVID", "CMT", "RATE", "1 = intrathecal", "CSF_LUMBAR_P05", "WT"):
        assert fragment in help_text


def test_out_through_a_symlink_keeps_the_link_and_writes_its_target(tmp_path: Path) -> None:
    target = tmp_path / "real.csv"
    target.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    assert main(["pk", str(BOLUS_EXAMPLE), "--out", str(link)]) == 0
    assert link.is_symlink()
    assert target.read_text().startswith("ID,TIME,")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.csv", "real.csv"]


def test_out_to_a_device_writes_it_and_does_not_replace_it(tmp_path: Path) -> None:
    link = tmp_path / "null.csv"
    link.symlink_to("/dev/null")
    assert main(["pk", str(BOLUS_EXAMPLE), "--out", str(link)]) == 0
    assert link.is_symlink()
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["null.csv"]


def test_out_naming_the_input_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doses = tmp_path / "doses.csv"
    original = BOLUS_EXAMPLE.read_text()
    doses.write_text(original)
    assert main(["pk", str(doses), "--out", str(doses)]) == 2
    err = capsys.readouterr().err
    assert "--out" in err
    assert "input file" in err
    assert len(err.strip().splitlines()) == 1
    assert doses.read_text() == original
