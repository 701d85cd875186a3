"""itpump serve end to end: real PTYs and TCP, the protocol, the firmware, simulated time."""

from __future__ import annotations

import asyncio
import os
import select
import termios
import time
from collections.abc import AsyncIterator

import pytest

from itpump.emulator.farm import PortSpec, PortSpecError, PumpFarm
from itpump.emulator.scenario import load_scenario
from itpump.protocol import messages as m
from itpump.protocol.auth import seeded_nonce_source
from itpump.protocol.connection import ProgrammerConnection, ResponseReceived

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def pty_farm() -> AsyncIterator[PumpFarm]:
    farm = PumpFarm(load_scenario("clinic-ready"), port=PortSpec("pty"), speed=3600.0)
    async with farm:
        task = asyncio.create_task(farm.run())
        yield farm
        farm.stop()
        await task


def _raw_round_trip(fd: int, pc: ProgrammerConnection, request: m.Request) -> m.Response:
    """One request over a plain file descriptor (blocking), retransmitting on timeout."""
    os.write(fd, pc.send(request, time.monotonic()))
    while True:
        event = pc.next_event()
        if event is not None:
            assert isinstance(event, ResponseReceived), event
            return event.response
        retry = pc.poll(time.monotonic())
        if retry:
            os.write(fd, retry)
        readable, _, _ = select.select([fd], [], [], 0.05)  # wait for bytes (or poll again)
        if readable:
            pc.receive_data(os.read(fd, 4096))


async def test_any_program_can_use_the_pty_with_os_open_and_termios(
    pty_farm: PumpFarm,
) -> None:
    served = pty_farm.pumps[0]
    path = served.describe()["path"]
    assert path is not None
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        attrs = termios.tcgetattr(fd)
        assert not attrs[3] & (termios.ECHO | termios.ICANON)  # raw: no echo, no line editing
        assert not attrs[1] & termios.OPOST  # no output processing: no CR/LF rewriting
        pc = ProgrammerConnection(seeded_nonce_source(7), key=served.key)

        def visit() -> tuple[m.Response, m.Response]:
            ident = _raw_round_trip(fd, pc, m.IdentifyRequest())
            _raw_round_trip(fd, pc, pc.auth_begin(m.Role.CLINICIAN))
            _raw_round_trip(fd, pc, pc.auth_proof())
            return ident, _raw_round_trip(fd, pc, m.InterrogateRequest())

        ident, status = await asyncio.to_thread(visit)
    finally:
        os.close(fd)
    assert isinstance(ident, m.IdentifyResponse)
    assert ident.serial == served.pump.serial
    assert isinstance(status, m.InterrogateResponse)
    assert status.program.drug_name == "baclofen"
    assert status.program.concentration_ng_per_ml == 500_000
    # The pump's estimate, not the truth, travels over telemetry.
    est_ml = status.reservoir_volume_nl / 1e6
    assert est_ml == pytest.approx(served.pump.firmware.reservoir_estimate_ml(), abs=0.01)


async def test_frames_act_at_the_current_simulated_time() -> None:
    farm = PumpFarm(load_scenario("clinic-ready"), port=PortSpec("null"), speed=0.0)
    served = farm.pumps[0]
    pc = ProgrammerConnection(seeded_nonce_source(3), key=served.key)
    farm.runtime.advance_to(48.0)  # the rig moves time by hand
    reply = served.endpoint(pc.send(m.InterrogateRequest(), 0.0))
    pc.receive_data(reply)
    event = pc.next_event()
    assert isinstance(event, ResponseReceived)
    assert isinstance(event.response, m.Refusal)  # no session yet: refused, nothing changed
    assert event.response.result.name == "NOT_AUTHENTICATED"
    status = served.pump.firmware.status()
    start = load_scenario("clinic-ready").scenario.start.timestamp()
    assert status.rtc_s == pytest.approx(start + 48 * 3600)


def test_port_spec_errors_name_the_allowed_forms() -> None:
    assert PortSpec.parse("tcp:5000") == PortSpec("tcp", 5000)
    with pytest.raises(PortSpecError, match="pty, tcp:PORT, rfc2217:PORT or null"):
        PortSpec.parse("usb")
    with pytest.raises(PortSpecError, match=r"0\.\.65535"):
        PortSpec.parse("tcp:70000")


def test_dead_battery_pump_is_silent() -> None:
    from itpump.emulator.faults import Fault

    farm = PumpFarm(load_scenario("clinic-ready"), port=PortSpec("null"), speed=0.0)
    served = farm.pumps[0]
    served.pump.inject(Fault.make("battery_dead"))
    pc = ProgrammerConnection(seeded_nonce_source(3), key=served.key)
    assert served.endpoint(pc.send(m.IdentifyRequest(), 0.0)) == b""


def test_serve_help_documents_the_real_default_master_key() -> None:
    from itpump.emulator.telemetry import DEFAULT_MASTER_KEY
    from itpump.tools import serve

    assert serve.DEFAULT_MASTER_KEY == DEFAULT_MASTER_KEY


def test_profile_turnaround_delays_replies_unless_disabled() -> None:
    from itpump.emulator.transports import LinkConfig

    scenario = load_scenario("clinic-ready")
    default = PumpFarm(scenario, port=PortSpec("null"), speed=0.0)
    link = default.pumps[0].link
    assert link is not None
    assert link.config.turnaround_s == pytest.approx(0.005)  # profile: turnaround_ms = 5
    paced = PumpFarm(scenario, port=PortSpec("null"), speed=0.0, link_config=LinkConfig(baud=19200))
    assert paced.pumps[0].link is not None
    assert paced.pumps[0].link.config.turnaround_s == pytest.approx(0.005)
    assert paced.pumps[0].link.config.baud == 19200
    # Without turnaround the link still exists (the rig can lift the head) but delays nothing.
    bare = PumpFarm(scenario, port=PortSpec("null"), speed=0.0, turnaround=False).pumps[0].link
    assert not bare.has_delays


def test_warmup_finishes_the_scenario_set_up_before_serving() -> None:
    from itpump.firmware_stubs.firmware import TherapyState

    farm = PumpFarm(load_scenario("clinic-ready"), port=PortSpec("null"), speed=1.0, warmup_h=24.0)
    assert farm.env.now == pytest.approx(24.0)
    assert farm.pumps[0].pump.firmware.therapy_state() is TherapyState.RUNNING
    with pytest.raises(ValueError, match="warmup_h"):
        PumpFarm(load_scenario("clinic-ready"), port=PortSpec("null"), warmup_h=-1.0)


def test_lifting_the_head_ends_the_session_and_pacing_uses_the_profile_baud() -> None:
    farm = PumpFarm(load_scenario("clinic-ready"), port=PortSpec("null"), speed=0.0, pace=True)
    served = farm.pumps[0]
    assert served.link is not None
    assert served.link.config.baud == served.pump.profile.telemetry.baud == 19200
    pc = ProgrammerConnection(seeded_nonce_source(5), key=served.key)
    steps = (m.IdentifyRequest, lambda: pc.auth_begin(m.Role.CLINICIAN), pc.auth_proof)
    for make_request in steps:
        pc.receive_data(served.endpoint(pc.send(make_request(), 0.0)))
        assert isinstance(pc.next_event(), ResponseReceived)
    connection = served.endpoint.connection
    link = served.link
    before = (connection.session_id is not None, link.dropped)
    served.lift_head()
    lifted = (connection.session_id is not None, link.dropped)
    served.place_head()
    assert (before, lifted, link.dropped) == ((True, False), (False, True), False)
