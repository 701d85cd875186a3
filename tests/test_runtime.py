"""SimRuntime: simpy driven from asyncio with a fake clock (no wall-clock timing anywhere)."""

from __future__ import annotations

import asyncio
from collections.abc import Generator

import pytest
import simpy

from itpump.emulator.runtime import SimRuntime, real_to_sim_h, sim_to_real_s
from itpump.emulator.transports import NullModem

GUARD_S = 5.0


class InstantClock:
    """A fake clock whose sleep advances it at once (a run takes no real time)."""

    def __init__(self) -> None:
        self.t = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    async def sleep(self, dt: float) -> None:
        self.sleeps.append(dt)
        self.t += dt
        await asyncio.sleep(0)


class ManualClock:
    """A fake clock moved by the test; sleepers wake when it passes their deadline."""

    def __init__(self) -> None:
        self.t = 0.0
        self._waiters: list[tuple[float, asyncio.Future[None]]] = []
        self._changed = asyncio.Event()

    def __call__(self) -> float:
        return self.t

    async def sleep(self, dt: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((self.t + dt, fut))
        self._changed.set()
        try:
            await fut
        finally:
            self._waiters = [(d, f) for d, f in self._waiters if f is not fut]

    def deadlines(self) -> list[float]:
        return sorted(d for d, f in self._waiters if not f.done())

    async def until_sleeping_to(self, deadline: float) -> None:
        """Wait (on events, not time) until someone sleeps until ``deadline``."""
        while not any(abs(d - deadline) < 1e-9 for d in self.deadlines()):
            self._changed.clear()
            await self._changed.wait()

    def set(self, t: float) -> None:
        self.t = t
        for deadline, fut in self._waiters:
            if deadline <= t + 1e-12 and not fut.done():
                fut.set_result(None)


def ticker(env: simpy.Environment, log: list[float], dt_h: float) -> Generator[simpy.Event]:
    while True:
        yield env.timeout(dt_h)
        log.append(env.now)


def test_time_conversions() -> None:
    assert real_to_sim_h(1.0, 3600) == pytest.approx(1.0)
    assert sim_to_real_s(1.0, 3600) == pytest.approx(1.0)
    assert sim_to_real_s(2.0, 1.0) == pytest.approx(7200.0)


def test_bad_speed_refused() -> None:
    env = simpy.Environment()
    with pytest.raises(ValueError, match="speed"):
        SimRuntime(env, speed=-1.0)
    with pytest.raises(ValueError, match="speed"):
        SimRuntime(env, speed=float("inf"))


async def test_speed_3600_is_one_simulated_hour_per_real_second() -> None:
    clock = InstantClock()
    env = simpy.Environment()
    stamps: list[tuple[float, float]] = []

    def proc() -> Generator[simpy.Event]:
        for _ in range(3):
            yield env.timeout(1.0)
            stamps.append((env.now, clock.t - 100.0))

    env.process(proc())
    runtime = SimRuntime(env, speed=3600, clock=clock, sleep=clock.sleep)
    await asyncio.wait_for(runtime.run(until_h=4.0), GUARD_S)
    assert [s for s, _ in stamps] == pytest.approx([1.0, 2.0, 3.0])
    assert [r for _, r in stamps] == pytest.approx([1.0, 2.0, 3.0])
    assert env.now == pytest.approx(4.0)
    assert clock.t - 100.0 == pytest.approx(4.0)
    assert clock.sleeps == pytest.approx([1.0, 1.0, 1.0, 1.0])


async def test_now_h_follows_the_clock() -> None:
    clock = ManualClock()
    env = simpy.Environment()
    runtime = SimRuntime(env, speed=60.0, clock=clock)
    clock.set(120.0)  # two real minutes at 60x = two simulated hours
    assert runtime.now_h() == pytest.approx(2.0)
    assert env.now == 0.0  # nothing moves until someone syncs or runs


async def test_as_fast_as_possible_ignores_the_clock() -> None:
    clock = InstantClock()
    env = simpy.Environment()
    log: list[float] = []
    env.process(ticker(env, log, 0.5))
    runtime = SimRuntime(env, speed=None, clock=clock, sleep=clock.sleep, yield_every=10)
    await asyncio.wait_for(runtime.run(until_h=1000.0), GUARD_S)
    assert len(log) == 2000
    assert env.now == pytest.approx(1000.0)
    assert clock.sleeps == []
    assert runtime.events_processed >= 2000


class SteppingClock:
    """Each reading is 1 ms after the previous one (events that each take a millisecond)."""

    def __init__(self) -> None:
        self.t_s = 0.0

    def __call__(self) -> float:
        self.t_s += 0.001
        return self.t_s


async def test_as_fast_as_possible_yields_on_real_time_not_only_on_event_count() -> None:
    env = simpy.Environment()
    log: list[float] = []
    env.process(ticker(env, log, 0.5))
    runtime = SimRuntime(env, speed=None, clock=SteppingClock(), yield_every=1_000_000)
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    counter = asyncio.create_task(count_turns())
    await asyncio.wait_for(runtime.run(until_h=100.0), GUARD_S)
    counter.cancel()
    # 200 events of "1 ms" each in 2 ms slices: the loop got a turn every couple of events,
    # although the event-count bound alone (a million) would never have yielded.
    assert len(log) == 200
    assert turns >= 50


async def test_as_fast_as_possible_stops_at_until_without_events() -> None:
    env = simpy.Environment()
    runtime = SimRuntime(env, speed=None)
    await asyncio.wait_for(runtime.run(until_h=5.0), GUARD_S)
    assert env.now == 5.0


async def test_stepped_by_the_rig() -> None:
    clock = InstantClock()
    env = simpy.Environment()
    log: list[float] = []
    env.process(ticker(env, log, 1.0))
    runtime = SimRuntime(env, speed=0, clock=clock, sleep=clock.sleep)
    task = asyncio.create_task(runtime.run())
    clock.t += 1e6  # real time passes; simulated time does not
    assert runtime.now_h() == 0.0
    runtime.advance_to(2.5)
    assert log == [1.0, 2.0]
    assert env.now == 2.5
    runtime.advance_by(1.0)
    assert log == [1.0, 2.0, 3.0]
    assert env.now == 3.5
    with pytest.raises(ValueError, match="back in time"):
        runtime.advance_to(1.0)
    runtime.stop()
    await asyncio.wait_for(task, GUARD_S)
    assert clock.sleeps == []


async def test_sync_brings_the_model_to_the_current_real_time() -> None:
    clock = ManualClock()
    env = simpy.Environment()
    log: list[float] = []
    env.process(ticker(env, log, 1.0))
    runtime = SimRuntime(env, speed=3600, clock=clock, sleep=clock.sleep)
    clock.set(2.25)
    assert runtime.sync() == pytest.approx(2.25)
    assert log == [1.0, 2.0]
    assert env.now == pytest.approx(2.25)
    seen = runtime.call(lambda: env.now)
    assert seen == pytest.approx(2.25)


async def test_frame_acts_at_current_simulated_time_and_wakes_the_runner() -> None:
    """A frame arriving mid-sleep acts at 'now' and can schedule an earlier event."""
    clock = ManualClock()
    env = simpy.Environment()
    fired: list[float] = []
    env.process(ticker(env, fired, 10.0))  # next event at 10 h
    runtime = SimRuntime(env, speed=3600, clock=clock, sleep=clock.sleep)
    runner = asyncio.create_task(runtime.run(until_h=20.0))
    await asyncio.wait_for(clock.until_sleeping_to(10.0), GUARD_S)

    done = asyncio.Event()

    def bolus_end() -> Generator[simpy.Event]:
        yield env.timeout(0.5)
        fired.append(env.now)
        done.set()

    seen_at: list[float] = []

    def handler(data: bytes, /) -> bytes:
        seen_at.append(env.now)
        env.process(bolus_end())
        return b"ok"

    async with NullModem(runtime.wrap_handler(handler)) as modem:
        assert isinstance(modem, NullModem)
        client = modem.connect()
        clock.set(1.5)  # 1.5 s real = 1.5 h simulated
        client.write(b"bolus")
        assert await asyncio.wait_for(client.read_exactly(2), GUARD_S) == b"ok"
    assert seen_at == pytest.approx([1.5])
    # Woken by the frame, the runner now sleeps until 2.0 h, not 10 h.
    await asyncio.wait_for(clock.until_sleeping_to(2.0), GUARD_S)
    clock.set(2.0)
    await asyncio.wait_for(done.wait(), GUARD_S)
    assert fired == pytest.approx([2.0])
    clock.set(20.0)
    await asyncio.wait_for(runner, GUARD_S)
    assert fired == pytest.approx([2.0, 10.0, 20.0])
    assert env.now == pytest.approx(20.0)


async def test_set_speed_does_not_jump_time() -> None:
    clock = ManualClock()
    env = simpy.Environment()
    runtime = SimRuntime(env, speed=3600, clock=clock)
    clock.set(1.0)
    runtime.set_speed(7200)
    assert runtime.now_h() == pytest.approx(1.0)
    clock.set(2.0)
    assert runtime.now_h() == pytest.approx(3.0)
    runtime.set_speed(0)
    clock.set(50.0)
    assert runtime.now_h() == pytest.approx(3.0)


async def test_stop_ends_a_realtime_run() -> None:
    clock = ManualClock()
    env = simpy.Environment()
    env.process(ticker(env, [], 1.0))
    runtime = SimRuntime(env, speed=3600, clock=clock, sleep=clock.sleep)
    task = asyncio.create_task(runtime.run())
    await asyncio.wait_for(clock.until_sleeping_to(1.0), GUARD_S)
    runtime.stop()
    await asyncio.wait_for(task, GUARD_S)
    assert env.now == 0.0


def test_advance_leaves_no_phantom_event_at_now() -> None:
    """SimPy re-queues its stop event after run(until); the runtime must step it out, or
    its loop sees an event due 'now' forever and never yields to I/O."""
    import simpy

    from itpump.emulator.runtime import SimRuntime

    env = simpy.Environment()
    env.timeout(5.0)
    runtime = SimRuntime(env, speed=0.0)
    runtime.advance_to(1.0)
    assert env.now == 1.0
    assert env.peek() == 5.0


async def test_a_call_that_schedules_nothing_leaves_the_runner_asleep() -> None:
    """A telemetry read schedules no event: the runner keeps its sleep (no re-plan per
    request); a call that schedules an earlier event wakes it."""
    clock = ManualClock()
    env = simpy.Environment()
    fired: list[float] = []
    env.process(ticker(env, fired, 10.0))
    runtime = SimRuntime(env, speed=3600, clock=clock, sleep=clock.sleep)
    runner = asyncio.create_task(runtime.run(until_h=20.0))
    await asyncio.wait_for(clock.until_sleeping_to(10.0), GUARD_S)
    sleeper = next(f for _, f in clock._waiters)
    for i in range(5):
        clock.set(1.0 + i * 0.1)
        assert runtime.call(lambda: env.now) == pytest.approx(1.0 + i * 0.1)
        await asyncio.sleep(0)
    assert not runtime._wake.is_set()
    assert [f for _, f in clock._waiters] == [sleeper]
    assert not sleeper.cancelled()

    def schedule() -> None:
        env.timeout(0.5).callbacks.append(lambda _e: fired.append(env.now))

    runtime.call(schedule)
    assert runtime._wake.is_set()
    await asyncio.wait_for(clock.until_sleeping_to(1.9), GUARD_S)
    clock.set(20.0)
    await asyncio.wait_for(runner, GUARD_S)
    assert fired == pytest.approx([1.9, 10.0, 20.0])


def test_sync_moves_the_clock_and_later_timeouts_count_from_there() -> None:
    clock = ManualClock()
    env = simpy.Environment()
    env.timeout(5.0)
    runtime = SimRuntime(env, speed=3600, clock=clock)
    clock.set(2.5)
    assert runtime.sync() == 2.5
    assert env.now == 2.5
    assert env.peek() == 5.0
    fired: list[float] = []
    env.timeout(1.0).callbacks.append(lambda _e: fired.append(env.now))
    env.run(until=4.0)
    assert fired == [3.5]
