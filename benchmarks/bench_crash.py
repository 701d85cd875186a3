"""Kill `itpump serve --state` with SIGKILL during programming traffic; count lost changes.

Each trial: (re)start `itpump serve --port tcp:0 --state DB --stepped` on the same database,
check that the last change the pump acknowledged before the previous kill is there, then
program the pump as fast as the link allows (alternately a new low-reservoir threshold and a
new continuous dose, each value new) and SIGKILL the server after a seeded random number of
acknowledged changes plus a seeded random fraction of a request's time, so the kill lands
anywhere in a request: before the pump acted, between acting and committing, between
committing and replying, or while the reply is on its way.

A change is lost when, after the restart, the pump holds an older value than the last one it
acknowledged. The request in flight at the kill may or may not have been applied (the
programmer never saw its answer): both are correct.

    python -m benchmarks.bench_crash [--kills 200] [--seed 1]

Also measures the cost of a commit beside that of answering one INTERROGATE in-process.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.served import ServedInfo, ServeProcess
from itpump.emulator.farm import PortSpec, PumpFarm
from itpump.emulator.scenario import load_scenario
from itpump.programmer import Continuous, Program, PumpClient, PumpStatus
from itpump.protocol import messages as m
from itpump.protocol.connection import ProgrammerConnection

MAX_CHANGES_BEFORE_KILL = 12
"""A trial kills after 0..this many acknowledged changes (then a random part of one more)."""

KILL_JITTER_S = 0.004
"""Upper bound of the random extra delay before the kill: about one request's round trip."""


def serve_options(db: Path) -> list[str]:
    """The server under test: one pump on a free TCP port, stepped time, this state file."""
    # --baud 0: no pacing, so the traffic is as heavy as the host allows.
    return [
        *("--port", "tcp:0", "--baud", "0", "--state", str(db)),
        *("--json", "--control", "0", "--stepped"),
    ]


@dataclass(frozen=True, slots=True)
class Change:
    """One programming change: a low-reservoir threshold (ml) or a continuous dose (mcg/day)."""

    kind: str  # "threshold" | "dose"
    value: float


def change_for(index: int) -> Change:
    """The `index`-th change of the traffic; every value differs from the previous one of
    its kind (so an older value after a restart is a detectable loss)."""
    step = index // 2
    if index % 2 == 0:
        return Change("threshold", round(1.0 + (step % 900) * 0.001, 3))
    return Change("dose", float(100 + step % 300))


def apply(client: PumpClient, change: Change) -> None:
    """Send one change and wait for the pump's acknowledgement."""
    if change.kind == "threshold":
        client.set_low_reservoir_alarm(change.value)
    else:
        client.program(
            Program("baclofen", 500.0, 500.0, Continuous(change.value), patient_id="PT-0001")
        )


def holds(status: PumpStatus, change: Change) -> bool:
    """Whether the interrogated pump holds `change`."""
    if change.kind == "threshold":
        return abs(status.low_reservoir_alarm_ml - change.value) < 1e-6
    mode = status.program.mode
    return isinstance(mode, Continuous) and abs(mode.dose_mcg_per_day - change.value) < 1e-6


@dataclass(slots=True)
class CrashReport:
    """What a series of kills found."""

    kills: int = 0
    losses: int = 0
    changes_acknowledged: int = 0
    details: list[str] = field(default_factory=list)


def _client(pump: ServedInfo) -> PumpClient:
    # Short timeouts: after the kill the link is gone, and a retry would only wait.
    return PumpClient(pump.url, key=pump.key, timeout_s=0.5, max_attempts=1)


def _check(pump: ServedInfo, acked: dict[str, Change], in_flight: Change | None) -> list[str]:
    """The kinds whose last acknowledged change is missing after the restart (`acked` is
    updated with the change in flight at the kill when the pump holds it)."""
    with _client(pump) as client:
        client.connect()
        status = client.interrogate()
    lost = []
    if in_flight is not None and holds(status, in_flight):
        # Applied and committed, only its answer was lost: it is what later checks expect.
        acked[in_flight.kind] = in_flight
    for kind, change in acked.items():
        if not holds(status, change):
            lost.append(f"{kind}: acknowledged {change.value}, pump holds another value")
    return lost


def run_kills(kills: int, seed: int, db: Path) -> CrashReport:
    """`kills` trials on one database (see the module note)."""
    rng = random.Random(seed)
    report = CrashReport()
    acked: dict[str, Change] = {}
    in_flight: Change | None = None
    index = 0
    for trial in range(kills + 1):
        with ServeProcess(serve_options(db)) as server:
            pump = server.pumps[0]
            lost = _check(pump, acked, in_flight)
            if lost:
                report.losses += 1
                report.details.extend(f"kill {trial}: {text}" for text in lost)
            if trial == kills:
                break
            target = rng.randint(0, MAX_CHANGES_BEFORE_KILL)
            jitter_s = rng.uniform(0.0, KILL_JITTER_S)
            reached = threading.Event()
            pid = server.pid

            def kill_when_reached(
                reached: threading.Event = reached, jitter: float = jitter_s, pid: int = pid
            ) -> None:
                reached.wait()
                # A random part of the next request's round trip: where the kill lands in it.
                time.sleep(jitter)
                os.kill(pid, signal.SIGKILL)

            killer = threading.Thread(target=kill_when_reached)
            killer.start()
            in_flight = None
            try:
                with _client(pump) as client:
                    client.connect()
                    done = 0
                    while True:
                        if done == target:
                            reached.set()
                        change = change_for(index)
                        in_flight = change
                        apply(client, change)
                        acked[change.kind] = change
                        in_flight = None
                        index += 1
                        done += 1
                        report.changes_acknowledged += 1
            except Exception:  # the link died with the server: expected, the kill happened
                pass
            finally:
                reached.set()
                killer.join()
            if in_flight is not None:
                index += 1  # its value is spent either way: never reuse it
            report.kills += 1
    return report


def commit_cost(days: float, db: Path, rounds: int = 200) -> tuple[float, int]:
    """Median real seconds of one pump commit (state bytes + SQLite transaction) after
    `days` of simulated history, and the bytes stored for the pump."""
    farm = PumpFarm(load_scenario("clinic-ready"), port=PortSpec("null"), speed=0.0, state=db)
    served = farm.pumps[0]
    farm.advance(days * 24.0)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        farm.commit(served)
        times.append(time.perf_counter() - started)
    size = len(served.run.to_bytes())
    assert farm.store is not None
    farm.store.close()
    return statistics.median(times), size


def interrogate_cost(rounds: int = 200) -> float:
    """Median real seconds of one INTERROGATE answered by the pump's endpoint in-process
    (protocol, firmware and, with a state file, the commit; no link)."""
    farm = PumpFarm(load_scenario("clinic-ready"), port=PortSpec("null"), speed=0.0)
    served = farm.pumps[0]
    pc = ProgrammerConnection(os.urandom, key=served.key)
    times = []

    def exchange(request: m.Request) -> None:
        reply = served.handler(pc.send(request, time.monotonic()))
        pc.receive_data(reply)
        while pc.next_event() is not None:
            pass

    exchange(m.IdentifyRequest())
    exchange(pc.auth_begin(m.Role.CLINICIAN))
    exchange(pc.auth_proof())
    for _ in range(rounds):
        started = time.perf_counter()
        exchange(m.InterrogateRequest())
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    """Print kills/losses and the commit cost."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        report = run_kills(args.kills, args.seed, Path(tmp) / "farm.db")
        wall_s = time.perf_counter() - started
        interrogate = interrogate_cost()
        costs = [(days, *commit_cost(days, Path(tmp) / f"cost{days}.db")) for days in (1, 365)]
    print(f"kills {report.kills}, losses {report.losses} (seed {args.seed}, {wall_s:.0f} s)")
    print(f"changes acknowledged {report.changes_acknowledged}")
    for line in report.details:
        print(f"  {line}")
    print(f"one INTERROGATE answered in-process, no commit: {interrogate * 1e3:.3f} ms (median)")
    for days, cost_s, size in costs:
        print(f"one commit after {days} d: {cost_s * 1e3:.3f} ms (median), {size} bytes stored")


if __name__ == "__main__":
    main()
