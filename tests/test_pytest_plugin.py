"""The pytest plugin: options, fresh pumps per test, the thread model, clean teardown.

Inner test sessions run with pytester, loading the plugin as `-p emulator.pytest_plugin` (the
installed entry point is tested from a built wheel in test_pytest_plugin_wheel.py).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from pathlib import Path

import pytest

from itpump.emulator.faults import FaultError
from itpump.emulator.rig import (
    FarmCaller,
    RigClosedError,
    RigFarm,
    RigOptionError,
    RigOptions,
    RigPump,
    serve_in_thread,
)
from itpump.programmer import PumpClient

pytest_plugins = ["pytester"]

PLUGIN = ("-p", "no:cacheprovider")  # the plugin itself loads through its entry point
INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
{extra}
"""


def _project(pytester: pytest.Pytester, ini_extra: str = "") -> None:
    pytester.makeini(INI.format(extra=ini_extra))


# --------------------------------------------------------------------------- options


def test_options_are_checked_and_name_the_option_and_what_is_allowed() -> None:
    cases = {
        "port": ("usb", "port='usb': use tcp, pty, rfc2217"),
        "speed": (-1, "speed=-1: must be >= 0"),
        "count": (0, "count=0: must be 1..1000"),
        "warmup": ("a while", "warmup='a while'"),
        "scenario": ("no-such", "shipped scenarios: "),
        "profile": ("no-such", "known profiles: "),
        "seed": (-3, "seed=-3: must be >= 0"),
        "pace": ("maybe", "pace='maybe': use true or false"),
    }
    for name, (value, message) in cases.items():
        with pytest.raises(RigOptionError, match=message.replace("(", r"\(")):
            RigOptions.from_values({name: value}, source="")
    with pytest.raises(RigOptionError, match="null has no URL"):
        RigOptions.from_values({"port": "null"})
    with pytest.raises(RigOptionError, match=r"scenaro: unknown option; allowed: scenario, "):
        RigOptions.from_values({"scenaro": "clinic-ready"}, source="")


def test_option_values_are_parsed_in_their_units() -> None:
    options = RigOptions.from_values(
        {"warmup": "2d 6h", "speed": "max", "count": "3", "pace": "true", "port": "tcp:0"}
    )
    assert (options.warmup_h, options.speed, options.count, options.pace) == (54.0, None, 3, True)
    assert options.port_spec().kind == "tcp"
    assert RigOptions.from_values({"warmup": 12}).warmup_h == 12.0  # a number is hours
    assert RigOptions().speed == 0.0  # stepped by default


def test_ini_options_apply_and_markers_override_them_closest_first(
    pytester: pytest.Pytester,
) -> None:
    _project(pytester, "itpump_warmup = 2d\nitpump_count = 3")
    pytester.makepyfile(
        """
        import pytest

        def test_ini(itpump_farm):
            assert len(itpump_farm) == 3
            assert itpump_farm.now_h() == 48.0

        def test_ini_count_is_for_the_farm_only(itpump_pump):
            assert itpump_pump.now_h() == 48.0

        @pytest.mark.itpump(warmup="1h", count=2)
        class TestMarked:
            def test_class_marker(self, itpump_farm):
                assert (len(itpump_farm), itpump_farm.now_h()) == (2, 1.0)

            @pytest.mark.itpump(warmup=0)
            def test_closest_marker_wins_key_by_key(self, itpump_farm):
                assert (len(itpump_farm), itpump_farm.now_h()) == (2, 0.0)
        """
    )
    pytester.runpytest(*PLUGIN, "--strict-markers").assert_outcomes(passed=4)


def test_a_bad_ini_option_stops_the_session_with_a_usage_error(pytester: pytest.Pytester) -> None:
    _project(pytester, "itpump_port = usb")
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest(*PLUGIN)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini itpump_port='usb': use tcp, pty, rfc2217*"])


def test_a_bad_marker_fails_the_test_setup_with_a_clear_message(
    pytester: pytest.Pytester,
) -> None:
    _project(pytester)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.itpump(speed="fast")
        def test_bad_speed(itpump_pump):
            pass

        @pytest.mark.itpump("tcp")
        def test_positional(itpump_pump):
            pass

        @pytest.mark.itpump(count=2)
        def test_count_on_one_pump(itpump_pump):
            pass

        def test_both_fixtures(itpump_pump, itpump_farm):
            pass

        def test_async_fixture_in_a_plain_test(itpump_farm_async):
            pass
        """
    )
    result = pytester.runpytest(*PLUGIN, "--strict-markers")
    result.assert_outcomes(errors=5)
    result.stdout.fnmatch_lines_random(
        [
            "*@pytest.mark.itpump speed='fast': use a number >= 0*or 'max'*",
            "*@pytest.mark.itpump takes keyword options only*",
            "*count=2: itpump_pump serves one pump; use itpump_farm*",
            "*uses either itpump_pump or itpump_farm, not both*",
            "*itpump_farm_async serves pumps on the test's event loop*uses itpump_farm",
        ]
    )


def test_scenario_paths_are_relative_to_the_test_file(pytester: pytest.Pytester) -> None:
    _project(pytester)
    shipped = Path(__file__).parents[1] / "emulator" / "scenarios" / "clinic-ready.toml"
    sub = pytester.mkpydir("sub")
    (sub / "slow.toml").write_text(
        shipped.read_text().replace("dose_mcg_per_day = 200", "dose_mcg_per_day = 100")
    )
    (sub / "test_own_scenario.py").write_text(
        "import pytest\n"
        "@pytest.mark.itpump(scenario='slow.toml')\n"
        "def test_it(itpump_pump):\n"
        "    assert itpump_pump.reported().program.basal_mcg_per_day == 100.0\n"
    )
    pytester.runpytest(*PLUGIN).assert_outcomes(passed=1)


# --------------------------------------------------------------------------- isolation


def test_each_test_gets_a_fresh_pump_whatever_the_last_one_did(pytester: pytest.Pytester) -> None:
    _project(pytester)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("round", range(3))
        def test_mess_up_then_check(itpump_pump, round):
            truth = itpump_pump.truth()
            assert itpump_pump.now_h() == 24.0
            assert truth.faults == ()
            assert truth.reservoir_ml > 19.0
            assert itpump_pump.head_placed
            assert itpump_pump.reported().alarms == ()
            itpump_pump.inject("motor_stall")
            itpump_pump.lift_head()
            itpump_pump.set_link_faults(drop_rate=1.0)
            itpump_pump.advance(24.0 * 60)
        """
    )
    pytester.runpytest(*PLUGIN).assert_outcomes(passed=3)


def _farm_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "itpump-farm"]


def _open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def test_teardown_closes_ports_and_stops_the_thread_even_when_tests_fail(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    _project(pytester)
    urls = tmp_path / "urls.txt"
    pytester.makepyfile(
        f"""
        import pytest
        from itpump.programmer import PumpClient

        def keep(url):
            with open({str(urls)!r}, "a") as f:
                f.write(url + "\\n")

        @pytest.mark.parametrize(
            "port", [pytest.param(p, marks=pytest.mark.itpump(port=p)) for p in ("tcp", "pty")]
        )
        def test_fails_with_a_client_connected(itpump_pump, port):
            assert itpump_pump.url.startswith("socket://") == (port == "tcp")
            keep(itpump_pump.url)
            with PumpClient(itpump_pump.url, key=itpump_pump.key) as client:
                client.connect()
                assert False, "the software under test failed"

        @pytest.mark.itpump(count=3)
        def test_farm_raises(itpump_farm):
            for pump in itpump_farm:
                keep(pump.url)
            raise RuntimeError("boom")

        @pytest.mark.asyncio
        async def test_async_fails(itpump_pump_async):
            keep(itpump_pump_async.url)
            assert False
        """
    )
    pytester.runpytest_inprocess(*PLUGIN).assert_outcomes(failed=4)  # warm imports up
    urls.write_text("")
    fds_before = _open_fds()
    pytester.runpytest_inprocess(*PLUGIN).assert_outcomes(failed=4)

    assert _farm_threads() == []
    assert _open_fds() == fds_before
    served = urls.read_text().split()
    assert len(served) == 6
    tcp = [url.removeprefix("socket://").split(":") for url in served if "socket://" in url]
    assert len(tcp) == 5
    for host, port in tcp:  # nobody listens there any more
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, int(port)), timeout=5).close()


# --------------------------------------------------------------------------- thread model


def test_sync_handles_act_on_the_farm_thread_and_raise_its_errors(itpump_pump: RigPump) -> None:
    on_farm = itpump_pump.run_on_farm(lambda served: threading.current_thread().name)
    assert on_farm == "itpump-farm"
    assert threading.current_thread().name != "itpump-farm"
    with pytest.raises(FaultError, match="allowed"):
        itpump_pump.inject("gremlins")
    with pytest.raises(ValueError, match="hours"):
        itpump_pump.advance(-1.0)
    # Stepped time: nothing moves until the test says so.
    assert itpump_pump.now_h() == 24.0
    assert itpump_pump.advance(2.0) == 26.0
    assert itpump_pump.truth().t_h == 26.0


def test_a_blocking_client_talks_while_the_test_reads_the_truth(itpump_pump: RigPump) -> None:
    with PumpClient(itpump_pump.url, key=itpump_pump.key) as client:
        info = client.connect()
        status = client.interrogate()
    assert info.serial == itpump_pump.serial
    assert itpump_pump.url.startswith("socket://127.0.0.1:")  # the default transport
    assert status.reservoir_ml == pytest.approx(
        itpump_pump.reported().reservoir_estimate_ml, abs=1e-6
    )


@pytest.mark.itpump(count=3, warmup="0")
def test_farm_fixture_serves_distinct_pumps_and_stops_at_the_first_alarm(
    itpump_farm: RigFarm,
) -> None:
    serials = [p.serial for p in itpump_farm]
    assert len(set(serials)) == 3
    assert len({p.url for p in itpump_farm}) == 3
    assert itpump_farm.pump(serials[1]) is itpump_farm[1]
    with pytest.raises(KeyError, match="no pump"):
        itpump_farm.pump("nope")
    # Make pump 2 warn first: its threshold is the highest.
    itpump_farm[2].run_on_farm(
        lambda s: s.pump.call(s.pump.firmware.set_low_reservoir_threshold, 10.0)
    )
    t_h, stop = itpump_farm.advance_until_alarm(limit_h=24.0 * 120)
    assert stop is not None
    assert stop.serial == serials[2]
    assert t_h == itpump_farm.now_h() == stop.t_h
    assert itpump_farm[0].reported().alarms == ()


@pytest.mark.itpump(speed="max")
def test_speed_option_reaches_the_runtime(itpump_farm: RigFarm) -> None:
    assert itpump_farm.run_on_farm(lambda farm: farm.runtime.speed) is None
    itpump_farm.set_speed(0)
    assert itpump_farm.run_on_farm(lambda farm: farm.runtime.speed) == 0


def test_snapshot_restore_and_reset_through_the_handle(itpump_pump: RigPump) -> None:
    snap = itpump_pump.snapshot()
    start = itpump_pump.truth()
    itpump_pump.advance(24.0 * 5)
    itpump_pump.inject("occlusion")
    itpump_pump.restore(snap)
    assert itpump_pump.truth().reservoir_ml == pytest.approx(start.reservoir_ml)
    assert itpump_pump.truth().faults == ()
    itpump_pump.inject("motor_stall")
    itpump_pump.reset()
    assert itpump_pump.truth().faults == ()


async def test_async_handles_run_on_the_test_loop_and_hop_back_from_threads(
    itpump_pump_async: RigPump,
) -> None:
    pump = itpump_pump_async
    loop = asyncio.get_running_loop()
    assert pump.run_on_farm(lambda s: asyncio.get_running_loop()) is loop
    # A blocking helper in a worker thread: its calls are carried back to the loop.
    thread_name, truth = await asyncio.to_thread(
        lambda: (pump.run_on_farm(lambda s: threading.current_thread().name), pump.truth())
    )
    assert thread_name == threading.current_thread().name
    assert truth.t_h == 24.0


def test_a_handle_kept_past_its_rig_refuses_to_act() -> None:
    with serve_in_thread(RigOptions(warmup_h=0.0)) as farm:
        pump = farm.pumps[0]
        assert pump.now_h() == 0.0
    with pytest.raises(RigClosedError, match="shut down"):
        pump.truth()
    assert _farm_threads() == []


def test_a_handle_called_from_another_event_loop_says_so() -> None:
    farm_loop = asyncio.new_event_loop()
    try:
        caller = FarmCaller(farm_loop, threading.get_ident())

        async def elsewhere() -> None:
            caller(lambda: None)

        with pytest.raises(RuntimeError, match="another event loop"):
            asyncio.run(elsewhere())
        assert caller(lambda: 7) == 7  # no loop running on this thread: a plain call
    finally:
        farm_loop.close()


def test_farm_errors_during_set_up_leave_nothing_running() -> None:
    bad = RigOptions(scenario="no-such-scenario")  # unchecked: built directly
    with pytest.raises(Exception, match="no-such-scenario"), serve_in_thread(bad):
        pass
    assert _farm_threads() == []
