"""A refill visit a month after implant: what the programmer shows, what it records, and what
really happened to the drug."""

from __future__ import annotations

import pytest

from itpump.emulator.rig import RigPump
from itpump.programmer import PumpClient, TherapyState

DAY_H = 24.0


def test_refill_visit_after_a_month(itpump_pump: RigPump) -> None:
    itpump_pump.advance(30 * DAY_H)  # the patient comes back a month later

    with PumpClient(itpump_pump.url, key=itpump_pump.key) as programmer:
        info = programmer.connect()
        before = programmer.interrogate()
        reported_before = itpump_pump.reported()
        truth_before = itpump_pump.truth()
        result = programmer.refill(20.0, "baclofen", 500.0, aspirated_ml=before.reservoir_ml)
        after = programmer.interrogate()
        log = programmer.read_log()

    assert info.serial == itpump_pump.serial
    # The programmer shows the pump's own estimate, not the truth.
    assert before.reservoir_ml == pytest.approx(reported_before.reservoir_estimate_ml, abs=1e-6)
    # A month at 200 mcg/day of 500 mcg/mL is 12 mL; the mechanism's random error (1 % per
    # 1 mL block) keeps the estimate within 0.1 mL of the truth.
    assert truth_before.reservoir_ml == pytest.approx(before.reservoir_ml, abs=0.1)
    assert before.therapy_state is TherapyState.RUNNING

    # After the refill the reservoir really holds 20 mL of the same drug; nothing was bridged.
    truth_after = itpump_pump.truth()
    assert result.reservoir_ml == pytest.approx(20.0)
    assert result.bridge_volume_ml == 0.0
    assert truth_after.reservoir_ml == pytest.approx(20.0)
    assert truth_after.reservoir_conc_mcg_per_ml == 500.0
    # The old drug left the pump by the needle: what was truly in the reservoir, not the estimate.
    aspirated_mcg = truth_after.ledger.aspirated_mcg - truth_before.ledger.aspirated_mcg
    assert aspirated_mcg == pytest.approx(truth_before.reservoir_ml * 500.0, rel=1e-6)
    assert abs(truth_after.ledger.imbalance_mcg) <= 1e-9 * truth_after.ledger.filled_mcg

    # The programmer's next-visit date moved a refill's worth later: (20 - 2) mL at 0.4 mL/day.
    assert before.projected_low_reservoir is not None
    assert after.projected_low_reservoir is not None
    assert after.reservoir_ml == pytest.approx(20.0)
    days_left = (after.projected_low_reservoir - after.time).total_seconds() / 86400.0
    assert days_left == pytest.approx(18.0 / 0.4, abs=0.5)
    assert "REFILL" in [record.event for record in log]
