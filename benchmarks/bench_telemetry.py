"""Benchmark: interrogate round trip over a PTY, 1 and 100 pumps in one process (issue 4),
with a pymodbus RTU server answering a 10-register read measured in the same run.

Our side: `PumpFarm` pumps on raw PTYs without pacing (no baud pacing, no turnaround), each
with an authenticated clinician session set up during warm-up; one request = a full
INTERROGATE (MAC'd request, firmware status, MAC'd ~200-byte response) decoded and checked by
the sans-IO `ProgrammerConnection`. The client model is the harness's (benchmarks/latency.py):
one asyncio task per port, non-blocking reads on the tty, the same for both peers.

Run: python3 -m benchmarks.bench_telemetry [--repeat 5] [--targets 1 100]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import time
from collections.abc import Sequence

import pymodbus

from benchmarks.latency import (
    AsyncRequest,
    Case,
    Cleanup,
    FdClient,
    TargetFactory,
    markdown_table,
    open_serial,
    run_suite,
)
from benchmarks.peer_modbus import PEER_NAME, modbus_targets
from itpump.emulator.farm import PortSpec, PumpFarm
from itpump.emulator.scenario import load_scenario
from itpump.protocol import messages as m
from itpump.protocol.auth import seeded_nonce_source
from itpump.protocol.connection import ProgrammerConnection, ResponseReceived

OUR_NAME = "itpump interrogate"
FLAG = 0x7E


def _frame_complete(buf: bytes | bytearray) -> bool:
    # Byte stuffing keeps 0x7E out of frame bodies: a reply is whole at its closing flag.
    return len(buf) > 2 and buf[-1] == FLAG and buf.count(FLAG) >= 2


async def pump_targets(k: int) -> tuple[list[AsyncRequest], Cleanup]:
    """k pumps on PTYs, each with an authenticated session; one INTERROGATE per call."""
    farm = PumpFarm(
        load_scenario("clinic-ready"),
        count=k,
        port=PortSpec("pty"),
        speed=1.0,
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


def main(argv: Sequence[str] | None = None) -> None:
    """Print both peers' figures and our ratios to pymodbus as a Markdown table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5, help="repeats per case (median)")
    parser.add_argument("--targets", type=int, nargs="+", default=[1, 100])
    parser.add_argument(
        "--requests",
        type=int,
        default=2000,
        help="timed requests per case for 1 target; split across targets",
    )
    args = parser.parse_args(argv)
    cases = [
        Case(
            targets=k,
            count=max(100, args.requests // k),
            warmup=max(1, max(100, args.requests // k) // 10),
        )
        for k in args.targets
    ]
    peers: dict[str, TargetFactory] = {PEER_NAME: modbus_targets, OUR_NAME: pump_targets}
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    rows = asyncio.run(run_suite(peers, cases, repeats=args.repeat))
    print(
        f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"pymodbus {pymodbus.__version__}, one process, median of {args.repeat} repeats"
    )
    print()
    print(markdown_table(rows, baseline=PEER_NAME))


if __name__ == "__main__":
    main()
