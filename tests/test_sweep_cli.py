"""`itpump sweep`: bad input is one line and exit 2; a sweep on a separately started Dask
cluster (a scheduler and two workers, each its own process) writes rows, summary and report."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client

from itpump.tools.cli import main
from tests.sweep_helpers import rows_without_timing, tiny_sweep, tiny_sweep_toml

DASK = shutil.which("dask") or str(Path(sys.executable).with_name("dask"))


@pytest.fixture
def sweep_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(tiny_sweep_toml(), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["missing.toml"], "cannot read sweep missing.toml"),
        (["{sweep}", "--workers", "0"], "--workers must be >= 1"),
        (["{sweep}", "--workers", "two"], "--workers must be a whole number"),
        (["{sweep}", "--scheduler", "http//nowhere"], "is not a Dask scheduler address"),
        (["{sweep}", "--scheduler", "tcp://host:99999"], "is not a Dask scheduler address"),
        (["{sweep}", "--workers", "2", "--scheduler", "tcp://h:1"], "exclude each other"),
        (["{bad}"], "sweep.replicats: unknown field"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path,
    sweep_file: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    expected: str,
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(tiny_sweep_toml().replace("replicates", "replicats"), encoding="utf-8")
    argv = [a.format(sweep=sweep_file, bad=bad) for a in args]
    out = tmp_path / "out"
    assert main(["sweep", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("itpump sweep: error: ")
    assert expected in err
    assert not (out / "runs").exists()  # nothing ran


def test_a_cluster_that_cannot_be_reached_leaves_out_as_it_was(
    tmp_path: Path,
    sweep_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The failure `--scheduler tcp://127.0.0.1:1` meets after Dask's connect timeout (20 s),
    # raised at once: the start failed, so nothing of the sweep may stay in --out.
    import itpump.emulator.sweep.engine as engine

    def unreachable(*_args: object, **_kwargs: object) -> None:
        raise engine.SweepClusterError("cannot reach the Dask scheduler tcp://127.0.0.1:1")

    monkeypatch.setattr(engine, "run_sweep", unreachable)
    fresh = tmp_path / "new" / "out"
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine\n", encoding="utf-8")
    for out in (fresh, kept):
        argv = ["sweep", str(sweep_file), "--scheduler", "tcp://127.0.0.1:1", "--out", str(out)]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert "cannot reach the Dask scheduler" in err
    assert not (tmp_path / "new").exists()
    assert [p.name for p in kept.iterdir()] == ["notes.txt"]


def test_out_that_is_a_file_is_refused(
    tmp_path: Path, sweep_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "a-file"
    target.write_text("x", encoding="utf-8")
    assert main(["sweep", str(sweep_file), "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "is a file" in err


def _wait_for_file(path: Path, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    # Wait on the condition (the scheduler writes its address file once listening), not on
    # a fixed delay; fail early if the process died.
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and path.stat().st_size > 0):
        if proc.poll() is not None:
            raise RuntimeError(f"dask scheduler exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no scheduler file {path} after {timeout_s} s")
        time.sleep(0.05)


@pytest.fixture
def external_cluster(tmp_path: Path) -> Iterator[str]:
    """`dask scheduler` and two `dask worker`s as separate processes on 127.0.0.1."""
    scheduler_file = tmp_path / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    common = ["--no-dashboard"]
    procs: list[subprocess.Popen[bytes]] = []
    shut_down = False
    try:
        scheduler = subprocess.Popen(
            [
                DASK,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--scheduler-file",
                str(scheduler_file),
                *common,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        procs.append(scheduler)
        _wait_for_file(scheduler_file, scheduler)
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        DASK,
                        "worker",
                        "--scheduler-file",
                        str(scheduler_file),
                        "--host",
                        "127.0.0.1",
                        "--nworkers",
                        "1",
                        "--nthreads",
                        "1",
                        "--no-nanny",
                        *common,
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env=env,
                )
            )
        address = json.loads(scheduler_file.read_text(encoding="utf-8"))["address"]
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=90)
        yield str(address)
        # Ask the cluster to stop (scheduler and workers together: quicker than signals,
        # which make each worker wait for a scheduler that is going away).
        with Client(address, timeout="10s") as client:
            client.shutdown()
        shut_down = True
    finally:
        for proc in procs:
            if not shut_down:
                proc.terminate()  # the test failed before the orderly shutdown
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_sweep_on_a_separately_started_cluster(
    tmp_path: Path,
    sweep_file: Path,
    external_cluster: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    status = main(
        [
            "sweep",
            str(sweep_file),
            "--out",
            str(out),
            "--scheduler",
            external_cluster,
            "--rows-per-part",
            "3",
        ]
    )
    printed = capsys.readouterr().out
    assert status == 0, printed
    sweep = tiny_sweep()
    rows = rows_without_timing(out)
    assert [r["run_id"] for r in rows] == list(range(sweep.n_runs))
    errors = [r for r in rows if r["status"] == "error"]
    assert errors
    assert all(r["error"] and r["pump_seed"] >= 0 for r in errors)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["runs_recorded"] == sweep.n_runs
    assert summary["runs_failed"] == len(errors)
    assert {e["run_id"] for e in summary["failed_runs"]} == {r["run_id"] for r in errors}
    half = summary["outcomes"]["time_to_csf_half_h"]
    assert half["n"] == sweep.n_runs - len(errors)
    assert half["percentiles"]["p5"] <= half["percentiles"]["p50"] <= half["percentiles"]["p95"]
    hazard = summary["hazards"]["withdrawal_window_over_12h"]
    assert hazard["of"] == sweep.n_runs - len(errors)
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "runs ok" in printed
    # The same command again: everything is done, nothing is re-run.
    assert main(["sweep", str(sweep_file), "--out", str(out), "--scheduler", external_cluster]) == 0
    assert "0 run now" in capsys.readouterr().out


def test_sweep_epilog_names_are_the_shipped_sweeps() -> None:
    # The CLI lists them without importing the sweep package (issue 11: start-up time).
    from itpump.emulator.sweep.spec import shipped_sweeps
    from itpump.tools.sweep import _shipped_sweep_names

    assert _shipped_sweep_names() == shipped_sweeps()
    assert _shipped_sweep_names()


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path: Path) -> None:
    # Ctrl-C in a terminal signals the whole process group: the sweep's process and its Dask
    # worker processes. Each worker used to print a KeyboardInterrupt traceback (~46 lines)
    # before the sweep's own line. With -v the sweep logs when its runs start (the line waited
    # for) and distributed logs its shutdown at INFO; anything else is what a user would see
    # without -v, and must be the one line.
    out = tmp_path / "out"
    command = [sys.executable, "-m", "itpump.tools.cli", "-v", "sweep", "occlusion-withdrawal"]
    command += ["--out", str(out), "--no-plot", "--workers", "1"]
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal gives a command
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "runs to do" in line:
                os.killpg(proc.pid, signal.SIGINT)
                break
        else:
            pytest.fail("the sweep ended before its runs started")
        after = proc.stdout.read().splitlines()
        status = proc.wait(timeout=60)
    assert status == 130
    # A log record's traceback (distributed logs a closed comm at INFO while the cluster shuts
    # down, depending on timing) belongs to that record: only -v shows it.
    shown: list[str] = []
    in_record = False
    for line in after:
        if line.startswith(("INFO ", "DEBUG ")):
            in_record = True
        elif in_record and (
            line.startswith(("Traceback ", " ")) or re.match(r"^[\w.]+(Error|Exception)\b", line)
        ):
            pass
        else:
            in_record = False
            shown.append(line)
    assert shown == [
        f"interrupted; finished runs are kept in {out}/runs: run the same command to resume"
    ], "\n".join(after)
