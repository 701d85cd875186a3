"""Findings of the adversarial test (project issue 9), each pinned by a regression test.

Unpredictable nonces, no fail-deaf state after an unexpected exception, values the wire
cannot carry, and bounded buffers in every transport. Everything runs in-process; sockets
only on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable

import pytest

from itpump.emulator.farm import PortSpec, PumpFarm
from itpump.emulator.scenario import load_scenario
from itpump.emulator.telemetry import TelemetryEndpoint
from itpump.emulator.transports.base import DEFAULT_MAX_PENDING_BYTES, Connection
from itpump.emulator.transports.link import LinkConfig, LinkEmulator
from itpump.emulator.transports.pty import _MAX_BACKLOG, PtyTransport
from itpump.emulator.transports.rfc2217 import (
    MAX_SUBNEGOTIATION_BYTES,
    Rfc2217Transport,
    _Rfc2217Link,
)
from itpump.emulator.transports.tcp import MAX_WRITE_BUFFER_BYTES, TcpTransport, _TcpLink
from itpump.firmware_stubs.errors import Refusal
from itpump.firmware_stubs.firmware import TherapyState
from itpump.protocol import messages as m
from itpump.protocol.auth import seeded_nonce_source
from itpump.protocol.codes import AlarmId, ResultCode
from itpump.protocol.connection import ProgrammerConnection, PumpIdentity, ResponseReceived
from itpump.protocol.framing import MAX_QUEUED_FRAMES, Deframer, encode_frame
from itpump.protocol.header import parse_body

pytestmark = pytest.mark.timeout(60)


class FakeClock:
    """Real seconds, moved by hand (the farm's link clock)."""

    def __init__(self) -> None:
        self.t_s = 1000.0

    def __call__(self) -> float:
        return self.t_s


def _farm() -> PumpFarm:
    return PumpFarm(
        load_scenario("clinic-ready"),
        port=PortSpec("null"),
        speed=0.0,
        clock=FakeClock(),
    )


def _exchange(
    handler: Callable[[bytes], bytes], pc: ProgrammerConnection, request: m.Request
) -> m.Response:
    """One request straight through a byte handler (no transport, no waiting)."""
    pc.receive_data(handler(pc.send(request, 0.0)))
    event = pc.next_event()
    assert isinstance(event, ResponseReceived), event
    return event.response


def _open_session(
    handler: Callable[[bytes], bytes], key: bytes, seed: int = 7
) -> ProgrammerConnection:
    pc = ProgrammerConnection(seeded_nonce_source(seed), key=key)
    assert isinstance(_exchange(handler, pc, m.IdentifyRequest()), m.IdentifyResponse)
    assert isinstance(_exchange(handler, pc, pc.auth_begin(m.Role.CLINICIAN)), m.AuthBeginResponse)
    assert isinstance(_exchange(handler, pc, pc.auth_proof()), m.AuthProofResponse)
    return pc


# --- 1. nonces and session ids come from the OS CSPRNG ----------------------------------------


def _challenge(endpoint: TelemetryEndpoint) -> m.AuthBeginResponse:
    # The programmer's nonce is fixed, so any difference comes from the pump.
    pc = ProgrammerConnection(seeded_nonce_source(1), key=b"k" * 32)
    _exchange(endpoint, pc, m.IdentifyRequest())
    response = _exchange(endpoint, pc, pc.auth_begin(m.Role.CLINICIAN))
    assert isinstance(response, m.AuthBeginResponse)
    return response


def test_endpoints_for_the_same_pump_and_key_do_not_repeat_nonces() -> None:
    farm = _farm()
    served = farm.pumps[0]
    # Two endpoints for the same pump and key: what two runs of `itpump serve` build.
    first = _challenge(farm.make_endpoint(served.pump, served.device_key))
    second = _challenge(farm.make_endpoint(served.pump, served.device_key))
    assert first.session_id != second.session_id
    assert first.pump_nonce != second.pump_nonce


def test_a_seeded_nonce_source_stays_available_for_simulations() -> None:
    farm = _farm()
    served = farm.pumps[0]

    def seeded() -> TelemetryEndpoint:
        nonces = seeded_nonce_source(5)
        return TelemetryEndpoint(served.pump, served.device_key, nonce_source=nonces)

    assert _challenge(seeded()) == _challenge(seeded())


def _replies(data: bytes) -> list[m.Response]:
    """Decode every response frame in ``data`` (no request matching: a replay has none)."""
    deframer = Deframer()
    deframer.receive_data(data)
    out: list[m.Response] = []
    while (body := deframer.next_frame()) is not None:
        packet = parse_body(body)
        request_type = m.MessageType(packet.header.msg_type & ~m.RESPONSE_BIT)
        out.append(m.decode_response(request_type, packet.payload))
    return out


def test_a_recorded_session_replayed_after_a_restart_is_refused() -> None:
    farm = _farm()
    served = farm.pumps[0]
    assert served.reported().therapy_state is TherapyState.RUNNING
    recorded: list[bytes] = []
    original = farm.make_endpoint(served.pump, served.device_key)

    def recording(data: bytes, /) -> bytes:
        recorded.append(data)
        return original(data)

    pc = _open_session(recording, served.key)
    assert isinstance(_exchange(recording, pc, m.StopTherapyRequest()), m.Ack)
    assert served.reported().therapy_state is TherapyState.STOPPED
    served.pump.call(served.pump.firmware.resume_therapy)  # only the replay is under test
    assert served.reported().therapy_state is TherapyState.RUNNING

    restarted = farm.make_endpoint(served.pump, served.device_key)  # what a restart builds
    answers = [reply for frame in recorded for reply in _replies(restarted(frame))]
    assert [type(a) for a in answers[:2]] == [m.IdentifyResponse, m.AuthBeginResponse]
    proof, stop = answers[2:]
    assert isinstance(proof, m.Refusal)
    assert proof.result is ResultCode.AUTH_FAILED
    assert isinstance(stop, m.Refusal)
    assert stop.result is ResultCode.NOT_AUTHENTICATED
    assert served.reported().therapy_state is TherapyState.RUNNING


# --- 2. an unexpected exception never leaves the pump deaf ------------------------------------

_DEC_31_2099_S = 4_102_358_400  # 2099-12-31T00:00:00Z


def test_a_failing_handler_is_answered_internal_error_and_the_pump_keeps_answering(
    caplog: pytest.LogCaptureFixture,
) -> None:
    farm = _farm()
    served = farm.pumps[0]
    endpoint = served.endpoint
    handle = endpoint.handler.handle
    calls: list[type[m.Request]] = []

    def failing(request: m.Request) -> m.Response:
        calls.append(type(request))
        if isinstance(request, m.InterrogateRequest):
            raise ZeroDivisionError("a bug in the firmware")
        return handle(request)

    endpoint.handler.handle = failing  # type: ignore[method-assign]
    pc = _open_session(served.handler, served.key)
    frame = pc.send(m.InterrogateRequest(), 0.0)
    with caplog.at_level(logging.ERROR, logger="itpump.emulator.telemetry"):
        reply = served.handler(frame)
    pc.receive_data(reply)
    event = pc.next_event()
    assert isinstance(event, ResponseReceived)
    assert isinstance(event.response, m.Refusal)
    assert event.response.result is ResultCode.INTERNAL_ERROR
    assert "ZeroDivisionError" in event.response.detail
    assert any(r.exc_info is not None for r in caplog.records), "the traceback is logged"
    assert endpoint.connection.stats.internal_errors == 1
    # A retransmission gets the same answer from the cache: nothing is done twice.
    assert served.handler(frame) == reply
    assert calls.count(m.InterrogateRequest) == 1
    # The request machine is idle again: the pump keeps answering.
    assert isinstance(_exchange(served.handler, pc, m.StopTherapyRequest()), m.Ack)
    assert served.reported().therapy_state is TherapyState.STOPPED


def test_an_answer_the_wire_cannot_carry_is_answered_internal_error() -> None:
    farm = _farm()
    served = farm.pumps[0]
    endpoint = served.endpoint
    handle = endpoint.handler.handle

    def unencodable(request: m.Request) -> m.Response:
        response = handle(request)
        if isinstance(response, m.InterrogateResponse):
            # Bypass the constructor's check, as a bug in a converter would.
            object.__setattr__(response, "projected_eri_s", 1 << 40)
        return response

    endpoint.handler.handle = unencodable  # type: ignore[method-assign]
    pc = _open_session(served.handler, served.key)
    refused = _exchange(served.handler, pc, m.InterrogateRequest())
    assert isinstance(refused, m.Refusal)
    assert refused.result is ResultCode.INTERNAL_ERROR
    assert "INTERROGATE" in refused.detail
    assert isinstance(_exchange(served.handler, pc, m.StopTherapyRequest()), m.Ack)


def test_a_protocol_layer_failure_is_answered_and_the_pump_keeps_answering() -> None:
    farm = _farm()
    served = farm.pumps[0]
    broken = True

    def nonces(n: int) -> bytes:
        if broken:
            raise OSError("entropy source unavailable")
        return bytes(range(n))

    endpoint = TelemetryEndpoint(served.pump, served.device_key, nonce_source=nonces)
    pc = ProgrammerConnection(seeded_nonce_source(1), key=served.key)
    assert isinstance(_exchange(endpoint, pc, m.IdentifyRequest()), m.IdentifyResponse)
    refused = _exchange(endpoint, pc, pc.auth_begin(m.Role.CLINICIAN))
    assert isinstance(refused, m.Refusal)
    assert refused.result is ResultCode.INTERNAL_ERROR
    broken = False
    assert isinstance(_exchange(endpoint, pc, pc.auth_begin(m.Role.CLINICIAN)), m.AuthBeginResponse)
    assert isinstance(_exchange(endpoint, pc, pc.auth_proof()), m.AuthProofResponse)
    assert isinstance(_exchange(endpoint, pc, m.InterrogateRequest()), m.InterrogateResponse)


def test_clock_set_to_2099_then_status_and_stop_are_answered() -> None:
    # The reproduction of the finding: `itpump ctl ... clock set 2099-12-31T00:00:00Z`,
    # then `status` and `stop` failed with WireError projected_eri_s=... for good.
    farm = _farm()
    served = farm.pumps[0]
    pc = _open_session(served.handler, served.key)
    assert isinstance(
        _exchange(served.handler, pc, m.SetClockRequest(_DEC_31_2099_S)), m.SetClockResponse
    )
    status = _exchange(served.handler, pc, m.InterrogateRequest())
    assert isinstance(status, m.InterrogateResponse)
    assert status.time_s >= _DEC_31_2099_S
    # ERI is projected after 2106, beyond the field: it saturates ("at or after"), not "none".
    projected = served.reported().projected_eri_rtc_s
    assert projected is not None
    assert projected > 0xFFFF_FFFF
    assert status.projected_eri_s == 0xFFFF_FFFF
    assert isinstance(_exchange(served.handler, pc, m.StopTherapyRequest()), m.Ack)
    assert served.reported().therapy_state is TherapyState.STOPPED


_PAST_2106_S = 4_315_485_594  # the reviewer's clock: 2100 advanced by about seven years


def test_a_clock_run_past_2106_keeps_the_pump_answering_and_set_clock_atomic() -> None:
    # A rig advanced a pump set to 2100 by years: SET_CLOCK was answered INTERNAL_ERROR
    # although it had set the clock, and INTERROGATE and READ_LOG failed for good.
    farm = _farm()
    served = farm.pumps[0]
    fw = served.pump.firmware
    pc = _open_session(served.handler, served.key)
    served.pump.call(lambda: fw.hal.set_rtc(_PAST_2106_S))
    set_clock = _exchange(served.handler, pc, m.SetClockRequest(_DEC_31_2099_S))
    assert isinstance(set_clock, m.SetClockResponse)
    assert set_clock.previous_time_s == 0xFFFF_FFFF  # saturated: "at or after"
    assert served.pump.call(fw.hal.rtc_s) < _PAST_2106_S  # the clock it acknowledged is set

    served.pump.call(lambda: fw.hal.set_rtc(_PAST_2106_S))
    served.pump.call(lambda: fw._raise(AlarmId.MOTOR_STALL, _PAST_2106_S))
    assert isinstance(_exchange(served.handler, pc, m.StopTherapyRequest()), m.Ack)  # logged
    status = _exchange(served.handler, pc, m.InterrogateRequest())
    assert isinstance(status, m.InterrogateResponse)
    assert status.time_s == 0xFFFF_FFFF
    assert [a.raised_at_s for a in status.alarms if a.alarm_id == AlarmId.MOTOR_STALL] == [
        0xFFFF_FFFF
    ]
    newest = _exchange(served.handler, pc, m.ReadLogRequest(0))
    assert isinstance(newest, m.ReadLogResponse)
    assert 0xFFFF_FFFF in [entry.time_s for entry in newest.entries]


def test_a_clock_beyond_the_pumps_range_is_refused_naming_field_and_range() -> None:
    farm = _farm()
    served = farm.pumps[0]
    pc = _open_session(served.handler, served.key)
    refused = _exchange(served.handler, pc, m.SetClockRequest(4_200_000_000))  # 2103
    assert isinstance(refused, m.Refusal)
    assert refused.result is ResultCode.OUT_OF_RANGE
    assert "epoch_s" in refused.detail
    assert "4102444800" in refused.detail
    assert isinstance(_exchange(served.handler, pc, m.InterrogateRequest()), m.InterrogateResponse)


@pytest.mark.parametrize("field_name", ["patient_id", "drug"])
def test_names_longer_than_32_utf8_bytes_are_refused(field_name: str) -> None:
    farm = _farm()
    served = farm.pumps[0]
    fw = served.pump.firmware
    name = "€" * 11  # 11 characters pass a character count; 33 bytes do not fit the wire
    command: Callable[[], None] = (
        (lambda: fw.set_patient_id(name))
        if field_name == "patient_id"
        else (lambda: fw.refill(1.0, name, 500.0))
    )
    with pytest.raises(Refusal) as refused:
        served.pump.call(command)
    assert refused.value.code is ResultCode.OUT_OF_RANGE
    assert field_name in refused.value.detail
    assert "32 UTF-8 bytes" in refused.value.detail
    served.pump.call(fw.set_patient_id, "€" * 10)  # 30 bytes: fits
    pc = _open_session(served.handler, served.key)
    status = _exchange(served.handler, pc, m.InterrogateRequest())
    assert isinstance(status, m.InterrogateResponse)
    assert status.program.patient_id == "€" * 10


@pytest.mark.parametrize(
    ("field_name", "serial", "model"),
    [("serial", "PÜMP-" + "Ü" * 14, "peristaltic-20"), ("model", "PP20-1", "ß" * 17)],
    ids=["serial", "model"],
)
def test_an_identity_the_wire_cannot_carry_is_refused_when_the_pump_is_built(
    field_name: str, serial: str, model: str
) -> None:
    with pytest.raises(ValueError, match=rf"{field_name}=.* UTF-8 bytes; IDENTIFY carries 1\.\.32"):
        PumpIdentity(serial, model, "1.0.0", m.Capability.NONE, 10)


# --- 3. every buffer is bounded; a hostile client costs only its own connection -------------


def test_the_deframer_bounds_its_partial_frame_and_its_queue() -> None:
    deframer = Deframer()
    deframer.receive_data(b"\x7e")
    for _ in range(256):  # a frame that never ends: 1 MiB without a flag
        deframer.receive_data(b"\x01" * 4096)
        assert deframer.buffered_bytes <= deframer.max_buffered_bytes
    assert deframer.stats.oversized == 1
    frames = encode_frame(b"\x01\x02\x03") * 1000
    deframer.receive_data(b"\x7e" + frames)  # a thousand frames nobody takes
    assert deframer.queued_frames == MAX_QUEUED_FRAMES
    assert deframer.stats.overrun == 1000 - MAX_QUEUED_FRAMES
    while deframer.next_frame() is not None:
        pass
    deframer.receive_data(encode_frame(b"\x04"))  # taking frames makes room again
    assert deframer.next_frame() == b"\x04"


class _Handler:
    """A byte handler: ``ping`` gets ``pong``; other bytes are counted and echoed times
    ``amplify``. Tells when a client goes away."""

    def __init__(self, amplify: int = 0) -> None:
        self.amplify = amplify
        self.handled_bytes = 0
        self.closed = asyncio.Event()

    def __call__(self, data: bytes, /) -> bytes:
        if data == b"ping":
            return b"pong"
        self.handled_bytes += len(data)
        return data * self.amplify

    def link_closed(self) -> None:
        self.closed.set()


class _WatchedLink(_TcpLink):
    def __init__(self, owner: TcpTransport) -> None:
        super().__init__(owner)
        self.paused = asyncio.Event()

    def pause_writing(self) -> None:
        super().pause_writing()
        self.paused.set()


class _WatchedTcp(TcpTransport):
    """A TCP transport that keeps every link and connection it made, for inspection."""

    def __init__(self, handler: _Handler, emulation: LinkEmulator | None = None) -> None:
        super().__init__(handler, emulation=emulation)
        self.made_links: list[_WatchedLink] = []
        self.made_connections: list[Connection] = []

    def _make_link(self) -> _TcpLink:
        link = _WatchedLink(self)
        self.made_links.append(link)
        return link

    def _new_connection(self, write: Callable[[bytes], None], name: str) -> Connection:
        conn = super()._new_connection(write, name)
        self.made_connections.append(conn)
        return conn


class _WatchedRfc2217(Rfc2217Transport):
    def __init__(self, handler: _Handler) -> None:
        super().__init__(handler)
        self.made_links: list[_Rfc2217Link] = []

    def _make_link(self) -> _TcpLink:
        link = _Rfc2217Link(self)
        self.made_links.append(link)
        return link


async def _ping(port: int) -> None:
    """A second client is answered (the reply may follow Telnet negotiation bytes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"ping")
        assert (await reader.readuntil(b"pong")).endswith(b"pong")
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_paced_link_bounds_what_it_queues_and_serves_a_second_client() -> None:
    handler = _Handler()
    transport = _WatchedTcp(handler, LinkEmulator(LinkConfig(baud=19_200)))
    flood = 2 * 1024 * 1024  # 18 minutes of link time at 19 200 baud
    async with transport:
        _reader, writer = await asyncio.open_connection("127.0.0.1", transport.port)
        writer.write(b"\x00" * flood)
        await writer.drain()
        await _ping(transport.port)  # served while the flood is still "arriving"
        writer.close()
        await writer.wait_closed()
        await handler.closed.wait()  # the server has read every byte the flooder sent
    flooded = transport.made_connections[0]
    assert flooded.pending_peak_bytes <= flooded.max_pending_bytes == DEFAULT_MAX_PENDING_BYTES
    assert flooded.bytes_overrun >= flood - DEFAULT_MAX_PENDING_BYTES


async def test_a_tcp_client_that_never_reads_is_paused_and_a_second_client_is_served() -> None:
    handler = _Handler(amplify=2)  # every byte read makes two bytes of reply
    transport = _WatchedTcp(handler)
    loop = asyncio.get_running_loop()
    flood = 8 * 1024 * 1024
    async with transport:
        sock = socket.create_connection(("127.0.0.1", transport.port))
        sock.setblocking(False)
        sender = asyncio.create_task(loop.sock_sendall(sock, b"\x00" * flood))
        try:
            while not transport.made_links:
                await asyncio.sleep(0)  # a yield to the loop until the server accepts
            flooded = transport.made_links[0]
            waits = {
                asyncio.create_task(flooded.paused.wait()),
                asyncio.create_task(handler.closed.wait()),
            }
            _done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            assert flooded.paused.is_set()
            assert flooded.reading_paused  # it cannot make the pump produce more
            assert flooded.write_buffer_bytes <= MAX_WRITE_BUFFER_BYTES
            assert handler.handled_bytes < flood
            await _ping(transport.port)
            assert flooded.write_buffer_bytes <= MAX_WRITE_BUFFER_BYTES
        finally:
            sender.cancel()
            sock.close()


async def test_an_unclosed_rfc2217_subnegotiation_is_bounded() -> None:
    handler = _Handler()
    transport = _WatchedRfc2217(handler)
    async with transport:
        reader, writer = await asyncio.open_connection("127.0.0.1", transport.port)
        writer.write(b"\xff\xfa" + b"\x2c" * (1024 * 1024))  # IAC SB, never IAC SE
        await writer.drain()
        await _ping(transport.port)  # the other client is served meanwhile
        writer.write(b"\xff\xf0ping")  # IAC SE: the link is back
        assert (await reader.readuntil(b"pong")).endswith(b"pong")
        link = transport.made_links[0]
        assert link._manager.subnegotiation_peak_bytes <= MAX_SUBNEGOTIATION_BYTES
        assert link._manager.subnegotiation_overflows == 1
        assert link.subnegotiation_bytes == 0
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(
    "telnet",
    [b"\xff\xf0", b"\xff\xfa\x2c\x01\x00\xff\xf0"],
    ids=["IAC SE without SB", "SET_BAUDRATE cut short"],
)
async def test_a_stray_or_malformed_rfc2217_command_is_ignored(telnet: bytes) -> None:
    handler = _Handler()
    async with Rfc2217Transport(handler) as transport:
        reader, writer = await asyncio.open_connection("127.0.0.1", transport.port)
        writer.write(telnet)
        writer.write(b"ping")
        assert (await reader.readuntil(b"pong")).endswith(b"pong")
        writer.close()
        await writer.wait_closed()


async def test_unescaped_iac_bytes_log_one_warning_per_connection_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # IAC followed by a byte that is no Telnet command: pyserial warned once per byte, so a
    # blast of binary data flooded the log (52,326 lines for 50 MB).
    handler = _Handler()
    caplog.set_level(logging.WARNING, logger="itpump.emulator.transports.rfc2217")
    async with Rfc2217Transport(handler) as transport:
        reader, writer = await asyncio.open_connection("127.0.0.1", transport.port)
        writer.write(b"\xff\x01" * 5000)
        writer.write(b"ping")
        assert (await reader.readuntil(b"pong")).endswith(b"pong")
        writer.close()
        await writer.wait_closed()
        await handler.closed.wait()
    said = [r.getMessage() for r in caplog.records if "Telnet" in r.getMessage()]
    assert len(said) == 2, said
    assert "later Telnet warnings on this connection are counted" in said[0]
    assert said[1].startswith("RFC 2217: 4999 more Telnet warnings")


async def test_a_pty_client_that_never_reads_is_warned_about_once_then_a_total(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Each dropped write was logged: a 20 s flood wrote 54,902 lines.
    caplog.set_level(logging.WARNING, logger="itpump.emulator.transports.pty")
    transport = PtyTransport(lambda data: b"")
    await transport.start()
    client = os.open(transport.path, os.O_RDWR | os.O_NOCTTY)  # open, never read
    try:
        chunk = b"x" * 4096
        writes = (2 * _MAX_BACKLOG) // len(chunk)
        for _ in range(writes):
            transport._write(chunk)
    finally:
        await transport.close()
        os.close(client)
    said = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(said) == 2, said
    assert "later drops on this link are counted" in said[0]
    total = int(said[1].split(": ", 1)[1].split()[0])
    # Everything written beyond the backlog and the PTY's own buffer was dropped.
    assert _MAX_BACKLOG // 2 < total < writes * len(chunk)
    assert "in all on this link" in said[1]
