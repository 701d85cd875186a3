"""Serve emulated pumps on ports: N pumps, one SimPy world, one runtime, one transport each.

This is what `itpump serve` runs; a rig can also use it directly from asyncio code and read
each pump's truth (`farm.pumps[i].pump.truth()`) while programmer software talks to it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from emulator.capture import CaptureTap
from emulator.device_profile import DeviceProfile
from emulator.pump import CountingEnvironment, EmulatedPump
from emulator.runner import ScenarioRun
from emulator.runtime import SimRuntime
from emulator.scenario import Scenario
from emulator.telemetry import DEFAULT_MASTER_KEY, TelemetryEndpoint, pump_key
from emulator.transports import (
    LinkConfig,
    LinkEmulator,
    NullModem,
    PtyTransport,
    PumpTransport,
    Rfc2217Transport,
    TcpTransport,
)
from emulator.transports.base import ByteHandler

log = logging.getLogger(__name__)


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
    """The endpoint, acting at the runtime's current simulated time; keeps `link_closed`."""

    def __init__(self, endpoint: TelemetryEndpoint, runtime: SimRuntime) -> None:
        self.endpoint = endpoint
        self._runtime = runtime

    def __call__(self, data: bytes, /) -> bytes:
        return self._runtime.call(lambda: self.endpoint(data))

    def link_closed(self) -> None:
        self.endpoint.link_closed()


@dataclass(slots=True)
class ServedPump:
    """One pump and where it is served."""

    pump: EmulatedPump
    endpoint: TelemetryEndpoint
    transport: PumpTransport | NullModem
    key: bytes
    link: LinkEmulator | None

    @property
    def url(self) -> str:
        """What a programmer opens (`serial.serial_for_url`)."""
        return self.transport.url if isinstance(self.transport, PumpTransport) else "null://"

    def lift_head(self) -> None:
        """Lift the telemetry head off the pump: bytes vanish both ways, the session ends."""
        if self.link is None:
            raise RuntimeError("this pump is served without link emulation (turnaround=False)")
        self.link.drop()
        self.endpoint.link_closed()

    def place_head(self) -> None:
        """Put the telemetry head back: the programmer must identify and authenticate again."""
        if self.link is None:
            raise RuntimeError("this pump is served without link emulation (turnaround=False)")
        self.link.restore()

    def describe(self) -> dict[str, Any]:
        """One JSON-able line for `itpump serve --json`."""
        path = getattr(self.transport, "path", None)
        return {
            "serial": self.pump.serial,
            "model": self.pump.profile.model,
            "url": self.url,
            "path": None if path is None else str(path),
            "key": self.key.hex(),
        }


class PumpFarm:
    """Builds the pumps and their transports; `run()` drives simulated time until stopped."""

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
        warmup_h: float = 0.0,
        pace: bool = False,
        capture: str | Path | None = None,
    ) -> None:
        """`turnaround` applies the profile's reply turnaround delay (off: replies at once);
        `warmup_h` runs that much simulated time, as fast as possible, before anything is
        served (so the scenario's set-up is done when the first programmer connects); `pace`
        paces bytes at the profile's baud rate unless `link_config` sets one; `capture` records
        every telemetry byte to that pcapng file (docs/capture.md)."""
        if warmup_h < 0:
            raise ValueError(f"warmup_h must be >= 0 (got {warmup_h})")
        if count < 1:
            raise ValueError(f"count must be >= 1 (got {count})")
        self.port = port or PortSpec("pty")
        self.env = CountingEnvironment()
        self.runtime = SimRuntime(self.env, speed=speed)
        base_seed = scenario.scenario.seed if seed is None else seed
        self.pumps: list[ServedPump] = []
        self._link_path = link_path
        self.capture = CaptureTap(lambda: float(self.env.now), lambda i: self.pumps[i].url)
        for i in range(count):
            header_serial = scenario.scenario.serial
            serial = f"{header_serial}-{i}" if header_serial and count > 1 else None
            run = ScenarioRun(
                scenario, base_seed + i, profile, live_pk=True, env=self.env, serial=serial
            )
            pump = run.pump
            key = pump_key(pump.serial, master_key)
            endpoint = TelemetryEndpoint(pump, key, allow_unauthenticated=allow_unauthenticated)
            emulation = None
            turnaround_s = pump.profile.telemetry.turnaround_ms / 1000.0 if turnaround else 0.0
            config = link_config or LinkConfig()
            if pace and config.baud is None:
                config = replace(config, baud=pump.profile.telemetry.baud)
            if link_config is not None or turnaround_s or pace:
                emulation = LinkEmulator(
                    replace(config, turnaround_s=max(config.turnaround_s, turnaround_s))
                )
            tap = self.capture.add_pump(pump.serial)
            handler = self.capture.wrap(tap, _SyncedEndpoint(endpoint, self.runtime))
            self.pumps.append(
                ServedPump(
                    pump, endpoint, self._transport(handler, i, count, emulation), key, emulation
                )
            )
        if capture is not None:
            self.capture.start(capture)

        if warmup_h > 0:
            self.runtime.advance_to(warmup_h)

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
        """Drive simulated time (until `until_h`, `stop()` or cancellation)."""
        await self.runtime.run(until_h)

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
        """Close every port (and remove symlinks); finish any capture."""
        self.capture.stop()
        for served in self.pumps:
            transport = served.transport
            if isinstance(transport, PumpTransport):
                await transport.close()

    async def __aenter__(self) -> PumpFarm:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def serve_until_signalled(farm: PumpFarm, on_ready: Any = None) -> None:
    """Start, call `on_ready(pumps)`, run until SIGINT/SIGTERM, close."""
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, farm.stop)
    try:
        async with farm:
            if on_ready is not None:
                on_ready(farm.pumps)
            await farm.run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
