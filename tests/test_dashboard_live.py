"""The dashboard's server side over HTTP: pages, data, static files, the live event stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from itpump.emulator.control.app import ControlServer
from itpump.emulator.control.dashboard import DashboardHub
from itpump.emulator.farm import PortSpec, PumpFarm
from itpump.emulator.scenario import load_scenario

pytestmark = pytest.mark.timeout(60)


@dataclass
class Live:
    farm: PumpFarm
    hub: DashboardHub
    http: httpx.AsyncClient


@pytest.fixture
async def live() -> AsyncIterator[Live]:
    farm = PumpFarm(load_scenario("clinic-ready"), count=3, port=PortSpec("null"), speed=0.0)
    server = ControlServer(farm, 0)
    hub: DashboardHub = server.app.state.dashboard
    hub.interval_s = 0.02  # quick messages; the coalescing is the same
    hub.detail_interval_s = 0.02
    async with farm:
        task = asyncio.create_task(farm.run())
        url = await server.start()
        async with httpx.AsyncClient(base_url=url, timeout=20) as http:
            yield Live(farm, hub, http)
        await server.close()
        farm.stop()
        await task


async def events(response: httpx.Response) -> AsyncIterator[tuple[str, Any]]:
    """Parse a text/event-stream into (event, data) pairs."""
    kind = ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: "):
            yield kind, json.loads(line[len("data: ") :])


async def test_pages_render_every_pump_and_static_files_are_served(live: Live) -> None:
    page = await live.http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for served in live.farm.pumps:
        assert f'data-serial="{served.serial}"' in page.text
        assert served.url in page.text
    serial = live.farm.pumps[0].serial
    one = await live.http.get(f"/ui/pumps/{serial}")
    assert one.status_code == 200
    assert 'id="inject-occlusion"' in one.text
    assert "uPlot.iife.min.js" in one.text
    missing = await live.http.get("/ui/pumps/NOPE")
    assert missing.status_code == 404
    assert serial in missing.text  # names the served pumps
    script = await live.http.get("/ui/static/uPlot.iife.min.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert (await live.http.get("/ui/static/uPlot.LICENSE")).text.startswith("The MIT License")
    assert (await live.http.get("/ui/static/../app.py")).status_code == 404


async def test_page_data_filters_sorts_and_is_not_in_the_openapi(live: Live) -> None:
    serials = [p.serial for p in live.farm.pumps]
    await live.http.post(f"/pumps/{serials[2]}/faults", json={"kind": "leak"})
    data = (await live.http.get("/ui/api/overview", params={"sort": "serial", "desc": True})).json()
    assert [r["serial"] for r in data["rows"]] == sorted(serials, reverse=True)
    assert data["summary"] == {"pumps": 3, "alarming": 0, "faulted": 1, "silent": 0}
    assert data["clock"] == {"t_h": 24.0, "speed": 0.0, "stepped": True}
    leak = (await live.http.get("/ui/api/overview", params={"q": "leak"})).json()
    assert [r["serial"] for r in leak["rows"]] == [serials[2]]
    bad = await live.http.get("/ui/api/overview", params={"sort": "nope"})
    assert bad.status_code == 422
    assert "battery_pct" in bad.json()["detail"]
    pump = (await live.http.get(f"/ui/api/pumps/{serials[0]}")).json()
    assert pump["row"]["serial"] == serials[0]
    assert len(pump["history"]["t_h"]) == live.hub.history_points
    assert pump["events"][0]["index"] > pump["events"][-1]["index"]
    assert (await live.http.get("/ui/api/pumps/NOPE")).status_code == 404
    paths = (await live.http.get("/openapi.json")).json()["paths"]
    assert "/" not in paths
    assert not [p for p in paths if p.startswith("/ui")]


async def test_stream_sends_changed_rows_capped_then_nothing_until_time_moves(live: Live) -> None:
    live.hub.max_rows = 2
    async with live.http.stream("GET", "/ui/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = events(response)
        kind, clock = await anext(stream)
        assert (kind, clock["t_h"]) == ("clock", 24.0)
        kind, first = await anext(stream)
        assert kind == "rows"
        assert len(first["rows"]) == 2  # capped; the third follows in the next message
        assert first["summary"]["pumps"] == 3
        kind, second = await anext(stream)
        assert kind == "rows"
        assert len(second["rows"]) == 1
        got = {r["serial"] for r in first["rows"] + second["rows"]}
        assert got == {p.serial for p in live.farm.pumps}
        # Stepped and untouched: nothing to send (no message per tick, no bytes).
        passes = live.hub.stats.row_passes
        computed = live.hub.stats.rows_computed
        await live.http.post("/clock/advance", json={"hours": 1})
        kind, clock = await anext(stream)
        assert (kind, clock["t_h"]) == ("clock", 25.0)
        kind, moved = await anext(stream)
        assert kind == "rows"
        assert {r["t_h"] for r in moved["rows"]} == {25.0}
        assert live.hub.stats.row_passes > passes
        # Rows were recomputed only because time moved: at most once per pump per pass.
        assert live.hub.stats.rows_computed - computed <= 3 * (live.hub.stats.row_passes - passes)
    await asyncio.wait_for(live.hub.streams_idle.wait(), 10)
    assert live.hub.stats.open_streams == 0


async def test_rows_are_read_once_per_pass_only_for_pumps_that_changed(live: Live) -> None:
    hub = live.hub
    hub.rows(fresh=True)
    computed = hub.stats.rows_computed
    hub.rows(fresh=True)
    assert hub.stats.rows_computed == computed  # nothing moved: every row from the cache
    live.farm.pumps[1].inject("leak")
    rows = hub.rows(fresh=True)
    assert hub.stats.rows_computed == computed + 1
    assert rows[1]["faults"] == ["leak"]
    live.farm.pumps[0].lift_head()
    assert hub.rows(fresh=True)[0]["head_placed"] is False
    live.farm.pumps[2].reset()
    hub.rows(fresh=True)
    assert hub.stats.rows_computed == computed + 3


def observing(farm: PumpFarm) -> bool:
    """Whether the capture tap is recording to anything (a function: mypy narrows properties)."""
    return farm.capture.active


async def test_pump_stream_sends_the_pump_and_releases_its_watch(live: Live) -> None:
    serial = live.farm.pumps[0].serial
    assert not observing(live.farm)
    async with live.http.stream("GET", "/ui/events", params={"serial": serial}) as response:
        kinds: set[str] = set()
        async for kind, data in events(response):
            kinds.add(kind)
            if kind == "pump":
                assert data["row"]["serial"] == serial
                assert data["history"]["bands"]
                break
        assert "clock" in kinds
        assert observing(live.farm)  # observing telemetry while the page is open
    await asyncio.wait_for(live.hub.streams_idle.wait(), 10)
    assert not observing(live.farm)  # and not after it closed: telemetry pays nothing
    missing = await live.http.get("/ui/events", params={"serial": "NOPE"})
    assert missing.status_code == 404


def test_hub_refuses_a_zero_interval() -> None:
    farm = PumpFarm(load_scenario("clinic-ready"), port=PortSpec("null"), speed=0.0, warmup_h=0)
    with pytest.raises(ValueError, match="intervals"):
        DashboardHub(farm, interval_s=0)
