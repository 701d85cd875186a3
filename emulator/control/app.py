"""The control API as an ASGI app (FastAPI) and the server that runs it on the pumps' loop.

Every route is a coroutine, so it runs on the event loop that serves the pumps, between two
telemetry frames, and calls the farm's own methods (which act at the current simulated time).
Nothing here runs in a thread pool: the SimPy world is never touched from two threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import socket
from collections.abc import Generator
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from itpump.emulator.control.dashboard import mount_dashboard
from itpump.emulator.control.schema import (
    DEFAULT_ALARM_LIMIT_H,
    AdvanceRequest,
    AdvanceResult,
    AlarmStopOut,
    CaptureOut,
    CaptureRequest,
    ClockState,
    ErrorOut,
    FaultRequest,
    FaultsOut,
    HeadOut,
    HeadRequest,
    LinkOut,
    LinkRequest,
    PumpInfo,
    ReportedOut,
    RestoreRequest,
    SnapshotOut,
    SpeedRequest,
    TruthOut,
)
from itpump.emulator.farm import PumpFarm, ServedPump, SnapshotLimitError
from itpump.emulator.faults import FaultKind
from itpump.emulator.pump import PumpSilentError

log = logging.getLogger(__name__)

API_VERSION = "1.0"

MAX_BODY_BYTES = 64 * 1024
"""Largest request body accepted: every request of the API is a few hundred bytes."""

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "no pump (or snapshot) by that name"},
}


class ControlRefused(Exception):
    """A request that is well-formed but cannot be done (404, 409)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _json_safe(value: Any) -> Any:
    # A rejected NaN or infinity must not break the error body (JSON has no such numbers).
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


def _same_origin(origin: SplitResult, target: SplitResult, loopback: set[str]) -> bool:
    # Only this server's own pages (the dashboard): a loopback host AND this port. A page of
    # another local server (another port) must not drive the pumps either.
    try:
        return (
            origin.scheme in ("http", "https")
            and origin.hostname in loopback
            and origin.port == target.port
            and not origin.path.strip("/")
        )
    except ValueError:  # a malformed port
        return False


def create_app(farm: PumpFarm) -> FastAPI:
    """The control API over `farm` (see docs/control.md)."""
    app = FastAPI(
        title="itpump control API",
        version=API_VERSION,
        description="Out-of-band control of emulated intrathecal pumps: simulated time, "
        "faults, the telemetry head, truth beside what the pump reports, snapshots. "
        "See docs/control.md.",
        # The interactive pages load scripts from a CDN; the API works offline without them.
        docs_url=None,
        redoc_url=None,
        # A trailing slash is a wrong path (404), not a redirect a client may not follow.
        redirect_slashes=False,
    )

    allowed_hosts = {"127.0.0.1", "localhost", "::1"}

    @app.middleware("http")
    async def _guard(request: Request, call_next: Any) -> Any:
        # Loopback only, and only for loopback pages: a web page elsewhere must not reach the
        # API through a browser (DNS rebinding: Host; cross-site requests: Origin).
        target = urlsplit(f"//{request.headers.get('host', '')}")
        host = target.hostname or ""
        if host not in allowed_hosts:
            return JSONResponse(status_code=421, content={"detail": f"host {host!r} refused"})
        origin = request.headers.get("origin")
        if origin is not None and not _same_origin(urlsplit(origin), target, allowed_hosts):
            return JSONResponse(status_code=403, content={"detail": "cross-origin request refused"})
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse(
                status_code=413,
                content={"detail": f"request body over {MAX_BODY_BYTES} bytes"},
            )
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for error in exc.errors():
            item = {k: error[k] for k in ("type", "loc", "msg") if k in error}
            if "input" in error:
                item["input"] = _json_safe(error["input"])
            if "ctx" in error:
                item["ctx"] = _json_safe(error["ctx"])
            if error.get("type") == "model_attributes_type" and tuple(error["loc"]) == ("body",):
                item["msg"] += " (send a JSON object with content-type: application/json)"
            errors.append(item)
        return JSONResponse(status_code=422, content={"detail": errors})

    @app.exception_handler(PumpSilentError)
    async def _silent(_request: Request, exc: PumpSilentError) -> JSONResponse:
        return JSONResponse(
            status_code=409,
            content={"detail": f"{exc}: it reports nothing (its truth is still readable)"},
        )

    @app.exception_handler(ControlRefused)
    async def _refused(_request: Request, exc: ControlRefused) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content={"detail": exc.detail})

    def pump(serial: str) -> ServedPump:
        try:
            return farm.pump(serial)
        except KeyError as exc:
            raise ControlRefused(404, exc.args[0]) from None

    def clock() -> ClockState:
        speed = farm.runtime.speed
        return ClockState(
            t_h=farm.now_h(), speed="max" if speed is None else speed, stepped=speed == 0
        )

    @app.get("/pumps", tags=["pumps"])
    async def list_pumps() -> list[PumpInfo]:
        """Every served pump: serial, model, port URL, key, its simulated time."""
        return [PumpInfo.of(served) for served in farm.pumps]

    @app.get("/pumps/{serial}", tags=["pumps"], responses=_ERRORS)
    async def get_pump(serial: str) -> PumpInfo:
        """One served pump."""
        return PumpInfo.of(pump(serial))

    @app.get("/clock", tags=["time"])
    async def get_clock() -> ClockState:
        """The farm's simulated time and speed."""
        return clock()

    @app.post("/clock/advance", tags=["time"], responses=_ERRORS)
    async def advance(body: AdvanceRequest) -> AdvanceResult:
        """Run simulated time now: `{"hours": H}`, or `{"until": "next_alarm"}` (at most
        `limit_hours`, default a year; `serial` watches one pump). Every event on the way
        happens, telemetry sessions included (an idle session times out). Telemetry and other
        requests are served while it runs, at the simulated time reached; advances run one
        at a time."""
        if body.hours is not None:
            return AdvanceResult(t_h=await farm.advance_async(body.hours), stopped_by="time")
        if body.serial is not None:
            pump(body.serial)
        limit_h = DEFAULT_ALARM_LIMIT_H if body.limit_hours is None else body.limit_hours
        t_h, stop = await farm.advance_until_alarm_async(limit_h, body.serial)
        if stop is None:
            return AdvanceResult(t_h=t_h, stopped_by="time")
        return AdvanceResult(t_h=t_h, stopped_by="alarm", alarm=AlarmStopOut.of(stop))

    @app.post("/clock/speed", tags=["time"])
    async def set_speed(body: SpeedRequest) -> ClockState:
        """Simulated seconds per real second from now on: a number, 0 (stepped), "max"."""
        farm.set_speed(None if body.speed == "max" else float(body.speed))
        return clock()

    @app.get("/pumps/{serial}/truth", tags=["pumps"], responses=_ERRORS)
    async def truth(serial: str) -> TruthOut:
        """What truly is now: reservoir, catheter contents, mass ledger, battery, faults,
        CSF/plasma/effect concentrations. Never sent over telemetry."""
        served = pump(serial)
        return TruthOut.of(served.truth(), served.concentrations())

    @app.get(
        "/pumps/{serial}/reported",
        tags=["pumps"],
        responses={**_ERRORS, 409: {"model": ErrorOut, "description": "the pump has no power"}},
    )
    async def reported(serial: str) -> ReportedOut:
        """What the pump would report at interrogation now, read without telemetry."""
        return ReportedOut.of(pump(serial).reported())

    @app.post("/pumps/{serial}/faults", tags=["faults"], responses=_ERRORS)
    async def inject(serial: str, body: FaultRequest) -> FaultsOut:
        """Start a hardware fault now."""
        served = pump(serial)
        served.inject(body.kind.value, body.value)
        return FaultsOut(faults=list(served.truth().faults), changed=True)

    @app.delete("/pumps/{serial}/faults/{kind}", tags=["faults"], responses=_ERRORS)
    async def clear(serial: str, kind: FaultKind) -> FaultsOut:
        """End a hardware fault now (`changed` is false if it was not active)."""
        served = pump(serial)
        changed = served.clear(kind.value)
        return FaultsOut(faults=list(served.truth().faults), changed=changed)

    @app.post("/pumps/{serial}/head", tags=["link"], responses=_ERRORS)
    async def head(serial: str, body: HeadRequest) -> HeadOut:
        """Place the telemetry head (bytes flow) or lift it (bytes vanish, session ends)."""
        served = pump(serial)
        if body.placed:
            served.place_head()
        else:
            served.lift_head()
        return HeadOut(placed=served.head_placed)

    def link_state(served: ServedPump) -> LinkOut:
        link = served.link
        return LinkOut(
            head_placed=served.head_placed,
            corruption_rate=link.config.corruption_rate,
            drop_rate=link.config.drop_rate,
            baud=link.config.baud,
            turnaround_s=link.config.turnaround_s,
            bytes_dropped=link.bytes_dropped,
            bytes_corrupted=link.bytes_corrupted,
        )

    @app.get("/pumps/{serial}/link", tags=["link"], responses=_ERRORS)
    async def get_link(serial: str) -> LinkOut:
        """The emulated link: head, fault rates, pacing, counters."""
        return link_state(pump(serial))

    @app.post("/pumps/{serial}/link", tags=["link"], responses=_ERRORS)
    async def set_link(serial: str, body: LinkRequest) -> LinkOut:
        """Link faults from now on: byte corruption and byte loss probabilities (0..1)."""
        served = pump(serial)
        served.set_link_faults(corruption_rate=body.corruption_rate, drop_rate=body.drop_rate)
        return link_state(served)

    snapshot_errors: dict[int | str, dict[str, Any]] = {
        **_ERRORS,
        409: {"model": ErrorOut, "description": "too many snapshots, or another pump's"},
    }

    @app.post("/pumps/{serial}/snapshot", tags=["state"], responses=snapshot_errors)
    async def snapshot(serial: str) -> SnapshotOut:
        """Keep the pump's whole state now; restore it later any number of times."""
        try:
            return SnapshotOut.of(pump(serial).snapshot())
        except SnapshotLimitError as exc:
            raise ControlRefused(409, str(exc)) from None

    @app.get("/snapshots", tags=["state"])
    async def list_snapshots() -> list[SnapshotOut]:
        """Every kept snapshot, oldest first."""
        return [SnapshotOut.of(s) for s in farm.snapshots()]

    @app.delete("/snapshots/{snapshot_id}", tags=["state"], responses=_ERRORS)
    async def delete_snapshot(snapshot_id: str) -> list[SnapshotOut]:
        """Forget a snapshot; returns those still kept."""
        try:
            farm.delete_snapshot(snapshot_id)
        except KeyError as exc:
            raise ControlRefused(404, exc.args[0]) from None
        return [SnapshotOut.of(s) for s in farm.snapshots()]

    @app.post("/pumps/{serial}/restore", tags=["state"], responses=snapshot_errors)
    async def restore(serial: str, body: RestoreRequest) -> PumpInfo:
        """Put the pump back into a snapshot's state (its clock continues from the snapshot's
        time); the telemetry session ends as at a power cycle."""
        served = pump(serial)
        try:
            snap = farm.snapshot(body.snapshot)
        except KeyError as exc:
            raise ControlRefused(404, exc.args[0]) from None
        if snap.serial != served.serial:
            raise ControlRefused(
                409, f"snapshot {snap.id} is of pump {snap.serial}, not {served.serial}"
            )
        served.restore(snap)
        return PumpInfo.of(served)

    @app.post("/pumps/{serial}/reset", tags=["state"], responses=_ERRORS)
    async def reset(serial: str) -> PumpInfo:
        """Replace the pump with a fresh one in its scenario's state after the warm-up (same
        serial, key and port); the telemetry session ends."""
        served = pump(serial)
        served.reset()
        return PumpInfo.of(served)

    def capture_state(path: Path | None = None) -> CaptureOut:
        tap = farm.capture
        current = tap.path
        shown = current if current is not None else path
        return CaptureOut(
            capturing=current is not None,
            path=None if shown is None else str(shown),
            packets_written=tap.packets_written,
        )

    @app.get("/capture", tags=["capture"])
    async def get_capture() -> CaptureOut:
        """Whether every telemetry byte is being recorded, and where."""
        return capture_state()

    @app.post(
        "/capture",
        tags=["capture"],
        responses={
            400: {"model": ErrorOut, "description": "not absolute, exists, or cannot be written"}
        },
    )
    async def start_capture(body: CaptureRequest) -> CaptureOut:
        """Record every telemetry byte of every pump, both ways, to a new pcapng file (a
        running capture is finished first). Open it in Wireshark or with `itpump decode`."""
        target = Path(body.path)
        if not target.is_absolute():
            raise ControlRefused(400, f"path: give an absolute path (got {body.path!r})")
        if target.exists():
            # The API must not become a way to truncate files: name a new one.
            raise ControlRefused(400, f"path: {body.path!r} exists; name a new file")
        try:
            farm.start_capture(target)
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ControlRefused(400, f"path: cannot write {body.path!r}: {why}") from None
        return capture_state()

    @app.delete("/capture", tags=["capture"])
    async def stop_capture() -> CaptureOut:
        """Finish the capture; `path` names the finished file."""
        return capture_state(farm.stop_capture())

    # The web pages at / (docs/dashboard.md): same server, same loop, not in the OpenAPI.
    mount_dashboard(app, farm)
    return app


class _LoopServer(uvicorn.Server):
    """uvicorn on a loop it does not own: signals stay with the host (`itpump serve`)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class ControlServer:
    """Serves the control API on 127.0.0.1 from the running event loop."""

    def __init__(self, farm: PumpFarm, port: int = 0, host: str = "127.0.0.1") -> None:
        """`port` 0 picks a free port. Loopback only by default: the API changes therapy."""
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535 (got {port})")
        self.app = create_app(farm)
        self._host = host
        self._port = port
        self._socket: socket.socket | None = None
        self._server: _LoopServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """Base URL of the API (after `start`)."""
        if self._socket is None:
            raise RuntimeError("the control server is not started")
        host, port = self._socket.getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> str:
        """Bind and serve; returns the base URL once requests are accepted."""
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on accepted sockets whose
        # proto says TCP; with proto 0 every answer waited ~40 ms for a delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError:
            sock.close()
            raise
        sock.listen(64)
        sock.setblocking(False)
        self._socket = sock
        config = uvicorn.Config(
            self.app, lifespan="off", log_level="warning", access_log=False, log_config=None
        )
        self._server = _LoopServer(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve([sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError("the control server stopped while starting")
            await asyncio.sleep(0.01)  # uvicorn has no started event to await
        return self.url

    async def close(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        if self._socket is not None:
            self._socket.close()
        self._server = self._task = None
