"""MRI on a peristaltic pump: the drive stalls in the field and, with `restart_delay_h`, stays
stalled for that long after the scan before it turns again (emulator/faults.py)."""

from __future__ import annotations

import pytest

from itpump.emulator.faults import Fault, FaultError, FaultKind
from itpump.emulator.pump import EmulatedPump
from itpump.protocol.codes import AlarmId
from tests.pump_helpers import continuous, make_pump


def _delivered_ml(pump: EmulatedPump) -> float:
    return 20.0 - pump.truth().reservoir_ml


def test_a_delayed_restart_holds_the_drive_after_the_scan_then_it_turns_again() -> None:
    env, pump = make_pump("peristaltic-20")
    pump.call(pump.firmware.program, continuous(480.0))  # 0.96 mL/day: 0.04 mL/h
    env.run(until=10.0)
    pump.inject(Fault.make("mri", 6.0))
    assert pump.firmware.alarms.is_active(AlarmId.MOTOR_STALL)
    env.run(until=12.0)
    pump.clear(FaultKind.MRI)
    at_clear = _delivered_ml(pump)
    assert pump.truth().faults == ()  # the field is gone...
    env.run(until=17.9)
    # ...but nothing moved and the pump still reports the stall.
    assert _delivered_ml(pump) == pytest.approx(at_clear, abs=1e-12)
    assert pump.firmware.alarms.is_active(AlarmId.MOTOR_STALL)
    env.run(until=18.0 + 1e-9)
    # At 18 h (clear + 6 h) the firmware hears the drive turn without anyone calling it.
    assert not pump.firmware.alarms.is_active(AlarmId.MOTOR_STALL)
    env.run(until=24.0)
    assert _delivered_ml(pump) - at_clear == pytest.approx(6 * 0.04, rel=0.05)
    ledger = pump.truth().ledger
    assert abs(ledger.imbalance_mcg) <= 1e-9 * ledger.filled_mcg


def test_without_a_delay_the_drive_turns_as_the_field_ends() -> None:
    env, pump = make_pump("peristaltic-20")
    pump.call(pump.firmware.program, continuous(480.0))
    env.run(until=10.0)
    pump.inject(Fault.make("mri"))
    env.run(until=12.0)
    pump.clear(FaultKind.MRI)
    at_clear = _delivered_ml(pump)
    assert not pump.firmware.alarms.is_active(AlarmId.MOTOR_STALL)
    env.run(until=18.0)
    assert _delivered_ml(pump) - at_clear == pytest.approx(6 * 0.04, rel=0.05)


def test_a_valve_gated_pump_has_no_motor_to_hold() -> None:
    env, pump = make_pump("valve-gated-20")
    pump.call(pump.firmware.program, continuous(2000.0))
    env.run(until=5.0)
    pump.inject(Fault.make("mri", 6.0))
    env.run(until=8.0)
    pump.clear(FaultKind.MRI)
    # The tripped safety valve stays shut until the clinician's reset; then delivery
    # resumes at once: no restart delay, whatever the fault's restart_delay_h.
    pump.call(pump.firmware.reset_mri_valve)
    before = _delivered_ml(pump)
    env.run(until=10.0)
    assert _delivered_ml(pump) > before


def test_the_delay_is_range_checked_naming_the_parameter() -> None:
    with pytest.raises(FaultError, match=r"restart_delay_h=200 outside allowed range 0\.\.168"):
        Fault.make("mri", 200.0)


def test_a_pump_copied_while_held_still_restarts_in_its_new_world() -> None:
    from itpump.emulator.pump import CountingEnvironment

    env, pump = make_pump("peristaltic-20")
    pump.call(pump.firmware.program, continuous(480.0))
    env.run(until=10.0)
    pump.inject(Fault.make("mri", 6.0))
    pump.clear(FaultKind.MRI)
    twin = pump.copy_detached()
    world = CountingEnvironment(100.0)
    twin.attach(world)
    world.run(until=100.0 + 6.0 + 1e-9)  # the twin's clock continues from 10 h
    assert not twin.firmware.alarms.is_active(AlarmId.MOTOR_STALL)
