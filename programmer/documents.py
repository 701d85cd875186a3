"""Reading user-supplied documents (program files, and the emulator's profiles and
scenarios) behind one set of limits, with errors that name the file.

The programmer's ``load_program`` and the emulator's TOML inputs read through here, so a
program file, a profile and a scenario are bounded alike (size, nesting, UTF-8).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

#: Largest TOML file read, in bytes. The shipped profiles and scenarios are under 4 KiB; a
#: scenario with thousands of actions is well under this. Checked before reading, so a huge
#: file (or a device such as /dev/zero) costs no memory.
MAX_TOML_BYTES = 1024 * 1024

#: Deepest nesting of arrays and tables accepted. tomllib parses nested values recursively,
#: so a file of thousands of '[' would otherwise end in a RecursionError; no profile or
#: scenario nests deeper than 4.
MAX_TOML_DEPTH = 32


def _depth(text: str) -> int:
    """Largest nesting of '[' and '{' outside strings and comments (an upper bound on the
    depth tomllib recurses to; table headers count one level)."""
    depth = deepest = 0
    quote = ""
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        if quote:
            if char == "\\" and quote[0] == '"':
                index += 2
                continue
            if text.startswith(quote, index):
                index += len(quote)
                quote = ""
                continue
        elif char == "#":
            newline = text.find("\n", index)
            index = length if newline < 0 else newline
            continue
        elif char in "\"'":
            quote = char * 3 if text.startswith(char * 3, index) else char
            index += len(quote)
            continue
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(depth - 1, 0)
        index += 1
    return deepest


def read_document(
    path: Path, what: str, error: type[ValueError], *, json_format: bool = False
) -> dict[str, Any]:
    """Parse `path` (TOML, or JSON with `json_format`) into a table; unreadable, oversized,
    non-UTF-8, too deeply nested or invalid files, and a top level that is not a table, raise
    `error` naming `what`, the file and the limit."""
    try:
        if path.is_file() and path.stat().st_size > MAX_TOML_BYTES:
            raise error(
                f"{what} {path}: {path.stat().st_size} bytes, more than the "
                f"{MAX_TOML_BYTES} bytes a {what} file may have"
            )
        with path.open("rb") as stream:
            # Read one byte past the limit: a FIFO or device has no meaningful size.
            raw = stream.read(MAX_TOML_BYTES + 1)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}") from exc
    if len(raw) > MAX_TOML_BYTES:
        raise error(f"{what} {path}: more than the {MAX_TOML_BYTES} bytes a {what} file may have")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(
            f"{what} {path}: not UTF-8 text (byte {exc.start}: {exc.reason}); "
            f"{'JSON' if json_format else 'TOML'} files must be UTF-8"
        ) from None
    depth = _depth(text)
    if depth > MAX_TOML_DEPTH:
        raise error(
            f"{what} {path}: arrays/tables nested {depth} deep, more than the "
            f"{MAX_TOML_DEPTH} levels allowed"
        )
    try:
        data = (
            json.loads(text, object_pairs_hook=_no_duplicate_keys)
            if json_format
            else tomllib.loads(text)
        )
    except ValueError as exc:  # TOMLDecodeError and JSONDecodeError
        kind = "JSON" if json_format else "TOML"
        raise error(f"{what} {path}: not valid {kind}: {exc}") from exc
    except RecursionError:
        # The depth scan is conservative, but a deep structure it misjudged must still end
        # in one line, not a traceback.
        raise error(f"{what} {path}: nested too deeply to parse") from None
    if not isinstance(data, dict):
        raise error(f"{what} {path}: expected a table at the top level")
    return data


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # JSON keeps the last of duplicate keys silently, where TOML refuses them: a program
    # document must not mean something its reader cannot see (dose written twice).
    table: dict[str, Any] = {}
    for key, value in pairs:
        if key in table:
            raise ValueError(f"key {key!r} given twice")
        table[key] = value
    return table
