"""A farm's persistent state: one SQLite file (`itpump serve --state PATH`).

Each pump's whole state (hardware, firmware and its NVM, event log, recorder, patient, pending
scenario actions) is stored as `ScenarioRun.to_bytes()` — the same bytes a control-API
snapshot keeps — keyed by serial, beside the farm's simulated clock. The farm commits a pump
before the reply to each request it answered leaves (so every change a programmer saw
acknowledged is on disk), after each control-plane change, periodically for what time alone
changes (delivery, alarms), and at a clean stop (docs/architecture.md).

The file is trusted input: pump states are pickles, and unpickling runs code named by the
data. Point `--state` only at files this program wrote.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from itpump import __version__

FORMAT = "itpump-farm-state"
"""What the `meta` table's `format` row says in every state file."""

SCHEMA_VERSION = 1
"""The layout of the tables and of the stored pump bytes; another version is refused."""

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

    WAL journal, `synchronous=NORMAL`: a commit survives the process being killed (SIGKILL,
    a crash); the last commits before an operating-system crash or power loss may be lost,
    which is not what this rig guards against and would cost an fsync per request.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.commits = 0
        self._lock = _lock_exclusively(Path(f"{self.path}.lock"), self.path)
        try:
            # isolation_level=None: transactions are explicit (BEGIN ... COMMIT) below.
            self._db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            self._lock.close()
            raise StateFileError(f"{self.path}: cannot open the state file: {exc}") from None
        try:
            self._check_or_create()
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StateFileError(
                f"{self.path}: not an itpump state file ({exc}); name a new file or one "
                "`itpump serve --state` wrote"
            ) from None
        except StateFileError:
            self.close()
            raise

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
                f"{meta.get('written_by', 'an unknown version')})"
            )

    # ------------------------------------------------------------------ reading
    def farm_h(self) -> float | None:
        """The farm's simulated time at the last commit (None: nothing saved yet)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'farm_h'").fetchone()
        return None if row is None else float(row[0])

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


def _lock_exclusively(lock_path: Path, path: Path) -> IO[bytes]:
    """Hold an exclusive lock on `lock_path` until the returned file is closed.

    Two servers on one state file would overwrite each other's pumps; the kernel drops the
    lock when its process dies, so a restart after SIGKILL is never locked out. A lock file
    beside the database (not the database itself) keeps it apart from SQLite's own locks.
    Where `fcntl` does not exist (Windows) nothing is locked.
    """
    try:
        lock = open(lock_path, "ab")  # noqa: SIM115 - kept open: the lock lives with it
    except OSError as exc:
        raise StateFileError(f"{path}: cannot create the lock file {lock_path}: {exc}") from None
    try:
        import fcntl
    except ImportError:
        return lock
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise StateFileError(
            f"{path}: in use by another itpump serve (or farm); stop it, or name another file"
        ) from None
    return lock
