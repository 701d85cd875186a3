"""Drive a plain SimPy environment from asyncio: N x real time, as fast as possible, or stepped.

SimPy's ``RealtimeEnvironment`` sleeps inside ``step()`` and cannot share a thread with an
asyncio loop, so :class:`SimRuntime` drives a plain ``simpy.Environment`` instead: peek the
next event time, sleep the scaled difference, step. Simulated time is in hours (``env.now``);
real time in seconds from an injected clock (``time.monotonic`` by default).

Modes (``speed``):

- a positive number: ``speed`` simulated seconds per real second (3600: one hour per second);
- ``0``: stepped by the rig: simulated time moves only through :meth:`SimRuntime.advance_to`
  / :meth:`SimRuntime.advance_by`;
- ``None``: as fast as possible; :meth:`SimRuntime.run` yields to the event loop every
  ``yield_every`` events or ``fast_slice_s`` of real time (2 ms), so I/O is still served.

External events (a frame arriving) must act at the current simulated time: call
:meth:`SimRuntime.sync` (or use :meth:`SimRuntime.call` / :meth:`SimRuntime.wrap_handler`)
before touching the model, and :meth:`SimRuntime.wake` after, so a newly scheduled earlier
event is not slept through.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import simpy

log = logging.getLogger(__name__)

T = TypeVar("T")

SECONDS_PER_HOUR = 3600.0
_EPSILON_S = 1e-9

Clock = Callable[[], float]
SleepFn = Callable[[float], Awaitable[None]]


def _jump(env: simpy.Environment, t_h: float) -> None:
    """Move ``env``'s clock to ``t_h`` (> now) when no event is due before it.

    ``env.run(until=t_h)`` would schedule a stop event, step it, raise and catch
    StopSimulation and re-queue the event (~5 µs, paid by every telemetry request); with
    nothing due before ``t_h`` its only effect is the clock. SimPy keeps the clock in
    ``Environment._now`` (simpy 4, pinned in constraints.txt; tests/test_runtime.py checks
    that ``now`` and later timeouts follow).
    """
    env._now = t_h


def real_to_sim_h(real_s: float, speed: float) -> float:
    """Simulated hours elapsed in ``real_s`` real seconds at ``speed``."""
    return real_s * speed / SECONDS_PER_HOUR


def sim_to_real_s(sim_h: float, speed: float) -> float:
    """Real seconds needed for ``sim_h`` simulated hours at ``speed`` (> 0)."""
    return sim_h * SECONDS_PER_HOUR / speed


class SimRuntime:
    """Couples a ``simpy.Environment`` (hours) to an asyncio loop (real seconds).

    The mapping real -> simulated time is anchored at construction (and re-anchored by
    :meth:`set_speed`, :meth:`advance_to`): ``now_h = anchor_h + (clock() - anchor_s) * speed /
    3600``, never behind ``env.now``.
    """

    def __init__(
        self,
        env: simpy.Environment,
        *,
        speed: float | None = 1.0,
        clock: Clock = time.monotonic,
        sleep: SleepFn = asyncio.sleep,
        yield_every: int = 256,
        fast_slice_s: float = 0.002,
    ) -> None:
        if speed is not None and (speed < 0 or not math.isfinite(speed)):
            raise ValueError(f"speed must be >= 0 and finite, or None; got {speed}")
        if yield_every < 1:
            raise ValueError(f"yield_every must be >= 1, got {yield_every}")
        self.env = env
        self._speed = speed
        self._clock = clock
        self._sleep = sleep
        self._yield_every = yield_every
        if not fast_slice_s > 0:
            raise ValueError(f"fast_slice_s must be > 0, got {fast_slice_s}")
        self._fast_slice_s = fast_slice_s
        self._anchor_h = float(env.now)
        self._anchor_s = clock()
        self._wake = asyncio.Event()
        # The event time `run` sleeps until (inf: waits for a wake); -inf while it is not
        # sleeping, so any call re-plans.
        self._planned_h = -math.inf
        self._stopping = False
        self.events_processed = 0
        # Simulated seconds the rig has jumped (advance_to/advance_by) beyond the real-time
        # flow: link clocks add it, so a telemetry session idles across a jump.
        self.skipped_s = 0.0

    @property
    def speed(self) -> float | None:
        """Simulated seconds per real second; 0 = stepped; None = as fast as possible."""
        return self._speed

    def set_speed(self, speed: float | None) -> None:
        """Change the speed from now on (simulated time does not jump)."""
        if speed is not None and (speed < 0 or not math.isfinite(speed)):
            raise ValueError(f"speed must be >= 0 and finite, or None; got {speed}")
        self._reanchor(self.now_h())
        self._speed = speed
        self.wake()

    def _reanchor(self, t_h: float) -> None:
        self._anchor_h = t_h
        self._anchor_s = self._clock()

    def now_h(self) -> float:
        """The simulated time (hours) that corresponds to the current real time."""
        if self._speed is None:
            return float(self.env.now)
        t = self._anchor_h + real_to_sim_h(self._clock() - self._anchor_s, self._speed)
        return max(t, float(self.env.now))

    def _advance(self, target_h: float, stop: Callable[[], bool] | None = None) -> None:
        """Process every event at or before ``target_h``, then set ``env.now`` to it.

        With ``stop``, return as soon as it is true after an event (``env.now`` stays there).
        """
        env = self.env
        while env.peek() <= target_h:
            env.step()
            self.events_processed += 1
            if stop is not None and stop():
                return
        if target_h > env.now:
            _jump(env, target_h)

    def sync(self) -> float:
        """Bring the environment to :meth:`now_h` (events due so far run first); return it.

        Call before an external event acts on the model. In as-fast-as-possible mode the
        simulated time is whatever the environment has reached.
        """
        target = self.now_h()
        self._advance(target)
        return float(self.env.now)

    def wake(self) -> None:
        """Make :meth:`run` re-plan (an external event may have scheduled an earlier event)."""
        self._wake.set()

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` at the current simulated time: sync, call, then wake :meth:`run` if
        ``fn`` scheduled an event earlier than the one it sleeps until."""
        self.sync()
        try:
            return fn()
        finally:
            # Most calls (a telemetry read) schedule nothing; waking the runner for them cost
            # two tasks and an asyncio.wait per request.
            if self.env.peek() < self._planned_h:
                self._wake.set()

    def wrap_handler(self, handler: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
        """A byte handler that acts at the current simulated time (for a transport)."""

        def synced(data: bytes, /) -> bytes:
            return self.call(lambda: handler(data))

        return synced

    def advance_to(self, t_h: float, stop: Callable[[], bool] | None = None) -> None:
        """Rig stepping: move simulated time to ``t_h`` now, running every event on the way
        (or only until ``stop()`` is true after an event).

        In real-time modes the clock mapping is re-anchored so time continues from there.
        """
        if not math.isfinite(t_h):
            raise ValueError(f"cannot advance to {t_h} h")
        if t_h < self.env.now:
            raise ValueError(f"cannot go back in time: {t_h} h < now {self.env.now} h")
        before_h = self.now_h()
        self._advance(max(before_h, float(self.env.now)))  # what real time already gave
        self._advance(t_h, stop)
        self.skipped_s += max(float(self.env.now) - before_h, 0.0) * SECONDS_PER_HOUR
        self._reanchor(float(self.env.now))
        self.wake()

    def advance_by(self, dt_h: float) -> None:
        """Rig stepping: :meth:`advance_to` ``now + dt_h``."""
        self.advance_to(max(self.now_h(), float(self.env.now)) + dt_h)

    def stop(self) -> None:
        """Make :meth:`run` return at its next wake-up (or at once if it has not started)."""
        self._stopping = True
        self.wake()

    async def run(self, until_h: float | None = None) -> None:
        """Drive the environment until ``until_h`` (or :meth:`stop`, or cancellation).

        At a positive speed, sleeps (through the injected ``sleep``) until the next event is
        due in real time, waking early on :meth:`wake`. Stepped (speed 0), waits for the rig.
        As fast as possible, steps and yields to the loop every ``yield_every`` events.
        """
        try:
            while not self._stopping:
                self._wake.clear()
                if self._speed is None:
                    if await self._run_fast_slice(until_h):
                        return
                    continue
                target = self.now_h()
                if until_h is not None:
                    target = min(target, until_h)
                self._advance(target)
                if until_h is not None and self.env.now >= until_h:
                    return
                t_next = self.env.peek()
                if until_h is not None:
                    t_next = min(t_next, until_h)
                if self._speed == 0 or math.isinf(t_next):
                    await self._wait_for_wake(math.inf)
                    continue
                delay = sim_to_real_s(t_next - self.now_h(), self._speed)
                if delay <= _EPSILON_S:
                    self._advance(t_next)
                    await asyncio.sleep(0)  # stay fair to I/O even when events are back to back
                elif await self._sleep_or_wake(delay, t_next):
                    # Slept the whole way: t_next is due even if the clock rounds short
                    # (now_h() never reports less than env.now).
                    self._advance(t_next)
        finally:
            self._stopping = False

    async def _run_fast_slice(self, until_h: float | None) -> bool:
        """Step up to ``yield_every`` events, or for ``fast_slice_s`` of real time, whichever
        ends first; return True when the run is finished.

        The time bound keeps telemetry answered at ``--speed max`` whatever an event costs (256
        events of a 1000-pump farm took hundreds of ms)."""
        env = self.env
        clock = self._clock
        deadline_s = clock() + self._fast_slice_s
        for _ in range(self._yield_every):
            if clock() > deadline_s:
                break
            if self._stopping:
                return True
            t_next = env.peek()
            if until_h is not None and t_next > until_h:
                if until_h > env.now:
                    _jump(env, until_h)
                return True
            if math.isinf(t_next):
                await self._wait_for_wake(math.inf)
                return False
            env.step()
            self.events_processed += 1
        await asyncio.sleep(0)
        return False

    async def _wait_for_wake(self, planned_h: float) -> None:
        self._planned_h = planned_h
        try:
            await self._wake.wait()
        finally:
            self._planned_h = -math.inf

    async def _sleep_or_wake(self, delay_s: float, planned_h: float) -> bool:
        """Sleep ``delay_s`` (until the event at ``planned_h`` is due); return True if the
        sleep completed, False if woken first."""
        sleeper = asyncio.ensure_future(self._sleep(delay_s))
        waker = asyncio.ensure_future(self._wait_for_wake(planned_h))
        try:
            done, _ = await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()
        return sleeper in done and waker not in done
