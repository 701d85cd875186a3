"""A full clinic visit with the reference programmer, back to back over every transport.

identify, authenticate, interrogate, refill with a concentration change (bridge bolus),
reprogram, read the log; then check the emulator's truth agrees with what was programmed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from itpump.emulator.farm import PortSpec, PumpFarm
from itpump.emulator.scenario import load_scenario
from itpump.programmer import (
    Continuous,
    Flex,
    LogRecord,
    Program,
    PumpClient,
    PumpInfo,
    PumpRefused,
    PumpStatus,
    RefillResult,
    ResultCode,
    Role,
)
from itpump.protocol.messages import TherapyState

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(params=["pty", "tcp", "rfc2217"])
async def farm(request: pytest.FixtureRequest) -> AsyncIterator[PumpFarm]:
    farm = PumpFarm(load_scenario("clinic-ready"), port=PortSpec(request.param), speed=60.0)
    farm.runtime.advance_to(24.0)  # a day after implant: primed and on its program
    async with farm:
        task = asyncio.create_task(farm.run())
        yield farm
        farm.stop()
        await task


@dataclass
class Visit:
    """What the programmer saw during one visit."""

    info: PumpInfo
    before: PumpStatus
    refill: RefillResult
    bridging: PumpStatus
    refused: PumpRefused
    after: PumpStatus
    log: list[LogRecord]


def clinic_visit(url: str, key: bytes) -> Visit:
    """What a clinician does at a refill visit, as blocking programmer calls."""
    with PumpClient(url, key=key) as pump:
        info = pump.connect(Role.CLINICIAN, key)
        before = pump.interrogate()
        refill = pump.refill(
            20.0, "baclofen", 1000.0, aspirated_ml=before.reservoir_ml, bridge=True
        )
        bridging = pump.interrogate()
        with pytest.raises(PumpRefused) as refused:  # the old program's drug no longer matches
            pump.program(Program("baclofen", 500.0, 500.0, Continuous(200.0)))
        new = Program(
            "baclofen",
            1000.0,
            600.0,
            Flex.parse("00:00=180,07:00=260,13:00=220,20:00=200", "daily"),
            patient_id="PT-0001",
        )
        pump.program(new)
        after = pump.interrogate()
        log = pump.read_log()
    return Visit(info, before, refill, bridging, refused.value, after, log)


async def test_full_clinic_visit(farm: PumpFarm) -> None:
    served = farm.pumps[0]
    result = await asyncio.to_thread(clinic_visit, served.url, served.key)
    assert result.info.serial == served.pump.serial
    assert result.before.program.concentration_mcg_per_ml == 500.0
    path_ml = served.pump.firmware.path_volume_ml()
    assert result.refill.bridge_volume_ml == pytest.approx(path_ml, abs=1e-6)
    assert result.bridging.therapy_state is TherapyState.BRIDGING
    assert result.refused.code is ResultCode.INVALID_STATE
    assert isinstance(result.after.program.mode, Flex)
    assert result.after.program.concentration_mcg_per_ml == 1000.0
    events = [r.event for r in result.log]
    for expected in ("REFILL", "CONCENTRATION_CHANGED", "BOLUS_STARTED", "PROGRAM_CHANGED"):
        assert expected in events
    # Truth: the reservoir really holds the new drug, and every microgram is accounted for.
    truth = served.pump.truth()
    assert truth.reservoir_conc_mcg_per_ml == 1000.0
    assert abs(truth.ledger.imbalance_mcg) <= 1e-9 * truth.ledger.filled_mcg


async def test_patient_role_can_bolus_but_not_program(farm: PumpFarm) -> None:
    served = farm.pumps[0]

    def patient() -> tuple[float, ResultCode]:
        with PumpClient(served.url, key=served.patient_key) as pump:
            pump.connect(Role.PATIENT)
            bolus = pump.patient_bolus()
            try:
                pump.stop_therapy()
            except PumpRefused as refusal:
                return bolus.dose_mcg, refusal.code
        raise AssertionError("stop_therapy was not refused for the patient role")

    dose, code = await asyncio.to_thread(patient)
    assert dose == 25.0
    assert code is ResultCode.ROLE_FORBIDDEN
