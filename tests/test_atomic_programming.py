"""Atomic programming, exhaustively: cut the link, or corrupt one byte, at every byte position
of a program transfer and of its commit. Afterwards the pump holds the old program or the new
one, never a mix, and the programmer can tell which by interrogating.

The bytes go through the served pump's own byte handler (the path every transport feeds), and
the programmer's clock is a fake one that a read with nothing to read moves by its timeout, so
no test waits in real time. `test_atomic_programming_served.py` runs the sweep over a real PTY
and a real TCP socket, in both directions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from itpump.emulator.farm import PortSpec, PumpFarm, ServedPump
from itpump.emulator.scenario import load_scenario
from itpump.programmer import PumpClient
from itpump.programmer.errors import PumpError
from itpump.programmer.program import Continuous, Program

READ_TIMEOUT_S = 0.01
SLACK_BYTES = 64  # more than byte stuffing can add to a transfer's MACs and counters


class FakeClock:
    """The programmer's clock."""

    def __init__(self) -> None:
        self.t_s = 0.0

    def __call__(self) -> float:
        return self.t_s


class WirePort:
    """A pyserial-like port wired straight to a pump's byte handler.

    `tamper(offset, data)` sees every chunk the programmer writes with its offset in the whole
    stream and returns what the pump receives (None: the link is cut from here on).
    """

    name = "wire"
    port = "wire"

    def __init__(
        self,
        served: ServedPump,
        clock: FakeClock,
        tamper: Callable[[int, bytes], bytes | None] | None = None,
    ) -> None:
        self._served = served
        self._clock = clock
        self._tamper = tamper
        self._inbox = bytearray()
        self.sent = bytearray()
        self.cut = False
        self.timeout: float | None = READ_TIMEOUT_S

    @property
    def in_waiting(self) -> int:
        return len(self._inbox)

    def write(self, data: bytes) -> int:
        offset = len(self.sent)
        self.sent += data
        delivered: bytes | None = bytes(data)
        if self._tamper is not None and not self.cut:
            delivered = self._tamper(offset, bytes(data))
            if delivered is None:
                self.cut = True
                self._served.lift_head()  # the telemetry head comes off mid-transfer
        if not self.cut and delivered:
            self._inbox += self._served.handler(delivered)
        return len(data)

    def read(self, size: int = 1) -> bytes:
        if not self._inbox:
            self._clock.t_s += self.timeout or 0.0
            return b""
        out = bytes(self._inbox[:size])
        del self._inbox[:size]
        return out

    def close(self) -> None:
        pass


class Tamper:
    """Cuts the link at, or flips a bit of, byte `position` of the stream after `start` (the
    bytes of connecting are left alone: `start` is set once the session is open)."""

    def __init__(self, position: int, *, cut: bool) -> None:
        self.position = position
        self.cut = cut
        self.start: int | None = None

    def __call__(self, offset: int, data: bytes) -> bytes | None:
        if self.start is None:
            return data
        relative = offset - self.start
        if not relative <= self.position < relative + len(data):
            return data if relative + len(data) <= self.position or not self.cut else None
        inside = self.position - relative
        if self.cut:
            return data[:inside] or None
        out = bytearray(data)
        out[inside] ^= 0x10
        return bytes(out)


@pytest.fixture(scope="module")
def farm() -> PumpFarm:
    return PumpFarm(load_scenario("clinic-ready"), port=PortSpec("null"), speed=0.0)


def _client(
    served: ServedPump, tamper: Callable[[int, bytes], bytes | None] | None = None
) -> tuple[PumpClient, WirePort]:
    clock = FakeClock()
    port = WirePort(served, clock, tamper)
    client = PumpClient(port, key=served.key, clock=clock, timeout_s=0.05, max_attempts=3)
    return client, port


def _interrogated_dose(served: ServedPump) -> float:
    served.place_head()
    client, _ = _client(served)
    client.connect()
    mode = client.interrogate().program.mode
    assert isinstance(mode, Continuous)
    return mode.dose_mcg_per_day


def _new_program(served: ServedPump) -> tuple[Program, float, float]:
    client, _ = _client(served)
    client.connect()
    old = client.interrogate().program
    assert isinstance(old.mode, Continuous)
    return dataclasses.replace(old, mode=Continuous(300.0)), old.mode.dose_mcg_per_day, 300.0


def _transfer_stream(farm: PumpFarm, program: Program) -> int:
    """How many bytes the programmer sends for the transfer and commit (after connecting)."""
    served = farm.pumps[0]
    snap = served.snapshot()
    client, port = _client(served)
    client.connect()
    start = len(port.sent)
    client.program(program)
    served.restore(snap)
    farm.delete_snapshot(snap.id)
    return len(port.sent) - start


def _program_through(
    served: ServedPump, program: Program, tamper: Tamper, doses: tuple[float, float]
) -> float:
    """Send `program` through `tamper`, then interrogate: the old or the new dose, never
    anything else, and the new one whenever the programmer saw the commit acknowledged."""
    client, port = _client(served, tamper)
    client.connect()
    tamper.start = len(port.sent)
    try:
        client.program(program)
        acknowledged = True
    except PumpError:
        acknowledged = False
    dose = _interrogated_dose(served)
    assert dose in doses, (tamper.position, dose)
    if acknowledged:
        assert dose == doses[1], tamper.position  # an acknowledged commit is never lost
    return dose


def test_a_cut_at_any_byte_leaves_the_old_or_the_new_program(farm: PumpFarm) -> None:
    served = farm.pumps[0]
    program, old_dose, new_dose = _new_program(served)
    total = _transfer_stream(farm, program)
    assert total > 200  # a real multi-frame transfer, not a toy
    snap = served.snapshot()
    outcomes: dict[float, int] = {}
    # The pump's nonces come from the OS, so MACs, and with them byte stuffing, change the
    # stream's length a little from run to run: go past the end (positions beyond it cut
    # nothing, and the transfer must then succeed).
    for position in range(total + SLACK_BYTES):
        served.restore(snap)
        dose = _program_through(served, program, Tamper(position, cut=True), (old_dose, new_dose))
        outcomes[dose] = outcomes.get(dose, 0) + 1
    # Early cuts keep the old program; only a commit that arrived whole installs the new one.
    assert outcomes.get(old_dose, 0) > 0
    assert outcomes.get(new_dose, 0) > 0
    farm.delete_snapshot(snap.id)


def test_a_corrupt_byte_anywhere_leaves_the_old_or_the_new_program(farm: PumpFarm) -> None:
    served = farm.pumps[0]
    program, old_dose, new_dose = _new_program(served)
    total = _transfer_stream(farm, program)
    snap = served.snapshot()
    for position in range(total + SLACK_BYTES):
        served.restore(snap)
        _program_through(served, program, Tamper(position, cut=False), (old_dose, new_dose))
    farm.delete_snapshot(snap.id)
