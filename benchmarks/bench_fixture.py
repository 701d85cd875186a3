"""Benchmark: from a test requesting `itpump_pump` to the pump answering IDENTIFY.

Runs a real pytest session (in this process) with one test parametrised `--runs` times. A hook
records when pytest starts setting up the `itpump_pump` fixture; the test opens the pump's
port with the reference programmer, sends IDENTIFY and records when the answer is in. The
fixture's teardown (stop time, close ports, join the thread) is timed the same way. Each run
builds and warms up (1 simulated day, the default) a new pump.

Run: python3 -m benchmarks.bench_fixture [--runs 50] [--port tcp pty]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

TEST_FILE = '''
import time
import pytest
from itpump.programmer import PumpClient

RECORD = {record!r}

@pytest.mark.itpump(port={port!r})
@pytest.mark.parametrize("run", range({runs}))
def test_identify(itpump_pump, run):
    with PumpClient(itpump_pump.url, key=itpump_pump.key) as programmer:
        programmer.identify()
        answered_s = time.perf_counter()
    with open(RECORD, "a") as f:
        f.write(f"answered {{run}} {{answered_s!r}}\\n")
'''


class Recorder:
    """pytest hooks: when the fixture's set-up starts, when its teardown starts and ends."""

    def __init__(self) -> None:
        self.setup_start_s: list[float] = []
        self.teardown_s: list[float] = []

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
    ) -> Generator[None, object, object]:
        if fixturedef.argname == "itpump_pump":
            self.setup_start_s.append(time.perf_counter())
        return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Generator[None, None, None]:
        start_s = time.perf_counter()
        try:
            return (yield)
        finally:
            self.teardown_s.append(time.perf_counter() - start_s)


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation between order statistics."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def measure(port: str, runs: int) -> tuple[list[float], list[float]]:
    """Milliseconds from fixture request to IDENTIFY answered, and of teardown, per run."""
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "record.txt"
        test = Path(tmp) / f"test_bench_fixture_{port}.py"  # unique: one process, two sessions
        test.write_text(TEST_FILE.format(record=str(record), port=port, runs=runs))
        recorder = Recorder()
        code = pytest.main(
            [str(test), "-q", "-p", "itpump.emulator.pytest_plugin", "-p", "no:cacheprovider",
             "-o", "asyncio_default_fixture_loop_scope=function", "--rootdir", tmp],
            plugins=[recorder],
        )
        if code != 0:
            raise SystemExit(f"benchmark session failed with exit code {code}")
        answered = [float(line.split()[2]) for line in record.read_text().splitlines()]
    starts = recorder.setup_start_s
    to_identify_ms = [(a - s) * 1000.0 for s, a in zip(starts, answered, strict=True)]
    return to_identify_ms, [t * 1000.0 for t in recorder.teardown_s]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="tests per port kind (default 50)")
    parser.add_argument("--port", nargs="+", default=["tcp", "pty"], help="port kinds")
    args = parser.parse_args()
    rows = []
    for port in args.port:
        to_identify_ms, teardown_ms = measure(port, args.runs)
        rows.append((port, to_identify_ms, teardown_ms))
    print()
    print(f"command: python3 -m benchmarks.bench_fixture --runs {args.runs} "
          f"--port {' '.join(args.port)}")
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, Python "
          f"{platform.python_version()}, {platform.system()}; pytest {pytest.__version__}")
    print("| port | runs | request -> IDENTIFY answered, median (ms) | p99 (ms) | max (ms) "
          "| teardown median (ms) | teardown p99 (ms) |")
    print("|---|---|---|---|---|---|---|")
    for port, ident, down in rows:
        print(f"| {port} | {len(ident)} | {statistics.median(ident):.1f} "
              f"| {percentile(ident, 0.99):.1f} | {max(ident):.1f} "
              f"| {statistics.median(down):.1f} | {percentile(down, 0.99):.1f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
