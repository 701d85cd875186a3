"""`itpump serve --state`: every acknowledged change survives a restart, even a SIGKILL."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from benchmarks.bench_crash import run_kills
from itpump.emulator.farm import PortSpec, PumpFarm
from itpump.emulator.runner import ScenarioRun
from itpump.emulator.scenario import load_scenario
from itpump.emulator.state import SCHEMA_VERSION, StateFileError, StateStore
from itpump.programmer import Continuous, LogRecord, Program, PumpClient, PumpStatus
from itpump.protocol import messages as m
from itpump.protocol.auth import seeded_nonce_source
from itpump.protocol.connection import ProgrammerConnection, ResponseReceived
from itpump.tools.cli import main

pytestmark = pytest.mark.timeout(60)


def _farm(state: Path, port: str = "tcp") -> PumpFarm:
    # Stepped: simulated time moves only when the test advances it, so "where the clock was"
    # is one number.
    return PumpFarm(load_scenario("clinic-ready"), port=PortSpec(port), speed=0.0, state=state)


def _let_go(farm: PumpFarm) -> None:
    """Close the farm's state file without saving, as a SIGKILL would leave it."""
    assert farm.store is not None
    farm.store.close()
    farm.store = None


@asynccontextmanager
async def _serving(farm: PumpFarm) -> AsyncIterator[PumpFarm]:
    await farm.start()
    task = asyncio.create_task(farm.run())
    try:
        yield farm
    finally:
        farm.stop()
        await task


def _visit(url: str, key: bytes) -> tuple[PumpStatus, list[LogRecord]]:
    """Refill at 1000 mcg/mL and program 300 mcg/day; what the programmer saw after."""
    with PumpClient(url, key=key) as pump:
        pump.connect()
        before = pump.interrogate()
        pump.refill(20.0, "baclofen", 1000.0, aspirated_ml=before.reservoir_ml)
        pump.program(
            Program("baclofen", 1000.0, 500.0, Continuous(300.0), patient_id="PT-0001")
        )
        return pump.interrogate(), pump.read_log()


def _interrogate(url: str, key: bytes) -> tuple[PumpStatus, list[LogRecord]]:
    with PumpClient(url, key=key) as pump:
        pump.connect()
        return pump.interrogate(), pump.read_log()


async def test_a_new_farm_on_the_state_file_has_every_acknowledged_change(
    tmp_path: Path,
) -> None:
    db = tmp_path / "farm.db"
    first = _farm(db)
    first.advance(5.0)  # the clock stands at 29 h (24 h warm-up + 5 h) from here on
    async with _serving(first):
        served = first.pumps[0]
        seen, log = await asyncio.to_thread(_visit, served.url, served.key)
        clock_h, pump_h = first.now_h(), served.now_h()
        # As at a kill: the first farm's file is let go without the save a clean stop makes,
        # so what the second farm finds is what the commits before each reply put there.
        _let_go(first)
        second = _farm(db)
        async with _serving(second):
            again = second.pumps[0]
            assert again.serial == served.serial
            assert second.now_h() == clock_h == 29.0
            assert again.now_h() == pump_h
            status, log_after = await asyncio.to_thread(_interrogate, again.url, again.key)
        await second.close()
    await first.close()
    assert seen.program.concentration_mcg_per_ml == 1000.0
    assert status.program.concentration_mcg_per_ml == 1000.0
    assert status.program.mode == Continuous(300.0)
    assert status.reservoir_ml == seen.reservoir_ml
    # Newest first: the second visit's own entries (if any) come before the first visit's.
    assert log_after[len(log_after) - len(log) :] == log
    assert {"REFILL", "PROGRAM_CHANGED"} <= {r.event for r in log_after}


async def test_time_driven_changes_are_saved_at_a_clean_stop(tmp_path: Path) -> None:
    db = tmp_path / "farm.db"
    first = _farm(db, "null")
    first.runtime.advance_to(100.0)  # time alone: no request, no rig change commits it
    reservoir = first.pumps[0].truth().reservoir_ml
    await first.close()
    second = _farm(db, "null")
    assert second.now_h() == 100.0
    assert second.pumps[0].truth().reservoir_ml == reservoir
    await second.close()


async def test_time_driven_changes_are_saved_periodically_while_running(
    tmp_path: Path,
) -> None:
    db = tmp_path / "farm.db"
    farm = PumpFarm(
        load_scenario("clinic-ready"),
        port=PortSpec("null"),
        speed=3600.0,
        state=db,
        save_every_s=0.01,
    )
    store = farm.store
    assert store is not None
    start_h = farm.now_h()
    saved = asyncio.Event()
    save = store.save

    def watched(farm_h: float, pumps: Iterable[tuple[str, float, bytes]]) -> None:
        save(farm_h, pumps)
        if farm_h > start_h:
            saved.set()

    store.save = watched  # type: ignore[method-assign]
    task = asyncio.create_task(farm.run())
    await asyncio.wait_for(saved.wait(), 30)
    farm.stop()
    await task
    _let_go(farm)  # as at a kill: no save at the stop
    after = PumpFarm(load_scenario("clinic-ready"), port=PortSpec("null"), speed=0.0, state=db)
    assert after.now_h() > start_h
    assert after.pumps[0].now_h() > start_h  # the pump was saved with the clock
    await after.close()
    await farm.close()


def test_a_reply_is_withheld_until_its_change_is_committed(tmp_path: Path) -> None:
    db = tmp_path / "farm.db"
    farm = _farm(db, "null")
    served = farm.pumps[0]
    pc = ProgrammerConnection(seeded_nonce_source(3), key=served.key)
    clock = [0.0]

    def send(request: m.Request) -> bytes:
        return served.handler(pc.send(request, clock[0]))

    for request in (m.IdentifyRequest(), pc.auth_begin(m.Role.CLINICIAN)):
        pc.receive_data(send(request))
        pc.next_event()
    pc.receive_data(send(pc.auth_proof()))
    pc.next_event()
    store = farm.store
    assert store is not None
    save = store.save

    def disk_full(farm_h: float, pumps: Iterable[tuple[str, float, bytes]]) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    store.save = disk_full  # type: ignore[method-assign]
    # The pump acts, but the commit fails: no acknowledgement leaves.
    assert send(m.SetAlarmThresholdsRequest(1_234_000)) == b""
    store.save = save  # type: ignore[method-assign]
    clock[0] += 60.0  # the programmer's response timer runs out: it retransmits
    reply = served.handler(pc.poll(clock[0]))
    assert reply  # answered from the pump's cache, now that the commit went through
    pc.receive_data(reply)
    assert isinstance(pc.next_event(), ResponseReceived)
    _let_go(farm)
    again = _farm(db, "null")
    assert again.pumps[0].reported().low_reservoir_threshold_ml == pytest.approx(1.234)


async def test_a_pump_missing_from_the_file_is_built_fresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "farm.db"
    one = _farm(db, "null")
    one.advance(10.0)
    await one.close()
    two = PumpFarm(
        load_scenario("clinic-ready"), count=2, port=PortSpec("null"), speed=0.0, state=db
    )
    assert two.now_h() == 34.0  # the stored clock, no second warm-up
    stored, fresh = two.pumps
    assert stored.now_h() == 34.0  # continues
    assert fresh.now_h() == 24.0  # its own clock: built and warmed up on its own
    # Said in the log, not silent.
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(f"no stored state for pump {fresh.serial}" in line for line in said)
    assert not any(stored.serial + ":" in line for line in said)
    await two.close()
    assert StateStore(db).serials() == sorted([stored.serial, fresh.serial])


def test_a_file_of_another_format_or_version_is_refused_in_one_line(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all, just some words\n" * 10)
    with pytest.raises(StateFileError, match="not an itpump state file") as err:
        StateStore(text)
    assert "\n" not in str(err.value)

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(StateFileError, match="not an itpump state file"):
        StateStore(other)

    newer = tmp_path / "newer.db"
    StateStore(newer).close()
    with sqlite3.connect(newer) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION + 1,))
    with pytest.raises(StateFileError, match=f"reads version {SCHEMA_VERSION} only"):
        StateStore(newer)


def test_a_state_file_in_use_is_refused_and_free_again_after_close(tmp_path: Path) -> None:
    db = tmp_path / "farm.db"
    first = StateStore(db)
    with pytest.raises(StateFileError, match="in use by another itpump serve"):
        StateStore(db)
    first.close()
    StateStore(db).close()


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_a_state_file_in_use_through_a_link_is_refused(tmp_path: Path, link: str) -> None:
    # The lock belongs to the file, not to the name: a second server on another name of the
    # same file would overwrite the first one's acknowledged changes.
    db = tmp_path / "two.db"
    first = StateStore(db)
    other = tmp_path / "twolink.db"
    if link == "symlink":
        other.symlink_to(db.name)
    else:
        os.link(db, other)
    with pytest.raises(StateFileError, match="in use by another itpump serve") as err:
        StateStore(other)
    assert "\n" not in str(err.value)
    first.close()
    StateStore(other).close()  # free again once the first one let go


def test_serve_refuses_a_state_file_in_use_through_a_symlink_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "two.db"
    (tmp_path / "twolink.db").symlink_to(db.name)
    first = StateStore(db)
    try:
        code = main(["serve", "--port", "null", "--state", str(tmp_path / "twolink.db")])
    finally:
        first.close()
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "in use" in err


def _meta(db: Path) -> dict[str, str]:
    con = sqlite3.connect(db)
    try:
        return {str(k): str(v) for k, v in con.execute("SELECT key, value FROM meta")}
    finally:
        con.close()


@pytest.mark.parametrize("farm_h", ["nan", "1e400", "-5.0", "soon"])
def test_a_hand_edited_farm_clock_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], farm_h: str
) -> None:
    db = tmp_path / "farm.db"
    StateStore(db).close()
    with sqlite3.connect(db) as con:
        con.execute("INSERT OR REPLACE INTO meta VALUES ('farm_h', ?)", (farm_h,))
        con.execute("INSERT OR REPLACE INTO meta VALUES ('clean_stop', '1')")
    con.close()
    meta_before = _meta(db)
    assert main(["serve", "--port", "null", "--state", str(db)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "farm_h" in err
    assert "finite number >= 0" in err
    # A refused file is left as it was: not even marked as opened (clean_stop stays 1).
    assert _meta(db) == meta_before
    # The refusal let the file go: a second open gets past the lock to the same refusal.
    with pytest.raises(StateFileError, match="farm_h"):
        StateStore(db)


def test_serve_refuses_a_foreign_state_file_with_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("plain text\n" * 50)
    assert main(["serve", "--port", "null", "--state", str(text)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--state" in err
    assert "not an itpump state file" in err


async def test_a_snapshot_is_the_stored_format(tmp_path: Path) -> None:
    db = tmp_path / "farm.db"
    farm = _farm(db, "null")
    served = farm.pumps[0]
    snap = served.snapshot()
    await farm.close()
    stored = StateStore(db).load(served.serial)
    assert stored is not None
    # The same function wrote both: both decode to the same pump, at the same time.
    for data in (snap.state, stored):
        run = ScenarioRun.from_bytes(data)
        assert run.pump.serial == served.serial
        assert run.pump.hardware.t_h == snap.t_h


def test_sigkill_during_programming_loses_no_acknowledged_change(tmp_path: Path) -> None:
    report = run_kills(5, seed=7, db=tmp_path / "farm.db")
    assert report.kills == 5
    assert report.changes_acknowledged > 0
    assert report.losses == 0, report.details


async def test_links_left_dangling_by_a_kill_are_replaced_at_start(tmp_path: Path) -> None:
    # What a SIGKILLed `serve --count 3 --link` leaves: links into /dev/pts to PTYs that
    # no longer exist.
    base = tmp_path / "ttyPUMP"
    for i in range(3):
        os.symlink(f"/dev/pts/{9000 + i}", f"{base}{i}")
    farm = PumpFarm(
        load_scenario("clinic-ready"), count=3, port=PortSpec("pty"), link_path=str(base)
    )
    async with farm:
        for i, served in enumerate(farm.pumps):
            assert os.readlink(f"{base}{i}") == served.describe()["path"]
    assert not any(tmp_path.iterdir())  # removed again at a clean stop
