"""The live dashboard: web pages at `/` of the control server, updated by server-sent events.

Two pages, server-rendered (Jinja2), with one small script and a vendored chart library
(uPlot, MIT; `static/`), so the page works offline and needs no build step:

* `/` — every pump: serial, model, port, simulated time, therapy state, alarms, reservoir
  reported vs true, battery; filter and sort in the browser;
* `/ui/pumps/{serial}` — one pump: charts over simulated time, alarm timeline, the decoded
  telemetry conversation, the event log, and controls that call the control API (each shows
  the call it made).

Live updates are server-sent events (`/ui/events`), pulled, not pushed: each open page has a
loop that, at most every `interval_s`, reads the current state and sends only what changed
since its last message (at most `max_rows` rows; the rest follow in the next messages). No
queue grows when the browser is slow or the farm is busy: the newest state replaces any
unsent one. The rows of all pages come from one cache, computed at most once per interval,
and only for pumps whose state could have changed. Like every control route, this runs on
the farm's loop, between telemetry frames, in no thread.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import jinja2
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from itpump.emulator.capture import CaptureRecord
from itpump.emulator.control.views import (
    BANDS,
    ROW_SORT_KEYS,
    Row,
    conversation_view,
    event_log_view,
    filter_rows,
    history_view,
    overview_row,
    row_changes,
    sort_rows,
    summary,
)
from itpump.emulator.farm import PumpFarm, ServedPump
from itpump.emulator.faults import FAULT_PARAMETERS, FaultKind
from itpump.emulator.pump import PumpSilentError

__all__ = ["DashboardHub", "mount_dashboard"]

STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".LICENSE": "text/plain; charset=utf-8",
}

# Okabe & Ito's palette: distinguishable with every common colour-vision deficiency. The
# page names its colours from here (CSS variables), and reported vs true also differ by
# line style, so nothing depends on colour alone.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}


@dataclass(slots=True)
class _CachedRow:
    version: tuple[Any, ...]
    row: Row


@dataclass(slots=True)
class _Watch:
    """Telemetry of one pump kept for open pump pages (raw records; decoded when shown)."""

    records: deque[CaptureRecord]
    seen: int = 0  # records ever received: tells a page whether anything is new
    pages: int = 0


@dataclass(slots=True)
class StreamStats:
    """What the live streams sent (for the benchmark and tests)."""

    messages: int = 0
    bytes: int = 0
    rows_computed: int = 0
    row_passes: int = 0
    connections: int = 0
    open_streams: int = 0
    per_kind: dict[str, int] = field(default_factory=dict)


class DashboardHub:
    """The dashboard's state over a farm: cached rows, watched conversations, live streams."""

    YIELD_EVERY = 20
    """Rows read between two returns to the event loop (~4 ms of reading)."""

    def __init__(
        self,
        farm: PumpFarm,
        *,
        interval_s: float = 0.5,
        max_rows: int = 200,
        detail_interval_s: float = 1.0,
        history_points: int = 240,
        conversation_records: int = 400,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`interval_s` is the shortest time between two messages of one page (0.5 s: at
        most 2 updates a second); `max_rows` caps the rows in one message; a pump page's
        charts are recomputed at most every `detail_interval_s`; `conversation_records` raw
        telemetry chunks are kept per watched pump."""
        if interval_s <= 0 or detail_interval_s <= 0:
            raise ValueError("intervals must be > 0")
        self.farm = farm
        self.interval_s = interval_s
        self.max_rows = max_rows
        self.detail_interval_s = detail_interval_s
        self.history_points = history_points
        self.conversation_records = conversation_records
        self._clock = clock
        self._rows: dict[str, _CachedRow] = {}
        self._rows_at: float | None = None
        self._row_list: list[Row] = []
        self._live_cursor = 0
        self._watches: dict[str, _Watch] = {}
        self._unobserve: Callable[[], None] | None = None
        self.stats = StreamStats()
        # Set while no live stream is open: tests and the benchmark await it (no polling).
        self.streams_idle = asyncio.Event()
        self.streams_idle.set()

    # ------------------------------------------------------------------ rows
    def _version(self, served: ServedPump, now_h: float) -> tuple[Any, ...]:
        # Everything that changes a row without the clock moving: a control call or a
        # telemetry command records a point (inject, clear, refill, bolus ...), a reset or
        # restore replaces the run, the head is a link flag.
        pump = served.pump
        recorder = pump.recorder
        return (
            id(served.run),
            round(now_h, 3),
            0 if recorder is None else recorder.revision,
            served.head_placed,
            len(pump.hardware.faults),
            pump.firmware.log.total_written,
        )

    def _row(self, served: ServedPump) -> Row:
        truth = served.truth()
        try:
            status = served.reported()
        except PumpSilentError:
            status = None
        return overview_row(
            serial=served.serial,
            model=served.pump.profile.model,
            url=served.url,
            t_h=truth.t_h,
            head_placed=served.head_placed,
            truth=truth,
            status=status,
        )

    def rows(self, *, fresh: bool = False) -> list[Row]:
        """Every pump's row, at most `interval_s` old (`fresh`: read now)."""
        now = self._clock()
        if not fresh and self._rows_at is not None and now - self._rows_at < self.interval_s:
            return self._row_list
        farm_now = self.farm.runtime.now_h()
        out: list[Row] = []
        for served in self.farm.pumps:
            version = self._version(served, farm_now)
            cached = self._rows.get(served.serial)
            if cached is None or cached.version != version:
                row = self._row(served)
                # Reading synced the pump: take the version after, so the next pass is equal.
                cached = _CachedRow(self._version(served, farm_now), row)
                self._rows[served.serial] = cached
                self.stats.rows_computed += 1
            out.append(cached.row)
        self.stats.row_passes += 1
        self._rows_at = now
        self._row_list = out
        return out

    async def rows_live(self) -> list[Row]:
        """`rows()` for the live streams: at most `max_rows` rows are re-read per pass (the
        others keep their last value until their turn), and the loop is given back every
        `YIELD_EVERY` reads, so 1000 pumps with time running never hold the telemetry up for
        a whole pass."""
        now = self._clock()
        if self._rows_at is not None and now - self._rows_at < self.interval_s:
            return self._row_list
        self._rows_at = now  # claimed: another page's stream uses this pass, not a second one
        farm_now = self.farm.runtime.now_h()
        pumps = list(self.farm.pumps)
        count = len(pumps)
        budget = self.max_rows
        read = 0
        for step in range(count):
            served = pumps[(self._live_cursor + step) % count]
            cached = self._rows.get(served.serial)
            if cached is not None and cached.version == self._version(served, farm_now):
                continue
            if cached is not None and budget == 0:
                continue  # stale but shown: its turn comes in a later pass
            row = self._row(served)
            self._rows[served.serial] = _CachedRow(self._version(served, farm_now), row)
            self.stats.rows_computed += 1
            budget = max(budget - 1, 0)
            read += 1
            if read % self.YIELD_EVERY == 0:
                await asyncio.sleep(0)
        self._live_cursor = (self._live_cursor + read) % max(count, 1)
        self.stats.row_passes += 1
        self._row_list = [self._rows[served.serial].row for served in self.farm.pumps]
        return self._row_list

    def clock(self) -> dict[str, Any]:
        """The farm's clock as the header shows it."""
        speed = self.farm.runtime.speed
        return {
            "t_h": round(self.farm.now_h(), 4),
            "speed": "max" if speed is None else speed,
            "stepped": speed == 0,
        }

    def overview(self, query: str = "", sort: str = "serial", descending: bool = False) -> Any:
        """The overview as JSON: clock, counts, rows (filtered and sorted)."""
        rows = self.rows(fresh=True)
        shown = sort_rows(filter_rows(rows, query), sort, descending=descending)
        return {"clock": self.clock(), "summary": summary(rows), "rows": shown}

    # ------------------------------------------------------------------ one pump
    def watch(self, serial: str) -> Callable[[], None]:
        """Keep `serial`'s telemetry for its page from now on; returns the release."""
        watch = self._watches.get(serial)
        if watch is None:
            watch = _Watch(deque(maxlen=self.conversation_records))
            self._watches[serial] = watch
        watch.pages += 1
        if self._unobserve is None:
            # Only while a pump page is open: with no page, telemetry pays nothing.
            self._unobserve = self.farm.capture.observe(self._on_record)

        def release() -> None:
            watch.pages -= 1
            if all(w.pages <= 0 for w in self._watches.values()) and self._unobserve:
                self._unobserve()
                self._unobserve = None

        return release

    def _on_record(self, record: CaptureRecord) -> None:
        watch = self._watches.get(record.serial)
        if watch is not None and watch.pages > 0:
            watch.records.append(record)
            watch.seen += 1

    def conversation(self, serial: str, limit: int = 100) -> list[dict[str, Any]]:
        """The decoded telemetry of `serial` seen while its page was open."""
        watch = self._watches.get(serial)
        return [] if watch is None else conversation_view(list(watch.records), limit)

    def conversation_seen(self, serial: str) -> int:
        """How many telemetry chunks of `serial` were kept so far."""
        watch = self._watches.get(serial)
        return 0 if watch is None else watch.seen

    def pump_view(self, serial: str) -> dict[str, Any]:
        """Everything the pump page draws (KeyError for an unknown serial)."""
        served = self.farm.pump(serial)
        row = self._row(served)
        pump = served.pump
        try:
            conc_mcg_per_ml = served.reported().drug.concentration_mcg_per_ml
        except PumpSilentError:
            conc_mcg_per_ml = pump.firmware.status().drug.concentration_mcg_per_ml
        history: dict[str, Any] = {}
        if pump.recorder is not None:
            history = history_view(
                pump.recorder,
                pump.now_h,
                conc_mcg_per_ml,
                pk_model=None if pump.patient is None else pump.patient.model,
                points=self.history_points,
            )
        concentrations = served.concentrations()
        return {
            "row": row,
            "history": history,
            "now": None
            if concentrations is None
            else {band.column: round(getattr(concentrations, band.column), 3) for band in BANDS},
            "events": event_log_view(pump.firmware.log.entries()),
            "snapshots": [
                {"id": s.id, "t_h": round(s.t_h, 4)}
                for s in self.farm.snapshots()
                if s.serial == serial
            ],
        }

    # ------------------------------------------------------------------ live stream
    def _message(self, kind: str, payload: Any) -> str:
        text = f"event: {kind}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"
        self.stats.messages += 1
        self.stats.bytes += len(text.encode("utf-8"))
        self.stats.per_kind[kind] = self.stats.per_kind.get(kind, 0) + 1
        return text

    async def stream(
        self,
        is_disconnected: Callable[[], Any],
        serial: str | None = None,
    ) -> AsyncIterator[str]:
        """One page's server-sent events: `clock`, `rows` (only changed ones), and with
        `serial` also `pump` (charts, log) and `conversation`; ends when the client goes."""
        self.stats.connections += 1
        self.stats.open_streams += 1
        self.streams_idle.clear()
        release = self.watch(serial) if serial is not None else None
        sent: dict[str, Row] = {}
        cursor = 0
        last_clock: Any = None
        last_detail_at: float | None = None
        last_detail_key: Any = None
        last_seen = -1
        try:
            yield "retry: 2000\n\n"
            while not await is_disconnected():
                clock = self.clock()
                if clock != last_clock:
                    last_clock = clock
                    yield self._message("clock", clock)
                rows = await self.rows_live()
                changed, cursor = row_changes(sent, rows, self.max_rows, cursor)
                if changed:
                    sent.update((row["serial"], row) for row in changed)
                    yield self._message("rows", {"summary": summary(rows), "rows": changed})
                if serial is not None:
                    now = self._clock()
                    row = next((r for r in rows if r["serial"] == serial), None)
                    due = last_detail_at is None or now - last_detail_at >= self.detail_interval_s
                    if due and row != last_detail_key:
                        last_detail_at, last_detail_key = now, row
                        yield self._message("pump", self.pump_view(serial))
                    seen = self.conversation_seen(serial)
                    if seen != last_seen:
                        last_seen = seen
                        yield self._message("conversation", self.conversation(serial))
                await asyncio.sleep(self.interval_s)
        finally:
            self.stats.open_streams -= 1
            if self.stats.open_streams == 0:
                self.streams_idle.set()
            if release is not None:
                release()


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("itpump.emulator.control", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["palette"] = OKABE_ITO
    return env


def _static_files() -> dict[str, tuple[bytes, str]]:
    # Read once: a handful of small files, served from memory (no thread pool, no disk
    # access per request).
    folder = resources.files("itpump.emulator.control") / "static"
    out: dict[str, tuple[bytes, str]] = {}
    for item in folder.iterdir():
        suffix = "." + item.name.rsplit(".", 1)[-1]
        if item.is_file() and suffix in STATIC_TYPES:
            out[item.name] = (item.read_bytes(), STATIC_TYPES[suffix])
    return out


def mount_dashboard(app: FastAPI, farm: PumpFarm, hub: DashboardHub | None = None) -> DashboardHub:
    """Add the dashboard's pages, data and live events to the control API's app.

    None of these routes is in the OpenAPI document: they are the page's, not the rig's
    contract (the page itself calls the documented API for every control).
    """
    hub = hub or DashboardHub(farm)
    templates = _templates()
    static = _static_files()
    faults = [
        {
            "kind": kind.value,
            "parameter": None if kind not in FAULT_PARAMETERS else FAULT_PARAMETERS[kind][0],
        }
        for kind in FaultKind
    ]

    def page(name: str, **context: Any) -> HTMLResponse:
        html = templates.get_template(name).render(**context)
        return HTMLResponse(html, headers={"cache-control": "no-store"})

    @app.get("/", include_in_schema=False)
    async def overview_page() -> HTMLResponse:
        rows = hub.rows(fresh=True)
        return page(
            "overview.html",
            rows=rows,
            summary=summary(rows),
            clock=hub.clock(),
            sort_keys=ROW_SORT_KEYS,
        )

    @app.get("/ui/pumps/{serial}", include_in_schema=False)
    async def pump_page(serial: str) -> HTMLResponse:
        try:
            view = hub.pump_view(serial)
        except KeyError as exc:
            return HTMLResponse(
                templates.get_template("missing.html").render(detail=exc.args[0]),
                status_code=404,
            )
        return page(
            "pump.html",
            serial=serial,
            view=view,
            clock=hub.clock(),
            faults=faults,
        )

    @app.get("/ui/static/{name}", include_in_schema=False)
    async def static_file(name: str) -> Response:
        try:
            body, media_type = static[name]
        except KeyError:
            raise HTTPException(404, f"no static file {name!r}") from None
        return Response(body, media_type=media_type, headers={"cache-control": "max-age=3600"})

    @app.get("/ui/api/overview", include_in_schema=False)
    async def overview_data(q: str = "", sort: str = "serial", desc: bool = False) -> Any:
        if sort not in ROW_SORT_KEYS:
            return JSONResponse(
                {"detail": f"sort must be one of {', '.join(ROW_SORT_KEYS)}"}, status_code=422
            )
        return hub.overview(q, sort, desc)

    @app.get("/ui/api/pumps/{serial}", include_in_schema=False)
    async def pump_data(serial: str) -> Any:
        try:
            view = hub.pump_view(serial)
        except KeyError as exc:
            return JSONResponse({"detail": exc.args[0]}, status_code=404)
        view["conversation"] = hub.conversation(serial)
        return view

    @app.get("/ui/events", include_in_schema=False)
    async def events(request: Request, serial: str | None = None) -> Response:
        if serial is not None:
            try:
                farm.pump(serial)
            except KeyError as exc:
                return JSONResponse({"detail": exc.args[0]}, status_code=404)
        return StreamingResponse(
            hub.stream(request.is_disconnected, serial),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    app.state.dashboard = hub
    return hub
