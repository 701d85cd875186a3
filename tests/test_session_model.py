"""The pump's session model (issue 9, point 5), each attack pinned by a regression test.

One telemetry head at a time, roles bound to keys, a pending challenge that a keyless flood
cannot take away, and a backoff after failed authentications. docs/safety.md describes the
model and names these tests. Everything runs in-process through served pumps' byte handlers
and in-memory links.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from itpump.emulator.farm import PortSpec, PumpFarm, ServedPump
from itpump.emulator.scenario import load_scenario
from itpump.firmware_stubs.firmware import TherapyState
from itpump.protocol import messages as m
from itpump.protocol.auth import seeded_nonce_source
from itpump.protocol.codes import ResultCode
from itpump.protocol.connection import ProgrammerConnection, ResponseReceived

pytestmark = pytest.mark.timeout(60)

Handler = Callable[[bytes], bytes]


class FakeClock:
    """Real seconds, moved by hand (the farm's link clock)."""

    def __init__(self) -> None:
        self.t_s = 1000.0

    def __call__(self) -> float:
        return self.t_s


def _farm(clock: FakeClock | None = None) -> PumpFarm:
    return PumpFarm(
        load_scenario("clinic-ready"),
        port=PortSpec("null"),
        speed=0.0,
        clock=clock or FakeClock(),
    )


def _exchange(handler: Handler, pc: ProgrammerConnection, request: m.Request) -> m.Response:
    pc.receive_data(handler(pc.send(request, 0.0)))
    event = pc.next_event()
    assert isinstance(event, ResponseReceived), event
    return event.response


def _handshake(
    handler: Handler, key: bytes, role: m.Role = m.Role.CLINICIAN, seed: int = 7
) -> tuple[ProgrammerConnection, m.Response]:
    """IDENTIFY, AUTH_BEGIN, AUTH_PROOF with ``key``; the programmer and the proof's answer."""
    pc = ProgrammerConnection(seeded_nonce_source(seed), key=key)
    assert isinstance(_exchange(handler, pc, m.IdentifyRequest()), m.IdentifyResponse)
    begun = _exchange(handler, pc, pc.auth_begin(role))
    assert isinstance(begun, m.AuthBeginResponse), begun
    return pc, _exchange(handler, pc, pc.auth_proof())


def _refused(response: m.Response, code: ResultCode) -> bool:
    return isinstance(response, m.Refusal) and response.result is code


# --- roles are bound to keys -----------------------------------------------------------------


def _served() -> ServedPump:
    return _farm().pumps[0]


def test_a_patient_key_cannot_open_a_clinician_session() -> None:
    served = _served()
    pc, proof = _handshake(served.handler, served.patient_key, m.Role.CLINICIAN)
    assert _refused(proof, ResultCode.AUTH_FAILED)
    assert pc.session is None
    # Nor can it command a stop by any other route: without a session it is refused.
    assert _refused(
        _exchange(served.handler, pc, m.StopTherapyRequest()), ResultCode.NOT_AUTHENTICATED
    )
    assert served.reported().therapy_state is TherapyState.RUNNING


def test_each_key_opens_its_own_role_only() -> None:
    served = _served()
    assert served.key != served.patient_key
    pc, proof = _handshake(served.handler, served.patient_key, m.Role.PATIENT)
    assert isinstance(proof, m.AuthProofResponse)
    assert pc.session is not None
    assert pc.session.role is m.Role.PATIENT
    assert _refused(
        _exchange(served.handler, pc, m.StopTherapyRequest()), ResultCode.ROLE_FORBIDDEN
    )
    assert isinstance(_exchange(served.handler, pc, m.EndSessionRequest()), m.Ack)
    # The clinician's key is no patient key either: each key proves one role.
    _pc, proof = _handshake(served.handler, served.key, m.Role.PATIENT, seed=8)
    assert _refused(proof, ResultCode.AUTH_FAILED)
    pc, proof = _handshake(served.handler, served.key, m.Role.CLINICIAN, seed=9)
    assert isinstance(proof, m.AuthProofResponse)
    assert isinstance(_exchange(served.handler, pc, m.StopTherapyRequest()), m.Ack)
    assert served.reported().therapy_state is TherapyState.STOPPED
