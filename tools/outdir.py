"""`--out DIR` for the sub-commands that write a directory of outputs (simulate, accuracy).

The directory is checked before any work is done, the files are written into a private
staging directory beside it, and only a complete set is moved into place: a bad `--out`, a
failed run or an interrupt leaves no directory and no partial file behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from itpump.tools.cli import UsageError


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(".")


def check_out_dir(out: Path, flag: str = "--out") -> Path:
    """Refuse an `out` that cannot become a directory; returns its nearest existing ancestor
    (`out` itself when it exists)."""
    existing = _nearest_existing(out.absolute())
    if existing == out.absolute():
        if not out.is_dir():
            raise UsageError(f"{flag}: {out} exists and is not a directory")
    elif not existing.is_dir():
        raise UsageError(f"{flag}: {existing} is not a directory, so {out} cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag}: {existing} is not writable")
    return existing


@contextmanager
def staged_out_dir(out: Path, flag: str = "--out") -> Iterator[Path]:
    """Check `out`, then yield an empty staging directory to write the outputs into.

    On normal exit every file in it is moved into `out` (created, with missing parents, only
    now); on an exception the staging directory is removed and `out` is left as it was.
    """
    existing = check_out_dir(out, flag)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name or 'out'}.", dir=existing))
    except OSError as exc:
        raise UsageError(f"{flag}: cannot write in {existing}: {exc.strerror}") from None
    try:
        yield staging
        _publish(staging, out, flag)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, out: Path, flag: str) -> None:
    # mkdtemp makes the staging directory 0700; the output directory gets the usual mode.
    umask = os.umask(0)
    os.umask(umask)
    try:
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(staging, 0o777 & ~umask)
            os.replace(staging, out)  # one rename: the directory appears complete
            return
        for item in sorted(staging.iterdir()):
            os.replace(item, out / item.name)
    except OSError as exc:
        raise UsageError(f"{flag}: cannot write {out}: {exc.strerror}") from None
