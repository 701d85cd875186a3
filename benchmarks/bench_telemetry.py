"""Benchmark: interrogate round trip over a PTY against pymodbus RTU in the same run (issues 4
and 11): one pump as `itpump serve` gives it by default (infusing) over a long run with the
trend per block, the same pump idle, and 100 pumps in one process.

Our side: `PumpFarm` pumps on raw PTYs as `itpump serve --baud 0 --turnaround-ms 0` serves
them: the default scenario (clinic-ready) after the default warm-up of one simulated day, so
the pump is infusing 200 mcg/day with its live PK patient, at speed 1; no link emulation. Each
has an authenticated clinician session set up before timing; one request = a full INTERROGATE
(MAC'd request, firmware status, MAC'd ~200-byte response) decoded and checked by the sans-IO
`ProgrammerConnection`. "idle" is the same pump after a STOP_THERAPY (nothing moves). The
client model is the harness's (benchmarks/latency.py): one asyncio task per port,
non-blocking reads on the tty, the same for every peer.

Trend (1 port): `--trend-requests` timed requests back to back per peer and repeat (20,000 by
default; 100,000 for the record), peers interleaved per repeat; p50/p99 of the whole run and
of each `--block` (10,000) block, medians over the repeats, and the growth of the process's
resident memory over each run. Then the `--targets` cases (100 ports by default) as in issue 4.

Run: python3 -m benchmarks.bench_telemetry [--repeat 5] [--trend-requests 20000]
     [--block 10000] [--targets 100] [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pymodbus

from benchmarks.latency import (
    AsyncRequest,
    Case,
    Cleanup,
    FdClient,
    RunResult,
    TargetFactory,
    markdown_table,
    measure_async,
    open_serial,
    percentiles_us,
    run_suite,
)
from benchmarks.peer_modbus import PEER_NAME, modbus_targets
from benchmarks.served import proc_rss_mib
from itpump.emulator.farm import PortSpec, PumpFarm
from itpump.emulator.scenario import load_scenario
from itpump.protocol import messages as m
from itpump.protocol.auth import seeded_nonce_source
from itpump.protocol.connection import ProgrammerConnection, ResponseReceived

OUR_NAME = "itpump interrogate"
INFUSING_NAME = "itpump interrogate, infusing (serve default)"
IDLE_NAME = "itpump interrogate, idle (therapy stopped)"
FLAG = 0x7E


def _frame_complete(buf: bytes | bytearray) -> bool:
    # Byte stuffing keeps 0x7E out of frame bodies: a reply is whole at its closing flag.
    return len(buf) > 2 and buf[-1] == FLAG and buf.count(FLAG) >= 2


async def pump_targets(
    k: int, *, idle: bool = False, speed: float | None = 1.0
) -> tuple[list[AsyncRequest], Cleanup]:
    """k pumps on PTYs, each with an authenticated session; one INTERROGATE per call.

    The farm is `itpump serve`'s default (scenario, warm-up, speed 1) without link emulation;
    `idle` stops the therapy first; `speed` None runs simulated time as fast as possible.
    """
    farm = PumpFarm(
        load_scenario("clinic-ready"),
        count=k,
        port=PortSpec("pty"),
        speed=speed,
        turnaround=False,  # "without pacing": no link emulation at all
    )
    await farm.start()
    runner = asyncio.create_task(farm.run())
    ports = []
    clients: list[FdClient] = []
    targets: list[AsyncRequest] = []
    for i, served in enumerate(farm.pumps):
        port = open_serial(served.url)
        ports.append(port)
        client = FdClient(port.fileno())
        clients.append(client)
        conn = ProgrammerConnection(seeded_nonce_source(i), key=served.key)

        async def round_trip(
            request: m.Request, conn: ProgrammerConnection = conn, client: FdClient = client
        ) -> m.Response:
            reply = await client.request(conn.send(request, time.monotonic()), _frame_complete)
            conn.receive_data(reply)
            event = conn.next_event()
            assert isinstance(event, ResponseReceived), event
            return event.response

        await round_trip(m.IdentifyRequest())
        await round_trip(conn.auth_begin(m.Role.CLINICIAN))
        await round_trip(conn.auth_proof())
        if idle:
            await round_trip(m.StopTherapyRequest())
        status = await round_trip(m.InterrogateRequest())
        assert isinstance(status, m.InterrogateResponse)
        expected = m.TherapyState.STOPPED if idle else m.TherapyState.RUNNING
        if speed is not None and (
            status.therapy_state is not expected or (status.rate_nl_per_day > 0) == idle
        ):
            raise RuntimeError(f"pump {served.serial}: {status.therapy_state.name}, expected "
                               f"{expected.name}")

        async def interrogate(round_trip: object = round_trip) -> object:
            assert callable(round_trip)
            response = await round_trip(m.InterrogateRequest())
            assert isinstance(response, m.InterrogateResponse)
            return response

        targets.append(interrogate)

    async def cleanup() -> None:
        for client in clients:
            client.close()
        for port in ports:
            port.close()
        farm.stop()
        await runner
        await farm.close()

    return targets, cleanup


@dataclass(frozen=True, slots=True)
class TrendRow:
    """One peer's long run: whole-run figures and p50/p99 per block (medians over repeats)."""

    peer: str
    requests: int
    p50_us: float
    p99_us: float
    rps: float
    block_p50_us: tuple[float, ...]
    block_p99_us: tuple[float, ...]
    rss_growth_kib: float


def block_percentiles(
    latencies_ns: np.ndarray, block: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """p50 and p99 (µs) of each consecutive `block` of requests (a last partial block too)."""
    p50s, p99s = [], []
    for start in range(0, len(latencies_ns), block):
        p50, p99 = percentiles_us(latencies_ns[start : start + block])
        p50s.append(p50)
        p99s.append(p99)
    return tuple(p50s), tuple(p99s)


async def run_trend(
    peers: dict[str, TargetFactory], *, requests: int, block: int, repeats: int
) -> list[TrendRow]:
    """Every peer on one port, `requests` timed requests per repeat, peers interleaved."""
    names = list(peers)
    started: dict[str, tuple[Sequence[AsyncRequest], Cleanup]] = {}
    runs: dict[str, list[RunResult]] = {name: [] for name in names}
    growth: dict[str, list[float]] = {name: [] for name in names}
    try:
        for name in names:
            started[name] = await peers[name](1)
        for r in range(repeats):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                before = proc_rss_mib(os.getpid())
                runs[name].append(
                    await measure_async(started[name][0], count=requests, warmup=200,
                                        timeout_s=max(300.0, requests * 0.01))
                )
                growth[name].append((proc_rss_mib(os.getpid()) - before) * 1024.0)
    finally:
        for _, cleanup in started.values():
            await cleanup()
    rows = []
    for name in names:
        blocks = [block_percentiles(run.latencies_ns, block) for run in runs[name]]
        figures = [run.percentiles_us() for run in runs[name]]
        rows.append(
            TrendRow(
                peer=name,
                requests=requests,
                p50_us=statistics.median(f[0] for f in figures),
                p99_us=statistics.median(f[1] for f in figures),
                rps=statistics.median(run.rps for run in runs[name]),
                block_p50_us=tuple(statistics.median(col) for col in zip(*(b[0] for b in blocks),
                                                                          strict=True)),
                block_p99_us=tuple(statistics.median(col) for col in zip(*(b[1] for b in blocks),
                                                                          strict=True)),
                rss_growth_kib=statistics.median(growth[name]),
            )
        )
    return rows


def trend_table(rows: Sequence[TrendRow], *, baseline: str, block: int) -> str:
    """Whole-run figures with ratios to `baseline`, then p50 / p99 per block."""
    base = next(row for row in rows if row.peer == baseline)
    lines = [
        "| peer | requests/repeat | p50 (µs) | p99 (µs) | requests/s | p50 / pymodbus "
        "| p99 / pymodbus | req/s / pymodbus | RSS growth (KiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.peer} | {row.requests} | {row.p50_us:.1f} | {row.p99_us:.1f} | "
            f"{row.rps:,.0f} | {row.p50_us / base.p50_us:.2f} | {row.p99_us / base.p99_us:.2f} | "
            f"{row.rps / base.rps:.2f} | {row.rss_growth_kib:+.0f} |"
        )
    n_blocks = max(len(row.block_p50_us) for row in rows)
    header = [
        f"requests {_count(i * block)}-{_count(min((i + 1) * block, rows[0].requests))}"
        for i in range(n_blocks)
    ]
    lines += ["", "p50 / p99 (µs) per block of requests:", "",
              "| peer | " + " | ".join(header) + " |", "|---|" + "---|" * n_blocks]
    for row in rows:
        cells = [f"{p50:.0f} / {p99:.0f}"
                 for p50, p99 in zip(row.block_p50_us, row.block_p99_us, strict=True)]
        lines.append(f"| {row.peer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _count(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 and n else str(n)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the trend and the per-target tables with our ratios to pymodbus (Markdown)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5, help="repeats per case (median)")
    parser.add_argument(
        "--trend-requests",
        type=int,
        default=20000,
        help="timed requests per repeat of the 1-port trend (0: skip it)",
    )
    parser.add_argument("--block", type=int, default=10000, help="trend block size")
    parser.add_argument(
        "--speed", default="1",
        help="simulated seconds per real second of our farms, or 'max' (as fast as possible, "
        "as itpump serve --speed max; the pump's state then moves on under the requests)",
    )
    parser.add_argument("--targets", type=int, nargs="*", default=[100],
                        help="port counts of the issue 4 cases (infusing pumps)")
    parser.add_argument(
        "--requests",
        type=int,
        default=2000,
        help="timed requests per case for 1 target; split across targets",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.block < 1 or args.trend_requests < 0:
        parser.error("--repeat and --block must be >= 1, --trend-requests >= 0")
    try:
        speed = None if args.speed == "max" else float(args.speed)
    except ValueError:
        parser.error(f"--speed: a number or 'max', got {args.speed!r}")
    ours = functools.partial(pump_targets, speed=speed)
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    print(
        f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"pymodbus {pymodbus.__version__}, one process, median of {args.repeat} repeats, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    if args.trend_requests:
        trend_peers: dict[str, TargetFactory] = {
            PEER_NAME: modbus_targets,
            INFUSING_NAME: ours,
            IDLE_NAME: functools.partial(ours, idle=True),
        }
        rows = asyncio.run(run_trend(trend_peers, requests=args.trend_requests,
                                     block=args.block, repeats=args.repeat))
        print()
        print(trend_table(rows, baseline=PEER_NAME, block=args.block))
    if args.targets:
        cases = [
            Case(
                targets=k,
                count=max(100, args.requests // k),
                warmup=max(1, max(100, args.requests // k) // 10),
            )
            for k in args.targets
        ]
        peers: dict[str, TargetFactory] = {PEER_NAME: modbus_targets, OUR_NAME: ours}
        suite = asyncio.run(run_suite(peers, cases, repeats=args.repeat))
        print()
        print(markdown_table(suite, baseline=PEER_NAME))
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
