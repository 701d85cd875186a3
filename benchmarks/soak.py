"""Soak: many pumps in one process under traffic, link faults and clients that stall and vanish.

    python -m benchmarks.soak --pumps 100 --minutes 10 --seed 1

Starts ``itpump serve --count N --port tcp:0 --control 0 --json`` (its defaults otherwise:
real time, paced at 19200 baud). For ``--minutes`` it runs, seeded:

- one well-behaved programmer per pump (``AsyncPumpClient``): connect, then interrogate every
  few seconds, re-authenticating when the session idled out;
- misbehaving clients: connections that send half a frame and stall, or send garbage, or
  connect and vanish without a word;
- link faults through the control API: every few seconds a random pump gets byte corruption
  or loss for a while, or its head lifted, then restored.

A failed poll is *explained* when its pump had a link fault during the poll (corruption, loss,
head lifted); any other failure is *unexplained*. It prints polls, failures of each kind, and
the server's RSS in the first and the last minute (growth must stay under 5 %).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import Sequence

import httpx

from benchmarks.served import ServedInfo, ServeProcess, load_average, proc_rss_mib
from itpump.programmer import AsyncPumpClient
from itpump.programmer.errors import PumpError, PumpRefused
from itpump.protocol.codes import ResultCode

POLL_PERIOD_S = 5.0
FAULT_PERIOD_S = 3.0
FAULT_LENGTH_S = 10.0
NUISANCE_PERIOD_S = 1.0


class Soak:
    """The state of one soak run."""

    def __init__(self, pumps: list[ServedInfo], control: str, end: float, seed: int) -> None:
        self.pumps = pumps
        self.control = control
        self.end = end
        self.rng = random.Random(seed)
        self.faulty_until: dict[str, float] = {}  # serial -> monotonic time its fault ends
        self.faulty_since: dict[str, float] = {}
        self.polls = 0
        self.explained = 0
        self.unexplained: list[str] = []
        self._healing: set[asyncio.Future[None]] = set()

    def had_fault(self, serial: str, start: float, stop: float) -> bool:
        since = self.faulty_since.get(serial)
        until = self.faulty_until.get(serial, 0.0)
        # A fault that overlapped the poll, plus the programmer's own retry window after it.
        return since is not None and since <= stop and until + 20.0 >= start

    async def programmer(self, pump: ServedInfo, offset: float) -> None:
        await asyncio.sleep(offset)
        client = AsyncPumpClient(pump.url, key=pump.key, timeout_s=0.5, max_attempts=4)
        await client.open()
        connected = False
        while time.monotonic() < self.end:
            start = time.monotonic()
            try:
                if not connected:
                    await client.connect()
                    connected = True
                try:
                    await client.interrogate()
                except PumpRefused as exc:
                    if exc.code is not ResultCode.NOT_AUTHENTICATED:
                        raise
                    await client.authenticate()
                    await client.interrogate()
            except PumpError as exc:
                connected = False
                if self.had_fault(pump.serial, start, time.monotonic()):
                    self.explained += 1
                else:
                    self.unexplained.append(f"{pump.serial}: {type(exc).__name__}: {exc}")
            self.polls += 1
            await asyncio.sleep(POLL_PERIOD_S)
        await client.close()

    async def nuisances(self) -> None:
        while time.monotonic() < self.end:
            pump = self.rng.choice(self.pumps)
            host, port = pump.url.removeprefix("socket://").rsplit(":", 1)
            kind = self.rng.choice(["stall", "garbage", "vanish"])
            try:
                _reader, writer = await asyncio.open_connection(host, int(port))
                if kind == "stall":
                    writer.write(b"\x7e\x01\x02\x03")  # half a frame, then silence
                    await writer.drain()
                    await asyncio.sleep(self.rng.uniform(1.0, 10.0))
                elif kind == "garbage":
                    writer.write(self.rng.randbytes(self.rng.randint(1, 2000)))
                    await writer.drain()
                writer.close()  # "vanish": closed without a word
            except OSError:
                pass
            await asyncio.sleep(NUISANCE_PERIOD_S)

    async def link_faults(self, http: httpx.AsyncClient) -> None:
        while time.monotonic() < self.end:
            pump = self.rng.choice(self.pumps)
            serial = pump.serial
            now = time.monotonic()
            if self.faulty_until.get(serial, 0.0) < now:
                self.faulty_since[serial] = now
                self.faulty_until[serial] = now + FAULT_LENGTH_S
                kind = self.rng.choice(["corruption", "drop", "head"])
                if kind == "head":
                    await http.post(f"/pumps/{serial}/head", json={"placed": False})
                else:
                    rate = self.rng.uniform(0.001, 0.02)
                    field = "corruption_rate" if kind == "corruption" else "drop_rate"
                    await http.post(f"/pumps/{serial}/link", json={field: rate})
                asyncio.get_running_loop().call_later(
                    FAULT_LENGTH_S, self._heal_soon, http, serial
                )
            await asyncio.sleep(FAULT_PERIOD_S)

    def _heal_soon(self, http: httpx.AsyncClient, serial: str) -> None:
        task = asyncio.ensure_future(self.heal(http, serial))
        self._healing.add(task)  # keep a reference until done (the loop holds only weak ones)
        task.add_done_callback(self._healing.discard)

    async def heal(self, http: httpx.AsyncClient, serial: str) -> None:
        await http.post(f"/pumps/{serial}/link", json={"corruption_rate": 0, "drop_rate": 0})
        await http.post(f"/pumps/{serial}/head", json={"placed": True})
        self.faulty_until[serial] = time.monotonic()


async def sample_rss(pid: int, end: float, out: list[tuple[float, float]]) -> None:
    """(seconds since start, RSS MiB) every 5 s."""
    start = time.monotonic()
    while time.monotonic() < end:
        out.append((time.monotonic() - start, proc_rss_mib(pid)))
        await asyncio.sleep(5.0)


async def run(args: argparse.Namespace) -> int:
    """Serve, soak, report; 1 when something failed unexplained or memory grew >= 5 %."""
    options = ["--count", str(args.pumps), "--port", "tcp:0", "--control", "0", "--json"]
    with ServeProcess(options) as server:
        end = time.monotonic() + args.minutes * 60.0
        soak = Soak(server.pumps, server.control_url, end, args.seed)
        rss: list[tuple[float, float]] = []
        async with httpx.AsyncClient(base_url=server.control_url, timeout=60) as http:
            period = POLL_PERIOD_S / len(server.pumps)
            await asyncio.gather(
                *(soak.programmer(p, i * period) for i, p in enumerate(server.pumps)),
                soak.nuisances(),
                soak.link_faults(http),
                sample_rss(server.pid, end, rss),
            )
    first = statistics.median(v for t, v in rss if t < 60.0)
    last = statistics.median(v for t, v in rss if t >= rss[-1][0] - 60.0)
    growth_pct = 100.0 * (last - first) / first
    print(
        f"{args.pumps} pumps, {args.minutes:g} min: {soak.polls} polls, "
        f"{soak.explained} failures during link faults, {len(soak.unexplained)} unexplained; "
        f"RSS first minute {first:.1f} MiB, last minute {last:.1f} MiB ({growth_pct:+.1f} %); "
        f"load {load_average()[0]:.1f}"
    )
    for line in soak.unexplained[:20]:
        print("  unexplained:", line)
    return 1 if soak.unexplained or growth_pct >= 5.0 else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak; exit 1 on an unexplained failure or memory growth of 5 % or more."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pumps", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
