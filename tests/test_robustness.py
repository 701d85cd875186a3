"""Findings of the adversarial test (project issue 9), each pinned by a regression test.

Unpredictable nonces, no fail-deaf state after an unexpected exception, values the wire
cannot carry, and bounded buffers in every transport. Everything runs in-process; sockets
only on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from emulator.farm import PortSpec, PumpFarm
from emulator.scenario import load_scenario
from emulator.telemetry import TelemetryEndpoint
from firmware_stubs.firmware import TherapyState
from protocol import messages as m
from protocol.auth import seeded_nonce_source
from protocol.codes import ResultCode
from protocol.connection import ProgrammerConnection, ResponseReceived
from protocol.framing import Deframer
from protocol.header import parse_body

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
    first = _challenge(farm.make_endpoint(served.pump, served.key))
    second = _challenge(farm.make_endpoint(served.pump, served.key))
    assert first.session_id != second.session_id
    assert first.pump_nonce != second.pump_nonce


def test_a_seeded_nonce_source_stays_available_for_simulations() -> None:
    farm = _farm()
    served = farm.pumps[0]

    def seeded() -> TelemetryEndpoint:
        return TelemetryEndpoint(served.pump, served.key, nonce_source=seeded_nonce_source(5))

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
    original = farm.make_endpoint(served.pump, served.key)

    def recording(data: bytes, /) -> bytes:
        recorded.append(data)
        return original(data)

    pc = _open_session(recording, served.key)
    assert isinstance(_exchange(recording, pc, m.StopTherapyRequest()), m.Ack)
    assert served.reported().therapy_state is TherapyState.STOPPED
    served.pump.call(served.pump.firmware.resume_therapy)  # only the replay is under test
    assert served.reported().therapy_state is TherapyState.RUNNING

    restarted = farm.make_endpoint(served.pump, served.key)  # what a restart builds
    answers = [reply for frame in recorded for reply in _replies(restarted(frame))]
    assert [type(a) for a in answers[:2]] == [m.IdentifyResponse, m.AuthBeginResponse]
    proof, stop = answers[2:]
    assert isinstance(proof, m.Refusal)
    assert proof.result is ResultCode.AUTH_FAILED
    assert isinstance(stop, m.Refusal)
    assert stop.result is ResultCode.NOT_AUTHENTICATED
    assert served.reported().therapy_state is TherapyState.RUNNING
