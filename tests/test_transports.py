"""Transports run back to back (python-can style): the same tests over PTY, TCP, null modem."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import termios
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

import pytest
import serial

from itpump.emulator.transports import (
    BITS_PER_BYTE,
    LinkConfig,
    LinkEmulator,
    NullModem,
    PtyTransport,
    PumpTransport,
    Rfc2217Transport,
    TcpTransport,
    pacing_schedule,
    transmit_time_s,
)
from itpump.emulator.transports.base import ByteHandler

GUARD_S = 5.0
KINDS = ["pty", "tcp", "null"]


FLIP = bytes(b ^ 0x80 for b in range(256))


def flip(data: bytes) -> bytes:
    """The handler's answer: every byte with its top bit flipped (insensitive to read splits,
    and never equal to the request, so a terminal echo would show)."""
    return data.translate(FLIP)


class Recorder:
    """A byte handler: records what it receives, answers :func:`flip` of it."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.calls = 0
        self.closed = 0
        self.closed_event = asyncio.Event()

    def __call__(self, data: bytes, /) -> bytes:
        self.received += data
        self.calls += 1
        return flip(data)

    def link_closed(self) -> None:
        self.closed += 1
        self.closed_event.set()


class Client(Protocol):
    def write(self, data: bytes) -> None: ...

    async def read_exactly(self, n: int) -> bytes: ...

    def close(self) -> None: ...


class FdClient:
    """A PTY client over a plain file descriptor (no pyserial)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.reader = asyncio.StreamReader()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            data = b""
        if data:
            self.reader.feed_data(data)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                n = 0
            view = view[n:]

    async def read_exactly(self, n: int) -> bytes:
        return await self.reader.readexactly(n)

    def close(self) -> None:
        self._loop.remove_reader(self.fd)
        os.close(self.fd)


class StreamClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_exactly(self, n: int) -> bytes:
        return await self.reader.readexactly(n)

    def close(self) -> None:
        self.writer.close()


def make_transport(
    kind: str, handler: ByteHandler, emulation: LinkEmulator | None = None
) -> PumpTransport:
    if kind == "pty":
        return PtyTransport(handler, emulation=emulation)
    if kind == "tcp":
        return TcpTransport(handler, emulation=emulation)
    if kind == "rfc2217":
        return Rfc2217Transport(handler, emulation=emulation)
    return NullModem(handler, emulation=emulation)


async def connect(transport: PumpTransport) -> Client:
    if isinstance(transport, PtyTransport):
        return FdClient(transport.path)
    if isinstance(transport, TcpTransport):
        reader, writer = await asyncio.open_connection(transport.host, transport.port)
        return StreamClient(reader, writer)
    assert isinstance(transport, NullModem)
    return transport.connect()


@contextlib.asynccontextmanager
async def served(
    kind: str, handler: ByteHandler, emulation: LinkEmulator | None = None
) -> AsyncIterator[tuple[PumpTransport, Client]]:
    transport = make_transport(kind, handler, emulation)
    async with transport:
        client = await connect(transport)
        try:
            yield transport, client
        finally:
            client.close()


async def read(client: Client, n: int) -> bytes:
    return await asyncio.wait_for(client.read_exactly(n), GUARD_S)


# --- back to back over every backend -------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_round_trip(kind: str) -> None:
    handler = Recorder()
    async with served(kind, handler) as (_, client):
        client.write(b"ping")
        assert await read(client, 4) == flip(b"ping")
        assert bytes(handler.received) == b"ping"


@pytest.mark.parametrize("kind", KINDS)
async def test_requests_back_to_back_in_order(kind: str) -> None:
    handler = Recorder()
    async with served(kind, handler) as (_, client):
        for i in range(200):
            msg = f"m{i:03d}".encode()
            client.write(msg)
            assert await read(client, len(msg)) == flip(msg)
        sent = b"".join(f"m{i:03d}".encode() for i in range(200))
        assert bytes(handler.received) == sent


@pytest.mark.parametrize("kind", KINDS)
async def test_all_byte_values_pass_unchanged(kind: str) -> None:
    handler = Recorder()
    payload = bytes(range(256)) + b"\r\n\r\x11\x13\x03\x04\x1a\x7f"
    async with served(kind, handler) as (_, client):
        client.write(payload)
        assert await read(client, len(payload)) == flip(payload)
        assert bytes(handler.received) == payload


@pytest.mark.parametrize("kind", KINDS)
async def test_large_reply_is_delivered_whole(kind: str) -> None:
    big = bytes(range(256)) * 1024

    def bulk(data: bytes, /) -> bytes:
        return big * len(data)

    async with served(kind, bulk) as (_, client):
        client.write(b"B")  # one byte cannot be split across reads
        assert await read(client, len(big)) == big


@pytest.mark.parametrize("kind", KINDS)
async def test_handler_error_drops_reply_and_keeps_serving(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    failed = asyncio.Event()

    def flaky(data: bytes, /) -> bytes:
        if data.startswith(b"boom"):
            failed.set()
            raise RuntimeError("handler bug")
        return b"ok:" + data

    async with served(kind, flaky) as (_, client):
        with caplog.at_level(logging.ERROR):
            client.write(b"boom")
            await asyncio.wait_for(failed.wait(), GUARD_S)
            # Serve something else after the failure: only its reply comes back.
            client.write(b"x")
            assert await read(client, 4) == b"ok:x"
        assert "byte handler failed" in caplog.text


@pytest.mark.parametrize("kind", KINDS)
async def test_paced_link_schedule_through_transport(kind: str) -> None:
    delays: list[float] = []

    async def fake_sleep(dt: float) -> None:
        delays.append(dt)

    config = LinkConfig(baud=9600, turnaround_s=0.02, chunk_bytes=4)
    emulation = LinkEmulator(config, sleep=fake_sleep)
    handler = Recorder()
    async with served(kind, handler, emulation) as (_, client):
        client.write(b"hello")
        assert await read(client, 5) == flip(b"hello")
    if kind == "null" or handler.calls == 1:
        # Request arrival, turnaround, then the 5-byte reply in chunks of 4 and 1.
        expected = [transmit_time_s(5, 9600), 0.02, transmit_time_s(4, 9600)]
        assert delays == pytest.approx([*expected, transmit_time_s(1, 9600)])
    else:
        # A stream split the request into several reads: each is paced and answered.
        total = 2 * transmit_time_s(5, 9600) + 0.02 * handler.calls
        assert sum(delays) == pytest.approx(total)


@pytest.mark.parametrize("kind", ["tcp", "null"])
async def test_link_aware_handler_told_on_disconnect(kind: str) -> None:
    handler = Recorder()
    async with served(kind, handler) as (transport, client):
        client.write(b"a")
        await read(client, 1)
        client.close()
        if isinstance(transport, TcpTransport):
            # The server sees the close when its read returns EOF: wait for that, not a time.
            await asyncio.wait_for(handler.closed_event.wait(), GUARD_S)
        assert handler.closed == 1


# --- PTY specifics ------------------------------------------------------------------------


async def test_pty_is_raw_for_a_plain_os_open_client() -> None:
    handler = Recorder()
    async with PtyTransport(handler) as transport:
        assert isinstance(transport, PtyTransport)
        fd = os.open(transport.path, os.O_RDWR | os.O_NOCTTY)
        try:
            iflag, oflag, _cflag, lflag, _, _, cc = termios.tcgetattr(fd)
            assert not lflag & (termios.ECHO | termios.ICANON | termios.ISIG | termios.IEXTEN)
            assert not iflag & (termios.ICRNL | termios.INLCR | termios.IGNCR | termios.IXON)
            assert not oflag & termios.OPOST
            assert cc[termios.VMIN] == 1

            # Client -> pump: CR and LF arrive unchanged (no ONLCR/ICRNL rewriting).
            request = b"A\rB\nC\r\n"
            await asyncio.to_thread(os.write, fd, request)
            reply = await asyncio.wait_for(asyncio.to_thread(_read_n, fd, 7), GUARD_S)
            # Exactly the handler's reply: an echo of our own bytes would come first.
            assert reply == flip(request)
            assert bytes(handler.received) == request
            # Pump -> client: the handler answers 0x0D 0x0A 0x0D; they arrive unchanged.
            await asyncio.to_thread(os.write, fd, flip(b"\r\n\r"))
            reply = await asyncio.wait_for(asyncio.to_thread(_read_n, fd, 3), GUARD_S)
            assert reply == b"\r\n\r"
        finally:
            os.close(fd)


def _read_n(fd: int, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


async def test_pty_survives_client_close_and_reopen() -> None:
    handler = Recorder()
    async with PtyTransport(handler) as transport:
        assert isinstance(transport, PtyTransport)
        for i in range(3):
            client = FdClient(transport.path)
            try:
                client.write(b"%d" % i)
                assert await read(client, 1) == flip(b"%d" % i)
            finally:
                client.close()


async def test_pty_symlink_replaced_and_removed(tmp_path: Path) -> None:
    link = tmp_path / "ttyPUMP0"
    link.symlink_to("/dev/null")  # a stale link from an earlier run
    transport = PtyTransport(Recorder(), link=link)
    await transport.start()
    try:
        assert link.is_symlink()
        assert os.readlink(link) == transport.path
        assert transport.url == str(link)
        client = FdClient(str(link))
        try:
            client.write(b"s")
            assert await read(client, 1) == flip(b"s")
        finally:
            client.close()
    finally:
        await transport.close()
    assert not link.exists()
    assert not link.is_symlink()
    assert list(tmp_path.iterdir()) == []


async def test_pty_close_is_idempotent_and_path_requires_start() -> None:
    transport = PtyTransport(Recorder())
    with pytest.raises(RuntimeError):
        _ = transport.path
    await transport.start()
    await transport.close()
    await transport.close()


# --- pyserial clients -----------------------------------------------------------------------


def _pyserial_exchange(url: str, request: bytes, n_reply: int) -> bytes:
    port = serial.serial_for_url(url, timeout=GUARD_S)
    try:
        port.write(request)
        data: bytes = port.read(n_reply)
        return data
    finally:
        port.close()


PYSERIAL_RFC2217_WARNINGS = (
    pytest.mark.filterwarnings("ignore:setDaemon:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:setName:DeprecationWarning"),
)


@pytest.mark.parametrize(
    "kind", ["pty", "tcp", pytest.param("rfc2217", marks=PYSERIAL_RFC2217_WARNINGS)]
)
async def test_pyserial_client(kind: str) -> None:
    handler = Recorder()
    async with make_transport(kind, handler) as transport:
        if isinstance(transport, TcpTransport):
            scheme = "rfc2217" if kind == "rfc2217" else "socket"
            assert transport.port > 0
            assert transport.url == f"{scheme}://127.0.0.1:{transport.port}"
        # 0xFF / 0x7F: Telnet IAC both ways (the reply flips 0x7F to 0xFF).
        request = b"\x7eIDENT\r\n\x00\x7e\xff\x7f\xff"
        reply = await asyncio.to_thread(_pyserial_exchange, transport.url, request, len(request))
        assert reply == flip(request)
        assert bytes(handler.received) == request
        # A second session on the same port works too.
        reply = await asyncio.to_thread(_pyserial_exchange, transport.url, b"again", 5)
        assert reply == flip(b"again")


# --- link emulation -------------------------------------------------------------------------


def test_transmit_time_is_ten_bits_per_byte() -> None:
    assert BITS_PER_BYTE == 10
    assert transmit_time_s(1, 9600) == pytest.approx(10 / 9600)
    assert transmit_time_s(960, 9600) == pytest.approx(1.0)
    assert transmit_time_s(0, 9600) == 0.0
    assert transmit_time_s(100, None) == 0.0
    with pytest.raises(ValueError, match="baud"):
        transmit_time_s(1, 0)
    with pytest.raises(ValueError, match="n_bytes"):
        transmit_time_s(-1, 9600)


def test_pacing_schedule_chunks_and_sums() -> None:
    steps = pacing_schedule(10, 1200, 4)
    assert [size for size, _ in steps] == [4, 4, 2]
    assert [d for _, d in steps] == pytest.approx([4 / 120, 4 / 120, 2 / 120])
    assert sum(d for _, d in steps) == pytest.approx(transmit_time_s(10, 1200))
    assert pacing_schedule(10, None, 4) == [(10, 0.0)]
    assert pacing_schedule(0, 1200, 4) == []


def test_link_config_validates() -> None:
    for bad in (
        {"baud": 0},
        {"turnaround_s": -1.0},
        {"corruption_rate": 1.5},
        {"chunk_bytes": 0},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            LinkConfig(**bad)
    assert not LinkConfig().has_delays
    assert LinkConfig(baud=9600).has_delays
    assert LinkConfig(turnaround_s=0.01).has_delays


def test_corruption_is_seeded_and_flips_one_bit() -> None:
    data = bytes(range(256)) * 4
    a = LinkEmulator(LinkConfig(corruption_rate=0.1, seed=42)).corrupt(data)
    b = LinkEmulator(LinkConfig(corruption_rate=0.1, seed=42)).corrupt(data)
    c = LinkEmulator(LinkConfig(corruption_rate=0.1, seed=43)).corrupt(data)
    assert a == b
    assert a != c
    changed = [x ^ y for x, y in zip(a, data, strict=True) if x != y]
    assert 50 < len(changed) < 160  # about 10 % of 1024
    assert all(bin(d).count("1") == 1 for d in changed)

    always = LinkEmulator(LinkConfig(corruption_rate=1.0, seed=1))
    out = always.corrupt(data)
    assert all(bin(x ^ y).count("1") == 1 for x, y in zip(out, data, strict=True))
    assert always.bytes_corrupted == len(data)
    assert LinkEmulator(LinkConfig(corruption_rate=0.0)).corrupt(data) == data


async def test_corruption_through_a_transport_is_reproducible() -> None:
    async def exchange(seed: int) -> tuple[bytes, bytes]:
        handler = Recorder()
        emulation = LinkEmulator(LinkConfig(corruption_rate=0.2, seed=seed))
        async with served("null", handler, emulation) as (_, client):
            client.write(b"0123456789" * 4)
            reply = await read(client, 40)
        return bytes(handler.received), reply

    first, second = await exchange(7), await exchange(7)
    assert first == second
    assert first[0] != b"0123456789" * 4


async def test_drop_loses_bytes_both_ways() -> None:
    handler = Recorder()
    emulation = LinkEmulator()
    async with served("null", handler, emulation) as (_, client):
        emulation.drop()
        assert emulation.dropped
        client.write(b"lost")
        assert handler.calls == 0
        emulation.restore()
        client.write(b"kept")
        assert await read(client, 4) == flip(b"kept")
        assert bytes(handler.received) == b"kept"
        assert emulation.bytes_dropped == 4


async def test_drop_mid_reply_truncates_it() -> None:
    """Lifting the head off while the pump is answering: the rest of the reply vanishes."""
    emulation: LinkEmulator
    sleeps = 0

    async def fake_sleep(dt: float) -> None:
        nonlocal sleeps
        sleeps += 1
        if sleeps == 3:  # request delay, first chunk delay, then second chunk: drop
            emulation.drop()

    emulation = LinkEmulator(LinkConfig(baud=9600, chunk_bytes=2), sleep=fake_sleep)
    handler = Recorder()
    modem = NullModem(handler, emulation=emulation)
    async with modem:
        client = modem.connect()
        client.write(b"abcd")  # reply: 2 chunks of 2
        await asyncio.wait_for(client.connection.drained(), GUARD_S)
        client.close()
        assert await client.reader.read() == flip(b"ab")
        assert emulation.bytes_dropped == 2


async def test_paced_send_awaits_turnaround_then_chunks() -> None:
    delays: list[float] = []
    written: list[bytes] = []

    async def fake_sleep(dt: float) -> None:
        delays.append(dt)

    emulation = LinkEmulator(
        LinkConfig(baud=19200, turnaround_s=0.005, chunk_bytes=8), sleep=fake_sleep
    )
    await emulation.send(bytes(20), written.append)
    assert delays == pytest.approx([0.005, *(d for _, d in pacing_schedule(20, 19200, 8))])
    assert b"".join(written) == bytes(20)
    assert [len(w) for w in written] == [8, 8, 4]


async def test_link_never_replaces_a_regular_file(tmp_path: Path) -> None:
    from itpump.emulator.transports import LinkPathError

    precious = tmp_path / "scenario.toml"
    precious.write_text("keep me")
    with pytest.raises(LinkPathError, match="not a symlink"):
        await PtyTransport(lambda data: data, link=precious).start()
    assert precious.read_text() == "keep me"
    with pytest.raises(LinkPathError, match="does not exist"):
        await PtyTransport(lambda data: data, link=tmp_path / "no" / "tty").start()
