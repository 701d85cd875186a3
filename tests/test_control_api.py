"""The control API over HTTP: every route, its validation (4xx naming the field, nothing
changed), the published OpenAPI document and the Python client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from itpump.emulator.control.app import ControlServer, create_app
from itpump.emulator.control.client import ControlClient, ControlError
from itpump.emulator.farm import PortSpec, PumpFarm
from itpump.emulator.scenario import load_scenario
from itpump.emulator.transports import NullModem
from itpump.protocol import messages as m
from itpump.protocol.auth import seeded_nonce_source
from itpump.protocol.connection import ProgrammerConnection, ResponseReceived

pytestmark = pytest.mark.timeout(60)

OPENAPI_FILE = Path(__file__).resolve().parent.parent / "docs" / "control-openapi.json"


class Rig:
    """A farm (stepped, null-modem ports) with its control API served on a free port."""

    def __init__(self, farm: PumpFarm, server: ControlServer, http: httpx.AsyncClient) -> None:
        self.farm = farm
        self.server = server
        self.http = http
        self.serial = farm.pumps[0].serial

    async def get(self, path: str) -> Any:
        response = await self.http.get(path)
        assert response.status_code == 200, response.text
        return response.json()

    async def post(self, path: str, body: Any = None) -> Any:
        response = await self.http.post(path, json=body)
        assert response.status_code == 200, response.text
        return response.json()

    async def refused(self, method: str, path: str, body: Any = None) -> httpx.Response:
        response = await self.http.request(method, path, json=body)
        assert 400 <= response.status_code < 500, response.text
        return response


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    farm = PumpFarm(load_scenario("clinic-ready"), count=2, port=PortSpec("null"), speed=0.0)
    server = ControlServer(farm, 0)
    async with farm:
        task = asyncio.create_task(farm.run())
        url = await server.start()
        async with httpx.AsyncClient(base_url=url) as http:
            yield Rig(farm, server, http)
        await server.close()
        farm.stop()
        await task


def _messages(response: httpx.Response) -> str:
    return json.dumps(response.json()["detail"])


async def test_pumps_list_serial_model_url_key_and_time(rig: Rig) -> None:
    pumps = await rig.get("/pumps")
    assert [p["serial"] for p in pumps] == [s.serial for s in rig.farm.pumps]
    first = pumps[0]
    assert first["model"] == "peristaltic-20"
    assert first["url"] == rig.farm.pumps[0].url
    assert bytes.fromhex(first["key"]) == rig.farm.pumps[0].key
    assert first["t_h"] == pytest.approx(24.0)
    assert first["rtc"].startswith("2026-01-06T08:00:00")
    assert first["head_placed"] is True
    assert (await rig.get(f"/pumps/{rig.serial}")) == first


async def test_unknown_pump_is_404_naming_the_served_ones(rig: Rig) -> None:
    response = await rig.refused("GET", "/pumps/NOPE/truth")
    assert response.status_code == 404
    assert "NOPE" in response.json()["detail"]
    assert rig.serial in response.json()["detail"]


async def test_stepped_clock_moves_only_when_advanced(rig: Rig) -> None:
    assert await rig.get("/clock") == {"t_h": 24.0, "speed": 0.0, "stepped": True}
    result = await rig.post("/clock/advance", {"hours": 48})
    assert result == {"t_h": 72.0, "stopped_by": "time", "alarm": None}
    truth = await rig.get(f"/pumps/{rig.serial}/truth")
    assert truth["t_h"] == pytest.approx(72.0)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"hours": -1}, "hours", "greater than or equal to 0"),
        ({"hours": 1e9}, "hours", "less than or equal to 87660"),
        ({"hours": "soon"}, "hours", "valid number"),
        ({"hours": "24"}, "hours", "valid number"),  # strict: a string is not a number
        ({"hours": True}, "hours", "valid number"),  # nor is a boolean
        ({"until": "tomorrow"}, "until", "next_alarm"),
        ({"until": "next_alarm", "limit_hours": 0}, "limit_hours", "greater than 0"),
        ({"hours": 1, "until": "next_alarm"}, "body", "either"),
        ({"hours": 1, "serial": "x"}, "body", "go with"),
        ({"hourz": 1}, "hourz", "Extra inputs"),
        ({}, "body", "either"),
    ],
)
async def test_bad_advance_is_422_naming_the_field_and_time_stays(
    rig: Rig, body: dict[str, Any], field: str, words: str
) -> None:
    response = await rig.refused("POST", "/clock/advance", body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert any(field in map(str, item["loc"]) for item in detail), detail
    assert words in _messages(response)
    assert (await rig.get("/clock"))["t_h"] == 24.0


async def test_nan_in_a_request_is_refused_with_a_readable_body(rig: Rig) -> None:
    response = await rig.http.post(
        "/clock/advance", content=b'{"hours": NaN}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert "finite number" in _messages(response)


async def test_form_body_gets_a_hint_about_json(rig: Rig) -> None:
    response = await rig.http.post("/clock/advance", content=b'{"hours": 1}')
    assert response.status_code == 422
    assert "application/json" in _messages(response)


async def test_advance_until_next_alarm_reports_every_pump_alarming_then(rig: Rig) -> None:
    result = await rig.post("/clock/advance", {"until": "next_alarm", "limit_hours": 24 * 120})
    assert result["stopped_by"] == "alarm"
    first = result["alarm"]["pumps"][0]
    assert first["alarms"] == ["low_reservoir"]
    assert first["pump_t_h"] == pytest.approx(result["t_h"])
    reported = await rig.get(f"/pumps/{first['serial']}/reported")
    assert [a["name"] for a in reported["alarms"]] == ["low_reservoir"]
    quiet = await rig.post("/clock/advance", {"until": "next_alarm", "limit_hours": 1})
    assert quiet["stopped_by"] == "time"
    assert quiet["t_h"] == pytest.approx(result["t_h"] + 1)
    missing = await rig.refused("POST", "/clock/advance", {"until": "next_alarm", "serial": "x"})
    assert missing.status_code == 404


async def test_pumps_alarming_at_the_same_instant_are_all_reported(rig: Rig) -> None:
    # Reset both pumps at the same farm time: identical programs alarm at the same instant.
    for served in rig.farm.pumps:
        await rig.post(f"/pumps/{served.serial}/reset")
    result = await rig.post("/clock/advance", {"until": "next_alarm", "limit_hours": 24 * 120})
    stopped = {p["serial"] for p in result["alarm"]["pumps"]}
    # The alarm follows the pump's estimate, which is the same for both programs.
    assert stopped == {served.serial for served in rig.farm.pumps}
    for served in rig.farm.pumps:
        names = [a["name"] for a in (await rig.get(f"/pumps/{served.serial}/reported"))["alarms"]]
        assert names == ["low_reservoir"]


async def test_telemetry_is_answered_while_a_long_advance_runs(rig: Rig) -> None:
    served = rig.farm.pumps[0]
    pc = ProgrammerConnection(seeded_nonce_source(5), key=served.key)
    # slice_s=0: the advance yields to the loop after every event, so whatever the machine's
    # speed there are turns for the frames below (the API's 20 ms slices are the same code).
    advance = asyncio.create_task(rig.farm.advance_async(24 * 365, slice_s=0.0))
    seen_h: list[float] = []
    while not advance.done():
        # A frame through the pump's handler, as a transport would deliver it, on this loop.
        pc.receive_data(served.handler(pc.send(m.IdentifyRequest(), 0.0)))
        assert isinstance(pc.next_event(), ResponseReceived)
        seen_h.append(rig.farm.env.now)
        await asyncio.sleep(0)  # yield to the advance, as an idle transport does
    assert await advance == pytest.approx(24.0 + 24 * 365)
    # Frames were answered part-way through the simulated year, not only before or after.
    assert sum(24.0 < t < 24.0 + 24 * 365 for t in seen_h) > 10


async def test_a_second_advance_waits_for_the_first(rig: Rig) -> None:
    first = asyncio.create_task(rig.farm.advance_async(24 * 30, slice_s=0.0))
    second = asyncio.create_task(rig.farm.advance_async(24.0, slice_s=0.0))
    assert await second == pytest.approx(24.0 + 24 * 31)  # runs after the first, not inside it
    assert await first == pytest.approx(24.0 + 24 * 30)


async def test_speed_number_max_and_stepped(rig: Rig) -> None:
    assert (await rig.post("/clock/speed", {"speed": 3600}))["speed"] == 3600.0
    assert (await rig.post("/clock/speed", {"speed": "max"}))["speed"] == "max"
    stepped = await rig.post("/clock/speed", {"speed": 0})
    assert stepped["stepped"] is True
    for bad in (-1, "fast", 1e300, 1e-300, False, "0"):
        response = await rig.refused("POST", "/clock/speed", {"speed": bad})
        assert response.status_code == 422
        assert "speed" in _messages(response)
    assert rig.farm.runtime.speed == 0.0


async def test_faults_inject_and_clear_with_ranges_named(rig: Rig) -> None:
    path = f"/pumps/{rig.serial}/faults"
    out = await rig.post(path, {"kind": "occlusion", "value": 0.5})
    assert out == {"faults": ["occlusion"], "changed": True}
    assert (await rig.get(f"/pumps/{rig.serial}/truth"))["faults"] == ["occlusion"]
    bad_value = await rig.refused("POST", path, {"kind": "leak", "value": 2})
    assert bad_value.status_code == 422
    assert bad_value.json()["detail"][0]["loc"] == ["body", "value"]
    assert "fraction must be 0..1" in _messages(bad_value)
    no_value = await rig.refused("POST", path, {"kind": "motor_stall", "value": 1})
    assert "takes no value" in _messages(no_value)
    bad_kind = await rig.refused("POST", path, {"kind": "gremlins"})
    assert "occlusion" in _messages(bad_kind)  # the allowed kinds are listed
    assert (await rig.get(f"/pumps/{rig.serial}/truth"))["faults"] == ["occlusion"]
    cleared = (await rig.http.delete(f"{path}/occlusion")).json()
    assert cleared == {"faults": [], "changed": True}
    again = (await rig.http.delete(f"{path}/occlusion")).json()
    assert again == {"faults": [], "changed": False}
    assert (await rig.http.delete(f"{path}/gremlins")).status_code == 422


async def test_every_fault_kind_can_be_injected_and_cleared(rig: Rig) -> None:
    from itpump.emulator.faults import FaultKind

    for kind in FaultKind:
        serial = rig.serial
        await rig.post(f"/pumps/{serial}/reset")
        out = await rig.post(f"/pumps/{serial}/faults", {"kind": kind.value})
        if kind is FaultKind.BATTERY_DROP:  # an event, not a state: the cell just holds less
            truth = await rig.get(f"/pumps/{serial}/truth")
            assert truth["battery_remaining_pct"] == pytest.approx(5.0)
            continue
        assert kind.value in out["faults"]
        cleared = (await rig.http.delete(f"/pumps/{serial}/faults/{kind.value}")).json()
        assert kind.value not in cleared["faults"]


async def test_truth_and_reported_part_under_an_occlusion(rig: Rig) -> None:
    serial = rig.serial
    await rig.post(f"/pumps/{serial}/faults", {"kind": "occlusion"})
    before = await rig.get(f"/pumps/{serial}/truth")
    await rig.post("/clock/advance", {"hours": 24})
    truth = await rig.get(f"/pumps/{serial}/truth")
    reported = await rig.get(f"/pumps/{serial}/reported")
    # The pump believes it delivered its daily dose; nothing reached the CSF.
    assert reported["dose_last_24h_mcg"] == pytest.approx(200.0, rel=0.01)
    assert truth["ledger"]["to_csf_mcg"] == pytest.approx(before["ledger"]["to_csf_mcg"])
    assert truth["reservoir_ml"] == pytest.approx(before["reservoir_ml"])
    assert reported["reservoir_estimate_ml"] < truth["reservoir_ml"] - 0.3
    assert truth["concentrations"]["csf_lumbar_ng_per_ml"] < (
        before["concentrations"]["csf_lumbar_ng_per_ml"] / 2
    )


async def test_head_and_link_faults(rig: Rig) -> None:
    serial = rig.serial
    assert await rig.post(f"/pumps/{serial}/head", {"placed": False}) == {"placed": False}
    assert rig.farm.pumps[0].link.dropped
    assert (await rig.get(f"/pumps/{serial}"))["head_placed"] is False
    assert await rig.post(f"/pumps/{serial}/head", {"placed": True}) == {"placed": True}
    link = await rig.post(f"/pumps/{serial}/link", {"corruption_rate": 0.01})
    assert link["corruption_rate"] == 0.01
    assert link["drop_rate"] == 0.0
    assert link["turnaround_s"] == pytest.approx(0.005)
    bad = await rig.refused("POST", f"/pumps/{serial}/link", {"drop_rate": 2})
    assert "drop_rate" in _messages(bad)
    assert (await rig.get(f"/pumps/{serial}/link"))["drop_rate"] == 0.0
    for placed in ("maybe", "off", 1, None):
        refused = await rig.refused("POST", f"/pumps/{serial}/head", {"placed": placed})
        assert "placed" in _messages(refused)
    assert rig.farm.pumps[0].head_placed  # nothing changed


async def test_snapshot_restore_reset_and_their_errors(rig: Rig) -> None:
    serial, other = rig.serial, rig.farm.pumps[1].serial
    snap = await rig.post(f"/pumps/{serial}/snapshot")
    assert snap["serial"] == serial
    assert snap["t_h"] == pytest.approx(24.0)
    at_snap = await rig.get(f"/pumps/{serial}/truth")
    await rig.post("/clock/advance", {"hours": 240})
    await rig.post(f"/pumps/{serial}/faults", {"kind": "motor_stall"})
    info = await rig.post(f"/pumps/{serial}/restore", {"snapshot": snap["id"]})
    assert info["t_h"] == pytest.approx(24.0)
    restored = await rig.get(f"/pumps/{serial}/truth")
    assert restored["reservoir_ml"] == pytest.approx(at_snap["reservoir_ml"])
    assert restored["faults"] == []
    # another pump's snapshot, an unknown one
    wrong = await rig.refused("POST", f"/pumps/{other}/restore", {"snapshot": snap["id"]})
    assert wrong.status_code == 409
    unknown = await rig.refused("POST", f"/pumps/{serial}/restore", {"snapshot": "nope"})
    assert unknown.status_code == 404
    assert [s["id"] for s in await rig.get("/snapshots")] == [snap["id"]]
    assert (await rig.http.delete(f"/snapshots/{snap['id']}")).json() == []
    assert (await rig.http.delete(f"/snapshots/{snap['id']}")).status_code == 404
    # reset: a fresh pump after the warm-up, same identity
    await rig.post("/clock/advance", {"hours": 100})
    fresh = await rig.post(f"/pumps/{serial}/reset")
    assert fresh["t_h"] == pytest.approx(24.0)
    assert fresh["key"] == rig.farm.pumps[0].key.hex()


async def test_snapshot_limit_is_409(rig: Rig) -> None:
    rig.farm.MAX_SNAPSHOTS = 1
    await rig.post(f"/pumps/{rig.serial}/snapshot")
    full = await rig.refused("POST", f"/pumps/{rig.serial}/snapshot")
    assert full.status_code == 409
    assert "at most 1" in full.json()["detail"]


async def test_openapi_document_is_served_and_committed(rig: Rig) -> None:
    served = await rig.get("/openapi.json")
    committed = json.loads(OPENAPI_FILE.read_text(encoding="utf-8"))
    assert served == committed, (
        "docs/control-openapi.json is stale: regenerate with "
        "`python -m itpump.tools.gen_control_openapi`"
    )
    paths = served["paths"]
    for route in (
        "/pumps",
        "/clock",
        "/clock/advance",
        "/clock/speed",
        "/pumps/{serial}/faults",
        "/pumps/{serial}/faults/{kind}",
        "/pumps/{serial}/truth",
        "/pumps/{serial}/reported",
        "/pumps/{serial}/head",
        "/pumps/{serial}/link",
        "/pumps/{serial}/snapshot",
        "/pumps/{serial}/restore",
        "/pumps/{serial}/reset",
    ):
        assert route in paths, route


async def test_python_client_covers_the_api(rig: Rig) -> None:
    serial = rig.serial

    def use_it() -> None:
        with ControlClient(rig.server.url) as client:
            assert client.pumps()[0].serial == serial
            assert client.clock().stepped
            assert client.advance(24).t_h == pytest.approx(48.0)
            assert client.inject(serial, "occlusion", 1.0).faults == ["occlusion"]
            assert client.truth(serial).faults == ["occlusion"]
            assert client.reported(serial).therapy_state == "running"
            assert client.clear(serial, "occlusion").changed
            assert client.set_head(serial, False).placed is False
            assert client.set_head(serial, True).placed is True
            assert client.set_link(serial, drop_rate=0.5).drop_rate == 0.5
            assert client.link(serial).drop_rate == 0.5
            snap = client.snapshot(serial)
            assert [s.id for s in client.snapshots()] == [snap.id]
            assert client.restore(serial, snap.id).t_h == pytest.approx(48.0)
            assert client.delete_snapshot(snap.id) == []
            assert client.reset(serial).t_h == pytest.approx(24.0)
            stop = client.advance_until_alarm(limit_hours=24 * 120, serial=serial)
            assert stop.alarm is not None
            assert client.set_speed("max").speed == "max"
            assert client.set_speed(0).stepped
            assert client.pump(serial).serial == serial
            assert "paths" in client.openapi()
            with pytest.raises(ControlError) as refused:
                client.inject(serial, "leak", 5.0)
            assert refused.value.status == 422
            assert "fraction" in str(refused.value)

    await asyncio.to_thread(use_it)


def test_app_routes_are_coroutines_so_nothing_touches_the_world_from_a_thread() -> None:
    import inspect

    from fastapi.routing import APIRoute

    farm = PumpFarm(load_scenario("clinic-ready"), port=PortSpec("null"), speed=0.0)
    routes = [r for r in create_app(farm).routes if isinstance(r, APIRoute)]
    assert routes
    for route in routes:
        assert inspect.iscoroutinefunction(route.endpoint), route.path


def test_serve_prints_the_control_url_and_serves_it_until_signalled() -> None:
    import signal
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "itpump.tools.cli", "serve", "--port", "tcp:0", "--control", "0"]
    proc = subprocess.Popen(
        [*cmd, "--stepped", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert proc.stdout is not None
        pump = json.loads(proc.stdout.readline())
        control = json.loads(proc.stdout.readline())
        assert pump["url"].startswith("socket://127.0.0.1:")
        assert control["control"].startswith("http://127.0.0.1:")
        with ControlClient(control["control"]) as client:
            assert client.clock().stepped
            assert client.pumps()[0].serial == pump["serial"]
            assert client.advance(1).t_h == pytest.approx(25.0)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--stepped"], "--stepped needs --control"),
        (["--control", "70000"], "--control must be a port 0..65535"),
        (["--control", "0", "--stepped", "--speed", "10"], "exclude each other"),
    ],
)
def test_serve_control_flags_are_checked(
    args: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from itpump.tools.cli import main

    assert main(["serve", *args]) == 2
    assert words in capsys.readouterr().err


async def test_capture_starts_and_stops_over_the_api(rig: Rig, tmp_path: Path) -> None:
    from itpump.emulator.capture import Direction, read_capture

    target = tmp_path / "visit.pcapng"
    assert (await rig.get("/capture"))["capturing"] is False
    started = await rig.post("/capture", {"path": str(target)})
    assert started == {"capturing": True, "path": str(target), "packets_written": 0}
    served = rig.farm.pumps[0]
    assert isinstance(served.transport, NullModem)
    client = served.transport.connect()
    programmer = ProgrammerConnection(seeded_nonce_source(1), key=served.key)
    request = programmer.send(m.IdentifyRequest(), 0.0)
    client.write(request)
    await client.read_exactly(1)  # the pump has answered, so both directions are recorded
    stopped = (await rig.http.delete("/capture")).json()
    assert stopped["capturing"] is False
    assert stopped["path"] == str(target)
    interfaces, records = read_capture(target)
    assert [i.serial for i in interfaces] == [p.serial for p in rig.farm.pumps]
    assert b"".join(r.data for r in records if r.direction is Direction.TO_PUMP) == request
    assert any(r.direction is Direction.FROM_PUMP for r in records)
    bad = await rig.refused("POST", "/capture", {"path": str(tmp_path / "no" / "dir" / "x")})
    assert bad.status_code == 400
    assert "path" in bad.json()["detail"]
    assert (await rig.get("/capture"))["capturing"] is False


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("{tmp}/no/such/dir/x.pcapng", "cannot write"),
        ("{tmp}/x\\u0000.pcapng", "cannot write"),  # a JSON-escaped NUL byte
        ("{tmp}", "exists"),
        ("{tmp}/taken.pcapng", "exists"),
        ("relative.pcapng", "absolute"),
    ],
)
async def test_a_refused_capture_leaves_the_running_one_alone(
    rig: Rig, tmp_path: Path, path: str, words: str
) -> None:
    (tmp_path / "taken.pcapng").write_bytes(b"precious")
    running = tmp_path / "running.pcapng"
    await rig.post("/capture", {"path": str(running)})
    bad = await rig.http.post(
        "/capture",
        content=('{"path": "' + path.replace("{tmp}", str(tmp_path)) + '"}').encode(),
        headers={"content-type": "application/json"},
    )
    assert bad.status_code == 400, bad.text
    assert words in bad.json()["detail"]
    assert await rig.get("/capture") == {
        "capturing": True,
        "path": str(running),
        "packets_written": 0,
    }
    assert (tmp_path / "taken.pcapng").read_bytes() == b"precious"


async def test_a_pump_without_power_reports_nothing_409_but_its_truth_reads(rig: Rig) -> None:
    await rig.post(f"/pumps/{rig.serial}/faults", {"kind": "battery_dead"})
    silent = await rig.refused("GET", f"/pumps/{rig.serial}/reported")
    assert silent.status_code == 409
    assert "no power" in silent.json()["detail"]
    assert (await rig.get(f"/pumps/{rig.serial}/truth"))["faults"] == ["battery_dead"]


async def test_requests_from_elsewhere_or_too_large_are_refused(rig: Rig) -> None:
    # DNS rebinding: a page on another name that resolves to 127.0.0.1.
    rebound = await rig.http.get("/clock", headers={"host": "evil.example:80"})
    assert rebound.status_code == 421
    # A cross-site page posting blindly (a "simple" request needs no preflight).
    blind = await rig.http.post(
        f"/pumps/{rig.serial}/reset", headers={"origin": "http://evil.example"}
    )
    assert blind.status_code == 403
    assert rig.farm.now_h() == 24.0
    own_port = rig.server.url.rsplit(":", 1)[1]
    local = await rig.http.get("/clock", headers={"origin": f"http://127.0.0.1:{own_port}"})
    assert local.status_code == 200  # the dashboard's own pages
    for other in ("http://127.0.0.1:9", f"http://127.0.0.1:{own_port}.evil.example", "null"):
        refused = await rig.http.post(f"/pumps/{rig.serial}/reset", headers={"origin": other})
        assert refused.status_code == 403, other
    huge = await rig.http.post(
        "/clock/advance",
        content=b'{"serial": "' + b"x" * 100_000 + b'"}',
        headers={"content-type": "application/json"},
    )
    assert huge.status_code == 413
    long_serial = await rig.refused("GET", "/pumps/" + "y" * 5000)
    assert len(long_serial.text) < 500  # the unknown name is not echoed back in full


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--port", "tcp:0", "--capture", ""], "--capture: name a file"),
        (["--port", "tcp:0", "--capture", "/"], "--capture: name a file"),
        (["--port", "tcp:65535", "--count", "2"], "at most 65534"),
        (["--port", "rfc2217:65535", "--count", "3"], "at most 65533"),
    ],
)
def test_serve_port_and_capture_flags_are_checked(
    args: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from itpump.tools.cli import main

    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err
    assert words in err
    assert "Traceback" not in err


async def test_a_trailing_slash_is_not_found_not_redirected(rig: Rig) -> None:
    response = await rig.http.get(f"/pumps/{rig.serial}/")
    assert response.status_code == 404
