"""Why a keep-alive control API request takes ~40 ms: evidence, without changing the library.

``ControlServer.start`` binds ``socket.socket(AF_INET, SOCK_STREAM)``, whose ``proto`` is 0.
asyncio sets ``TCP_NODELAY`` on accepted connections only when ``sock.proto ==
IPPROTO_TCP`` (``asyncio.base_events._set_nodelay``), so the control API's connections keep
Nagle's algorithm: uvicorn writes the response head and body in two ``send`` calls, the body
waits for the ACK of the head, and the client's delayed ACK (~40 ms on Linux) sets the pace.
A fresh connection (curl) is fast because Linux ACKs quickly at the start of a connection.

This probe, in one process (farm stepped, httpx ``AsyncClient`` on the same loop), prints for
each accepted control connection its ``proto`` and ``TCP_NODELAY``, and the median and p99 of
``GET /clock`` on a keep-alive connection, as shipped and with the listening socket created as
``socket.socket(AF_INET, SOCK_STREAM, IPPROTO_TCP)`` (monkeypatched here, in this process
only). Run: ``python -m benchmarks.control_nodelay_probe``.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import time
from collections.abc import Sequence
from typing import Any

import httpx

import itpump.emulator.control.app as control_app
from benchmarks.latency import percentiles_us
from itpump.emulator.farm import PortSpec, PumpFarm
from itpump.emulator.scenario import load_scenario


class _TcpProtoSocket(socket.socket):
    """``socket.socket`` that states ``IPPROTO_TCP`` for an AF_INET stream socket."""

    def __init__(
        self, family: Any = -1, type: Any = -1, proto: int = -1, fileno: Any = None
    ) -> None:
        if fileno is None and family == socket.AF_INET and type == socket.SOCK_STREAM:
            proto = socket.IPPROTO_TCP if proto in (-1, 0) else proto
        super().__init__(family, type, proto, fileno)


async def _probe(count: int) -> None:
    async with PumpFarm(load_scenario("clinic-ready"), port=PortSpec("tcp"), speed=0) as farm:
        runner = asyncio.create_task(farm.run())
        try:
            for label, patched in (("as shipped", False), ("proto=IPPROTO_TCP", True)):
                # The module's `socket` (the stdlib module it imported), patched in this
                # process only: `socket.socket` is what ControlServer.start calls.
                sockmod: Any = vars(control_app)["socket"]
                original = sockmod.socket
                if patched:
                    sockmod.socket = _TcpProtoSocket
                try:
                    server = control_app.ControlServer(farm, 0)
                    url = await server.start()
                finally:
                    sockmod.socket = original
                listening: socket.socket | None = server._socket
                assert listening is not None
                async with httpx.AsyncClient(base_url=url) as client:
                    await client.get("/clock")
                    accepted = _accepted_nodelay(listening.getsockname()[1])
                    latencies = []
                    for _ in range(count):
                        t0 = time.perf_counter_ns()
                        (await client.get("/clock")).raise_for_status()
                        latencies.append(time.perf_counter_ns() - t0)
                p50, p99 = percentiles_us(latencies)
                print(
                    f"{label:18} listening proto={listening.proto} accepted TCP_NODELAY="
                    f"{accepted}  GET /clock keep-alive: p50 {p50 / 1000:.2f} ms, "
                    f"p99 {p99 / 1000:.2f} ms ({count} requests)"
                )
                await server.close()
        finally:
            farm.stop()
            await runner


def _accepted_nodelay(port: int) -> list[int]:
    """TCP_NODELAY of this process's sockets whose local port is ``port`` (accepted ones)."""
    values: list[int] = []
    loop = asyncio.get_running_loop()
    for transport in list(getattr(loop, "_transports", {}).values()):
        sock = transport.get_extra_info("socket")
        if sock is None or sock.family != socket.AF_INET:
            continue
        try:
            local_port = sock.getsockname()[1]
            peer = sock.getpeername()
        except OSError:
            continue
        if local_port == port and peer:
            values.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    return values


def main(argv: Sequence[str] | None = None) -> None:
    """Print both configurations' figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args(argv)
    asyncio.run(_probe(args.requests))


if __name__ == "__main__":
    main()
