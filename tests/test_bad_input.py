"""Every sub-command against bad input: exit status 2, one line on stderr naming the field or
flag, no traceback, and nothing written.

Each case fails before any simulation, computation or port, so the whole table runs in a few
seconds. Files are built in a fresh workspace; the workspace must be unchanged afterwards (no
empty --out directory, no temporary file).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from itpump.emulator.device_profile import SHIPPED_PROFILE_DIR
from itpump.emulator.pk.records import MAX_FILE_BYTES
from itpump.emulator.toml_input import MAX_TOML_BYTES
from itpump.tools.cli import main

EXAMPLE_CSV = Path(__file__).resolve().parents[1] / "emulator" / "pk" / "examples"
PK_HEADER = "ID,TIME,AMT,RATE,EVID,CMT,WT\n"


def _scenario(extra: str) -> str:
    return f'[scenario]\nname = "bad"\n{extra}\n'


def _profile(replace: str, by: str) -> str:
    text = (SHIPPED_PROFILE_DIR / "peristaltic-20.toml").read_text(encoding="utf-8")
    lines = [by if line.split("=")[0].strip() == replace else line for line in text.splitlines()]
    assert by in lines, replace
    return "\n".join(lines) + "\n"


def _sparse(path: Path, header: bytes, size: int) -> None:
    # A file that reports `size` bytes without using the disk space or the time to write it.
    with path.open("wb") as stream:
        stream.write(header)
        stream.truncate(size)


#: workspace file name -> content (str: UTF-8 text, bytes: raw)
FILES: dict[str, str | bytes] = {
    "nonutf8.toml": b'[scenario]\nname = "\xff\xfe"\nduration = "1d"\n',
    "deep.toml": "a = " + "[" * 5000 + "]" * 5000 + "\n",
    "forever.toml": _scenario('duration = "99999999w"'),
    "inf-digits.toml": _scenario(f'duration = "{"9" * 400}h"'),
    "inf-duration.toml": _scenario("duration = inf"),
    "nan-duration.toml": _scenario("duration = nan"),
    "tiny-samples.toml": _scenario('duration = "2d"\nsample_interval = 1e-300'),
    "every-ns.toml": _scenario(
        'duration = "2d"\n[[actions]]\nat = "0h"\nevery = 1e-9\ntype = "patient_bolus"'
    ),
    "inf-volume.toml": _scenario(
        'duration = "2d"\n[[actions]]\nat = "0h"\ntype = "refill"\nvolume_ml = inf\n'
        "concentration_mcg_per_ml = 500"
    ),
    "huge-concentration.toml": _scenario(
        'duration = "2d"\n[[actions]]\nat = "0h"\ntype = "refill"\nvolume_ml = 20\n'
        "concentration_mcg_per_ml = 1e308"
    ),
    "year-9999.toml": _scenario('duration = "2d"\nstart = 9999-12-31T23:00:00Z'),
    "clock-year-1.toml": _scenario(
        'duration = "2d"\n[[actions]]\nat = "1h"\ntype = "set_clock"\ntime = 0001-01-01T00:00:00Z'
    ),
    "long-serial.toml": _scenario(f'duration = "2d"\nserial = "{"X" * 5000}"'),
    "profile-nonutf8.toml": _scenario('duration = "2d"\nprofile = "{w}/nonutf8.toml"'),
    "capacity-inf.toml": _profile("capacity_mah", "capacity_mah = inf"),
    "capacity-huge.toml": _profile("capacity_mah", "capacity_mah = 1e308"),
    "idle-inf.toml": _profile("idle_current_ua", "idle_current_ua = inf"),
    "idle-flat.toml": _profile("capacity_mah", "capacity_mah = 0.5"),
    "baud-1.toml": _profile("baud", "baud = 1"),
    "charge-nan.toml": _profile("charge_per_ml_mah", "charge_per_ml_mah = nan"),
    "stroke-tiny.toml": _profile("stroke_volume_ul", "stroke_volume_ul = 1e-300"),
    "model-control.toml": _profile("model", 'model = "a\\u0000b\\n"'),
    "prefix-control.toml": _profile("serial_prefix", 'serial_prefix = "P\\tP"'),
    "amt-huge.csv": PK_HEADER + "1,0,1e308,0,1,1,70\n1,1,0,0,0,1,70\n",
    "amt-inf.csv": PK_HEADER + "1,0,inf,0,1,1,70\n1,1,0,0,0,1,70\n",
    "time-huge.csv": PK_HEADER + "1,0,100,0,1,1,70\n1,1e308,0,0,0,1,70\n",
    "rate-huge.csv": PK_HEADER + "1,0,100,1e300,1,1,70\n1,1,0,0,0,1,70\n",
    "infusion-forever.csv": PK_HEADER + "1,0,1e6,1e-6,1,1,70\n1,1,0,0,0,1,70\n",
    "weight-tiny.csv": PK_HEADER + "1,0,100,0,1,1,1e-300\n1,1,0,0,0,1,1e-300\n",
    "weight-huge.csv": PK_HEADER + "1,0,100,0,1,1,1e300\n1,1,0,0,0,1,1e300\n",
    "nonutf8.csv": b"ID,TIME,AMT,RATE,EVID,CMT\n1,0,\xff,0,1,1\n",
    "huge-field.csv": PK_HEADER + "1,0,1,0,1," + "x" * 200_000 + "\n",
    "empty.csv": "",
    "afile": "not a directory\n",
    # 17 characters pass the 32-character count; 34 UTF-8 bytes do not fit IDENTIFY's field.
    "model-long.toml": _profile("model", 'model = "' + "é" * 17 + '"'),
    "prefix-long.toml": _profile("serial_prefix", 'serial_prefix = "' + "𝄞" * 7 + '"'),
    "sweep-1s.toml": (
        '[sweep]\nname = "fine"\nscenario = "motor-stall"\nduration = "30d"\nreplicates = 2\n'
        '[outcomes]\nsample_interval = "1s"\n'
    ),
    "outdir/.keep": "",
}

SPARSE: dict[str, Callable[[Path], None]] = {
    # 1 GiB dose file (sparse): refused from its size, before a byte is read.
    "gigabyte.csv": lambda p: _sparse(p, PK_HEADER.encode(), 1 << 30),
    "big.toml": lambda p: _sparse(p, b'[scenario]\nname = "x"\n#', MAX_TOML_BYTES + 1),
}

BOLUS = str(EXAMPLE_CSV / "baclofen_bolus.csv")
CTL = ["ctl", "socket://127.0.0.1:9"]  # never opened: every case fails before

# (id, argv ({w} = workspace), a fragment the one stderr line must contain)
CASES: list[tuple[str, list[str], str]] = [
    # --- simulate: scenario files
    ("sim-non-utf8", ["simulate", "{w}/nonutf8.toml"], "not UTF-8"),
    ("sim-deep-toml", ["simulate", "{w}/deep.toml"], "nested 5000 deep"),
    ("sim-99999999w", ["simulate", "{w}/forever.toml"], "30-year limit"),
    ("sim-400-digit-duration", ["simulate", "{w}/inf-digits.toml"], "30-year limit"),
    ("sim-duration-inf", ["simulate", "{w}/inf-duration.toml"], "scenario.duration"),
    ("sim-duration-nan", ["simulate", "{w}/nan-duration.toml"], "finite number"),
    ("sim-sample-interval-tiny", ["simulate", "{w}/tiny-samples.toml"], "sample_interval"),
    ("sim-every-1ns", ["simulate", "{w}/every-ns.toml"], "repeat more than 100000"),
    ("sim-volume-inf", ["simulate", "{w}/inf-volume.toml"], "volume_ml"),
    ("sim-concentration-1e308", ["simulate", "{w}/huge-concentration.toml"], "concentration"),
    ("sim-start-9999", ["simulate", "{w}/year-9999.toml"], "scenario.start"),
    ("sim-set-clock-year-1", ["simulate", "{w}/clock-year-1.toml"], "time: must be from 2000"),
    ("sim-serial-5000", ["simulate", "{w}/long-serial.toml"], "scenario.serial"),
    ("sim-profile-non-utf8", ["simulate", "{w}/profile-nonutf8.toml"], "not UTF-8"),
    ("sim-oversized-file", ["simulate", "{w}/big.toml"], f"{MAX_TOML_BYTES} bytes"),
    ("sim-missing-file", ["simulate", "{w}/missing.toml"], "cannot read scenario"),
    ("sim-directory", ["simulate", "{w}/outdir"], "Is a directory"),
    ("sim-unknown-name", ["simulate", "no-such-scenario"], "shipped scenarios"),
    # --- simulate: options
    ("sim-out-is-a-file", ["simulate", "motor-stall", "--out", "{w}/afile"], "--out: "),
    ("sim-out-under-a-file", ["simulate", "motor-stall", "--out", "{w}/afile/x"], "--out: "),
    ("sim-seed-negative", ["simulate", "motor-stall", "--seed", "-1"], "--seed"),
    ("sim-seed-nan", ["simulate", "motor-stall", "--seed", "nan"], "--seed"),
    ("sim-seed-2**64", ["simulate", "motor-stall", "--seed", str(2**64)], "--seed"),
    # --- profiles
    ("profile-capacity-inf", ["profiles", "{w}/capacity-inf.toml"], "battery.capacity_mah"),
    ("profile-capacity-1e308", ["profiles", "{w}/capacity-huge.toml"], "battery.capacity_mah"),
    ("profile-idle-inf", ["profiles", "{w}/idle-inf.toml"], "battery.idle_current_ua"),
    ("profile-idle-flat-in-days", ["profiles", "{w}/idle-flat.toml"], "flat after"),
    ("profile-baud-1", ["profiles", "{w}/baud-1.toml"], "telemetry.baud"),
    ("profile-charge-nan", ["profiles", "{w}/charge-nan.toml"], "charge_per_ml_mah"),
    ("profile-stroke-1e-300", ["profiles", "{w}/stroke-tiny.toml"], "stroke_volume_ul"),
    ("profile-model-control", ["profiles", "{w}/model-control.toml"], "model: must be printable"),
    (
        "profile-prefix-control",
        ["profiles", "{w}/prefix-control.toml"],
        "serial_prefix: must be printable",
    ),
    ("profile-non-utf8", ["profiles", "{w}/nonutf8.toml"], "not UTF-8"),
    ("profile-deep", ["profiles", "{w}/deep.toml"], "nested"),
    ("profile-directory", ["profiles", "{w}/outdir"], "Is a directory"),
    ("profile-missing", ["profiles", "{w}/missing.toml"], "cannot read profile"),
    ("profile-unknown", ["profiles", "no-such-pump"], "known profiles"),
    ("profile-model-34-bytes", ["profiles", "{w}/model-long.toml"], "model: must be at most 32"),
    ("profile-prefix-28-bytes", ["profiles", "{w}/prefix-long.toml"], "serial_prefix: must be"),
    # --- serve (every case fails before a farm is built or a port opened)
    ("serve-speed-nan", ["serve", "--port", "tcp:0", "--speed=nan"], "--speed"),
    ("serve-speed-inf", ["serve", "--port", "tcp:0", "--speed=inf"], "--speed"),
    ("serve-baud-1", ["serve", "--port", "tcp:0", "--baud", "1"], "--baud must be 0"),
    ("serve-baud-299", ["serve", "--port", "tcp:0", "--baud", "299"], "300..1000000"),
    ("serve-baud-negative", ["serve", "--port", "tcp:0", "--baud=-5"], "--baud"),
    ("serve-baud-nan", ["serve", "--port", "tcp:0", "--baud", "nan"], "--baud"),
    ("serve-profile-idle-inf", ["serve", "--profile", "{w}/idle-inf.toml"], "idle_current_ua"),
    ("serve-profile-baud-1", ["serve", "--profile", "{w}/baud-1.toml"], "telemetry.baud"),
    ("serve-warmup-beyond-battery", ["serve", "--warmup", "1000w"], "battery"),
    ("serve-warmup-inf", ["serve", "--warmup", "9" * 400 + "d"], "--warmup"),
    ("serve-warmup-junk", ["serve", "--warmup", "soon"], "--warmup"),
    ("serve-count-0", ["serve", "--count", "0"], "--count"),
    ("serve-count-float", ["serve", "--count", "1e3"], "--count"),
    ("serve-corruption-nan", ["serve", "--corruption", "nan"], "--corruption"),
    ("serve-corruption-2", ["serve", "--corruption", "2"], "--corruption"),
    ("serve-seed-negative", ["serve", "--seed=-1"], "--seed"),
    ("serve-control-port", ["serve", "--control", "70000"], "--control"),
    ("serve-port-junk", ["serve", "--port", "tcp:99999"], "port must be 0..65535"),
    ("serve-scenario-deep", ["serve", "--scenario", "{w}/deep.toml"], "nested"),
    ("serve-scenario-non-utf8", ["serve", "--scenario", "{w}/nonutf8.toml"], "not UTF-8"),
    ("serve-master-key-empty", ["serve", "--master-key", ""], "--master-key"),
    ("serve-profile-model-34-bytes", ["serve", "--profile", "{w}/model-long.toml"], "32 UTF-8"),
    (
        "serve-unclean-restart-without-state",
        ["serve", "--port", "tcp:0", "--unclean-restart", "power-on-reset"],
        "--unclean-restart goes with --state",
    ),
    # --- sweep
    (
        "sweep-sample-interval-1s",
        ["sweep", "{w}/sweep-1s.toml", "--out", "sweep-out"],
        "outcomes.sample_interval",
    ),
    # --- pk
    ("pk-seed-negative", ["pk", BOLUS, "--seed=-1", "--population", "3"], "--seed"),
    ("pk-out-directory", ["pk", BOLUS, "--out", "{w}/outdir"], "--out"),
    ("pk-plot-directory", ["pk", BOLUS, "--plot", "{w}/outdir"], "--plot"),
    ("pk-out-missing-dir", ["pk", BOLUS, "--out", "{w}/nowhere/p.csv"], "does not exist"),
    ("pk-out-under-a-file", ["pk", BOLUS, "--out", "{w}/afile/p.csv"], "is not a directory"),
    # /proc takes no new files (not even root's, whom the up-front check lets through)
    ("pk-out-proc", ["pk", BOLUS, "--out", "/proc/itpump-x.csv"], "--out"),
    ("pk-plot-proc", ["pk", BOLUS, "--plot", "/proc/itpump-x.png"], "--plot"),
    ("pk-plot-proc-with-out", ["pk", BOLUS, "--out", "p.csv", "--plot", "/proc/x.png"], "--plot"),
    ("pk-population-1e8", ["pk", BOLUS, "--population", "1e8"], "--population: must be 1.."),
    ("pk-population-0", ["pk", BOLUS, "--population", "0"], "--population"),
    ("pk-population-nan", ["pk", BOLUS, "--population", "nan"], "--population"),
    ("pk-catheter-tip-nan", ["pk", BOLUS, "--catheter-tip-cm", "nan"], "--catheter-tip-cm"),
    ("pk-catheter-tip-inf", ["pk", BOLUS, "--catheter-tip-cm", "inf"], "--catheter-tip-cm"),
    ("pk-gigabyte-file", ["pk", "{w}/gigabyte.csv"], f"{MAX_FILE_BYTES // 2**20} MiB"),
    ("pk-amt-1e308", ["pk", "{w}/amt-huge.csv"], "line 2, column AMT"),
    ("pk-amt-inf", ["pk", "{w}/amt-inf.csv"], "line 2, column AMT"),
    ("pk-time-1e308", ["pk", "{w}/time-huge.csv"], "line 3, column TIME"),
    ("pk-rate-1e300", ["pk", "{w}/rate-huge.csv"], "line 2, column RATE"),
    ("pk-infusion-forever", ["pk", "{w}/infusion-forever.csv"], "line 2, column RATE"),
    ("pk-weight-1e-300", ["pk", "{w}/weight-tiny.csv"], "column WT"),
    ("pk-weight-1e300", ["pk", "{w}/weight-huge.csv"], "column WT"),
    ("pk-non-utf8", ["pk", "{w}/nonutf8.csv"], "not UTF-8"),
    ("pk-huge-field", ["pk", "{w}/huge-field.csv"], "not valid CSV"),
    ("pk-empty", ["pk", "{w}/empty.csv"], "no header"),
    ("pk-missing", ["pk", "{w}/missing.csv"], "no such file"),
    ("pk-directory", ["pk", "{w}/outdir"], "Is a directory"),
    # --- accuracy
    ("acc-rate-nan", ["accuracy", "--profile", "peristaltic-20", "--rate", "nan"], "--rate"),
    ("acc-rate-inf", ["accuracy", "--profile", "peristaltic-20", "--rate", "inf"], "--rate"),
    ("acc-rate-text", ["accuracy", "--profile", "peristaltic-20", "--rate", "x"], "--rate"),
    (
        "acc-sample-0",
        ["accuracy", "--profile", "peristaltic-20", "--rate", "0.5", "--sample-min", "0"],
        "--sample-min",
    ),
    (
        "acc-windows-empty",
        ["accuracy", "--profile", "peristaltic-20", "--rate", "0.5", "--windows-min", "2,,5"],
        "--windows-min",
    ),
    (
        "acc-analysis-inf",
        ["accuracy", "--profile", "peristaltic-20", "--rate", "0.5", "--analysis-h", "inf"],
        "--",
    ),
    (
        "acc-seed-negative",
        ["accuracy", "--profile", "peristaltic-20", "--rate", "0.5", "--seed=-1"],
        "--seed",
    ),
    (
        "acc-out-is-a-file",
        ["accuracy", "--profile", "peristaltic-20", "--rate", "0.5", "--out", "{w}/afile"],
        "--out",
    ),
    (
        "acc-out-under-a-file",
        ["accuracy", "--profile", "peristaltic-20", "--rate", "0.5", "--out", "{w}/afile/x"],
        "--out",
    ),
    (
        "acc-profile-capacity-inf",
        ["accuracy", "--profile", "{w}/capacity-inf.toml", "--rate", "1"],
        "capacity_mah",
    ),
    ("acc-profile-deep", ["accuracy", "--profile", "{w}/deep.toml", "--rate", "1"], "nested"),
    ("acc-profile-non-utf8", ["accuracy", "--profile", "{w}/nonutf8.toml", "--rate", "1"], "UTF-8"),
    # --- ctl (checked before the port is opened)
    ("ctl-timeout-inf", [*CTL, "--timeout", "inf", "status"], "--timeout"),
    ("ctl-timeout-nan", [*CTL, "--timeout", "nan", "status"], "--timeout"),
    ("ctl-timeout-1e308", [*CTL, "--timeout", "1e308", "status"], "--timeout: must be in (0, 120]"),
    ("ctl-attempts-0", [*CTL, "--attempts", "0", "status"], "--attempts"),
    ("ctl-attempts-huge", [*CTL, "--attempts", "99999999999", "status"], "--attempts"),
    ("ctl-log-page-negative", [*CTL, "log", "--page=-1"], "--page"),
    ("ctl-log-page-huge", [*CTL, "log", "--page", "99999999999"], "--page"),
    ("ctl-ack-alarm-huge", [*CTL, "alarms", "ack", "99999"], "alarm '99999'"),
    ("ctl-threshold-inf", [*CTL, "alarms", "threshold", "inf"], "alarms threshold"),
    ("ctl-program-file-deep", [*CTL, "program", "--file", "{w}/deep.toml"], "nested"),
    ("ctl-program-file-missing", [*CTL, "program", "--file", "{w}/missing.toml"], "missing"),
    ("ctl-program-file-dir", [*CTL, "program", "--file", "{w}/outdir"], "outdir"),
    ("ctl-program-file-non-utf8", [*CTL, "program", "--file", "{w}/nonutf8.toml"], "not UTF-8"),
    ("ctl-program-file-big", [*CTL, "program", "--file", "{w}/big.toml"], "bytes"),
    ("ctl-continuous-nan", [*CTL, "program", "--continuous", "nan"], "--continuous"),
    ("ctl-continuous-inf", [*CTL, "program", "--continuous", "inf"], "--continuous"),
    ("ctl-bolus-inf", [*CTL, "bolus", "clinician", "inf", "10"], "DOSE_MCG"),
    ("ctl-bolus-minutes-huge", [*CTL, "bolus", "clinician", "5", "9999999"], "DURATION_MIN"),
    ("ctl-refill-nan", [*CTL, "refill", "nan", "--drug", "b", "--concentration", "1"], "VOLUME"),
    ("ctl-clock-junk", [*CTL, "clock", "set", "yesterday"], "clock set"),
    ("ctl-clock-year-1", [*CTL, "clock", "set", "0001-01-01T00:00Z"], "clock set"),
    ("ctl-key-not-hex", [*CTL, "--key", "zz", "status"], "key"),
    ("ctl-port-99999", ["ctl", "socket://127.0.0.1:99999", "status"], "port '99999' is not"),
    ("ctl-rfc2217-port-0", ["ctl", "rfc2217://127.0.0.1:0", "status"], "port '0' is not"),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every input file of the table, built once."""
    root = tmp_path_factory.mktemp("bad-input")
    for name, content in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content.replace("{w}", str(root)), encoding="utf-8")
    for name, make in SPARSE.items():
        make(root / name)
    return root


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _status(argv: list[str]) -> int | str | None:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own checks exit rather than return
        return exc.code


@pytest.mark.parametrize(("argv", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    workspace: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    fragment: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # a default --out (./out, ./accuracy-out) would land here
    monkeypatch.delenv("ITPUMP_KEY", raising=False)
    monkeypatch.delenv("ITPUMP_MASTER_KEY", raising=False)
    before = _listing(workspace)
    args = [arg.replace("{w}", str(workspace)) for arg in argv]
    if args[0] in ("simulate", "accuracy") and "--out" not in args:
        args += ["--out", str(tmp_path / "out")]

    status = _status(args)

    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert status == 2, captured.err
    assert "Traceback" not in captured.err
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"itpump {args[0]}"), lines[0]
    assert fragment in lines[0], lines[0]
    assert captured.out == ""
    assert _listing(workspace) == before
    assert list(tmp_path.iterdir()) == []


def test_every_case_has_a_unique_id() -> None:
    ids = [case[0] for case in CASES]
    assert len(ids) == len(set(ids))


def test_a_failed_write_leaves_no_out_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run that fails while writing (here: the plot) leaves neither the directory nor any
    of the files already written: outputs are staged and moved into place only when done."""
    import itpump.emulator.outputs

    def broken_plot(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(itpump.emulator.outputs, "write_report_png", broken_plot)
    out = tmp_path / "deeper" / "out"
    with pytest.raises(OSError, match="No space"):
        main(["simulate", "motor-stall", "--out", str(out)])
    assert list(tmp_path.iterdir()) == []


def test_outputs_replace_files_in_an_existing_directory(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    (out / "summary.json").write_text("stale\n")
    assert main(["simulate", "motor-stall", "--out", str(out), "--no-plot"]) == 0
    assert (out / "notes.txt").read_text() == "mine\n"
    assert (out / "summary.json").read_text().startswith("{")
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no staging left
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
