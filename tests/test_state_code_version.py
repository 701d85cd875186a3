"""A state file is tied to the code that wrote it: pump states are pickles of that code's
classes, so a file written by another itpump version, other library versions or changed
source is refused in one line before any pump is built. And commits are fsynced."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import sqlite3
import sys
from pathlib import Path

import pytest

from itpump.emulator import state
from itpump.emulator.farm import PortSpec, PumpFarm
from itpump.emulator.scenario import load_scenario, shipped_scenarios
from itpump.emulator.state import StateFileError, StateStore, code_versions
from itpump.tools.cli import main

pytestmark = pytest.mark.timeout(120)


def _written(tmp_path: Path) -> Path:
    db = tmp_path / "farm.db"
    farm = PumpFarm(load_scenario("clinic-ready"), port=PortSpec("null"), speed=0.0, state=db)
    farm.advance(2.0)
    assert farm.store is not None
    farm.store.close()
    return db


def _edit_code_row(db: Path, **changes: str) -> None:
    con = sqlite3.connect(db)
    with con:
        (text,) = con.execute("SELECT value FROM meta WHERE key = 'code'").fetchone()
        code = json.loads(text)
        code.update(changes)
        con.execute("UPDATE meta SET value = ? WHERE key = 'code'", (json.dumps(code),))
    con.close()


def _digest(path: Path) -> str:
    """A digest of what the file holds (its rows), whatever SQLite's page layout."""
    con = sqlite3.connect(path)
    try:
        return hashlib.sha256("\n".join(con.iterdump()).encode()).hexdigest()
    finally:
        con.close()


def test_a_file_written_by_another_itpump_version_is_refused_in_one_line(tmp_path: Path) -> None:
    db = _written(tmp_path)
    _edit_code_row(db, itpump="0.0.9", numpy="1.26.0")
    with pytest.raises(StateFileError) as err:
        StateStore(db)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{db}: written by other code")
    assert f"itpump 0.0.9, now {code_versions()['itpump']}" in message
    assert f"numpy 1.26.0, now {code_versions()['numpy']}" in message
    assert "run the itpump that wrote it" in message
    assert "name a new --state file" in message


def test_a_file_written_by_changed_source_is_refused_naming_the_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A changed class layout is a changed module source: this code's digest of the firmware
    # module differs from the file's.
    db = _written(tmp_path)
    changed = dict(code_versions())
    changed["itpump.firmware_stubs.firmware"] = "0" * 16
    monkeypatch.setattr(state, "code_versions", lambda: changed)
    with pytest.raises(StateFileError, match=r"source changed since: itpump\.firmware_stubs\.firm"):
        StateStore(db)


def test_serve_refuses_a_file_of_other_code_with_exit_2_and_leaves_it_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _written(tmp_path)
    _edit_code_row(db, **{"itpump.emulator.pump": "f" * 16})
    before = _digest(db)
    assert main(["serve", "--port", "null", "--state", str(db)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "--state" in err
    assert "itpump.emulator.pump" in err
    assert "Traceback" not in err
    assert _digest(db) == before  # nothing restored, nothing saved over it


def test_a_file_written_by_this_code_opens(tmp_path: Path) -> None:
    db = _written(tmp_path)
    farm = PumpFarm(load_scenario("clinic-ready"), port=PortSpec("null"), speed=0.0, state=db)
    assert farm.now_h() == 26.0  # 24 h warm-up + 2 h, resumed
    assert farm.store is not None
    farm.store.close()


def test_commits_are_fsynced(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "farm.db")
    # 2 = FULL: in WAL mode the log is synced at every commit, so a host crash or power loss
    # cannot take back a commit whose reply was sent.
    assert store._db.execute("PRAGMA synchronous").fetchone() == (2,)
    assert store._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    store.close()


class _ClassRecorder(pickle.Unpickler):
    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.modules: set[str] = set()

    def find_class(self, module: str, name: str) -> object:
        self.modules.add(module)
        return super().find_class(module, name)


@pytest.mark.parametrize("scenario", shipped_scenarios())
def test_every_class_a_stored_pump_holds_is_in_the_code_versions(scenario: str) -> None:
    # What keeps STORED_PACKAGES / NOT_STORED / STORED_LIBRARIES honest: a class from
    # anywhere else in a stored state could change without the file noticing.
    farm = PumpFarm(load_scenario(scenario), port=PortSpec("null"), speed=0.0, warmup_h=48.0)
    served = farm.pumps[0]
    served.inject("occlusion", 0.5)
    recorder = _ClassRecorder(served.run.to_bytes())
    recorder.load()
    versions = code_versions()
    libraries = {name.replace("-", "_") for name in state.STORED_LIBRARIES}
    for module in recorder.modules:
        top = module.split(".")[0]
        if top == "itpump":
            assert module in versions, module
        else:
            assert top in sys.stdlib_module_names or top in libraries, module


def test_a_file_of_another_schema_says_what_to_do(tmp_path: Path) -> None:
    db = _written(tmp_path)
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(StateFileError) as err:
        StateStore(db)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{db}: state file schema version 1, this itpump reads version")
    assert message.endswith(
        "run the itpump that wrote it, or name a new --state file (this one is left as it is)"
    )
