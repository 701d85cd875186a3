"""Nothing a recorded session used can be replayed after `itpump serve --state` restarts the
farm: the session is not stored, so a restart ends it, and the next handshake's session id
and pump nonce come from the OS CSPRNG, so neither the recorded proof nor the recorded MACs
(keyed by a session key bound to the old nonces) are accepted again."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from itpump.emulator.farm import PortSpec, PumpFarm, ServedPump
from itpump.emulator.scenario import load_scenario
from itpump.firmware_stubs.firmware import PumpStatus, TherapyState
from itpump.protocol import messages as m
from itpump.protocol.auth import seeded_nonce_source
from itpump.protocol.codes import EventCode, ResultCode
from itpump.protocol.connection import ProgrammerConnection, ResponseReceived
from itpump.protocol.framing import Deframer
from itpump.protocol.header import parse_body

pytestmark = pytest.mark.timeout(60)

Handler = Callable[[bytes], bytes]


class _StillClock:
    """The link's real-time clock: no idle timeout ends a session in the middle."""

    def __call__(self) -> float:
        return 5000.0


def _farm(db: Path) -> PumpFarm:
    return PumpFarm(
        load_scenario("clinic-ready"),
        port=PortSpec("null"),
        speed=0.0,
        clock=_StillClock(),
        state=db,
    )


def _exchange(handler: Handler, pc: ProgrammerConnection, request: m.Request) -> m.Response:
    pc.receive_data(handler(pc.send(request, 0.0)))
    event = pc.next_event()
    assert isinstance(event, ResponseReceived), event
    return event.response


def _session(handler: Handler, key: bytes, seed: int) -> ProgrammerConnection:
    pc = ProgrammerConnection(seeded_nonce_source(seed), key=key)
    assert isinstance(_exchange(handler, pc, m.IdentifyRequest()), m.IdentifyResponse)
    assert isinstance(_exchange(handler, pc, pc.auth_begin(m.Role.CLINICIAN)), m.AuthBeginResponse)
    assert isinstance(_exchange(handler, pc, pc.auth_proof()), m.AuthProofResponse)
    return pc


def _answers(data: bytes) -> list[m.Response]:
    """Every response frame in `data` (a replay has no request to match them with)."""
    deframer = Deframer()
    deframer.receive_data(data)
    out: list[m.Response] = []
    while (body := deframer.next_frame()) is not None:
        packet = parse_body(body)
        request_type = m.MessageType(packet.header.msg_type & ~m.RESPONSE_BIT)
        out.append(m.decode_response(request_type, packet.payload))
    return out


_ACTS = frozenset(
    {
        EventCode.THERAPY_STOPPED,
        EventCode.THERAPY_RESUMED,
        EventCode.ALARM_THRESHOLD_SET,
        EventCode.PROGRAM_CHANGED,
        EventCode.CLOCK_SET,
    }
)
"""Log events a carried-out command writes (a failed handshake may log on its own)."""


def _state(served: ServedPump) -> tuple[PumpStatus, list[EventCode]]:
    # Telemetry draws battery charge, so the gauge is left out; everything else must hold.
    status = dataclasses.replace(served.reported(), battery_remaining_fraction=0.0)
    log = served.run.pump.firmware.log.entries()
    return status, [entry.code for entry in log if entry.code in _ACTS]


def test_a_clinician_session_replayed_after_a_state_file_restart_is_refused(
    tmp_path: Path,
) -> None:
    db = tmp_path / "farm.db"
    first = _farm(db)
    served = first.pumps[0]
    recorded: list[bytes] = []

    def recording(data: bytes, /) -> bytes:
        recorded.append(data)
        return served.handler(data)

    # The recorded clinician visit: handshake, a new low-reservoir threshold, stop therapy.
    pc = _session(recording, served.key, seed=11)
    assert isinstance(_exchange(recording, pc, m.SetAlarmThresholdsRequest(4_000_000)), m.Ack)
    assert isinstance(_exchange(recording, pc, m.StopTherapyRequest()), m.Ack)
    assert served.reported().low_reservoir_threshold_ml == 4.0
    # Another session (not recorded) resumes therapy: a replayed STOP would now show.
    other = _session(served.handler, served.key, seed=12)
    assert isinstance(_exchange(served.handler, other, m.ResumeTherapyRequest()), m.Ack)
    assert served.reported().therapy_state is not TherapyState.STOPPED
    # As at a kill: the file keeps what was committed before each reply; nothing more.
    assert first.store is not None
    first.store.close()
    first.store = None

    second = _farm(db)
    again = second.pumps[0]
    assert again.serial == served.serial
    before = _state(again)
    assert before[0].therapy_state is not TherapyState.STOPPED
    assert before[0].low_reservoir_threshold_ml == 4.0  # the restart kept the visit

    # 1. The whole recording, frame by frame, to the restarted pump.
    answers = [answer for frame in recorded for answer in _answers(again.handler(frame))]
    assert [type(a) for a in answers[:2]] == [m.IdentifyResponse, m.AuthBeginResponse]
    proof, threshold, stop = answers[2:]
    assert isinstance(proof, m.Refusal)
    assert proof.result is ResultCode.AUTH_FAILED  # a new challenge: the old proof is wrong
    for refused in (threshold, stop):
        assert isinstance(refused, m.Refusal)
        assert refused.result is ResultCode.NOT_AUTHENTICATED
    assert _state(again) == before

    # 2. The recorded commands injected into a new, genuine session on the restarted pump:
    # another session id, another session key, so they are refused there too.
    genuine = _session(again.handler, again.key, seed=13)
    for frame in recorded[-2:]:
        (refused,) = _answers(again.handler(frame))
        assert isinstance(refused, m.Refusal)
        assert refused.result is ResultCode.NOT_AUTHENTICATED
    # ... and the genuine session is still usable afterwards.
    status = _exchange(again.handler, genuine, m.InterrogateRequest())
    assert isinstance(status, m.InterrogateResponse)
    assert _state(again) == before
    assert second.store is not None
    second.store.close()
