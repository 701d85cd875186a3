"""A motor stall: the programmer must show a critical alarm, and no drug moves meanwhile."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from itpump.emulator.rig import RigPump
from itpump.programmer import AlarmId, PumpStatus
from itpump.protocol.messages import AlarmSeverity

STALL_H = 6.0


def test_motor_stall_raises_a_critical_alarm_and_stops_delivery(
    itpump_pump: RigPump, interrogate: Callable[[], PumpStatus]
) -> None:
    before = interrogate()
    truth_before = itpump_pump.truth()
    assert before.alarms == ()

    itpump_pump.inject("motor_stall")
    itpump_pump.advance(STALL_H)

    during = interrogate()
    (alarm,) = during.alarms
    assert alarm.alarm_id == AlarmId.MOTOR_STALL
    assert alarm.severity is AlarmSeverity.CRITICAL
    # Nothing moved, and the pump knows it: its estimate did not fall either.
    truth_during = itpump_pump.truth()
    assert truth_during.faults == ("motor_stall",)
    assert truth_during.reservoir_ml == pytest.approx(truth_before.reservoir_ml, abs=1e-9)
    assert truth_during.ledger.to_csf_mcg == pytest.approx(truth_before.ledger.to_csf_mcg)
    assert during.reservoir_ml == pytest.approx(before.reservoir_ml, abs=0.001)

    # The drive turns again: delivery resumes at the programmed 0.4 mL/day.
    assert itpump_pump.clear("motor_stall") is True
    itpump_pump.advance(24.0)
    truth_after = itpump_pump.truth()
    assert truth_during.reservoir_ml - truth_after.reservoir_ml == pytest.approx(0.4, rel=0.05)
