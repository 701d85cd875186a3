"""Profile INTERROGATE in process on the pump `itpump serve` gives by default (issue 11).

The default farm (clinic-ready, one day of warm-up, infusing, live PK patient, speed 1); one
authenticated programmer connection; each request goes through the farm's synced byte handler
(runtime sync, protocol, firmware, reply) and is decoded by `ProgrammerConnection`, as a
programmer would, without a port in between. Prints the per-request cost of the whole round
trip, then the top of a cProfile of the same loop, so the next person starts from data.

Run: python3 -m benchmarks.profile_interrogate [--requests 20000] [--top 30] [--no-profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
from collections.abc import Callable

from itpump.emulator.farm import PortSpec, PumpFarm
from itpump.emulator.scenario import load_scenario
from itpump.protocol import messages as m
from itpump.protocol.auth import seeded_nonce_source
from itpump.protocol.connection import ProgrammerConnection, ResponseReceived


def interrogator(farm: PumpFarm) -> Callable[[], m.InterrogateResponse]:
    """An authenticated INTERROGATE round trip on the farm's first pump, in process."""
    served = farm.pumps[0]
    handler = served.handler
    conn = ProgrammerConnection(seeded_nonce_source(0), key=served.key)

    def round_trip(request: m.Request) -> m.Response:
        conn.receive_data(handler(conn.send(request, time.monotonic())))
        event = conn.next_event()
        assert isinstance(event, ResponseReceived), event
        return event.response

    round_trip(m.IdentifyRequest())
    round_trip(conn.auth_begin(m.Role.CLINICIAN))
    round_trip(conn.auth_proof())

    def interrogate() -> m.InterrogateResponse:
        response = round_trip(m.InterrogateRequest())
        assert isinstance(response, m.InterrogateResponse)
        return response

    return interrogate


def default_farm() -> PumpFarm:
    """One pump as `itpump serve --baud 0 --turnaround-ms 0` builds it, on no port."""
    return PumpFarm(load_scenario("clinic-ready"), port=PortSpec("null"), turnaround=False)


def main() -> None:
    """Time blocks of requests, then profile another block."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--block", type=int, default=2000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    farm = default_farm()
    interrogate = interrogate_fn = interrogator(farm)
    first = interrogate_fn()
    print(f"therapy state {first.therapy_state.name}, rate {first.rate_nl_per_day} nL/day")
    per_block = []
    clock = time.perf_counter_ns
    for start in range(0, args.requests, args.block):
        t0 = clock()
        for _ in range(min(args.block, args.requests - start)):
            interrogate()
        per_block.append((clock() - t0) / 1000 / min(args.block, args.requests - start))
    print("us per round trip, per block of", args.block, ":",
          " ".join(f"{v:.0f}" for v in per_block))
    print(f"median {statistics.median(per_block):.1f} us")
    if args.no_profile:
        return
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(args.block):
        interrogate()
    profiler.disable()
    stats = pstats.Stats(profiler)
    for key in ("cumulative", "tottime"):
        stats.sort_stats(key).print_stats(args.top)


if __name__ == "__main__":
    main()
