"""Shared by the capture tests: frames of a real clinic exchange, and a served clinic visit."""

from __future__ import annotations

from itpump.emulator.farm import PortSpec, PumpFarm
from itpump.emulator.scenario import load_scenario
from itpump.protocol import messages as m
from itpump.protocol.auth import seeded_nonce_source
from itpump.protocol.connection import ProgrammerConnection


def clinic_frames() -> list[tuple[int, bytes]]:
    """(direction, bytes) of a session with an in-memory pump: 0 = to the pump, 1 = reply.

    Covers nested records, unions, optional records, lists, flags, signed 8-byte integers
    (the log), a firmware refusal and MAC trailers.
    """
    farm = PumpFarm(load_scenario("clinic-ready"), port=PortSpec("null"), speed=0.0, warmup_h=24.0)
    served = farm.pumps[0]
    pc = ProgrammerConnection(seeded_nonce_source(5), key=served.key)
    out: list[tuple[int, bytes]] = []

    def exchange(request: m.Request) -> None:
        data = pc.send(request, 0.0)
        reply = served.endpoint(data)
        out.append((0, data))
        out.append((1, reply))
        pc.receive_data(reply)
        assert pc.next_event() is not None

    exchange(m.IdentifyRequest())
    exchange(pc.auth_begin(m.Role.CLINICIAN))
    exchange(pc.auth_proof())
    exchange(m.InterrogateRequest())
    exchange(m.ReadLogRequest(0))
    exchange(m.BolusRequest(m.ClinicianBolus(50, 10, True)))
    exchange(m.BolusRequest(m.ClinicianBolus(900_000, 30, True)))  # refused
    exchange(m.EndSessionRequest())
    return out
