"""A farm's persistent state: one SQLite file (`itpump serve --state PATH`).

Each pump's whole state (hardware, firmware and its NVM, event log, recorder, patient, pending
scenario actions) is stored as `ScenarioRun.to_bytes()` — the same bytes a control-API
snapshot keeps — keyed by serial, beside the farm's simulated clock. The farm commits a pump
before the reply to each request it answered leaves (so every change a programmer saw
acknowledged is on disk), after each control-plane change, periodically for what time alone
changes (delivery, alarms), and at a clean stop (docs/architecture.md).

The file is trusted input: pump states are pickles, and unpickling runs code named by the
data. Point `--state` only at files this program wrote.

Pump states are Python objects of the code that wrote them: restored by code whose classes
have other fields, they would come back half-initialised or fail mid-way through a farm.
So each file records what its states depend on (`code_versions`: itpump's version, a digest
of the source of every module whose objects a state can hold, and the versions of the
libraries whose objects it holds), and a file written by other code is refused, before any
pump is built, with one line naming what differs.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import json
import math
import os
import sqlite3
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from itpump import __version__

FORMAT = "itpump-farm-state"
"""What the `meta` table's `format` row says in every state file."""

SCHEMA_VERSION = 2
"""The layout of the tables and of the meta rows; another version is refused. (2: the
`code` row, see `code_versions`.)"""

STORED_PACKAGES = ("itpump.emulator", "itpump.firmware_stubs", "itpump.protocol")
"""Packages whose objects a stored pump state can hold (tests/test_state.py checks that every
class in the states of the shipped scenarios comes from one of them, less `NOT_STORED`)."""

NOT_STORED = ("itpump.emulator.control", "itpump.emulator.sweep", "itpump.emulator.transports")
"""Sub-packages of `STORED_PACKAGES` that a pump state never holds objects of (front ends and
transports): editing them leaves state files usable."""

STORED_LIBRARIES = ("numpy", "pydantic", "pydantic-core")
"""Libraries whose objects a stored pump state holds (random generators, arrays, the
scenario's models)."""

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE pumps (
    serial TEXT PRIMARY KEY,
    t_h REAL NOT NULL,      -- the pump's own simulated time when saved
    farm_h REAL NOT NULL,   -- the farm's simulated time when saved
    state BLOB NOT NULL     -- ScenarioRun.to_bytes()
);
"""


class StateFileError(ValueError):
    """A state file this version cannot use (another format or schema version, unreadable);
    the message is one line naming the file."""


class StateStore:
    """One farm's state file: open (creating it) with `StateStore(path)`.

    WAL journal, `synchronous=FULL`: when `save` returns, the commit is on the disk (the WAL
    is fsynced), so it survives the process being killed and also an operating-system crash
    or a power loss of the host. The fsync costs about 0.3 ms a commit here
    (BENCHMARKS.md), beside a 19200-baud round trip of ~90 ms. (`NORMAL` would survive a
    SIGKILL too but could lose the last commits, acknowledged to a programmer, at a host
    crash.)
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.commits = 0
        self._lock = _FileLock(self.path)
        try:
            # isolation_level=None: transactions are explicit (BEGIN ... COMMIT) below.
            self._db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            self._lock.close()
            raise StateFileError(f"{self.path}: cannot open the state file: {exc}") from None
        try:
            self._check_or_create()
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StateFileError(
                f"{self.path}: not an itpump state file ({exc}); name a new file or one "
                "`itpump serve --state` wrote"
            ) from None
        except StateFileError:
            self.close()
            raise
        # Validated before the file is marked as opened below: a refused file is left as
        # it was (`serve --state` on a hand-edited clock exited 2 yet cleared clean_stop).
        try:
            self.farm_h()
        except StateFileError:
            self.close()
            raise
        #: whether the file was closed by a clean stop (`mark_clean`) when it was opened; a
        #: server killed while it was open leaves it unclean (`itpump serve --unclean-restart`)
        self.was_clean = self._meta("clean_stop") != "0"
        self._set_meta("clean_stop", "0")

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
        self._db.execute("COMMIT")

    def mark_clean(self) -> None:
        """Record a clean stop: the next open sees `was_clean` true."""
        self._set_meta("clean_stop", "1")

    def _check_or_create(self) -> None:
        db = self._db
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        if not tables:
            db.execute("BEGIN IMMEDIATE")
            db.executescript(_SCHEMA)  # executescript commits the open transaction first
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [
                    ("format", FORMAT),
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("written_by", f"itpump {__version__}, Python {sys.version.split()[0]}"),
                    ("code", json.dumps(code_versions(), sort_keys=True)),
                ],
            )
            db.execute("COMMIT")
            return
        meta: dict[str, str] = {}
        if "meta" in tables:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format") != FORMAT or "pumps" not in tables:
            raise StateFileError(
                f"{self.path}: an SQLite database but not an itpump state file; name a new "
                "file or one `itpump serve --state` wrote"
            )
        if meta.get("schema_version") != str(SCHEMA_VERSION):
            raise StateFileError(
                f"{self.path}: state file schema version {meta.get('schema_version')}, this "
                f"itpump reads version {SCHEMA_VERSION} only (written by "
                f"{meta.get('written_by', 'an unknown version')}): run the itpump that wrote "
                "it, or name a new --state file (this one is left as it is)"
            )
        try:
            stored = json.loads(meta.get("code", ""))
        except ValueError:
            stored = None
        if not isinstance(stored, dict):
            raise StateFileError(f"{self.path}: the state file's code row is unreadable")
        current = code_versions()
        if stored != current:
            raise StateFileError(
                f"{self.path}: written by other code ({_differences(stored, current)}); pump "
                "states are Python objects of the code that wrote them, so this itpump does "
                f"not restore them: run the itpump that wrote it "
                f"({meta.get('written_by', 'unknown')}), or name a new --state file (this one "
                "is left as it is)"
            )

    # ------------------------------------------------------------------ reading
    def farm_h(self) -> float | None:
        """The farm's simulated time at the last commit (None: nothing saved yet)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'farm_h'").fetchone()
        if row is None:
            return None
        try:
            farm_h = float(row[0])
        except (TypeError, ValueError):
            farm_h = math.nan
        # A hand-edited clock (nan, 1e400 read as inf, negative) would fail deep inside the
        # simulation; refuse it here in one line instead.
        if not (math.isfinite(farm_h) and farm_h >= 0):
            raise StateFileError(
                f"{self.path}: the state file's farm_h (the farm's clock, hours) is "
                f"{str(row[0])[:40]!r}; it must be a finite number >= 0 (the file was edited "
                "or damaged: restore it, or name a new --state file)"
            )
        return farm_h

    def load(self, serial: str) -> bytes | None:
        """The stored state of pump `serial`, or None."""
        row = self._db.execute("SELECT state FROM pumps WHERE serial = ?", (serial,)).fetchone()
        return None if row is None else bytes(row[0])

    def serials(self) -> list[str]:
        """Every stored pump's serial, sorted."""
        return [row[0] for row in self._db.execute("SELECT serial FROM pumps ORDER BY serial")]

    # ------------------------------------------------------------------ writing
    def save(self, farm_h: float, pumps: Iterable[tuple[str, float, bytes]]) -> None:
        """Store each (serial, pump time, state) and the farm's clock in one transaction:
        all of it is in the file when this returns, or none of it."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT OR REPLACE INTO pumps VALUES (?, ?, ?, ?)",
                ((serial, t_h, farm_h, state) for serial, t_h, state in pumps),
            )
            db.execute("INSERT OR REPLACE INTO meta VALUES ('farm_h', ?)", (repr(farm_h),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.commits += 1

    def close(self) -> None:
        """Close the file (a later `StateStore` on the same path reads what was committed)."""
        self._db.close()
        self._lock.close()  # releases the lock


@functools.cache
def code_versions() -> dict[str, str]:
    """What a stored pump state depends on, by name: "itpump" (its version), each library of
    `STORED_LIBRARIES` (its version), and each module of `STORED_PACKAGES` (a digest of its
    source). Computed once per process (~100 files)."""
    out = {"itpump": __version__}
    for library in STORED_LIBRARIES:
        try:
            out[library] = importlib.metadata.version(library)
        except importlib.metadata.PackageNotFoundError:
            out[library] = "absent"
    for package in STORED_PACKAGES:
        for root in importlib.import_module(package).__path__:
            base = Path(root)
            for path in sorted(base.rglob("*.py")):
                parts = path.relative_to(base).with_suffix("").parts
                name = ".".join((package, *parts)).removesuffix(".__init__")
                if any(name == p or name.startswith(p + ".") for p in NOT_STORED):
                    continue
                out[name] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return out


def _differences(stored: dict[str, object], current: dict[str, str]) -> str:
    """What differs between the code that wrote a file and this code, in a few words."""
    said: list[str] = []
    names = sorted(set(stored) | set(current))
    for name in ("itpump", *STORED_LIBRARIES):
        if stored.get(name) != current.get(name):
            said.append(f"{name} {stored.get(name, 'unknown')}, now {current.get(name)}")
    modules = [n for n in names if n.startswith("itpump.") and stored.get(n) != current.get(n)]
    if modules:
        shown = ", ".join(modules[:3]) + (f" and {len(modules) - 3} more" if modules[3:] else "")
        said.append(f"source changed since: {shown}")
    return "; ".join(said)


_HELD: set[tuple[int, int]] = set()
"""(st_dev, st_ino) of every state file this process holds open."""


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


class _FileLock:
    """An exclusive lock on a state file, held until `close`.

    Two servers on one state file would overwrite each other's pumps. The lock is taken on
    the database file itself (`flock` on an open descriptor), so it belongs to the inode: a
    symlink or a hard link to a file in use is refused too, where a lock file named after the
    path as given was not. `flock` locks are apart from the POSIX record locks SQLite takes;
    but closing any descriptor of a file drops all of its process's POSIX locks on it, so this
    descriptor stays open until after SQLite has closed the file, and a second open of a file
    this process already holds is refused from its identity (`_HELD`) before a descriptor is
    opened. The kernel drops the lock when its process dies, so a restart after SIGKILL is
    never locked out. Where `fcntl` does not exist (Windows) only `_HELD` is checked.
    """

    def __init__(self, path: Path) -> None:
        if _file_id(path) in _HELD:
            raise _in_use(path)
        try:
            self._file: IO[bytes] = open(path, "ab")  # noqa: SIM115 - the lock lives with it
        except OSError as exc:
            raise StateFileError(f"{path}: cannot open the state file: {exc}") from None
        st = os.fstat(self._file.fileno())
        self._id = (st.st_dev, st.st_ino)
        try:
            import fcntl
        except ImportError:
            pass
        else:
            try:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                # Held by another process: this process holds no SQLite lock on the file,
                # so closing this descriptor drops nothing.
                self._file.close()
                raise _in_use(path) from None
        _HELD.add(self._id)

    def close(self) -> None:
        """Release the lock (after the SQLite connection on the file is closed)."""
        if not self._file.closed:
            self._file.close()
            _HELD.discard(self._id)


def _in_use(path: Path) -> StateFileError:
    return StateFileError(
        f"{path}: in use by another itpump serve (or farm), perhaps through another name "
        "(a link); stop it, or name another file"
    )
