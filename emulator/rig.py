"""Serve pumps to a test, on a thread of their own or on the test's event loop.

This is the engine behind the pytest plugin (:mod:`emulator.pytest_plugin`), usable without
pytest too::

    from itpump.emulator.rig import RigOptions, serve_in_thread
    from itpump.programmer import PumpClient

    with serve_in_thread(RigOptions()) as rig:      # one pump, tcp, stepped time
        pump = rig.pumps[0]
        with PumpClient(pump.url, key=pump.key) as client:
            client.connect()
        pump.advance(24.0)

Thread model: a :class:`~emulator.farm.PumpFarm` and its transports belong to one asyncio
loop, and every read or change of the pumps must happen on that loop's thread (the runtime's
wake-up event and the transports are not thread-safe). :class:`RigPump` and :class:`RigFarm`
are thin handles: each method sends the farm's own method to the loop's thread and waits for
its result (or exception), so there is one implementation (the farm's) and no data race with
the I/O the loop serves meanwhile. Called on the loop's thread itself, they run at once.

- :func:`serve_in_thread`: a new loop on a background thread; blocking software under test
  (pyserial code) opens the port from the test's thread.
- :func:`serve_on_loop`: the farm on the running loop (an asyncio test); blocking code must
  run in a worker thread (``asyncio.to_thread``), and handles called there hop to the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from itpump.emulator.device_profile import ProfileError, load_profile
from itpump.emulator.farm import (
    DEFAULT_WARMUP_H,
    AlarmStop,
    PortSpec,
    PortSpecError,
    PumpFarm,
    PumpSnapshot,
    ServedPump,
)
from itpump.emulator.faults import Fault
from itpump.emulator.pk import Concentrations
from itpump.emulator.pump import Truth
from itpump.emulator.scenario import ScenarioError, load_scenario, parse_duration_h
from itpump.emulator.transports import LinkConfig
from itpump.firmware_stubs.firmware import PumpStatus

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_SCENARIO = "clinic-ready"
"""What each pump plays unless told otherwise (`itpump serve`'s default too)."""

DEFAULT_PORT = "tcp"
"""tcp: pyserial opens ``socket://127.0.0.1:PORT`` on every platform, with no terminal
settings to get wrong, and port 0 lets parallel test processes each take a free port."""

MAX_COUNT = 1000

_PORT_FORMS = "tcp, pty, rfc2217, tcp:PORT or rfc2217:PORT (PORT 0 = a free port)"


class RigOptionError(ValueError):
    """An option value the rig cannot use; the message names the option and what is allowed."""


class RigClosedError(RuntimeError):
    """A handle was used after its rig was shut down (e.g. kept past the end of its test)."""


@dataclass(frozen=True, slots=True)
class RigOptions:
    """How to build the pumps of one rig. Use :meth:`from_values` for checked values."""

    scenario: str = DEFAULT_SCENARIO
    """Shipped scenario name or path to a scenario TOML file."""
    profile: str | None = None
    """Device profile name or TOML path; None: the scenario's."""
    port: str = DEFAULT_PORT
    """Transport: tcp, pty (POSIX), rfc2217, optionally with a first port: tcp:7000."""
    speed: float | None = 0.0
    """Simulated seconds per real second; 0: stepped (time moves only by `advance`); None:
    as fast as possible."""
    count: int = 1
    """Number of pumps (serials differ; pump i has seed + i)."""
    warmup_h: float = DEFAULT_WARMUP_H
    """Simulated hours run before the ports open, so the scenario's set-up is done."""
    seed: int | None = None
    """Seed of pump 0; None: the scenario's."""
    pace: bool = False
    """Pace bytes at the profile's baud rate (off: bytes go as fast as the host allows)."""

    NAMES = ("scenario", "profile", "port", "speed", "count", "warmup", "seed", "pace")
    """Option names as written in a marker (`warmup` is a duration, stored as `warmup_h`)."""

    @classmethod
    def from_values(
        cls,
        values: dict[str, object],
        *,
        base: RigOptions | None = None,
        source: str = "option",
        base_dir: Path | None = None,
    ) -> RigOptions:
        """`base` with `values` (marker-style names) applied, each checked.

        `source` prefixes every message (e.g. "ini itpump_" or "@pytest.mark.itpump "):
        a bad value raises :class:`RigOptionError` naming the option, the value and what is
        allowed. Relative scenario and profile paths are resolved against `base_dir`.
        """
        options = base or cls()
        unknown = sorted(set(values) - set(cls.NAMES))
        if unknown:
            raise RigOptionError(
                f"{source}{unknown[0]}: unknown option; allowed: {', '.join(cls.NAMES)}"
            )
        changes: dict[str, Any] = {}
        for name, value in values.items():
            try:
                field, parsed = _PARSERS[name](value, base_dir)
            except (ValueError, TypeError) as exc:
                raise RigOptionError(f"{source}{name}={value!r}: {exc}") from None
            changes[field] = parsed
        return replace(options, **changes)

    def port_spec(self) -> PortSpec:
        """The transport as the farm takes it."""
        return PortSpec.parse(self.port)

    def build_farm(self) -> PumpFarm:
        """A farm with these options, warmed up (call on the loop that will serve it)."""
        profile = None if self.profile is None else load_profile(self.profile)
        return PumpFarm(
            load_scenario(self.scenario, profile),
            count=self.count,
            port=self.port_spec(),
            speed=self.speed,
            seed=self.seed,
            profile=profile,
            warmup_h=self.warmup_h,
            pace=self.pace,
        )


def _resolve(value: str, base_dir: Path | None) -> str:
    """A file path relative to `base_dir` if such a file exists there; otherwise as given
    (a shipped name, or a path relative to the working directory)."""
    if base_dir is not None and not Path(value).is_absolute():
        candidate = base_dir / value
        if candidate.is_file():
            return str(candidate)
    return value


def _parse_scenario(value: object, base_dir: Path | None) -> tuple[str, object]:
    if not isinstance(value, str) or not value:
        raise ValueError("give a shipped scenario name (e.g. 'clinic-ready') or a .toml path")
    resolved = _resolve(value, base_dir)
    try:
        load_scenario(resolved)  # refuse a bad file before any test runs with it
    except ScenarioError as exc:
        raise ValueError(str(exc)) from None
    return "scenario", resolved


def _parse_profile(value: object, base_dir: Path | None) -> tuple[str, object]:
    if value is None or value == "":
        return "profile", None
    if not isinstance(value, str):
        raise ValueError("give a profile name (e.g. 'peristaltic-20') or a .toml path")
    resolved = _resolve(value, base_dir)
    try:
        load_profile(resolved)
    except ProfileError as exc:
        raise ValueError(str(exc)) from None
    return "profile", resolved


def _parse_port(value: object, base_dir: Path | None) -> tuple[str, object]:
    if not isinstance(value, str):
        raise ValueError(f"use {_PORT_FORMS}")
    try:
        spec = PortSpec.parse(value)
    except PortSpecError:
        raise ValueError(f"use {_PORT_FORMS}") from None
    if spec.kind == "null":
        raise ValueError(f"null has no URL a programmer can open; use {_PORT_FORMS}")
    if spec.kind == "pty" and os.name != "posix":
        raise ValueError("pty needs a POSIX system; use tcp (socket://) here")
    return "port", value


def _parse_speed(value: object, base_dir: Path | None) -> tuple[str, object]:
    if value is None or value == "max":
        return "speed", None
    speed = _number(value, "a number >= 0 (simulated s per real s; 0 = stepped) or 'max'")
    if speed < 0:
        raise ValueError("must be >= 0 (0 = stepped) or 'max'")
    return "speed", speed


def _parse_count(value: object, base_dir: Path | None) -> tuple[str, object]:
    count = _integer(value, f"a whole number 1..{MAX_COUNT}")
    if not 1 <= count <= MAX_COUNT:
        raise ValueError(f"must be 1..{MAX_COUNT}")
    return "count", count


def _parse_warmup(value: object, base_dir: Path | None) -> tuple[str, object]:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("give a duration such as '1d', '36h', '0' or a number of hours")
    hours = parse_duration_h(value)
    if not (hours >= 0 and math.isfinite(hours)):
        raise ValueError("must be a duration >= 0, e.g. '1d', '36h', '0'")
    return "warmup_h", hours


def _parse_seed(value: object, base_dir: Path | None) -> tuple[str, object]:
    if value is None or value == "":
        return "seed", None
    seed = _integer(value, "a whole number >= 0")
    if seed < 0:
        raise ValueError("must be >= 0")
    return "seed", seed


def _parse_pace(value: object, base_dir: Path | None) -> tuple[str, object]:
    if isinstance(value, bool):
        return "pace", value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return "pace", value.lower() in ("true", "1", "yes")
    raise ValueError("use true or false")


def _number(value: object, what: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"use {what}")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"use {what}") from None
    else:
        raise ValueError(f"use {what}")
    if not math.isfinite(number):
        raise ValueError(f"use {what}")
    return number


def _integer(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"use {what}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    raise ValueError(f"use {what}")


_PARSERS: dict[str, Callable[[object, Path | None], tuple[str, object]]] = {
    "scenario": _parse_scenario,
    "profile": _parse_profile,
    "port": _parse_port,
    "speed": _parse_speed,
    "count": _parse_count,
    "warmup": _parse_warmup,
    "seed": _parse_seed,
    "pace": _parse_pace,
}


class FarmCaller:
    """Runs a function on the farm's loop thread and returns its result (or raises).

    On that thread it calls at once. From any other thread it schedules the call with
    ``call_soon_threadsafe`` and blocks on a future until the loop has run it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, thread_id: int) -> None:
        self._loop = loop
        self._thread_id = thread_id
        self._closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop that owns the farm."""
        return self._loop

    def close(self) -> None:
        """Refuse further calls (the rig is shutting down)."""
        self._closed = True

    def __call__(self, fn: Callable[[], T]) -> T:
        if self._closed:
            raise RigClosedError("this itpump rig is shut down (its test has ended)")
        if threading.get_ident() == self._thread_id:
            self._check_loop()
            return fn()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn())
            except BaseException as exc:  # the caller's thread re-raises it
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return future.result()

    def _check_loop(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return  # a plain call on the loop's thread between loop iterations: safe
        if running is not self._loop:
            raise RuntimeError(
                "this itpump rig belongs to another event loop than the one running now; "
                "with pytest-asyncio, use the async fixtures from tests with the function "
                "loop scope (the default), or use the sync fixtures"
            )


class RigPump:
    """One served pump, for a test: where to connect, and the rig's reads and changes.

    Every method runs the matching :class:`~emulator.farm.ServedPump` (or farm) method on the
    farm's loop thread, at the current simulated time. `url`, `key` and `serial` never change
    for the life of the rig (a reset keeps them).
    """

    def __init__(self, served: ServedPump, farm: PumpFarm, call: FarmCaller) -> None:
        self._served = served
        self._farm = farm
        self._call = call
        self.url: str = served.url
        """What the programmer opens (pyserial URL or PTY path)."""
        self.key: bytes = served.key
        """The clinician programmer's 32-byte key for this pump (see README, key formula)."""
        self.patient_key: bytes = served.patient_key
        """The patient programmer's key: it opens PATIENT sessions only."""
        self.serial: str = served.serial
        """The pump's serial number."""

    def __repr__(self) -> str:
        return f"RigPump(serial={self.serial!r}, url={self.url!r})"

    # ------------------------------------------------------------------ time
    def advance(self, hours: float) -> float:
        """Run `hours` of simulated time now, every event on the way (every pump of the
        rig moves); returns the farm's simulated time (h)."""
        return self._call(lambda: self._farm.advance(hours))

    def advance_until_alarm(self, limit_h: float) -> tuple[float, AlarmStop | None]:
        """Run simulated time until this pump raises an alarm, at most `limit_h` hours;
        returns the farm's time (h) and the alarm stop (None: the limit came first)."""
        return self._call(lambda: self._farm.advance_until_alarm(limit_h, serial=self.serial))

    def now_h(self) -> float:
        """The pump's own simulated time (hours since its scenario started)."""
        return self._call(self._served.now_h)

    # ------------------------------------------------------------------ reading
    def truth(self) -> Truth:
        """The true state now: reservoir (mL, mcg/mL), fluid path, battery, faults, ledger."""
        return self._call(self._served.truth)

    def reported(self) -> PumpStatus:
        """What the pump's firmware would report at interrogation now (no telemetry)."""
        return self._call(self._served.reported)

    def concentrations(self) -> Concentrations | None:
        """The patient's true concentrations now (ng/mL); None without a patient model."""
        return self._call(self._served.concentrations)

    # ------------------------------------------------------------------ changing
    def inject(self, kind: str, value: float | None = None) -> Fault:
        """Start a hardware fault now (`FaultError` names the parameter and its range)."""
        return self._call(lambda: self._served.inject(kind, value))

    def clear(self, kind: str) -> bool:
        """End a hardware fault now; returns whether it was active."""
        return self._call(lambda: self._served.clear(kind))

    def lift_head(self) -> None:
        """Lift the telemetry head: bytes vanish both ways and the session ends."""
        self._call(self._served.lift_head)

    def place_head(self) -> None:
        """Put the head back: the programmer must identify and authenticate again."""
        self._call(self._served.place_head)

    @property
    def head_placed(self) -> bool:
        """Whether the telemetry head is on the pump."""
        return self._call(lambda: self._served.head_placed)

    def set_link_faults(
        self, *, corruption_rate: float | None = None, drop_rate: float | None = None
    ) -> LinkConfig:
        """Byte corruption and loss probabilities (each 0..1) from now on."""
        return self._call(
            lambda: self._served.set_link_faults(
                corruption_rate=corruption_rate, drop_rate=drop_rate
            )
        )

    # ------------------------------------------------------------------ whole state
    def snapshot(self) -> PumpSnapshot:
        """The pump's whole state now, to `restore` any number of times."""
        return self._call(self._served.snapshot)

    def restore(self, snapshot: PumpSnapshot) -> None:
        """Put the pump back into `snapshot`'s state (the session ends, as at a power cycle)."""
        self._call(lambda: self._served.restore(snapshot))

    def reset(self) -> None:
        """A fresh pump in the scenario's state after the warm-up; same serial, key, url."""
        self._call(self._served.reset)

    # ------------------------------------------------------------------ escape hatch
    def run_on_farm(self, fn: Callable[[ServedPump], T]) -> T:
        """Call `fn(served_pump)` on the farm's thread, for what the handle does not wrap
        (the raw `ServedPump`, its model `.pump`, firmware settings)."""
        return self._call(lambda: fn(self._served))


class RigFarm:
    """All the pumps of one rig, and the farm-wide controls (time, speed)."""

    def __init__(self, farm: PumpFarm, call: FarmCaller) -> None:
        self._farm = farm
        self._call = call
        self.pumps: list[RigPump] = [RigPump(s, farm, call) for s in farm.pumps]
        """The pumps, in serial order of creation (pump i has seed + i)."""
        self._by_serial = {p.serial: p for p in self.pumps}

    def __repr__(self) -> str:
        return f"RigFarm(pumps={len(self.pumps)})"

    def __len__(self) -> int:
        return len(self.pumps)

    def __iter__(self) -> Iterator[RigPump]:
        return iter(self.pumps)

    def __getitem__(self, index: int) -> RigPump:
        return self.pumps[index]

    def pump(self, serial: str) -> RigPump:
        """The pump with this serial (KeyError names the served ones)."""
        try:
            return self._by_serial[serial]
        except KeyError:
            known = ", ".join(sorted(self._by_serial)[:10])
            raise KeyError(f"no pump with serial {serial!r} (served: {known})") from None

    def advance(self, hours: float) -> float:
        """Run `hours` of simulated time for every pump; returns the farm's time (h)."""
        return self._call(lambda: self._farm.advance(hours))

    def advance_until_alarm(
        self, limit_h: float, serial: str | None = None
    ) -> tuple[float, AlarmStop | None]:
        """Run until any pump (or the one named) raises an alarm, at most `limit_h` hours;
        returns the farm's time (h) and where it stopped (None: the limit)."""
        return self._call(lambda: self._farm.advance_until_alarm(limit_h, serial))

    def now_h(self) -> float:
        """The farm's simulated time (h)."""
        return self._call(self._farm.now_h)

    def set_speed(self, speed: float | None) -> None:
        """Simulated seconds per real second from now on; 0: stepped; None: as fast as
        possible."""
        self._call(lambda: self._farm.set_speed(speed))

    def run_on_farm(self, fn: Callable[[PumpFarm], T]) -> T:
        """Call `fn(farm)` on the farm's thread (the raw `PumpFarm`)."""
        return self._call(lambda: fn(self._farm))


async def _open(options: RigOptions) -> tuple[PumpFarm, asyncio.Task[None]]:
    """Build, warm up and open the farm on the running loop; start its time."""
    started_s = time.perf_counter()
    farm = options.build_farm()
    try:
        await farm.start()
    except BaseException:
        await farm.close()
        raise
    task = asyncio.get_running_loop().create_task(farm.run(), name="itpump farm")
    task.add_done_callback(_report_crash)
    log.debug(
        "rig up in %.1f ms: %s",
        (time.perf_counter() - started_s) * 1000.0,
        ", ".join(f"{p.serial} {p.url}" for p in farm.pumps),
    )
    return farm, task


def _report_crash(task: asyncio.Task[None]) -> None:
    # Said at once, not only at teardown: a test waiting on a dead pump sees why in the log.
    if not task.cancelled() and task.exception() is not None:
        log.error("itpump farm stopped with an error", exc_info=task.exception())


async def _close(farm: PumpFarm, task: asyncio.Task[None]) -> None:
    """Stop time, wait for the runner (re-raising its error, if any), close every port."""
    try:
        farm.stop()
        await task
    finally:
        await farm.close()


class _LoopThread:
    """An asyncio loop running forever on a daemon thread of its own."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()  # the thread id is known once the loop is about to run

    @property
    def ident(self) -> int:
        """The thread's id."""
        ident = self._thread.ident
        assert ident is not None  # started in __init__
        return ident

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            try:
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                self.loop.run_until_complete(self.loop.shutdown_default_executor())
            finally:
                self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        """Stop the loop, join the thread; the loop is closed when this returns."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()


@contextlib.contextmanager
def serve_in_thread(options: RigOptions) -> Iterator[RigFarm]:
    """Serve pumps from a loop on a background thread for the duration of the block.

    Leaving the block (normally or by an exception) stops time, closes every port, stops the
    loop and joins the thread; an error of the farm's runner is raised there.
    """
    thread = _LoopThread("itpump-farm")
    try:
        farm, task = thread.run(_open(options))
        caller = FarmCaller(thread.loop, thread.ident)
        try:
            yield RigFarm(farm, caller)
        finally:
            caller.close()
            thread.run(_close(farm, task))
    finally:
        thread.stop()


@contextlib.asynccontextmanager
async def serve_on_loop(options: RigOptions) -> AsyncIterator[RigFarm]:
    """Serve pumps on the running loop for the duration of the block (asyncio tests).

    Leaving the block stops time and closes every port; an error of the farm's runner is
    raised there.
    """
    farm, task = await _open(options)
    caller = FarmCaller(asyncio.get_running_loop(), threading.get_ident())
    try:
        yield RigFarm(farm, caller)
    finally:
        caller.close()
        await _close(farm, task)
