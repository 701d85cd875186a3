"""Dashboard cost: page load, live updates, and telemetry latency with the page open.

For each pump count (default 1, 100, 1000) the benchmark starts
``itpump serve --count N --port tcp:0 --control 0 --baud 0 --speed 60 --warmup 2h --json``
(time runs, so every pump's row changes at every update: the worst case for the stream), then:

- **page load**: ``GET /`` and ``GET /ui/pumps/{serial}`` with httpx, ``--loads`` times each:
  median time to the last byte and the page's size;
- three windows of ``--window`` seconds each: no page open, the overview's event stream open,
  one pump page's stream open (an httpx client reading ``/ui/events`` as the browser's
  EventSource does). In each window a programmer (``AsyncPumpClient``, the printed key) sends
  INTERROGATE to the first pump back to back; its p50/p99 is the telemetry latency. Server CPU
  is read from /proc before and after each window.

"CPU per update" is the server CPU of a window with a page open, minus that of the window
without, divided by the messages the page received; "bytes/s" is what the page received per
second. Rows per message are capped (200) and messages come at most every 0.5 s, so the bytes
per second are bounded whatever N is.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass

import httpx

from benchmarks.served import ServeProcess, load_average, proc_cpu_s, shown_command
from itpump.programmer import AsyncPumpClient


@dataclass(frozen=True, slots=True)
class Window:
    """One measurement window."""

    name: str
    cpu_pct: float
    messages: int
    bytes_per_s: float
    interrogate_p50_ms: float
    interrogate_p99_ms: float
    interrogates: int


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _window(
    server: ServeProcess, name: str, seconds: float, stream_params: dict[str, str] | None
) -> Window:
    pump = server.pumps[0]
    latencies: list[float] = []
    received = {"messages": 0, "bytes": 0}
    stop = asyncio.Event()

    async def programmer() -> None:
        async with AsyncPumpClient(pump.url, key=pump.key) as client:
            await client.connect()
            while not stop.is_set():
                t0 = time.perf_counter()
                await client.interrogate()
                latencies.append((time.perf_counter() - t0) * 1000.0)

    async def page(http: httpx.AsyncClient) -> None:
        if stream_params is None:
            await stop.wait()
            return
        async with http.stream("GET", "/ui/events", params=stream_params) as response:
            async for line in response.aiter_lines():
                received["bytes"] += len(line.encode()) + 1
                if line.startswith("event: "):
                    received["messages"] += 1
                if stop.is_set():
                    return

    async with httpx.AsyncClient(base_url=server.control_url, timeout=60) as http:
        cpu0, t0 = proc_cpu_s(server.pid), time.monotonic()
        tasks = [asyncio.create_task(programmer()), asyncio.create_task(page(http))]
        await asyncio.sleep(seconds)  # the measurement window itself, not a wait for an event
        stop.set()
        await asyncio.gather(*tasks)
        cpu1, t1 = proc_cpu_s(server.pid), time.monotonic()
    elapsed = t1 - t0
    return Window(
        name,
        100.0 * (cpu1 - cpu0) / elapsed,
        received["messages"],
        received["bytes"] / elapsed,
        statistics.median(latencies) if latencies else float("nan"),
        _p(latencies, 0.99),
        len(latencies),
    )


async def _loads(server: ServeProcess, count: int) -> tuple[float, int, float, int]:
    async with httpx.AsyncClient(base_url=server.control_url, timeout=120) as http:
        sizes: dict[str, int] = {}
        times: dict[str, list[float]] = {"/": [], "pump": []}
        for _ in range(count):
            for key, path in (("/", "/"), ("pump", f"/ui/pumps/{server.pumps[0].serial}")):
                t0 = time.perf_counter()
                response = await http.get(path)
                times[key].append((time.perf_counter() - t0) * 1000.0)
                response.raise_for_status()
                sizes[key] = len(response.content)
    return (
        statistics.median(times["/"]),
        sizes["/"],
        statistics.median(times["pump"]),
        sizes["pump"],
    )


async def run(count: int, window_s: float, loads: int) -> None:
    options = [
        "--count", str(count), "--port", "tcp:0", "--control", "0", "--baud", "0",
        "--speed", "60", "--warmup", "2h", "--json",
    ]  # fmt: skip
    with ServeProcess(options) as server:
        load = await _loads(server, loads)
        windows = [
            await _window(server, "no page", window_s, None),
            await _window(server, "overview open", window_s, {}),
            await _window(
                server, "pump page open", window_s, {"serial": server.pumps[0].serial}
            ),
        ]
    print(f"\n### {count} pumps: `{shown_command(options)}`")
    print(
        f"page load: overview {load[0]:.1f} ms, {load[1] / 1024:.0f} KiB; "
        f"pump page {load[2]:.1f} ms, {load[3] / 1024:.0f} KiB"
    )
    print(
        "| window | server CPU | messages | CPU per message | bytes/s to the page "
        "| interrogate p50 / p99 (ms) | interrogates |"
    )
    print("|---|---|---|---|---|---|---|")
    base = windows[0]
    for w in windows:
        per = (
            f"{(w.cpu_pct - base.cpu_pct) / 100.0 * window_s / w.messages * 1000:.1f} ms"
            if w.messages
            else "-"
        )
        print(
            f"| {w.name} | {w.cpu_pct:.0f} % | {w.messages} | {per} | {w.bytes_per_s:,.0f} "
            f"| {w.interrogate_p50_ms:.2f} / {w.interrogate_p99_ms:.2f} | {w.interrogates} |"
        )


def main() -> None:
    """Command line: pump counts, window length, page loads."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pumps", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--window", type=float, default=20.0, help="seconds per window")
    parser.add_argument("--loads", type=int, default=5, help="page loads timed per page")
    args = parser.parse_args()
    print(f"load average before: {load_average()}")
    for count in args.pumps:
        asyncio.run(run(count, args.window, args.loads))
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
