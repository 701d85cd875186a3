"""The low-reservoir alarm must show on the programmer within a simulated day of the date the
programmer projected for it, and not a day early."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from itpump.emulator.rig import RigPump
from itpump.programmer import AlarmId, PumpStatus

DAY_H = 24.0


def alarm_names(status: PumpStatus) -> set[str]:
    return {alarm.name for alarm in status.alarms}


def test_low_reservoir_alarm_shows_when_the_programmer_said_it_would(
    itpump_pump: RigPump, interrogate: Callable[[], PumpStatus]
) -> None:
    first = interrogate()
    due = first.projected_low_reservoir
    assert due is not None
    assert "LOW_RESERVOIR" not in alarm_names(first)

    # A day before it is due, no alarm yet.
    hours_to_due = (due - first.time).total_seconds() / 3600.0
    itpump_pump.advance(hours_to_due - DAY_H)
    day_before = interrogate()
    assert "LOW_RESERVOIR" not in alarm_names(day_before)

    # Run on until the pump raises an alarm, but no more than two days (due +/- one day).
    _, stop = itpump_pump.advance_until_alarm(limit_h=2 * DAY_H)
    assert stop is not None, "no alarm within a day after the projected date"
    assert stop.alarms == ("low_reservoir",)

    at_alarm = interrogate()
    (alarm,) = [a for a in at_alarm.alarms if a.alarm_id == AlarmId.LOW_RESERVOIR]
    assert abs(alarm.raised_at - due) <= timedelta(days=1)
    assert not alarm.acknowledged
    # The programmer shows what the pump believes: the estimate at the threshold...
    reported = itpump_pump.reported()
    assert at_alarm.reservoir_ml == pytest.approx(reported.reservoir_estimate_ml, abs=1e-6)
    assert at_alarm.reservoir_ml == pytest.approx(at_alarm.low_reservoir_alarm_ml, abs=0.01)
    # ...and the truth agrees closely: the drug did not run out before the warning.
    truth = itpump_pump.truth()
    assert truth.reservoir_ml == pytest.approx(at_alarm.reservoir_ml, abs=0.1)
