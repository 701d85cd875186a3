"""Capacity: how many pumps one `itpump serve` process serves while polled and time-stepped.

Per pump count N: start ``itpump serve --count N --port tcp:0 --control 0 --json`` (real time,
speed 1, default pacing: 19200 baud, 5 ms turnaround; ``--baud`` passes another rate, 0 = no
pacing) as a subprocess. Client worker processes (``--clients``; each runs this module with
``--worker``) open N TCP connections between them and authenticate each with the reference
``programmer.AsyncPumpClient`` (the printed key), then poll each pump with an INTERROGATE once
per ``--period`` (pump i offset by i/N of the period: staggered) for ``--duration`` seconds,
while this process POSTs ``/clock/advance {"hours": ...}`` once a second (httpx).

An advance longer than the session idle timeout (300 s) ends every telemetry session (see
docs/control.md), so a poll after an advance is refused with NOT_AUTHENTICATED; the worker
then authenticates again and repeats the INTERROGATE, as a programmer would. Reported:

- ``interrogate``: the INTERROGATE round trip that returned the status (after any re-auth);
- ``poll``: the whole poll, refusal and re-authentication included (what the rig waits);
- ``missed``: poll slots skipped because the previous poll of that pump was still running;
- ``advance``: the control API round trip of the advance;
- server CPU (% of one core, from /proc/PID/stat over the polling window), server peak RSS
  during the window, each client process's CPU, load average.

The link floor (bytes at 19200 baud) is in every paced figure: compare with N = 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from benchmarks.latency import percentiles_us
from benchmarks.served import (
    REPO,
    ServedInfo,
    ServeProcess,
    load_average,
    proc_cpu_s,
    proc_rss_mib,
    shown_command,
    slots_missed,
)
from itpump.programmer import AsyncPumpClient
from itpump.programmer.errors import PumpError, PumpRefused
from itpump.protocol.codes import ResultCode

CONNECT_CONCURRENCY = 16


# --------------------------------------------------------------------------- worker side


@dataclass(slots=True)
class WorkerResult:
    """What one client process measured (latencies in ns)."""

    interrogate_ns: list[int]
    poll_ns: list[int]
    polls: int
    missed: int
    reauths: int
    errors: int
    cpu_s: float
    wall_s: float
    connect_s: float
    error_kinds: dict[str, int]
    start_s: float = math.nan  # spawn of `itpump serve` to its control URL (pumps served)
    start_rss_mib: float = math.nan  # server RSS once started, before any client


async def _worker(config: dict[str, Any]) -> WorkerResult:
    pumps = [ServedInfo(p["serial"], p["url"], bytes.fromhex(p["key"])) for p in config["pumps"]]
    offsets: list[float] = config["offsets"]
    period: float = config["period"]
    threads: int = config["threads"]
    loop = asyncio.get_running_loop()
    if threads > 0:
        loop.set_default_executor(ThreadPoolExecutor(max_workers=threads))
    clients = [AsyncPumpClient(p.url, key=p.key) for p in pumps]
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def connect(client: AsyncPumpClient) -> None:
        async with gate:
            await client.open()
            await client.connect()

    t0 = time.monotonic()
    await asyncio.gather(*(connect(c) for c in clients))
    connect_s = time.monotonic() - t0
    print(json.dumps({"ready": True}), flush=True)
    line = await loop.run_in_executor(None, sys.stdin.readline)
    start_at: float = json.loads(line)["start_at"]
    duration: float = config["duration"]
    start = time.monotonic() + (start_at - time.time())
    end = start + duration
    result = WorkerResult([], [], 0, 0, 0, 0, 0.0, 0.0, connect_s, {})
    cpu0 = time.process_time()

    async def poll(client: AsyncPumpClient, offset: float) -> None:
        first = start + offset
        slot = 0
        clock = time.perf_counter_ns
        while (due := first + slot * period) < end:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            t0 = clock()
            try:
                try:
                    await client.interrogate()
                    t1 = t0
                except PumpRefused as exc:
                    if exc.code is not ResultCode.NOT_AUTHENTICATED:
                        raise
                    result.reauths += 1
                    await client.authenticate()
                    t1 = clock()
                    await client.interrogate()
                t2 = clock()
                result.interrogate_ns.append(t2 - t1)
                result.poll_ns.append(t2 - t0)
            except PumpError as exc:
                result.errors += 1
                kind = type(exc).__name__ + (
                    f" {exc.code.name}" if isinstance(exc, PumpRefused) else ""
                )
                result.error_kinds[kind] = result.error_kinds.get(kind, 0) + 1
            result.polls += 1
            slot, missed = slots_missed(first, period, slot, time.monotonic())
            result.missed += missed

    await asyncio.gather(*(poll(c, o) for c, o in zip(clients, offsets, strict=True)))
    result.cpu_s = time.process_time() - cpu0
    result.wall_s = time.monotonic() - start
    for client in clients:
        await client.close()
    return result


def worker_main() -> None:
    """Read the config line, connect, say ready, wait for the start line, poll, print JSON."""
    config = json.loads(sys.stdin.readline())
    result = asyncio.run(_worker(config))
    print(json.dumps(asdict(result)), flush=True)


# --------------------------------------------------------------------------- driver side


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One pump count, one run."""

    pumps: int
    clients: int
    polls: int
    interrogate_p50_ms: float
    interrogate_p99_ms: float
    poll_p50_ms: float
    poll_p99_ms: float
    missed: int
    reauths: int
    errors: int
    advance_p50_ms: float
    advance_p99_ms: float
    advances: int
    server_cpu_pct: float
    server_rss_mib: float
    client_cpu_pct: list[float]
    load: tuple[float, float]
    connect_s: float
    error_kinds: dict[str, int]
    start_s: float = math.nan  # spawn of `itpump serve` to its control URL (pumps served)
    start_rss_mib: float = math.nan  # server RSS once started, before any client


def _merge_kinds(kinds: Iterable[dict[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for one in kinds:
        for name, count in one.items():
            merged[name] = merged.get(name, 0) + count
    return merged


def _ms(values_ns: Sequence[int]) -> tuple[float, float]:
    if not values_ns:
        return math.nan, math.nan
    p50, p99 = percentiles_us(values_ns)
    return p50 / 1000.0, p99 / 1000.0


def _spawn_worker(config: dict[str, Any]) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench_capacity", "--worker"],
        cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(config) + "\n")
    proc.stdin.flush()
    return proc


async def _advance_loop(url: str, hours: float, end: float, out: list[int]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60.0) as client:
        slot = 0
        while (due := time.monotonic()) < end:
            t0 = time.perf_counter_ns()
            response = await client.post("/clock/advance", json={"hours": hours})
            response.raise_for_status()
            out.append(time.perf_counter_ns() - t0)
            slot += 1
            await asyncio.sleep(max(0.0, due + 1.0 - time.monotonic()))


async def _sample_rss(pid: int, end: float, peak: list[float]) -> None:
    while time.monotonic() < end:
        peak[0] = max(peak[0], proc_rss_mib(pid))
        await asyncio.sleep(1.0)


def run_case(
    n: int, *, clients: int, duration: float, period: float, threads: int,
    advance_hours: float, baud: int | None, turnaround_ms: float | None = None,
) -> CaseResult:
    """Serve ``n`` pumps, poll them from ``clients`` processes for ``duration`` seconds."""
    options = serve_options(n, baud, turnaround_ms)
    clients = max(1, min(clients, n))
    spawned = time.monotonic()
    with ServeProcess(options) as served:
        start_s = time.monotonic() - spawned
        start_rss = proc_rss_mib(served.pid)
        pumps = served.pumps
        procs: list[subprocess.Popen[str]] = []
        try:
            for c in range(clients):
                mine = list(range(c, n, clients))
                procs.append(_spawn_worker({
                    "pumps": [
                        {"serial": pumps[i].serial, "url": pumps[i].url, "key": pumps[i].key.hex()}
                        for i in mine
                    ],
                    "offsets": [period * i / n for i in mine],
                    "period": period, "duration": duration,
                    "threads": threads if threads > 0 else (len(mine) if threads < 0 else 0),
                }))
            for proc in procs:
                assert proc.stdout is not None
                ready = proc.stdout.readline()
                if not ready:
                    raise RuntimeError("a client process failed while connecting")
            start_at = time.time() + 1.0
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write(json.dumps({"start_at": start_at}) + "\n")
                proc.stdin.flush()
            time.sleep(max(0.0, start_at - time.time()))
            load0 = load_average()[0]
            cpu0, t0 = proc_cpu_s(served.pid), time.monotonic()
            advances: list[int] = []
            peak = [0.0]

            async def drive() -> None:
                end = time.monotonic() + duration
                tasks = [_sample_rss(served.pid, end, peak)]
                if advance_hours > 0:
                    tasks.append(_advance_loop(served.control_url, advance_hours, end, advances))
                await asyncio.gather(*tasks)

            asyncio.run(drive())
            cpu = proc_cpu_s(served.pid) - cpu0
            wall = time.monotonic() - t0
            load1 = load_average()[0]
            results: list[WorkerResult] = []
            for proc in procs:
                out, _ = proc.communicate(timeout=duration + 120)
                results.append(WorkerResult(**json.loads(out.strip().splitlines()[-1])))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    interrogate = [v for r in results for v in r.interrogate_ns]
    poll = [v for r in results for v in r.poll_ns]
    i50, i99 = _ms(interrogate)
    p50, p99 = _ms(poll)
    a50, a99 = _ms(advances)
    return CaseResult(
        pumps=n, clients=clients, polls=sum(r.polls for r in results),
        interrogate_p50_ms=i50, interrogate_p99_ms=i99, poll_p50_ms=p50, poll_p99_ms=p99,
        missed=sum(r.missed for r in results), reauths=sum(r.reauths for r in results),
        errors=sum(r.errors for r in results), advance_p50_ms=a50, advance_p99_ms=a99,
        advances=len(advances), server_cpu_pct=100.0 * cpu / wall, server_rss_mib=peak[0],
        client_cpu_pct=[100.0 * r.cpu_s / r.wall_s for r in results], load=(load0, load1),
        connect_s=max(r.connect_s for r in results),
        error_kinds=_merge_kinds(r.error_kinds for r in results),
        start_s=start_s, start_rss_mib=start_rss,
    )


def serve_options(n: int, baud: int | None, turnaround_ms: float | None) -> list[str]:
    """The ``itpump serve`` options of a case (``N`` for the shown command)."""
    options = ["--count", str(n), "--port", "tcp:0", "--control", "0", "--json"]
    if baud is not None:
        options += ["--baud", str(baud)]
    if turnaround_ms is not None:
        options += ["--turnaround-ms", f"{turnaround_ms:g}"]
    return options


def median_case(runs: Sequence[CaseResult]) -> CaseResult:
    """Median of each numeric figure over repeats (counts too); lists and load from the
    median-p99 run."""
    mid = sorted(runs, key=lambda r: r.interrogate_p99_ms)[len(runs) // 2]

    def med(name: str) -> Any:
        return statistics.median(getattr(r, name) for r in runs)

    return CaseResult(
        pumps=mid.pumps, clients=mid.clients, polls=med("polls"),
        interrogate_p50_ms=med("interrogate_p50_ms"), interrogate_p99_ms=med("interrogate_p99_ms"),
        poll_p50_ms=med("poll_p50_ms"), poll_p99_ms=med("poll_p99_ms"), missed=med("missed"),
        reauths=med("reauths"), errors=med("errors"), advance_p50_ms=med("advance_p50_ms"),
        advance_p99_ms=med("advance_p99_ms"), advances=med("advances"),
        server_cpu_pct=med("server_cpu_pct"), server_rss_mib=med("server_rss_mib"),
        client_cpu_pct=mid.client_cpu_pct, load=mid.load, connect_s=med("connect_s"),
        error_kinds=mid.error_kinds, start_s=med("start_s"), start_rss_mib=med("start_rss_mib"),
    )


def markdown(rows: Sequence[CaseResult]) -> str:
    """The report table."""
    out = [
        "| pumps | client procs | polls | interrogate p50 / p99 (ms) | poll p50 / p99 (ms) "
        "| missed | re-auths | errors | advance p50 / p99 (ms) | server CPU | server RSS (MiB) "
        "| client CPU | load 1 min | start (s) | RSS at start (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r.pumps} | {r.clients} | {r.polls:.0f} | {r.interrogate_p50_ms:.1f} / "
            f"{r.interrogate_p99_ms:.1f} | {r.poll_p50_ms:.1f} / {r.poll_p99_ms:.1f} "
            f"| {r.missed:.0f} | {r.reauths:.0f} | {r.errors:.0f} | {r.advance_p50_ms:.1f} / "
            f"{r.advance_p99_ms:.1f} | {r.server_cpu_pct:.0f} % | {r.server_rss_mib:.0f} "
            f"| {', '.join(f'{c:.0f} %' for c in r.client_cpu_pct)} "
            f"| {r.load[0]:.2f} -> {r.load[1]:.2f} | {r.start_s:.2f} | {r.start_rss_mib:.0f} |"
        )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the pump counts and print the commands and a Markdown table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 10, 50, 100, 200, 400])
    parser.add_argument("--duration", type=float, default=60.0, help="polling seconds per run")
    parser.add_argument("--period", type=float, default=1.0, help="poll period per pump (s)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per count (median)")
    parser.add_argument(
        "--clients", type=int, default=0,
        help="client processes (default 0: one per 100 pumps, at least one)",
    )
    parser.add_argument(
        "--client-threads", type=int, default=-1,
        help="worker threads of each client's default executor (AsyncPumpClient reads in "
        "threads): -1 = one per pump (default), 0 = Python's default (min(32, CPUs + 4))",
    )
    parser.add_argument(
        "--advance-hours", type=float, default=1.0,
        help="POST /clock/advance with these hours once a second (0: no advancing)",
    )
    parser.add_argument("--baud", type=int, help="passed to itpump serve (default: profile's)")
    parser.add_argument(
        "--turnaround-ms", type=float,
        help="passed to itpump serve (default: the profile's 5 ms; 0 = answer at once)",
    )
    parser.add_argument("--stop-p99-ms", type=float, default=0.0,
                        help="stop after the first count whose interrogate p99 passes this")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main()
        return
    options = serve_options(0, args.baud, args.turnaround_ms)
    options[1] = "N"
    print(f"server: {shown_command(options)}")
    print(
        f"clients: programmer.AsyncPumpClient, interrogate every {args.period} s per pump "
        f"(staggered), {args.duration:.0f} s; POST /clock/advance "
        f"{{\"hours\": {args.advance_hours}}} every second (httpx); python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs", flush=True,
    )
    rows: list[CaseResult] = []
    for n in args.counts:
        runs = []
        for _ in range(args.repeat):
            clients = args.clients or max(1, math.ceil(n / 100))
            runs.append(run_case(
                n, clients=clients, duration=args.duration, period=args.period,
                threads=args.client_threads, advance_hours=args.advance_hours, baud=args.baud,
                turnaround_ms=args.turnaround_ms,
            ))
            print(markdown(runs[-1:]).splitlines()[-1], flush=True)
            if runs[-1].error_kinds:
                print(f"  errors: {runs[-1].error_kinds}", flush=True)
        rows.append(median_case(runs))
        if args.stop_p99_ms and rows[-1].interrogate_p99_ms > args.stop_p99_ms:
            break
    print()
    print(markdown(rows))


if __name__ == "__main__":
    main()
