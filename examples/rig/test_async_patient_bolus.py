"""The same rig from asyncio software under test: the farm runs on the test's own loop."""

from __future__ import annotations

import pytest

from itpump.emulator.rig import RigPump
from itpump.programmer import AsyncPumpClient, Role


@pytest.mark.asyncio  # needed under pytest-asyncio's strict mode; harmless in auto mode
async def test_patient_bolus_reaches_the_csf(itpump_pump_async: RigPump) -> None:
    pump = itpump_pump_async
    csf_before_mcg = pump.truth().ledger.to_csf_mcg

    async with AsyncPumpClient(pump.url, key=pump.patient_key) as patient:
        await patient.connect(Role.PATIENT)
        bolus = await patient.patient_bolus()
        status = await patient.interrogate()

    assert bolus.dose_mcg == 25.0
    assert status.patient_boluses_24h == 1
    # An hour later the bolus (over 10 minutes) and an hour of basal (200/24 mcg) have left
    # the catheter tip: the catheter's old contents were pushed out at the new rate.
    pump.advance(1.0)
    delivered_mcg = pump.truth().ledger.to_csf_mcg - csf_before_mcg
    assert delivered_mcg == pytest.approx(25.0 + 200.0 / 24.0, rel=0.02)
