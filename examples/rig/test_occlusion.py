"""A catheter occlusion: the pump goes on reporting delivery while the CSF gets nothing.

The programmer cannot see it (no alarm, the 24 h dose looks right); only the truth and the
patient's concentrations show it. A test of a programmer's "suspected occlusion" hints would
start from here.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from itpump.emulator.rig import RigPump
from itpump.programmer import PumpStatus

DAY_H = 24.0


def test_occlusion_is_invisible_to_the_programmer_but_not_to_the_patient(
    itpump_pump: RigPump, interrogate: Callable[[], PumpStatus]
) -> None:
    before = interrogate()
    truth_before = itpump_pump.truth()
    csf_before = itpump_pump.concentrations()
    assert csf_before is not None
    assert csf_before.csf_lumbar_ng_per_ml > 100.0  # on therapy: 200 mcg/day of baclofen

    itpump_pump.inject("occlusion")
    itpump_pump.advance(DAY_H)

    after = interrogate()
    truth_after = itpump_pump.truth()
    csf_after = itpump_pump.concentrations()
    assert csf_after is not None

    # Reported: a normal day. No alarm, 200 mcg delivered, the estimate fell by 0.4 mL.
    assert after.alarms == ()
    assert after.dose_24h_mcg == pytest.approx(200.0, rel=0.01)
    assert before.reservoir_ml - after.reservoir_ml == pytest.approx(0.4, rel=0.01)
    # Truth: nothing left the reservoir and nothing reached the CSF.
    assert truth_after.reservoir_ml == pytest.approx(truth_before.reservoir_ml, abs=1e-9)
    assert truth_after.ledger.to_csf_mcg == pytest.approx(truth_before.ledger.to_csf_mcg)
    # The patient: lumbar CSF baclofen has washed out within the day.
    assert csf_after.csf_lumbar_ng_per_ml < 0.01 * csf_before.csf_lumbar_ng_per_ml
