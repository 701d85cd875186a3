"""Shared pieces of the out-of-process benchmarks (bench_control, bench_capacity).

- :class:`ServeProcess`: ``itpump serve ... --json`` as a subprocess of this worktree's code
  (``python -m itpump.tools.cli serve``), with its printed pump lines and control URL parsed;
- :func:`parse_serve_lines`: that parsing, on its own (tested);
- :func:`proc_cpu_s` / :func:`proc_rss_mib`: a process's CPU time and resident memory from
  ``/proc/PID/stat`` and ``/proc/PID/status`` (Linux);
- :func:`quarter_medians`: median of the first and of the last quarter of a series, to see
  whether latencies grow over a run;
- :func:`slots_missed`: how many once-a-period poll slots a late poll skipped.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

REPO = Path(__file__).resolve().parent.parent
"""The checkout the benchmark runs from: the served code is this one's, not an installed one."""

START_TIMEOUT_S = 300.0


@dataclass(frozen=True, slots=True)
class ServedInfo:
    """One pump line of ``itpump serve --json``."""

    serial: str
    url: str
    key: bytes


def parse_serve_lines(lines: Iterable[str]) -> tuple[list[ServedInfo], str | None]:
    """The pumps and the control URL printed by ``itpump serve --json`` (in print order).

    Stops at the control line (printed after every pump); lines that are not JSON objects
    (warnings on stdout, blank lines) are skipped.
    """
    pumps: list[ServedInfo] = []
    for line in lines:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(obj, dict):
            continue
        if "control" in obj:
            return pumps, str(obj["control"])
        if {"serial", "url", "key"} <= obj.keys():
            pumps.append(ServedInfo(str(obj["serial"]), str(obj["url"]), bytes.fromhex(obj["key"])))
    return pumps, None


def serve_argv(options: Sequence[str]) -> list[str]:
    """``python -m itpump.tools.cli serve OPTIONS`` with this interpreter (= ``itpump serve``)."""
    return [sys.executable, "-m", "itpump.tools.cli", "serve", *options]


def shown_command(options: Sequence[str]) -> str:
    """The command line a reader would type for the same server."""
    return shlex.join(["itpump", "serve", *options])


class ServeProcess:
    """``itpump serve OPTIONS --json`` (OPTIONS must include ``--control``) as a subprocess.

    Use as a context manager: enter waits until the control URL is printed (warm-up done,
    ports open); exit sends SIGTERM (a clean shutdown) and waits, killing it after a bound.
    """

    def __init__(self, options: Sequence[str]) -> None:
        self.options = list(options)
        self.pumps: list[ServedInfo] = []
        self.control_url = ""
        self._proc: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int:
        """The server's process id."""
        if self._proc is None:
            raise RuntimeError("not started")
        return self._proc.pid

    def __enter__(self) -> Self:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self._proc = subprocess.Popen(
            serve_argv(self.options), cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
        )
        assert self._proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        seen: list[str] = []
        while time.monotonic() < deadline:
            line = self._proc.stdout.readline()
            if not line:
                self.close()
                raise RuntimeError(f"itpump serve exited before printing its control URL: {seen}")
            seen.append(line)
            pumps, url = parse_serve_lines(seen)
            if url is not None:
                self.pumps, self.control_url = pumps, url
                return self
        self.close()
        raise TimeoutError("itpump serve did not print its control URL in time")

    def close(self) -> None:
        """SIGTERM, wait (10 s), then SIGKILL. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --------------------------------------------------------------------------- /proc


def parse_stat_cpu_ticks(stat: str) -> int:
    """utime + stime (clock ticks) from the text of ``/proc/PID/stat``.

    The command name (field 2) is in parentheses and may hold spaces: split after the last
    ``)``; utime and stime are fields 14 and 15.
    """
    rest = stat[stat.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): field n is rest[n - 3].
    return int(rest[11]) + int(rest[12])


def proc_cpu_s(pid: int) -> float:
    """CPU time (user + system) the process has used so far, in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return parse_stat_cpu_ticks(text) / os.sysconf("SC_CLK_TCK")


def parse_status_kib(status: str, field: str) -> int:
    """A ``kB`` field (``VmRSS``, ``VmHWM``) of ``/proc/PID/status``, in KiB."""
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0])
    raise KeyError(field)


def proc_rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident memory now (``VmRSS``) or at its peak (``VmHWM``), in MiB."""
    return parse_status_kib(Path(f"/proc/{pid}/status").read_text(), field) / 1024.0


def load_average() -> tuple[float, float, float]:
    """1, 5 and 15 minute load averages."""
    return os.getloadavg()


# --------------------------------------------------------------------------- figures


def quarter_medians(series: Sequence[float]) -> tuple[float, float]:
    """Median of the first quarter and of the last quarter of ``series`` (in order).

    Their ratio says whether a figure grows over a run (leaks, queues, caches filling).
    """
    if len(series) < 4:
        raise ValueError(f"need at least 4 values, got {len(series)}")
    quarter = len(series) // 4
    return statistics.median(series[:quarter]), statistics.median(series[-quarter:])


def slots_missed(start_s: float, period_s: float, slot: int, now_s: float) -> tuple[int, int]:
    """A poll scheduled for ``slot`` (due at ``start_s + slot * period_s``) ended at ``now_s``.

    Returns ``(next_slot, missed)``: the first slot not yet past at ``now_s`` and how many
    slots between were skipped because the poll ran past them (a poll that ends inside its own
    period misses none).
    """
    next_slot = max(slot + 1, math.ceil((now_s - start_s) / period_s))
    return next_slot, next_slot - slot - 1
