"""Coverage-guided fuzzing of the frame decoder and a served pump's command dispatch.

    python -m benchmarks.fuzz_coverage --minutes 10 --corpus build/fuzz-corpus
    python -m benchmarks.fuzz_coverage --runs 3000 --seed 1        # what the suite runs

Runs the fuzz target of `benchmarks/fuzz_target.py` (its docstring lists the input modes
and the invariants) under atheris, libFuzzer's engine for Python: every `itpump` module is
instrumented (protocol, telemetry endpoint, firmware, pump model), and inputs that reach
new branches are kept and mutated further. The starting corpus holds valid inputs of each
mode. Bounded by `--runs` (inputs) or `--minutes`, whichever comes first; `--seed` makes a
`--runs` bound repeat the same search. With `--corpus DIR` the inputs found are kept there
and a later run continues from them. An input that breaks an invariant stops the run and
is written to `--artifacts` (default: the current directory) as `crash-<sha1>`; the exit
status is then 1, and `python -m benchmarks.fuzz_coverage --reproduce FILE` runs it again.

The last line reports the coverage reached: libFuzzer's count of instrumented branches
(edges) covered and of features (edges with hit counts), the corpus size and the speed.

Atheris ships wheels for Linux x86-64 only (the `test` extra installs it there). Elsewhere
the same target runs under Hypothesis instead (`--engine hypothesis`, chosen automatically):
random and mutated inputs from the same starting corpus, not coverage-guided.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

# libFuzzer's status lines: "#4096 pulse  cov: 1234 ft: 5678 corp: 91/2345b ... exec/s: 123"
_STATUS = re.compile(
    r"^#(?P<runs>\d+)\s+\w+\s+cov: (?P<cov>\d+) ft: (?P<ft>\d+) corp: (?P<corp>\d+)/"
    r".*?exec/s: (?P<speed>\d+)"
)
INSTRUMENTED = ("itpump",)
"""What atheris instruments (whole top-level packages: atheris cannot select sub-packages):
the frame decoder, sessions, message decoding, the telemetry endpoint, the firmware's
command handling, and the pump model those commands act on."""


def _run_atheris_child(libfuzzer_args: list[str]) -> None:
    """In the child process: instrument, build the target, hand control to libFuzzer (which
    exits the process when done)."""
    import atheris
    from atheris.import_hook import instrument_imports

    with instrument_imports(include=list(INSTRUMENTED)):
        from benchmarks.fuzz_target import FuzzTarget

    target = FuzzTarget()
    atheris.Setup([sys.argv[0], *libfuzzer_args], target.one_input)
    atheris.Fuzz()


def _write_seeds(directory: Path) -> None:
    from benchmarks.fuzz_target import seed_inputs

    directory.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(seed_inputs()):
        (directory / f"seed-{i}").write_bytes(data)


def run_atheris(
    *, runs: int | None, seconds: float, seed: int, corpus: Path | None, artifacts: Path
) -> int:
    """Run libFuzzer in a child process (it ends its process when done); print its status
    lines and a summary; the child's exit status (0: nothing found)."""
    with tempfile.TemporaryDirectory(prefix="itpump-fuzz-") as tmp:
        corpus_dir = corpus if corpus is not None else Path(tmp) / "corpus"
        seeds_dir = Path(tmp) / "seeds"
        _write_seeds(seeds_dir)
        corpus_dir.mkdir(parents=True, exist_ok=True)
        artifacts.mkdir(parents=True, exist_ok=True)
        options = [
            f"-seed={seed}",
            f"-max_total_time={max(1, round(seconds))}",
            f"-artifact_prefix={artifacts}/",
            "-max_len=1024",
            "-print_final_stats=1",
        ]
        if runs is not None:
            options.append(f"-runs={runs}")
        command = [sys.executable, "-m", "benchmarks.fuzz_coverage", "--child", "--"]
        command += [*options, str(corpus_dir), str(seeds_dir)]
        started = time.perf_counter()
        last: re.Match[str] | None = None
        first: re.Match[str] | None = None
        # The hard limit covers start-up and the final merge beyond libFuzzer's own bound.
        with subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        ) as child:
            assert child.stderr is not None
            for line in child.stderr:
                if not line.startswith("INFO: Instrumenting "):  # one line per module
                    sys.stderr.write(line)
                if status := _STATUS.match(line):
                    first = first or status
                    last = status
            code = child.wait(timeout=seconds + 120)
        wall_s = time.perf_counter() - started
    if last is None or first is None:
        print(f"fuzzing did not start (exit status {code})")
        return code or 1
    print(
        f"engine atheris: {last['runs']} inputs in {wall_s:.0f} s ({last['speed']}/s); "
        f"coverage: {last['cov']} edges, {last['ft']} features "
        f"(starting corpus: {first['cov']} edges, {first['ft']} features); "
        f"corpus {last['corp']} inputs; "
        + ("no invariant broken" if code == 0 else f"FAILED (exit status {code})")
    )
    return code


def run_hypothesis(*, runs: int | None, seconds: float, seed: int) -> int:
    """The same target over Hypothesis inputs (where atheris cannot be installed)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed

    from benchmarks.fuzz_target import FuzzTarget, fuzz_inputs

    target = FuzzTarget()
    deadline = time.monotonic() + seconds

    @hypothesis_seed(seed)
    @settings(
        max_examples=runs or 10**9,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(fuzz_inputs())
    def search(data: bytes) -> None:
        if time.monotonic() < deadline:
            target.one_input(data)

    started = time.perf_counter()
    try:
        search()
    except AssertionError as exc:
        print(f"engine hypothesis: FAILED after {target.inputs} inputs: {exc}")
        return 1
    wall_s = time.perf_counter() - started
    print(
        f"engine hypothesis (not coverage-guided): {target.inputs} "
        f"inputs in {wall_s:.0f} s; no invariant broken"
    )
    return 0


def reproduce(path: Path) -> int:
    """Run one saved input through the target; 0 if every invariant holds."""
    from benchmarks.fuzz_target import FuzzTarget

    FuzzTarget().one_input(path.read_bytes())
    print(f"{path}: no invariant broken")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options and fuzz; 0 when no input broke an invariant."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        _run_atheris_child(argv[2:] if argv[1:2] == ["--"] else argv[1:])
        return 0  # not reached: libFuzzer exits the process
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=None, help="inputs to run (default: no limit)")
    parser.add_argument(
        "--minutes", type=float, default=None, help="time bound (default: 1, or 10 with --runs)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the search (default: 1)")
    parser.add_argument("--corpus", type=Path, default=None, help="keep the inputs found here")
    parser.add_argument(
        "--artifacts", type=Path, default=Path("."), help="where a failing input is written"
    )
    parser.add_argument(
        "--engine",
        choices=("auto", "atheris", "hypothesis"),
        default="auto",
        help="auto: atheris if installed, else hypothesis",
    )
    parser.add_argument("--reproduce", type=Path, default=None, help="run one saved input")
    args = parser.parse_args(argv)
    if args.reproduce is not None:
        return reproduce(args.reproduce)
    if args.runs is not None and args.runs < 1:
        parser.error(f"--runs must be >= 1 (got {args.runs})")
    minutes = args.minutes if args.minutes is not None else (10.0 if args.runs else 1.0)
    if not minutes > 0:
        parser.error(f"--minutes must be > 0 (got {minutes})")
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if importlib.util.find_spec("atheris") else "hypothesis"
    if engine == "atheris":
        return run_atheris(
            runs=args.runs,
            seconds=minutes * 60.0,
            seed=args.seed,
            corpus=args.corpus,
            artifacts=args.artifacts,
        )
    return run_hypothesis(runs=args.runs, seconds=minutes * 60.0, seed=args.seed)


if __name__ == "__main__":
    raise SystemExit(main())
