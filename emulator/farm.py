"""Serve emulated pumps on ports: N pumps, one SimPy world, one runtime, one transport each.

This is what `itpump serve` runs; a rig can also use it directly from asyncio code and read
each pump's truth (`farm.pumps[i].pump.truth()`) while programmer software talks to it.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from itpump.emulator.capture import CaptureTap
from itpump.emulator.device_profile import DeviceProfile, load_profile
from itpump.emulator.faults import Fault, FaultError, FaultKind
from itpump.emulator.pk import Concentrations
from itpump.emulator.pump import CountingEnvironment, EmulatedPump, Truth
from itpump.emulator.runner import ScenarioRun
from itpump.emulator.runtime import SimRuntime
from itpump.emulator.scenario import Scenario
from itpump.emulator.state import StateFileError, StateStore
from itpump.emulator.telemetry import DIRECT_HEAD, TelemetryEndpoint
from itpump.emulator.transports import (
    LinkConfig,
    LinkEmulator,
    NullModem,
    PtyTransport,
    PumpTransport,
    Rfc2217Transport,
    TcpTransport,
)
from itpump.emulator.transports.base import ByteHandler
from itpump.firmware_stubs.firmware import PumpStatus
from itpump.protocol.auth import DEFAULT_MASTER_KEY, derive_pump_key, role_key
from itpump.protocol.codes import AlarmId
from itpump.protocol.messages import Role

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_WARMUP_H = 24.0
"""Simulated hours run before the ports open (`itpump serve --warmup`'s default)."""


class PortSpecError(ValueError):
    """A --port value that is not pty, tcp:PORT, rfc2217:PORT or null."""


@dataclass(frozen=True, slots=True)
class PortSpec:
    """Which transport to serve on; `port` is the first TCP port (0: any free port)."""

    kind: str
    port: int = 0

    @staticmethod
    def parse(text: str) -> PortSpec:
        """'pty', 'null', 'tcp:5000', 'rfc2217:0'."""
        kind, _, rest = text.partition(":")
        if kind in ("pty", "null") and not rest:
            return PortSpec(kind)
        if kind in ("tcp", "rfc2217"):
            try:
                port = int(rest or "0")
            except ValueError:
                port = -1
            if not 0 <= port <= 65535:
                raise PortSpecError(f"{text!r}: port must be 0..65535 (0 = any free port)")
            return PortSpec(kind, port)
        raise PortSpecError(f"{text!r}: use pty, tcp:PORT, rfc2217:PORT or null")


class _SyncedEndpoint:
    """The endpoint, acting at the runtime's current simulated time; keeps `link_closed`.

    `endpoint` is replaced when the pump behind it is (snapshot restore, reset); the
    transport keeps calling the same object.

    With `commit` set (a farm with a state file), the pump's state is committed after the
    endpoint answered a request and before the reply is returned to the transport: a reply
    leaves only once what it acknowledges is on disk. If the commit fails the pump stays
    silent (the programmer retransmits; the retransmission is answered only after a commit
    succeeds), so an acknowledgement never outruns the file.
    """

    def __init__(self, endpoint: TelemetryEndpoint, runtime: SimRuntime) -> None:
        self.endpoint = endpoint
        self._runtime = runtime
        self.commit: Callable[[], None] | None = None
        self._dirty = False
        self._head_ids = itertools.count(DIRECT_HEAD + 1)

    def __call__(self, data: bytes, /) -> bytes:
        return self._runtime.call(lambda: self._answer(DIRECT_HEAD, data))

    def open_head(self) -> _SyncedHead:
        """One client link's handler; it survives the endpoint being replaced."""
        return _SyncedHead(self, next(self._head_ids))

    def _answer(self, head: int, data: bytes) -> bytes:
        endpoint = self.endpoint
        answered = endpoint.requests_answered
        reply = endpoint.feed(head, data)
        if self.commit is None:
            return reply
        self._dirty = self._dirty or endpoint.requests_answered != answered
        if self._dirty and reply:
            try:
                self.commit()
            except Exception:
                log.exception("pump %s: state not committed; reply withheld", endpoint.pump.serial)
                return b""
            self._dirty = False
        return reply

    def link_closed(self) -> None:
        self.endpoint.link_closed()


class _SyncedHead:
    """One client link of a `_SyncedEndpoint`, addressed by id: a restore or reset replaces
    the endpoint (its heads start afresh, sessions ended), the transport keeps this object."""

    def __init__(self, synced: _SyncedEndpoint, head: int) -> None:
        self._synced = synced
        self.head = head

    def __call__(self, data: bytes, /) -> bytes:
        synced = self._synced
        return synced._runtime.call(lambda: synced._answer(self.head, data))

    def link_closed(self) -> None:
        self._synced.endpoint.close_head(self.head)


class SnapshotLimitError(RuntimeError):
    """The farm already keeps `PumpFarm.MAX_SNAPSHOTS` snapshots."""


@dataclass(frozen=True, slots=True)
class PumpSnapshot:
    """A pump's whole state at one instant (hardware, firmware memory, history, pending
    scenario actions), kept in memory by the farm; restore it any number of times.

    `state` is `ScenarioRun.to_bytes()`, the format `itpump serve --state` stores: write it
    to a file and `ScenarioRun.from_bytes` reads it back (trusted input only: a pickle).
    """

    id: str
    serial: str
    t_h: float  # pump-local simulated time when taken
    state: bytes

    @property
    def run(self) -> ScenarioRun:
        """A new detached run in the snapshot's state (each call decodes a fresh one)."""
        return ScenarioRun.from_bytes(self.state)


class ServedPump:
    """One pump, where it is served, and the rig's ways to read and change it.

    Every method acts at the current simulated time (through the runtime), so at any speed a
    rig reads and changes the pump as it is now, not as it was at the last SimPy event.
    `pump` is the raw model: reading it directly sees the time of the last event.
    """

    def __init__(
        self,
        farm: PumpFarm,
        run: ScenarioRun,
        handler: _SyncedEndpoint,
        transport: PumpTransport | NullModem,
        key: bytes,
        link: LinkEmulator,
        seed: int,
    ) -> None:
        self._farm = farm
        self.run = run
        self.handler = handler
        self.transport = transport
        self.device_key = key
        """The pump's own key (what its endpoint holds); never given to a programmer."""
        self.key = role_key(key, Role.CLINICIAN)
        """The clinician programmer's key for this pump (`itpump serve` prints it)."""
        self.patient_key = role_key(key, Role.PATIENT)
        """The patient programmer's key: it opens PATIENT sessions only."""
        self.link = link
        self.seed = seed

    @property
    def pump(self) -> EmulatedPump:
        """The raw pump model (see the class note on time)."""
        return self.run.pump

    @property
    def endpoint(self) -> TelemetryEndpoint:
        """The telemetry endpoint answering for the pump now."""
        return self.handler.endpoint

    @property
    def serial(self) -> str:
        """The pump's serial number."""
        return self.run.pump.serial

    @property
    def url(self) -> str:
        """What a programmer opens (`serial.serial_for_url`)."""
        return self.transport.url if isinstance(self.transport, PumpTransport) else "null://"

    def _call(self, fn: Callable[[], T]) -> T:
        return self._farm.runtime.call(fn)

    # ------------------------------------------------------------------ reading
    def truth(self) -> Truth:
        """The true state now: reservoir, fluid path, battery, faults, mass ledger."""
        return self._call(lambda: self.pump.truth())

    def concentrations(self) -> Concentrations | None:
        """The patient's true concentrations now (ng/mL), None without a patient model."""
        return self._call(lambda: self.pump.concentrations())

    def reported(self) -> PumpStatus:
        """What the pump would report at interrogation now (read without telemetry).

        Raises `PumpSilentError` when the pump has no power: it reports nothing then.
        """
        return self._call(lambda: self.pump.call(self.pump.firmware.status))

    def now_h(self) -> float:
        """The pump's own simulated time now (hours since its scenario started)."""
        return self._call(lambda: self.pump.now_h)

    # ------------------------------------------------------------------ changing
    def inject(self, kind: str, value: float | None = None) -> Fault:
        """Start a hardware fault now (`FaultError` names the parameter and range)."""
        fault = Fault.make(kind, value)
        self._call(lambda: self.pump.inject(fault))
        self._farm.commit(self)
        return fault

    def clear(self, kind: str) -> bool:
        """End a hardware fault now; returns whether it was active."""
        try:
            fault_kind = FaultKind(kind)
        except ValueError:
            allowed = ", ".join(k.value for k in FaultKind)
            raise FaultError(f"unknown fault kind {kind!r}; allowed: {allowed}") from None
        removed = self._call(lambda: self.pump.clear(fault_kind))
        self._farm.commit(self)
        return removed

    def lift_head(self) -> None:
        """Lift the telemetry head off the pump: bytes vanish both ways, the session ends."""
        self.link.drop()
        self._call(self.endpoint.link_closed)

    def place_head(self) -> None:
        """Put the telemetry head back: the programmer must identify and authenticate again."""
        self.link.restore()

    @property
    def head_placed(self) -> bool:
        """Whether the telemetry head is on the pump."""
        return not self.link.dropped

    def set_link_faults(
        self, *, corruption_rate: float | None = None, drop_rate: float | None = None
    ) -> LinkConfig:
        """Change the link's byte corruption and loss probabilities (each 0..1) from now on."""
        return self.link.set_faults(corruption_rate=corruption_rate, drop_rate=drop_rate)

    # ------------------------------------------------------------------ whole state
    def snapshot(self) -> PumpSnapshot:
        """Keep the pump's whole state now (see `restore`)."""
        return self._farm.take_snapshot(self)

    def restore(self, snapshot: PumpSnapshot) -> None:
        """Put the pump back into a snapshot's state; its own clock continues from the
        snapshot's time. The telemetry session ends, as at a power cycle."""
        if snapshot.serial != self.serial:
            raise ValueError(
                f"snapshot {snapshot.id} is of pump {snapshot.serial}, not {self.serial}"
            )
        self._replace(snapshot.run)

    def reset(self) -> None:
        """Replace the pump with a fresh one in its scenario's state after the farm's warm-up:
        same serial, key and port; the session ends."""
        self._replace(self._farm.build_run(self.seed, self.serial, warm=True))

    def _replace(self, run: ScenarioRun) -> None:
        farm = self._farm

        def swap() -> None:
            old = self.handler.endpoint
            self.run.detach()
            run.attach(farm.env)
            run.pump.on_alarm = farm.on_pump_alarm
            self.run = run
            self.handler.endpoint = farm.make_endpoint(run.pump, self.device_key)
            old.link_closed()

        self._call(swap)
        farm.commit(self)

    def describe(self) -> dict[str, Any]:
        """One JSON-able line for `itpump serve --json`."""
        path = getattr(self.transport, "path", None)
        return {
            "serial": self.serial,
            "model": self.pump.profile.model,
            "url": self.url,
            "path": None if path is None else str(path),
            "key": self.key.hex(),
            "patient_key": self.patient_key.hex(),
        }


@dataclass(frozen=True, slots=True)
class PumpAlarms:
    """Alarms one pump newly raised, and the pump's own time then."""

    serial: str
    alarms: tuple[str, ...]
    pump_t_h: float


@dataclass(frozen=True, slots=True)
class AlarmStop:
    """Where `PumpFarm.advance_until_alarm` stopped: the instant, and every pump (watched)
    that raised alarms at that instant."""

    t_h: float  # farm simulated time
    pumps: tuple[PumpAlarms, ...]

    @property
    def serial(self) -> str:
        """The first pump that raised an alarm."""
        return self.pumps[0].serial

    @property
    def alarms(self) -> tuple[str, ...]:
        """The alarms the first pump raised."""
        return self.pumps[0].alarms


DEFAULT_SAVE_EVERY_S = 5.0
"""Real seconds between saves of every pump while a farm with a state file runs."""

SAVE_BATCH = 32
"""Pumps saved per event-loop turn by the periodic save (about 1 ms each)."""

ADVANCE_SLICE_S = 0.02
"""Real seconds an advance runs before it lets the event loop serve telemetry and requests."""


class PumpFarm:
    """Builds the pumps and their transports; `run()` drives simulated time until stopped."""

    MAX_SNAPSHOTS = 256
    """Snapshots kept at once (each is a whole pump); delete one to take another."""

    history_days: float | None = 30.0
    """Simulated days of recorded history each served pump keeps (charts, concentrations from
    the history); older history is dropped in batches, so a pump holds at most about twice
    this. None keeps everything (~2 MB per pump-year). Read when a pump is built: set it on
    the class (or a subclass) before building a farm; `itpump simulate` keeps everything."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        count: int = 1,
        port: PortSpec | None = None,
        speed: float | None = 1.0,
        seed: int | None = None,
        link_path: str | None = None,
        link_config: LinkConfig | None = None,
        profile: DeviceProfile | None = None,
        master_key: bytes = DEFAULT_MASTER_KEY,
        allow_unauthenticated: bool | None = None,
        turnaround: bool = True,
        warmup_h: float = DEFAULT_WARMUP_H,
        pace: bool = False,
        clock: Callable[[], float] = time.monotonic,
        capture: str | Path | None = None,
        state: str | Path | None = None,
        save_every_s: float = DEFAULT_SAVE_EVERY_S,
        unclean_restart: Literal["resume", "power-on-reset"] = "resume",
    ) -> None:
        """`speed` is simulated seconds per real second (0: stepped by the rig, None: as
        fast as possible); `turnaround` applies the profile's reply turnaround delay (off:
        replies at once); `warmup_h` (default one day, as `itpump serve`) runs that much
        simulated time, as fast as possible, before anything is served, so the scenario's
        set-up is done when the first programmer connects; `pace` paces bytes at the
        profile's baud rate unless `link_config` sets one; `clock` is the real-time clock
        (seconds; injectable for tests); `capture` records every telemetry byte to that
        pcapng file (docs/capture.md).

        `state` keeps every pump's whole state in that SQLite file (`emulator/state.py`):
        when the file holds a farm, its clock and each stored pump (by serial) continue where
        they were committed, no warm-up; pumps not in it are built fresh, warmed up on their
        own. A pump is committed before each telemetry reply it sends, after each rig change,
        after each advance, every `save_every_s` real seconds while `run()` runs, and at
        `close()`. `StateFileError` for a file of another format or version.

        `unclean_restart` says what a file that was not closed by `close()` (the server was
        killed) means: "resume" every stored pump where it was committed, or
        "power-on-reset": the kill was a power loss, and each stored pump powers up again
        (`EmulatedPump.power_cycle`: a power-on reset if its profile has `power_on_reset`)."""
        if unclean_restart not in ("resume", "power-on-reset"):
            raise ValueError(
                f"unclean_restart must be 'resume' or 'power-on-reset' (got {unclean_restart!r})"
            )
        if not (warmup_h >= 0 and math.isfinite(warmup_h)):
            raise ValueError(f"warmup_h must be >= 0 and finite (got {warmup_h})")
        if count < 1:
            raise ValueError(f"count must be >= 1 (got {count})")
        if not save_every_s > 0:
            raise ValueError(f"save_every_s must be > 0 (got {save_every_s})")
        self.port = port or PortSpec("pty")
        self.scenario = scenario
        self.store = None if state is None else StateStore(state)
        self.save_every_s = save_every_s
        try:
            resumed_h = None if self.store is None else self.store.farm_h()
        except StateFileError:
            assert self.store is not None
            self.store.close()
            raise
        # A resumed farm's world starts at the committed clock: every pump's epoch, the
        # runtime's anchor and the rig's view of time continue from there.
        self.env = CountingEnvironment(resumed_h or 0.0)
        self.runtime = SimRuntime(self.env, speed=speed, clock=clock)
        self._clock = clock
        self.warmup_h = warmup_h
        # Read once: every pump of the farm plays the same scenario (a 1000-pump farm read
        # and validated the profile file 1000 times, a third of its start).
        self._profile = profile if profile is not None else load_profile(scenario.scenario.profile)
        self._master_key = master_key
        self._allow_unauthenticated = allow_unauthenticated
        self._turnaround = turnaround
        self._pace = pace
        self._link_config = link_config
        base_seed = scenario.scenario.seed if seed is None else seed
        self.pumps: list[ServedPump] = []
        self._by_serial: dict[str, ServedPump] = {}
        self._snapshots: dict[str, PumpSnapshot] = {}
        self._snapshot_counter = 0
        self._alarm_hits: list[PumpAlarms] = []
        self._alarm_hit_t_h = math.nan
        self._lock: asyncio.Lock | None = None
        self._watch_serial: str | None = None
        self._watching = False
        self._link_path = link_path
        self.capture = CaptureTap(lambda: float(self.env.now), lambda i: self.pumps[i].url)
        for i in range(count):
            header_serial = scenario.scenario.serial
            serial = f"{header_serial}-{i}" if header_serial and count > 1 else None
            run = (
                self.build_run(base_seed + i, serial, warm=False)
                if resumed_h is None
                else self._resumed_run(base_seed + i, serial)
            )
            pump = run.pump
            pump.on_alarm = self.on_pump_alarm
            key = derive_pump_key(master_key, pump.serial)
            emulation = self._link_emulation(pump.profile, seed=base_seed + i)
            synced = _SyncedEndpoint(self.make_endpoint(pump, key), self.runtime)
            # The transport calls the capture tap, which calls the synced endpoint; the served
            # pump keeps the synced endpoint, whose endpoint a restore or reset replaces.
            handler = self.capture.wrap(self.capture.add_pump(pump.serial), synced)
            served = ServedPump(
                self,
                run,
                synced,
                self._transport(handler, i, count, emulation),
                key,
                emulation,
                base_seed + i,
            )
            synced.commit = functools.partial(self.commit, served)
            self.pumps.append(served)
            self._by_serial[pump.serial] = served
        if capture is not None:
            self.capture.start(capture)

        if (
            self.store is not None
            and resumed_h is not None
            and not self.store.was_clean
            and unclean_restart == "power-on-reset"
        ):
            for served in self.pumps:
                if self.store.load(served.serial) is not None:
                    served.pump.power_cycle()
        if warmup_h > 0 and resumed_h is None:
            self.runtime.advance_to(warmup_h)
            self.runtime.skipped_s = 0.0  # the warm-up happened before any session
        # Committed at once: a farm killed before its first request restarts from here.
        self.save_all()

    # ------------------------------------------------------------------ building
    def build_run(self, seed: int, serial: str | None, *, warm: bool) -> ScenarioRun:
        """A pump's scenario run; `warm` runs it through the farm's warm-up on a world of its
        own (a reset pump), to be attached to the farm's world."""
        env = CountingEnvironment() if warm else self.env
        run = ScenarioRun(
            self.scenario,
            seed,
            self._profile,
            live_pk=True,
            env=env,
            serial=serial,
            history_window_h=None if self.history_days is None else self.history_days * 24.0,
        )
        if warm and self.warmup_h > 0:
            env.run(until=self.warmup_h)
            run.pump.truth()  # the hardware's own time is the pump's time when attached
        return run

    def _resumed_run(self, seed: int, serial: str | None) -> ScenarioRun:
        """The stored pump with this seed's serial, attached to the farm's world with its own
        clock continuing; a fresh warmed-up one when the file does not hold it."""
        assert self.store is not None
        found = ScenarioRun.serial_for(self.scenario, seed, self._profile, serial)
        data = self.store.load(found)
        if data is None:
            # Said, not silent: a file with a clock but without this pump (edited, or written
            # for a smaller --count or another scenario) starts it fresh from the scenario.
            log.warning(
                "%s: no stored state for pump %s: it starts fresh from the scenario",
                self.store.path,
                found,
            )
            run = self.build_run(seed, serial, warm=True)
        else:
            try:
                run = ScenarioRun.from_bytes(data)
            except Exception as exc:
                raise StateFileError(
                    f"{self.store.path}: pump {found}: stored state unreadable by this itpump "
                    f"({type(exc).__name__}: {exc})"
                ) from None
        run.attach(self.env)
        return run

    # ------------------------------------------------------------------ persistence
    def commit(self, served: ServedPump) -> None:
        """Store `served`'s whole state now and the farm's clock (no-op without a state
        file); when this returns the state is in the file."""
        if self.store is not None:
            self._save((served,))

    def save_all(self) -> None:
        """Store every pump's whole state now in one transaction (no-op without a file)."""
        if self.store is not None:
            self._save(self.pumps)

    def _save(self, pumps: tuple[ServedPump, ...] | list[ServedPump]) -> None:
        store = self.store
        assert store is not None

        def collect() -> tuple[float, list[tuple[str, float, bytes]]]:
            rows = [(p.serial, p.pump.now_h, p.run.to_bytes()) for p in pumps]
            return float(self.env.now), rows

        farm_h, rows = self.runtime.call(collect)
        store.save(farm_h, rows)

    async def _save_periodically(self) -> None:
        # Time alone changes pumps (delivery, battery, alarms): without a request to commit
        # them, they are saved every `save_every_s` real seconds, a few pumps per loop turn
        # so that a large farm does not hold up telemetry. A pass is skipped when simulated
        # time has not moved (stepped: requests and advances commit what changed), and the
        # wait grows with the pass's cost so saving takes at most ~10 % of the loop (about
        # 1-2 ms a pump: 1000 pumps are saved every 10-20 s, not every 5 s).
        wait_s = self.save_every_s
        saved_at_h = float(self.env.now)
        while True:
            await asyncio.sleep(wait_s)
            if self.runtime.now_h() == saved_at_h:
                continue
            saved_at_h = self.runtime.now_h()
            started = time.perf_counter()
            for start in range(0, len(self.pumps), SAVE_BATCH):
                self._save(self.pumps[start : start + SAVE_BATCH])
                await asyncio.sleep(0)
            wait_s = max(self.save_every_s, 9.0 * (time.perf_counter() - started))

    def make_endpoint(self, pump: EmulatedPump, key: bytes) -> TelemetryEndpoint:
        """A telemetry endpoint for `pump`; its session clock jumps when the rig advances
        time, so an idle session times out across a jump as it would on a real pump."""
        runtime, clock = self.runtime, self._clock
        return TelemetryEndpoint(
            pump,
            key,
            allow_unauthenticated=self._allow_unauthenticated,
            link_clock=lambda: clock() + runtime.skipped_s,
        )

    def _link_emulation(self, profile: DeviceProfile, *, seed: int) -> LinkEmulator:
        # Every pump gets a link emulator, even without delays, so a rig can always lift the
        # head or add corruption at run time.
        config = self._link_config or LinkConfig(seed=seed)
        if self._pace and config.baud is None:
            config = replace(config, baud=profile.telemetry.baud)
        turnaround_s = profile.telemetry.turnaround_ms / 1000.0 if self._turnaround else 0.0
        return LinkEmulator(replace(config, turnaround_s=max(config.turnaround_s, turnaround_s)))
    # ------------------------------------------------------------------ the rig's view
    def pump(self, serial: str) -> ServedPump:
        """The served pump with this serial (KeyError names the known ones)."""
        try:
            return self._by_serial[serial]
        except KeyError:
            known = ", ".join(sorted(self._by_serial)[:10])
            shown = serial if len(serial) <= 64 else serial[:64] + "..."
            raise KeyError(f"no pump with serial {shown!r} (served: {known})") from None

    def now_h(self) -> float:
        """Farm simulated time now (hours; each pump's own clock may differ after a reset)."""
        return self.runtime.call(lambda: float(self.env.now))

    def set_speed(self, speed: float | None) -> None:
        """Simulated seconds per real second from now on; 0 = stepped, None = max."""
        self.runtime.set_speed(speed)

    def advance(self, hours: float) -> float:
        """Run `hours` of simulated time now, every event on the way; returns the new time.

        Blocking: nothing else runs on the loop meanwhile (see `advance_async`).
        """
        _check_hours("hours", hours)
        self.runtime.advance_by(hours)
        self.save_all()
        return float(self.env.now)

    def advance_until_alarm(
        self, limit_h: float, serial: str | None = None
    ) -> tuple[float, AlarmStop | None]:
        """Run simulated time until a pump (or the one named) raises an alarm, at most
        `limit_h` hours; returns the new time and where it stopped (None: the limit).

        Alarms raised at the current instant already (e.g. at an injection) do not count.
        """
        target = self._start_watch(limit_h, serial)
        try:
            self.runtime.advance_to(target, stop=lambda: bool(self._alarm_hits))
            stop = self._finish_watch()
            self.save_all()
            return float(self.env.now), stop
        finally:
            self._watching = False

    async def advance_async(self, hours: float, *, slice_s: float = ADVANCE_SLICE_S) -> float:
        """`advance`, in slices of about `slice_s` real seconds with the event loop served in
        between: telemetry frames and control requests are answered while simulated time
        passes, at the simulated time reached. Advances run one at a time."""
        _check_hours("hours", hours)
        async with self._advance_lock:
            target = max(self.runtime.now_h(), float(self.env.now)) + hours
            await self._advance_in_slices(target, slice_s, lambda: False)
            self.save_all()
            return float(self.env.now)

    async def advance_until_alarm_async(
        self, limit_h: float, serial: str | None = None, *, slice_s: float = ADVANCE_SLICE_S
    ) -> tuple[float, AlarmStop | None]:
        """`advance_until_alarm`, in slices (see `advance_async`)."""
        async with self._advance_lock:
            target = self._start_watch(limit_h, serial)
            try:
                await self._advance_in_slices(target, slice_s, lambda: bool(self._alarm_hits))
                stop = self._finish_watch()
                self.save_all()
                return float(self.env.now), stop
            finally:
                self._watching = False

    @property
    def _advance_lock(self) -> asyncio.Lock:
        # Created on first use: the farm may be built before its event loop runs.
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def _advance_in_slices(
        self, target_h: float, slice_s: float, done: Callable[[], bool]
    ) -> None:
        env, runtime = self.env, self.runtime
        deadline = [0.0]  # one cell, read by the stop test of the current slice

        def stop() -> bool:
            return done() or time.perf_counter() > deadline[0]

        while True:
            deadline[0] = time.perf_counter() + slice_s
            runtime.advance_to(max(target_h, float(env.now)), stop=stop)
            if done() or (env.now >= target_h and env.peek() > target_h):
                return
            await asyncio.sleep(0)  # one loop turn: frames and requests are served here

    def _start_watch(self, limit_h: float, serial: str | None) -> float:
        _check_hours("limit_h", limit_h)
        if serial is not None:
            self.pump(serial)  # unknown serial: KeyError before time moves
        self._alarm_hits = []
        self._watch_serial = serial
        self._watching = True
        return max(self.runtime.now_h(), float(self.env.now)) + limit_h

    def _finish_watch(self) -> AlarmStop | None:
        if not self._alarm_hits:
            return None
        env = self.env
        # Other pumps may alarm at the very same instant: let them, and report them all.
        while env.peek() <= env.now:
            env.step()
        hits, self._alarm_hits = self._alarm_hits, []
        return AlarmStop(float(env.now), tuple(hits))

    def on_pump_alarm(self, pump: EmulatedPump, new_ids: frozenset[int]) -> None:
        """Pump listener: a pump raised alarms (stops `advance_until_alarm`)."""
        if not self._watching:
            return
        if self._watch_serial is not None and pump.serial != self._watch_serial:
            return
        if self._alarm_hits and self._alarm_hit_t_h != float(self.env.now):
            return  # a later instant than the one already stopping the advance
        if not self._alarm_hits:
            self._alarm_hit_t_h = float(self.env.now)
        names = tuple(sorted(AlarmId(i).name.lower() for i in new_ids))
        self._alarm_hits.append(PumpAlarms(pump.serial, names, pump.now_h))

    def take_snapshot(self, served: ServedPump) -> PumpSnapshot:
        """Keep `served`'s whole state under a new id (`SnapshotLimitError` when full)."""
        if len(self._snapshots) >= self.MAX_SNAPSHOTS:
            raise SnapshotLimitError(
                f"the farm keeps at most {self.MAX_SNAPSHOTS} snapshots; delete one first"
            )
        t_h, state = self.runtime.call(lambda: (served.pump.now_h, served.run.to_bytes()))
        self._snapshot_counter += 1
        snap = PumpSnapshot(f"{served.serial}.{self._snapshot_counter}", served.serial, t_h, state)
        self._snapshots[snap.id] = snap
        return snap

    def snapshot(self, snapshot_id: str) -> PumpSnapshot:
        """A kept snapshot (KeyError when there is none with that id)."""
        try:
            return self._snapshots[snapshot_id]
        except KeyError:
            shown = snapshot_id if len(snapshot_id) <= 64 else snapshot_id[:64] + "..."
            raise KeyError(f"no snapshot {shown!r}") from None

    def snapshots(self) -> list[PumpSnapshot]:
        """Every kept snapshot, oldest first."""
        return list(self._snapshots.values())

    def delete_snapshot(self, snapshot_id: str) -> None:
        """Forget a snapshot (KeyError when there is none with that id)."""
        self.snapshot(snapshot_id)
        del self._snapshots[snapshot_id]

    def _transport(
        self, handler: ByteHandler, index: int, count: int, emulation: LinkEmulator | None
    ) -> PumpTransport | NullModem:
        kind = self.port.kind
        if kind == "pty":
            link = None
            if self._link_path:
                link = Path(
                    self._link_path.replace("{n}", str(index))
                    if "{n}" in self._link_path or count == 1
                    else f"{self._link_path}{index}"
                )
            return PtyTransport(handler, link=link, emulation=emulation)
        port = self.port.port + index if self.port.port else 0
        if kind == "tcp":
            return TcpTransport(handler, port=port, emulation=emulation)
        if kind == "rfc2217":
            return Rfc2217Transport(handler, port=port, emulation=emulation)
        return NullModem(handler, emulation=emulation)

    async def start(self) -> list[ServedPump]:
        """Open every port."""
        for served in self.pumps:
            if isinstance(served.transport, PumpTransport):
                await served.transport.start()
        return self.pumps

    async def run(self, until_h: float | None = None) -> None:
        """Drive simulated time (until `until_h`, `stop()` or cancellation); with a state
        file, every pump is also saved every `save_every_s` real seconds meanwhile."""
        if self.store is None:
            await self.runtime.run(until_h)
            return
        saver = asyncio.create_task(self._save_periodically())
        try:
            await self.runtime.run(until_h)
        finally:
            saver.cancel()

    def stop(self) -> None:
        """Make `run()` return."""
        self.runtime.stop()

    def start_capture(self, path: str | Path) -> None:
        """Record every telemetry byte of every pump to a new pcapng file (docs/capture.md)."""
        self.capture.start(path)

    def stop_capture(self) -> Path | None:
        """Finish the capture; returns its path (``None`` when none was running)."""
        return self.capture.stop()

    async def close(self) -> None:
        """Close every port (and remove symlinks); finish any capture; save every pump and
        close the state file."""
        self.capture.stop()
        for served in self.pumps:
            transport = served.transport
            if isinstance(transport, PumpTransport):
                await transport.close()
        if self.store is not None:
            self.save_all()  # after the ports: no request can change a pump any more
            self.store.mark_clean()
            self.store.close()
            self.store = None

    async def __aenter__(self) -> PumpFarm:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _check_hours(name: str, hours: float) -> None:
    if not (hours >= 0 and math.isfinite(hours)):
        raise ValueError(f"{name} must be >= 0 and finite (got {hours})")


async def serve_until_signalled(
    farm: PumpFarm,
    on_ready: Callable[[list[ServedPump], str | None], None] | None = None,
    *,
    control_port: int | None = None,
) -> None:
    """Start, call `on_ready(pumps, control_url)`, run until SIGINT/SIGTERM, close.

    With `control_port` (0 = a free port) the control API is served on 127.0.0.1 from the
    same event loop (`emulator.control`).
    """
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, farm.stop)
    control = None
    try:
        async with farm:
            if control_port is not None:
                from itpump.emulator.control.app import ControlServer

                control = ControlServer(farm, control_port)
                await control.start()
            if on_ready is not None:
                on_ready(farm.pumps, None if control is None else control.url)
            await farm.run()
    finally:
        if control is not None:
            await control.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
