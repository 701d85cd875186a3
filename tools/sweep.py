"""`itpump sweep`: thousands of full pump runs on Dask, reduced to outcome rows and hazards."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from itpump.tools.cli import UsageError
from itpump.tools.extras import require_plotting, require_sweep

EPILOG = """\
SWEEP is a sweep TOML file (schema: docs/sweep.md) or the name of a shipped example:
  {names}
Without --scheduler, a local Dask cluster runs one worker process per core. With
--scheduler tcp://HOST:8786 the sweep runs on an existing cluster (`dask scheduler`, then
`dask worker tcp://HOST:8786` on each machine, each with itpump installed).
Outputs in --out DIR: runs/part-*.parquet (one row per run), timeseries/ (selected runs),
summary.json, report.png. Running the same command again resumes: finished runs are kept.
Exit status: 0 done, 2 bad input (nothing run), 130 interrupted (resume by running again).
"""

_SCHEDULER_RE = re.compile(r"(tcp|tls|ws|wss|ucx|inproc)://[^\s/:]+(:(\d{1,5}))?/?")


def _shipped_sweep_names() -> list[str]:
    # The names only: importing itpump.emulator.sweep (Dask, pyarrow, scipy) for the epilog
    # cost every `itpump` command ~0.5 s. Same directory as sweep.spec.SHIPPED_SWEEP_DIR
    # (tests/test_sweep_cli.py checks they agree).
    import itpump.emulator

    directory = Path(itpump.emulator.__file__).resolve().parent / "sweeps"
    return sorted(p.stem for p in directory.glob("*.toml"))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `sweep` sub-command."""
    parser = sub.add_parser(
        "sweep",
        help="population and fault sweeps on Dask (thousands of runs -> hazards)",
        description="Run many variations of a scenario (patients, mechanism accuracy, faults, "
        "habits) on Dask and summarise their outcomes.",
        epilog=EPILOG.format(names=", ".join(_shipped_sweep_names())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sweep", help="sweep file or shipped name")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--workers", default=None, help="local worker processes (default: one per core)"
    )
    parser.add_argument(
        "--scheduler", default=None, help="address of a running Dask scheduler, tcp://HOST:PORT"
    )
    parser.add_argument(
        "--chunk", default=None, help="runs per Dask task (default: about 120 simulated days)"
    )
    parser.add_argument(
        "--rows-per-part", default="1000", help="rows per Parquet part file (default: 1000)"
    )
    parser.add_argument(
        "--restart", action="store_true", help="discard results already in --out and start over"
    )
    parser.add_argument("--no-plot", action="store_true", help="skip report.png")
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (it is also hidden when stderr is not a terminal)",
    )
    parser.add_argument("--json", action="store_true", help="print summary.json to stdout")
    parser.set_defaults(func=run)


def _count(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{option} must be a whole number >= 1 (got {text!r})") from None
    if value < 1:
        raise UsageError(f"{option} must be >= 1 (got {value})")
    return value


def check_scheduler(address: str) -> str:
    """A Dask scheduler address such as tcp://10.0.0.5:8786, or a UsageError."""
    match = _SCHEDULER_RE.fullmatch(address)
    port = match.group(3) if match else None
    if match is None or (port is not None and not 0 < int(port) < 65536):
        raise UsageError(
            f"--scheduler {address!r} is not a Dask scheduler address; expected e.g. "
            "tcp://127.0.0.1:8786"
        )
    return address


def _missing_paths(out: Path) -> list[Path]:
    """What `prepare_dir` may create under and above `out` that does not exist yet, deepest
    last: the directories up to the first that exists, the manifest and the two parts
    directories."""
    from itpump.emulator.sweep.store import MANIFEST, RUNS_DIR, TIMESERIES_DIR

    above: list[Path] = []
    for path in (out, *out.parents):
        if path.exists():
            break
        above.append(path)
    inside = [out / name for name in (MANIFEST, RUNS_DIR, TIMESERIES_DIR)]
    return [*reversed(above), *(p for p in inside if not p.exists())]


def _remove_created(created: list[Path]) -> None:
    """Remove what a failed start created (`_missing_paths`), deepest first; a directory
    something else has meanwhile put a file in is left."""
    for path in reversed(created):
        try:
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink(missing_ok=True)
        except OSError:
            pass


def run(args: argparse.Namespace) -> int:
    """Validate everything, run the sweep, write summary and report."""
    require_sweep()
    if not args.no_plot:
        require_plotting("report.png", "pass --no-plot")
    from itpump.emulator.sweep.engine import SweepClusterError, run_sweep
    from itpump.emulator.sweep.report import write_report_png, write_summary
    from itpump.emulator.sweep.spec import SweepError, load_sweep
    from itpump.emulator.sweep.store import SweepDirError, prepare_dir

    workers = _count(args.workers, "--workers")
    chunk = _count(args.chunk, "--chunk")
    rows_per_part = _count(args.rows_per_part, "--rows-per-part")
    assert rows_per_part is not None
    if workers is not None and args.scheduler is not None:
        raise UsageError("--workers and --scheduler exclude each other (the cluster has its own)")
    scheduler = None if args.scheduler is None else check_scheduler(args.scheduler)
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory")
    try:
        sweep = load_sweep(args.sweep)
    except SweepError as exc:
        raise UsageError(str(exc)) from None
    created = _missing_paths(out)
    try:
        prepare_dir(out, sweep, restart=args.restart)
    except SweepDirError as exc:
        _remove_created(created)
        raise UsageError(str(exc)) from None
    bar = None
    if not args.no_progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=sweep.n_runs, unit="run", desc=sweep.name, smoothing=0.1)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.update(done - bar.n)

    # Ctrl-C can land inside distributed's `sync` (the client's blocking calls), whose cancel
    # callback then fails in tornado and is logged as an ERROR with a traceback before the
    # sweep's own one-line message (distributed's bug, not a failed run: failed runs are
    # error rows). The sweep's own failures reach the user through its exceptions.
    logging.getLogger("tornado.application").setLevel(logging.CRITICAL)
    try:
        stats = run_sweep(
            sweep,
            out,
            workers=workers,
            scheduler=scheduler,
            chunk_runs=chunk,
            rows_per_part=rows_per_part,
            on_progress=progress,
        )
    except SweepClusterError as exc:
        # Nothing ran: a failed start leaves --out as it found it.
        _remove_created(created)
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        print(
            f"interrupted; finished runs are kept in {out}/runs: run the same command to resume",
            file=sys.stderr,
        )
        return 130
    finally:
        if bar is not None:
            bar.close()
    data = write_summary(sweep, out)
    if not args.no_plot:
        write_report_png(sweep, out, data)
    if args.json:
        import json

        print(json.dumps(data, indent=2, allow_nan=False))
        return 0
    print(
        f"{sweep.name}: {data['runs_ok']} of {sweep.n_runs} runs ok, {data['runs_failed']} failed "
        f"({stats.executed} run now, {stats.already_done} already done) in {stats.wall_s:.1f} s "
        f"on {stats.worker_threads or '-'} workers"
    )
    for name, hazard in data["hazards"].items():
        if hazard["fraction"] is not None:
            low, high = hazard["ci95"]
            print(
                f"  {name}: {100 * hazard['fraction']:.2f} % of runs "
                f"(95 % CI {100 * low:.2f}-{100 * high:.2f} %)"
            )
    print(f"  outputs in {out}/")
    return 0
