"""Control API round trip, as a rig sees it: `itpump serve` in its own process, httpx here.

For each variant (real time, and ``--stepped``), the benchmark starts
``itpump serve --port tcp:0 --control 0 --json [--stepped]`` (defaults otherwise: one pump,
warmed up a day, infusing, telemetry paced at 19200 baud), reads the printed control URL, and
times from this process, with one keep-alive ``httpx.Client`` (what
``emulator.control.client.ControlClient`` uses), back to back:

- ``GET /clock``, ``GET /pumps/{serial}/truth``, ``GET /pumps/{serial}/reported``;
- ``POST /clock/advance {"hours": 1}`` (stepped variant only: there it is how time moves).

Each figure: ``--warmup`` untimed requests, then ``--requests`` timed ones
(:func:`time.perf_counter_ns` around the call, response read and status checked), p50 and p99;
the whole set is repeated ``--repeat`` times on a fresh server and the median of each figure
over the repeats is printed. "growth" is the median of the last quarter of the timed requests
over the median of the first quarter (median over repeats): above 1 means it slows down over
the run. Load average and the server's CPU time and RSS are printed beside.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import fastapi
import httpx
import uvicorn

from benchmarks.latency import percentiles_us
from benchmarks.served import (
    ServeProcess,
    load_average,
    proc_cpu_s,
    proc_rss_mib,
    quarter_medians,
    shown_command,
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One timed request kind."""

    name: str
    method: str
    path: str
    body: dict[str, float] | None = None


@dataclass(frozen=True, slots=True)
class Sample:
    """One repeat of one endpoint: p50, p99 (µs), first/last quarter medians (µs)."""

    p50_us: float
    p99_us: float
    first_us: float
    last_us: float


@dataclass(frozen=True, slots=True)
class Line:
    """Median over repeats of one endpoint's figures in one variant."""

    variant: str
    endpoint: str
    requests: int
    repeats: int
    p50_us: float
    p99_us: float
    first_us: float
    last_us: float

    @property
    def growth(self) -> float:
        """Last-quarter median over first-quarter median."""
        return self.last_us / self.first_us


def endpoints(serial: str, *, stepped: bool) -> list[Endpoint]:
    """The timed requests of a variant."""
    kinds = [
        Endpoint("GET /clock", "GET", "/clock"),
        Endpoint("GET /pumps/{serial}/truth", "GET", f"/pumps/{serial}/truth"),
        Endpoint("GET /pumps/{serial}/reported", "GET", f"/pumps/{serial}/reported"),
    ]
    if stepped:
        kinds.append(
            Endpoint('POST /clock/advance {"hours": 1}', "POST", "/clock/advance", {"hours": 1.0})
        )
    return kinds


def time_endpoint(client: httpx.Client, endpoint: Endpoint, *, count: int, warmup: int) -> Sample:
    """``warmup`` untimed then ``count`` timed requests, one after the other."""
    send: Callable[[], httpx.Response]
    if endpoint.method == "GET":
        path = endpoint.path

        def send() -> httpx.Response:
            return client.get(path)
    else:
        path, body = endpoint.path, endpoint.body

        def send() -> httpx.Response:
            return client.post(path, json=body)

    for _ in range(warmup):
        send().raise_for_status()
    clock = time.perf_counter_ns
    latencies: list[int] = []
    for _ in range(count):
        t0 = clock()
        response = send()
        response.raise_for_status()
        latencies.append(clock() - t0)
    p50, p99 = percentiles_us(latencies)
    first, last = quarter_medians([lat / 1000.0 for lat in latencies])
    return Sample(p50, p99, first, last)


@dataclass(frozen=True, slots=True)
class Variant:
    """A server configuration."""

    name: str
    options: list[str]
    stepped: bool


def variants(selected: Sequence[str]) -> list[Variant]:
    """Real time (the default) and stepped, as selected."""
    base = ["--port", "tcp:0", "--control", "0", "--json"]
    every = [
        Variant("real time", base, stepped=False),
        Variant("stepped", [*base, "--stepped"], stepped=True),
    ]
    return [v for v in every if v.name.split()[0] in selected]


def run_variant(
    variant: Variant, *, count: int, warmup: int, repeats: int
) -> tuple[list[Line], list[str]]:
    """Every endpoint of a variant, ``repeats`` fresh servers; lines and per-repeat notes."""
    samples: dict[str, list[Sample]] = {}
    notes: list[str] = []
    for r in range(repeats):
        with ServeProcess(variant.options) as served:
            serial = served.pumps[0].serial
            load_before = load_average()[0]
            cpu_before = proc_cpu_s(served.pid)
            wall_before = time.monotonic()
            with httpx.Client(base_url=served.control_url, timeout=30.0) as client:
                for endpoint in endpoints(serial, stepped=variant.stepped):
                    samples.setdefault(endpoint.name, []).append(
                        time_endpoint(client, endpoint, count=count, warmup=warmup)
                    )
            wall = time.monotonic() - wall_before
            cpu = proc_cpu_s(served.pid) - cpu_before
            notes.append(
                f"{variant.name} repeat {r + 1}: load {load_before:.2f} -> "
                f"{load_average()[0]:.2f}, server CPU {100 * cpu / wall:.0f} % over {wall:.1f} s, "
                f"server RSS {proc_rss_mib(served.pid):.0f} MiB"
            )
            print(notes[-1], flush=True)
    lines = [
        Line(
            variant=variant.name,
            endpoint=name,
            requests=count,
            repeats=len(runs),
            p50_us=statistics.median(s.p50_us for s in runs),
            p99_us=statistics.median(s.p99_us for s in runs),
            first_us=statistics.median(s.first_us for s in runs),
            last_us=statistics.median(s.last_us for s in runs),
        )
        for name, runs in samples.items()
    ]
    return lines, notes


def markdown(lines: Sequence[Line]) -> str:
    """The report table."""
    out = [
        "| variant | request | requests/repeat | p50 (ms) | p99 (ms) | first quarter p50 (ms) "
        "| last quarter p50 (ms) | growth |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for line in lines:
        out.append(
            f"| {line.variant} | `{line.endpoint}` | {line.requests} | {line.p50_us / 1000:.2f} "
            f"| {line.p99_us / 1000:.2f} | {line.first_us / 1000:.2f} "
            f"| {line.last_us / 1000:.2f} | {line.growth:.2f} |"
        )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the variants and print the command lines, notes and a Markdown table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5, help="fresh servers per variant (median)")
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per figure")
    parser.add_argument("--warmup", type=int, default=200, help="untimed requests per figure")
    parser.add_argument(
        "--variants", nargs="+", choices=["real", "stepped"], default=["real", "stepped"]
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.requests < 4 or args.warmup < 0:
        parser.error("--repeat >= 1, --requests >= 4, --warmup >= 0")
    chosen = variants(args.variants)
    for variant in chosen:
        print(f"server: {shown_command(variant.options)}", flush=True)
    print(
        f"client: one httpx {httpx.__version__} keep-alive Client in this process; "
        f"fastapi {fastapi.__version__}, uvicorn {uvicorn.__version__}, "
        f"python {platform.python_version()}, {os.cpu_count()} CPUs",
        flush=True,
    )
    lines: list[Line] = []
    for variant in chosen:
        got, _ = run_variant(variant, count=args.requests, warmup=args.warmup, repeats=args.repeat)
        lines.extend(got)
    print()
    print(f"median of {args.repeat} repeats, {args.requests} timed requests each after "
          f"{args.warmup} untimed")
    print()
    print(markdown(lines))


if __name__ == "__main__":
    main()
