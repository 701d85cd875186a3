"""The rig's view of served pumps: reads and changes at the current simulated time, stepped
time, advance until an alarm, snapshots, resets, link faults and session idling across jumps."""

from __future__ import annotations

import logging

import pytest

from itpump.emulator.farm import PortSpec, PumpFarm, ServedPump, SnapshotLimitError
from itpump.emulator.faults import FaultError
from itpump.emulator.scenario import load_scenario
from itpump.firmware_stubs.firmware import TherapyState
from itpump.protocol import messages as m
from itpump.protocol.auth import seeded_nonce_source
from itpump.protocol.codes import AlarmId, ResultCode
from itpump.protocol.connection import ProgrammerConnection, ResponseReceived


class FakeClock:
    """Real seconds the test moves by hand."""

    def __init__(self) -> None:
        self.t_s = 1000.0

    def __call__(self) -> float:
        return self.t_s


def _farm(speed: float | None = 0.0, count: int = 1, clock: FakeClock | None = None) -> PumpFarm:
    return PumpFarm(
        load_scenario("clinic-ready"),
        count=count,
        port=PortSpec("null"),
        speed=speed,
        clock=clock or FakeClock(),
    )


def test_farm_warms_up_a_day_by_default_like_serve() -> None:
    farm = _farm()
    served = farm.pumps[0]
    assert farm.now_h() == pytest.approx(24.0)
    assert served.reported().therapy_state is TherapyState.RUNNING
    assert served.truth().path_volume_ml > 0  # primed


def test_reads_act_at_the_current_time_when_time_runs() -> None:
    clock = FakeClock()
    farm = _farm(speed=3600.0, clock=clock)
    served = farm.pumps[0]
    before = served.truth()
    clock.t_s += 3.0  # three simulated hours pass; no SimPy event needs to happen
    # The raw model still stands at the last event; the rig's view is now.
    assert served.pump.hardware.t_h == pytest.approx(before.t_h)
    now = served.truth()
    assert now.t_h == pytest.approx(before.t_h + 3.0)
    assert now.reservoir_ml < before.reservoir_ml
    assert served.now_h() == pytest.approx(27.0)


def test_fault_injected_at_speed_starts_now_not_at_the_last_event() -> None:
    clock = FakeClock()
    farm = _farm(speed=3600.0, clock=clock)
    served = farm.pumps[0]
    csf_before = served.truth().ledger.to_csf_mcg
    clock.t_s += 6.0  # six hours of delivery happen before the occlusion
    served.inject("occlusion")
    csf_at_injection = served.truth().ledger.to_csf_mcg
    # 200 mcg/day for 6 h is 50 mcg: all of it reached the CSF before the occlusion.
    assert csf_at_injection - csf_before == pytest.approx(50.0, rel=0.05)
    clock.t_s += 6.0
    assert served.truth().ledger.to_csf_mcg == pytest.approx(csf_at_injection)
    assert served.truth().faults == ("occlusion",)
    assert served.clear("occlusion") is True
    assert served.truth().faults == ()


def test_fault_errors_name_the_parameter_and_change_nothing() -> None:
    served = _farm().pumps[0]
    with pytest.raises(FaultError, match=r"severity.*0.*1"):
        served.inject("occlusion", 2.0)
    with pytest.raises(FaultError, match="allowed"):
        served.inject("gremlins")
    with pytest.raises(FaultError, match="allowed"):
        served.clear("gremlins")
    assert served.truth().faults == ()


def test_stepped_time_moves_only_when_the_rig_advances_it() -> None:
    clock = FakeClock()
    farm = _farm(speed=0.0, clock=clock)
    clock.t_s += 3600.0
    assert farm.now_h() == pytest.approx(24.0)
    assert farm.advance(48.0) == pytest.approx(72.0)
    assert farm.pumps[0].truth().t_h == pytest.approx(72.0)
    with pytest.raises(ValueError, match="hours"):
        farm.advance(-1.0)
    with pytest.raises(ValueError, match="hours"):
        farm.advance(float("nan"))
    assert farm.now_h() == pytest.approx(72.0)


def test_advance_until_next_alarm_stops_at_the_low_reservoir_alarm() -> None:
    farm = _farm()
    served = farm.pumps[0]
    t_h, stop = farm.advance_until_alarm(limit_h=120 * 24.0)
    assert stop is not None
    assert stop.serial == served.serial
    assert stop.alarms == ("low_reservoir",)
    assert t_h == pytest.approx(stop.t_h)
    status = served.reported()
    assert AlarmId.LOW_RESERVOIR in {a.alarm for a in status.alarms}
    # The alarm came when the estimate crossed the threshold, not later.
    assert status.reservoir_estimate_ml <= status.low_reservoir_threshold_ml + 0.01


def test_advance_until_alarm_stops_at_the_limit_when_none_comes() -> None:
    farm = _farm()
    t_h, stop = farm.advance_until_alarm(limit_h=48.0)
    assert stop is None
    assert t_h == pytest.approx(72.0)


def test_advance_until_alarm_can_watch_one_pump() -> None:
    farm = _farm(count=2)
    first, second = farm.pumps
    # Pump 0's low-reservoir alarm comes days before pump 1's; only pump 1 is watched.
    first.pump.call(first.pump.firmware.set_low_reservoir_threshold, 8.0)
    _, stop = farm.advance_until_alarm(limit_h=24.0 * 120, serial=second.serial)
    assert stop is not None
    assert stop.serial == second.serial
    assert stop.alarms == ("low_reservoir",)
    assert AlarmId.LOW_RESERVOIR in {a.alarm for a in first.reported().alarms}
    with pytest.raises(KeyError, match="no pump"):
        farm.advance_until_alarm(limit_h=1.0, serial="nope")


def test_snapshot_restore_returns_the_whole_state_and_continues_from_it() -> None:
    farm = _farm()
    served = farm.pumps[0]
    snap = served.snapshot()
    truth_at_snap = served.truth()
    log_at_snap = len(served.pump.firmware.log)
    farm.advance(24.0 * 10)
    served.inject("occlusion")
    assert served.truth().reservoir_ml < truth_at_snap.reservoir_ml
    served.restore(snap)
    restored = served.truth()
    assert restored.t_h == pytest.approx(truth_at_snap.t_h)  # its own clock continues
    assert restored.reservoir_ml == pytest.approx(truth_at_snap.reservoir_ml)
    assert restored.faults == ()
    assert len(served.pump.firmware.log) == log_at_snap
    # The restored pump lives on: a day later it has delivered a day's drug.
    farm.advance(24.0)
    assert served.truth().t_h == pytest.approx(truth_at_snap.t_h + 24.0)
    assert truth_at_snap.reservoir_ml - served.truth().reservoir_ml == pytest.approx(0.4, rel=0.1)
    # Restoring twice from the same snapshot gives the same state again.
    served.restore(snap)
    assert served.truth().reservoir_ml == pytest.approx(truth_at_snap.reservoir_ml)


def test_restore_refuses_another_pumps_snapshot_and_snapshots_are_bounded() -> None:
    farm = _farm(count=2)
    snap = farm.pumps[0].snapshot()
    with pytest.raises(ValueError, match="not"):
        farm.pumps[1].restore(snap)
    farm.delete_snapshot(snap.id)
    with pytest.raises(KeyError):
        farm.snapshot(snap.id)
    farm.MAX_SNAPSHOTS = 2
    farm.pumps[0].snapshot()
    farm.pumps[1].snapshot()
    with pytest.raises(SnapshotLimitError, match="at most 2"):
        farm.pumps[0].snapshot()


def test_the_replaced_pump_no_longer_acts() -> None:
    farm = _farm()
    served = farm.pumps[0]
    old = served.pump
    served.reset()
    farm.advance(24.0 * 5)
    assert old.hardware.t_h == pytest.approx(24.0)  # detached: its timers fire into nothing
    assert served.pump is not old


def test_reset_gives_a_fresh_warmed_up_pump_with_the_same_identity() -> None:
    farm = _farm()
    served = farm.pumps[0]
    serial, key, url = served.serial, served.key, served.url
    fresh = served.truth()
    farm.advance(24.0 * 30)
    served.inject("motor_stall")
    served.reset()
    after = served.truth()
    assert (served.serial, served.key, served.url) == (serial, key, url)
    assert after.t_h == pytest.approx(24.0)
    assert after.reservoir_ml == pytest.approx(fresh.reservoir_ml)
    assert after.faults == ()
    assert served.reported().alarms == ()


def _exchange(served: ServedPump, pc: ProgrammerConnection, request: m.Request) -> m.Response:
    """One request straight through the pump's byte handler (no transport, no waiting)."""
    now = 0.0
    pc.receive_data(served.handler(pc.send(request, now)))
    event = pc.next_event()
    assert isinstance(event, ResponseReceived), event
    return event.response


def test_advancing_time_idles_out_an_open_session() -> None:
    farm = _farm()
    served = farm.pumps[0]
    pc = ProgrammerConnection(seeded_nonce_source(7), key=served.key)
    _exchange(served, pc, m.IdentifyRequest())
    _exchange(served, pc, pc.auth_begin(m.Role.CLINICIAN))
    _exchange(served, pc, pc.auth_proof())
    assert isinstance(_exchange(served, pc, m.InterrogateRequest()), m.InterrogateResponse)
    farm.advance(0.01)  # 36 s of silence: the session is still open
    assert isinstance(_exchange(served, pc, m.InterrogateRequest()), m.InterrogateResponse)
    farm.advance(1.0)  # an hour of silence: a real pump ended the session long ago
    refused = _exchange(served, pc, m.InterrogateRequest())
    assert isinstance(refused, m.Refusal)
    assert refused.result is ResultCode.NOT_AUTHENTICATED


def test_link_faults_are_validated_and_applied() -> None:
    served = _farm().pumps[0]
    config = served.set_link_faults(corruption_rate=0.5)
    assert config.corruption_rate == 0.5
    with pytest.raises(ValueError, match="drop_rate"):
        served.set_link_faults(drop_rate=1.5)
    assert served.link.config.drop_rate == 0.0
    served.set_link_faults(corruption_rate=0.0, drop_rate=1.0)
    assert served.link.inbound(b"\x7e\x01\x02") == b""
    served.lift_head()
    assert not served.head_placed
    served.place_head()
    assert served.head_placed


def test_a_pump_that_loses_power_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    farm = _farm()
    served = farm.pumps[0]
    with caplog.at_level(logging.WARNING, logger="itpump.emulator.pump"):
        served.inject("battery_dead")
        farm.advance(1.0)
        served.truth()
    lines = [r.getMessage() for r in caplog.records if "no power" in r.getMessage()]
    assert len(lines) == 1
    assert served.serial in lines[0]
