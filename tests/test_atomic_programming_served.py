"""Atomic programming over real transports: a served pump on a PTY and on TCP, a programmer
(`PumpClient`, through pyserial) and, between them, a tampering port that cuts the link after
byte N, or flips byte N, of the programmer's transfer and commit (PROGRAM_BEGIN, DATA, VERIFY,
COMMIT) or of the pump's answers to them, for every N. After each case a fresh programmer
session interrogates the pump: it holds the old program or the new one, never a mix, and the
new one whenever the programmer saw its commit acknowledged.

`test_atomic_programming.py` does the same sweep through the pump's byte handler alone; here
every byte crosses the kernel (a pseudo-terminal, a TCP socket) and the served pump's
transport, deframer and per-link session handling.

Speed without sleeps: the link is unpaced with no reply turnaround, and the served pump's
byte handler is wrapped to count, per client link, the bytes it has handled and the bytes it
answered. The tampering port knows what it wrote and read, so it knows when the pump has
nothing more to say: only then does a read come back empty, moving the programmer's (fake)
clock by its timeout. A programmer never waits out a real timeout, and a reply is never
mistaken for silence however loaded the machine is. One farm per transport serves every
case; each case starts from a snapshot of the pump.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Literal, TypeVar

import pytest

from itpump.emulator.farm import PortSpec, PumpFarm, ServedPump
from itpump.emulator.rig import FarmCaller
from itpump.emulator.scenario import load_scenario
from itpump.emulator.transports.base import ByteHandler, HeadFactory, LinkAware
from itpump.programmer import PumpClient
from itpump.programmer._link import Port, close_port, open_port
from itpump.programmer.errors import PumpError
from itpump.programmer.program import Continuous

GUARD_S = 10.0
"""Bound on every real wait: only a pump or transport that lost bytes gets near it."""
PROTOCOL_TIMEOUT_S = 0.05  # on the programmer's fake clock: costs nothing real
SLACK_BYTES = 16  # more than byte stuffing of random MACs and nonces changes a stream by

T = TypeVar("T")
Direction = Literal["to_pump", "from_pump"]
Kind = Literal["cut", "flip"]


class Head:
    """One client link's byte handler, counting what it handled and answered."""

    def __init__(self, inner: ByteHandler, changed: threading.Condition) -> None:
        self._inner = inner
        self._changed = changed
        self.handled_bytes = 0
        self.answered_bytes = 0
        self.closed = False

    def __call__(self, data: bytes, /) -> bytes:
        reply = self._inner(data)
        with self._changed:
            # Counted after the pump answered and before the transport sends the answer:
            # whoever sees the count sees the answer's length too.
            self.handled_bytes += len(data)
            self.answered_bytes += len(reply)
            self._changed.notify_all()
        return reply

    def link_closed(self) -> None:
        if isinstance(self._inner, LinkAware):
            self._inner.link_closed()
        with self._changed:
            self.closed = True
            self._changed.notify_all()


class CountingHeads:
    """Stands in for the served pump's byte handler: a `Head` per client link, in order."""

    def __init__(self, inner: ByteHandler) -> None:
        self._inner = inner
        self.changed = threading.Condition()
        self.heads: list[Head] = []

    def __call__(self, data: bytes, /) -> bytes:
        return self._inner(data)

    def open_head(self) -> Head:
        inner = self._inner.open_head() if isinstance(self._inner, HeadFactory) else self._inner
        head = Head(inner, self.changed)
        with self.changed:
            self.heads.append(head)
            self.changed.notify_all()
        return head

    def wait(self, predicate: Callable[[], bool]) -> None:
        with self.changed:
            assert self.changed.wait_for(predicate, GUARD_S), "the served pump lost bytes"


class Served:
    """One pump served on a PTY or TCP from a loop on a thread of its own."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        try:
            self.farm, self.heads = self._run(self._open())
        except BaseException:
            self._stop_loop()
            raise
        assert self._thread.ident is not None
        self.call = FarmCaller(self._loop, self._thread.ident)
        self.pump: ServedPump = self.farm.pumps[0]

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _open(self) -> tuple[PumpFarm, CountingHeads]:
        # Unpaced, no turnaround: a reply is written while the request is being read.
        farm = PumpFarm(
            load_scenario("clinic-ready"), port=PortSpec(self.kind), speed=0.0, turnaround=False
        )
        transport = farm.pumps[0].transport
        heads = CountingHeads(transport.handler)
        transport.handler = heads  # before start: a PTY opens its one link there
        await farm.start()
        return farm, heads

    def close(self) -> None:
        try:
            self._run(self.farm.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class Link:
    """The programmer's end of one client link: a pyserial port and its byte counts."""

    def __init__(self, served: Served, head_index: int) -> None:
        self.served = served
        # The programmer library's own opening (pyserial; TCP without Nagle's delay).
        self.port: Port = open_port(served.pump.url, GUARD_S)
        self._head_index = head_index
        self.sent_bytes = 0
        self.received_bytes = 0

    @staticmethod
    def open(served: Served) -> Link:
        heads = served.heads
        if served.kind == "pty":
            return Link(served, 0)  # a PTY has one link, opened with the port
        with heads.changed:
            index = len(heads.heads)  # the server opens the next head for this client
        return Link(served, index)

    @property
    def head(self) -> Head:
        heads = self.served.heads
        heads.wait(lambda: len(heads.heads) > self._head_index)
        return heads.heads[self._head_index]

    def write(self, data: bytes) -> None:
        self.port.write(data)
        self.sent_bytes += len(data)

    def outstanding(self) -> int:
        """Answer bytes the pump has sent and this end has not read, once the pump has handled
        every byte written (0: the pump has nothing more to say until it is sent more)."""
        head = self.head
        self.served.heads.wait(lambda: head.handled_bytes == self.sent_bytes)
        return head.answered_bytes - self.received_bytes

    def read_outstanding(self) -> bytes:
        n = self.outstanding()
        data = bytes(self.port.read(n)) if n else b""
        assert len(data) == n, f"{n} answer bytes sent, {len(data)} arrived"
        self.received_bytes += n
        return data

    def close(self) -> None:
        """Close the client's end and wait until the pump has seen the link go."""
        close_port(self.port)
        head = self.head
        self.served.heads.wait(lambda: head.closed)


class FakeClock:
    """The programmer's clock: moved by a read that the pump will not answer."""

    def __init__(self) -> None:
        self.t_s = 0.0

    def __call__(self) -> float:
        return self.t_s


@dataclasses.dataclass
class Fault:
    """Cut the link at, or flip byte `position` of, one direction's stream counted from
    `arm()` (connecting is left alone: it holds the authentication, whose failures back off)."""

    direction: Direction
    kind: Kind
    position: int
    start: int | None = None
    fired: bool = False

    def at(self, offset: int, length: int) -> int | None:
        """Where in a chunk of `length` bytes at stream `offset` the fault falls, if it does."""
        if self.start is None or self.fired:
            return None
        inside = self.position - (offset - self.start)
        return inside if 0 <= inside < length else None


class TamperingPort:
    """A pyserial-like port for `PumpClient`: a real link, with one fault on the way."""

    name = "tampering"
    port = "tampering"

    def __init__(self, link: Link, clock: FakeClock, fault: Fault | None = None) -> None:
        self.link = link
        self.clock = clock
        self.fault = fault
        self._inbox = bytearray()
        self.timeout: float | None = None
        self.cut = False

    def arm(self) -> None:
        if self.fault is not None:
            link = self.link
            to_pump = self.fault.direction == "to_pump"
            self.fault.start = link.sent_bytes if to_pump else link.received_bytes

    @property
    def in_waiting(self) -> int:
        return len(self._inbox)

    def write(self, data: bytes) -> int:
        if self.cut:
            return len(data)  # the link is gone: nothing arrives
        fault = self.fault
        inside = None
        if fault is not None and fault.direction == "to_pump":
            inside = fault.at(self.link.sent_bytes, len(data))
        if inside is None:
            self.link.write(data)
        elif fault is not None and fault.kind == "flip":
            fault.fired = True
            out = bytearray(data)
            out[inside] ^= 0x10
            self.link.write(bytes(out))
        else:
            assert fault is not None
            fault.fired = True
            if inside:
                self.link.write(data[:inside])
            self._cut_link()
        return len(data)

    def read(self, size: int = 1) -> bytes:
        while not self._inbox:
            if self.cut:
                self.clock.t_s += self.timeout or 0.0
                return b""
            if self.link.outstanding() == 0:
                self.clock.t_s += self.timeout or 0.0  # silence: the programmer's timeout
                return b""
            offset = self.link.received_bytes
            data = self.link.read_outstanding()
            self._receive(offset, data)
        out = bytes(self._inbox[:size])
        del self._inbox[:size]
        return out

    def _receive(self, offset: int, data: bytes) -> None:
        fault = self.fault
        inside = None
        if fault is not None and fault.direction == "from_pump":
            inside = fault.at(offset, len(data))
        if inside is None:
            self._inbox += data
        elif fault is not None and fault.kind == "flip":
            fault.fired = True
            out = bytearray(data)
            out[inside] ^= 0x10
            self._inbox += out
        else:
            assert fault is not None
            fault.fired = True
            self._inbox += data[:inside]
            self._cut_link()

    def _cut_link(self) -> None:
        """The link goes: on TCP the socket closes, on a PTY the telemetry head comes off."""
        self.cut = True
        link = self.link
        link.outstanding()  # what was sent before the cut reached the pump
        if link.served.kind == "tcp":
            link.close()
        else:
            link.served.call(link.served.pump.lift_head)
            link.read_outstanding()  # answers already on their way are lost with the link

    def close(self) -> None:
        pass  # the link outlives the programmer's session on a PTY; the test closes TCP links


def _client(port: TamperingPort) -> PumpClient:
    return PumpClient(
        port,
        key=port.link.served.pump.key,
        clock=port.clock,
        timeout_s=PROTOCOL_TIMEOUT_S,
        max_attempts=3,
    )


class Bench:
    """One served pump, a snapshot of it, and the programmer's links to it."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self._pty_link = Link.open(served) if served.kind == "pty" else None
        port = TamperingPort(self.link(), FakeClock())
        client = _client(port)
        client.connect()
        self.old = client.interrogate().program
        self.end(port)
        assert isinstance(self.old.mode, Continuous)
        # Every field a transfer carries changes, so half of one is visible.
        self.new = dataclasses.replace(
            self.old,
            mode=Continuous(self.old.mode.dose_mcg_per_day + 100.0),
            max_daily_dose_mcg=self.old.max_daily_dose_mcg + 100.0,
            patient_id="P-ATOMIC",
        )
        assert self.new != self.old
        self.snapshot = served.call(served.pump.snapshot)

    def link(self) -> Link:
        return self._pty_link if self._pty_link is not None else Link.open(self.served)

    def end(self, port: TamperingPort) -> None:
        """The programmer goes away (a TCP client disconnects; a PTY stays open)."""
        if self.served.kind == "tcp" and not port.cut:
            port.link.close()

    def stream_bytes(self, direction: Direction) -> int:
        """How many bytes a clean transfer and commit puts on the wire one way."""
        port = self.restore_and_open()
        client = _client(port)
        client.connect()
        port.arm()
        start = port.link.sent_bytes if direction == "to_pump" else port.link.received_bytes
        client.program(self.new)
        end = port.link.sent_bytes if direction == "to_pump" else port.link.received_bytes
        self.end(port)
        return end - start

    def restore_and_open(self, fault: Fault | None = None) -> TamperingPort:
        served = self.served
        served.call(lambda: served.pump.restore(self.snapshot))
        if not served.pump.head_placed:
            served.call(served.pump.place_head)
        return TamperingPort(self.link(), FakeClock(), fault)

    def program_through(self, fault: Fault) -> tuple[bool, bool]:
        """Send the new program through `fault`, then interrogate in a fresh session and
        check what the pump holds. Returns (the programmer saw the commit acknowledged, the
        pump holds the new program)."""
        port = self.restore_and_open(fault)
        client = _client(port)
        client.connect()
        port.arm()
        try:
            client.program(self.new)
            acknowledged = True
        except PumpError:
            acknowledged = False
        self.end(port)
        if not self.served.pump.head_placed:
            self.served.call(self.served.pump.place_head)  # the programmer puts it back
        reader = TamperingPort(self.link(), FakeClock())
        fresh = _client(reader)
        fresh.connect()
        held = fresh.interrogate().program
        self.end(reader)
        assert held in (self.old, self.new), (fault, held)  # never a mix
        if acknowledged:
            assert held == self.new, fault  # an acknowledged commit is never lost
        return acknowledged, held == self.new

    def close(self) -> None:
        if self._pty_link is not None:
            self._pty_link.port.close()


@pytest.fixture(scope="module", params=["pty", "tcp"])
def bench(request: pytest.FixtureRequest) -> Iterator[Bench]:
    served = Served(request.param)
    try:
        bench = Bench(served)
        try:
            yield bench
        finally:
            bench.close()
    finally:
        served.close()


@pytest.mark.parametrize("kind", ["cut", "flip"])
@pytest.mark.parametrize("direction", ["to_pump", "from_pump"])
def test_a_fault_at_any_byte_leaves_the_old_or_the_new_program(
    bench: Bench, direction: Direction, kind: Kind
) -> None:
    total = bench.stream_bytes(direction)
    assert total > 150  # a real multi-frame transfer, not a toy
    outcomes: collections.Counter[tuple[bool, bool, bool]] = collections.Counter()
    # The pump's nonces come from the OS, so MACs, and with them byte stuffing, change the
    # stream's length a little from case to case: go past the end (a fault there does not
    # fire, and the transfer must then succeed).
    for position in range(total + SLACK_BYTES):
        fault = Fault(direction, kind, position)
        acknowledged, new = bench.program_through(fault)
        outcomes[fault.fired, acknowledged, new] += 1
    fired = sum(n for (was_fired, _, _), n in outcomes.items() if was_fired)
    assert fired >= total - SLACK_BYTES // 4, outcomes  # every position of the stream was hit
    assert outcomes[False, True, True] > 0, outcomes  # past the end: programmed as usual
    if kind == "flip":
        # One corrupted byte costs a retransmission, never the transfer.
        assert set(outcomes) <= {(True, True, True), (False, True, True)}, outcomes
    elif direction == "to_pump":
        # Whatever part of the commit is missing, nothing is committed.
        assert set(outcomes) <= {(True, False, False), (False, True, True)}, outcomes
    else:
        # Answers lost: early ones leave the old program; once the commit has run, the
        # programmer is not told, and its interrogation shows the new program.
        assert outcomes[True, False, False] > 0, outcomes
        assert outcomes[True, False, True] > 0, outcomes
