"""Reference peer for the issue 4 round-trip benchmark: pymodbus RTU servers over PTY pairs.

Each server is a pymodbus 3.x :class:`~pymodbus.server.ModbusSerialServer` (RTU framer)
holding 16 holding registers, on its own PTY pair: the server opens the slave path as its
serial port (as a device program opens ``/dev/ttyUSB0``), the client holds the master. A
request is one raw RTU "read holding registers" frame for 10 registers (8 bytes, built by hand
with the Modbus CRC-16); the response is 5 + 20 = 25 bytes and is compared byte for byte with
the expected one. Client, harness and servers run in one asyncio loop in one process
(see :mod:`benchmarks.latency` for why).

Fairness: pymodbus 3.16 adds no inter-frame delay of its own. Its RTU framer decodes a frame
as soon as the bytes its length rule asks for have arrived (``FramerRTU.decode``); there is no
t3.5 silent interval, ``sleep`` or ``call_later`` in the receive or send path
(``pymodbus/transport/serialtransport.py``, ``transaction/transaction.py``,
``server/requesthandler.py``), and a PTY ignores the termios baud rate. The baud rate is
still set to 1,000,000 so that no version that did derive a delay from it would pay more
than a few tens of microseconds.

Also here, for calibration: a *floor* peer that answers the same 25 bytes from a plain
``add_reader`` callback with no protocol work at all, with the client either on the master
(the pymodbus layout) or on the slave opened with pyserial (the layout of our
:class:`~emulator.transports.PtyTransport`), to show the harness and PTY cost and that the
layout does not matter.

Run: python3 -m benchmarks.peer_modbus [--repeat 5] [--targets 1 100] [--floor]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import tty
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import pymodbus
import serial
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from benchmarks.latency import (
    AsyncRequest,
    BlockingFdClient,
    BlockingRequest,
    Case,
    Cleanup,
    ClientMode,
    FdClient,
    TargetFactory,
    checked_blocking_request,
    checked_request,
    markdown_table,
    open_serial,
    run_suite,
)

DEVICE_ID = 1
READ_HOLDING_REGISTERS = 0x03
HOLDING_REGISTERS = [0x1000 + i for i in range(16)]
"""What every server holds at addresses 0..15."""
READ_ADDRESS = 0
READ_COUNT = 10
BAUDRATE = 1_000_000
"""Meaningless on a PTY; high so no baud-derived delay could matter (see module docstring)."""
PEER_NAME = "pymodbus RTU"


# --------------------------------------------------------------------------- RTU frames


def crc16_modbus(data: bytes) -> int:
    """Modbus CRC-16 (poly 0xA001 reflected, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def with_crc(body: bytes) -> bytes:
    """``body`` followed by its Modbus CRC, low byte first."""
    return body + crc16_modbus(body).to_bytes(2, "little")


def read_holding_request(device_id: int, address: int, count: int) -> bytes:
    """RTU frame: read ``count`` holding registers from ``address`` (function 3), 8 bytes."""
    return with_crc(
        bytes([device_id, READ_HOLDING_REGISTERS])
        + address.to_bytes(2, "big")
        + count.to_bytes(2, "big")
    )


def read_holding_response(device_id: int, values: Sequence[int]) -> bytes:
    """RTU frame answering function 3 with ``values``: 5 + 2 x len(values) bytes."""
    data = b"".join(v.to_bytes(2, "big") for v in values)
    return with_crc(bytes([device_id, READ_HOLDING_REGISTERS, len(data)]) + data)


def parse_read_holding_response(frame: bytes) -> list[int]:
    """Register values from a function 3 response; ValueError on a bad CRC or shape."""
    if len(frame) < 5 or crc16_modbus(frame[:-2]).to_bytes(2, "little") != frame[-2:]:
        raise ValueError(f"bad CRC or short frame: {frame.hex()}")
    if frame[1] != READ_HOLDING_REGISTERS:
        raise ValueError(f"not a read-holding-registers response: {frame.hex()}")
    size = frame[2]
    if size % 2 or len(frame) != 5 + size:
        raise ValueError(f"byte count {size} does not match frame length {len(frame)}")
    return [int.from_bytes(frame[3 + i : 5 + i], "big") for i in range(0, size, 2)]


REQUEST = read_holding_request(DEVICE_ID, READ_ADDRESS, READ_COUNT)
EXPECTED = read_holding_response(
    DEVICE_ID, HOLDING_REGISTERS[READ_ADDRESS : READ_ADDRESS + READ_COUNT]
)


# --------------------------------------------------------------------------- PTY pairs


@dataclass
class PtyPair:
    """A raw PTY pair; ``slave`` stays open so the master never reads EIO meanwhile."""

    master: int
    slave: int
    path: str
    extra: list[int] = field(default_factory=list)

    @classmethod
    def open(cls) -> PtyPair:
        """A new pair, both ends raw (no echo, no CR/LF rewriting)."""
        master, slave = os.openpty()
        tty.setraw(slave)
        tty.setraw(master)
        return cls(master, slave, os.ttyname(slave))

    def close(self) -> None:
        """Close every descriptor we opened on the pair (idempotent)."""
        for fd in (*self.extra, self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.extra.clear()
        self.master = self.slave = -1


# --------------------------------------------------------------------------- pymodbus peer


def register_device() -> SimDevice:
    """One device (id 1) with :data:`HOLDING_REGISTERS` at addresses 0..15."""
    return SimDevice(
        id=DEVICE_ID,
        simdata=[SimData(address=0, values=list(HOLDING_REGISTERS), datatype=DataType.REGISTERS)],
    )


async def start_modbus_server(path: str) -> ModbusSerialServer:
    """A pymodbus RTU server serving :func:`register_device` on the serial port ``path``."""
    server = ModbusSerialServer(
        register_device(),
        port=path,
        baudrate=BAUDRATE,
        reconnect_delay=0,
    )
    await server.serve_forever(background=True)
    return server


async def _modbus_servers(
    k: int,
) -> tuple[list[PtyPair], list[ModbusSerialServer], Cleanup]:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    pairs: list[PtyPair] = []
    servers: list[ModbusSerialServer] = []
    done = False

    async def cleanup() -> None:
        nonlocal done
        if done:
            return
        done = True
        for server in servers:
            await server.shutdown()  # type: ignore[no-untyped-call]
        for pair in pairs:
            pair.close()

    try:
        for _ in range(k):
            pair = PtyPair.open()
            pairs.append(pair)
            servers.append(await start_modbus_server(pair.path))
        await asyncio.sleep(0)  # the serial transports register their readers on call_soon
    except BaseException:
        await cleanup()
        raise
    return pairs, servers, cleanup


async def modbus_targets(k: int) -> tuple[list[AsyncRequest], Cleanup]:
    """Start ``k`` pymodbus RTU servers, each on its own PTY pair; one async target each.

    A target writes the 8-byte request on the master and awaits the 25-byte response through
    an :class:`~benchmarks.latency.FdClient`, checking it byte for byte. Every target is
    checked once here, with the registers decoded. ``await cleanup()`` stops everything.
    """
    pairs, _servers, stop = await _modbus_servers(k)
    clients: list[FdClient] = []

    async def cleanup() -> None:
        for client in clients:
            client.close()
        await stop()

    try:
        targets: list[AsyncRequest] = []
        for pair in pairs:
            client = FdClient(pair.master)
            clients.append(client)
            targets.append(checked_request(client, REQUEST, EXPECTED))
        async with asyncio.timeout(30):
            for client in clients:
                response = await client.request(REQUEST, len(EXPECTED))
                registers = parse_read_holding_response(response)
                if registers != HOLDING_REGISTERS[:READ_COUNT]:
                    raise RuntimeError(f"unexpected registers {registers}")
    except BaseException:
        await cleanup()
        raise
    return targets, cleanup


async def modbus_blocking_targets(k: int) -> tuple[list[BlockingRequest], Cleanup]:
    """Like :func:`modbus_targets` with :class:`~benchmarks.latency.BlockingFdClient` clients,
    for ``clients="threads"`` runs (servers still in the running loop)."""
    pairs, _servers, cleanup = await _modbus_servers(k)
    return [
        checked_blocking_request(BlockingFdClient(pair.master), REQUEST, EXPECTED)
        for pair in pairs
    ], cleanup


# --------------------------------------------------------------------------- floor peer


class CannedResponder:
    """Answers every complete 8-byte request with :data:`EXPECTED`, from ``add_reader``.

    No parsing, no CRC check: the cost of the PTY round trip and the client, nothing else.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self._pending = 0
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        self._pending += len(data)
        while self._pending >= len(REQUEST):
            self._pending -= len(REQUEST)
            os.write(self.fd, EXPECTED)

    def close(self) -> None:
        """Stop answering."""
        self._loop.remove_reader(self.fd)


def floor_targets(client_side: Literal["master", "slave"]) -> TargetFactory:
    """A factory of canned-reply targets; the client on the master, or on the slave opened
    with pyserial ``serial_for_url`` (the layout of :class:`~emulator.transports.PtyTransport`).
    """

    async def factory(k: int) -> tuple[list[AsyncRequest], Cleanup]:
        pairs: list[PtyPair] = []
        responders: list[CannedResponder] = []
        clients: list[FdClient] = []
        ports: list[serial.Serial] = []

        async def cleanup() -> None:
            for client in clients:
                client.close()
            for responder in responders:
                responder.close()
            for port in ports:
                port.close()
            for pair in pairs:
                pair.close()
            clients.clear()
            responders.clear()
            ports.clear()
            pairs.clear()

        targets: list[AsyncRequest] = []
        try:
            for _ in range(k):
                pair = PtyPair.open()
                pairs.append(pair)
                if client_side == "master":
                    responders.append(CannedResponder(pair.slave))
                    client = FdClient(pair.master)
                else:
                    responders.append(CannedResponder(pair.master))
                    port = open_serial(pair.path)
                    ports.append(port)
                    client = FdClient(port.fileno())
                clients.append(client)
                targets.append(checked_request(client, REQUEST, EXPECTED))
        except BaseException:
            await cleanup()
            raise
        return targets, cleanup

    return factory


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> None:
    """Print the pymodbus peer's figures (and optionally the floor's) as a Markdown table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5, help="repeats per case (median)")
    parser.add_argument("--targets", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--requests", type=int, default=2000,
                        help="timed requests per case for 1 target; split across targets")
    parser.add_argument("--min-per-target", type=int, default=100,
                        help="at least this many timed requests per target")
    parser.add_argument("--clients", choices=["async", "threads"], default="async",
                        help="client model (see benchmarks/latency.py); async by default")
    parser.add_argument("--floor", action="store_true",
                        help="also measure canned-reply floors (client on master / slave)")
    args = parser.parse_args(argv)
    clients: ClientMode = args.clients
    cases = [
        Case(targets=k, count=max(args.min_per_target, args.requests // k),
             warmup=max(1, max(args.min_per_target, args.requests // k) // 10))
        for k in args.targets
    ]
    peers: dict[str, TargetFactory] = {
        PEER_NAME: modbus_targets if clients == "async" else modbus_blocking_targets
    }
    if args.floor:
        if clients != "async":
            parser.error("--floor needs --clients async")
        peers["floor, client on master"] = floor_targets("master")
        peers["floor, client on slave (pyserial)"] = floor_targets("slave")
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    rows = asyncio.run(run_suite(peers, cases, repeats=args.repeat, clients=clients))
    print(
        f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"pymodbus {pymodbus.__version__}, {clients} clients, one process, "
        f"median of {args.repeat} repeats"
    )
    print()
    print(markdown_table(rows, baseline=PEER_NAME if len(peers) > 1 else None))


if __name__ == "__main__":
    main()
