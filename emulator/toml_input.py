"""Reading user-supplied TOML files (profiles, scenarios) with errors that name the file;
the bounded reader itself is shared with program files (programmer/documents.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from itpump.programmer.documents import MAX_TOML_BYTES, MAX_TOML_DEPTH, read_document

__all__ = ["MAX_TOML_BYTES", "MAX_TOML_DEPTH", "read_toml", "resolve_shipped", "shipped_names"]


def read_toml(path: Path, what: str, error: type[ValueError]) -> dict[str, Any]:
    """Parse `path` with the bounds every user document has (programmer/documents.py);
    problems raise `error` naming `what`, the file and the limit."""
    return read_document(path, what, error)


def shipped_names(directory: Path) -> list[str]:
    """Names (file stems) of the TOML files shipped in `directory`."""
    return sorted(p.stem for p in directory.glob("*.toml"))


def resolve_shipped(name_or_path: str, directory: Path, what: str, error: type[ValueError]) -> Path:
    """A path as given, or the name of a file shipped in `directory` (``NAME.toml``); an
    unknown name raises `error` listing the shipped ones."""
    path = Path(name_or_path)
    if path.exists() or path.suffix == ".toml":
        return path
    shipped = directory / f"{name_or_path}.toml"
    if not shipped.exists():
        known = ", ".join(shipped_names(directory))
        raise error(f"no {what} file {name_or_path!r}; shipped {what}s: {known}")
    return shipped
