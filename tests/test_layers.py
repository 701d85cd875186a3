"""Layer boundaries and the short list of files a therapy mode touches (docs/architecture.md).

Both are read from the source as tokens and imports, so a new import across a boundary, or a
mode named in one more file, fails here rather than in a review.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

from itpump.protocol.therapy import MODES, Stopped

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("emulator", "protocol", "firmware_stubs", "tools", "programmer")


def _sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Every module a file imports (absolute names, as written)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            found.add(node.module)
    return found


#: layer -> packages it must never import (the firmware and the emulator sit above the
#: protocol and beside the programmer; the CLI sits on top of everything)
FORBIDDEN = {
    "protocol": ("itpump.firmware_stubs", "itpump.emulator", "itpump.programmer", "itpump.tools"),
    "programmer": ("itpump.firmware_stubs", "itpump.emulator", "itpump.tools"),
    "firmware_stubs": ("itpump.emulator", "itpump.programmer", "itpump.tools"),
    "emulator": ("itpump.tools",),
}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_it(layer: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in _sources(layer)
        for module in sorted(_imports(path))
        if module.startswith(FORBIDDEN[layer])
    ]
    assert offenders == []


#: what makes a module do I/O or own the process: the protocol is sans-IO (bytes in, events
#: out), so none of it belongs there
IO_MODULES = ("argparse", "logging.config", "socket", "serial", "asyncio", "subprocess")
IO_CALLS = ("basicConfig", "dictConfig", "write_text", "write_bytes", "print", "open", "exit")


def test_the_protocol_is_sans_io() -> None:
    offenders = []
    for path in _sources("protocol"):
        where = path.relative_to(ROOT)
        offenders += [f"{where}: import {mod}" for mod in _imports(path) if mod in IO_MODULES]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in IO_CALLS:
                    offenders.append(f"{where}:{node.lineno}: {name}()")
    assert offenders == []


#: names that stand for one particular therapy mode (a class of the model or its wire record)
MODE_NAMES = {
    "Continuous",
    "Flex",
    "PeriodicBolus",
    "ContinuousMode",
    "FlexMode",
    "PeriodicBolusMode",
}
#: the files docs/architecture.md ("Where things go": a therapy mode) lists, and the optional
#: ones it names: re-exports by name, the CLI's per-mode shortcut flags, the examples' data
MODE_FILES = {
    "protocol/therapy.py",
    "protocol/messages.py",
    "firmware_stubs/therapy.py",
    "firmware_stubs/firmware.py",
    "programmer/program.py",
    "programmer/__init__.py",
    "tools/ctl.py",
    "protocol/examples.py",
}


#: the strings that stand for one particular mode: its name in a document ("stopped" is the
#: absence of a mode and a common word) and the document keys only some modes have (a file
#: that picks a mode's doses out by key has to change with every new mode)
MODE_STRINGS = {cls.KIND for cls in MODES if cls is not Stopped} | {
    "dose_mcg_per_day",
    "period",
    "steps",
    "periodic",
}


def _names_a_mode(token: tokenize.TokenInfo) -> bool:
    if token.type == tokenize.NAME:
        return token.string in MODE_NAMES
    if token.type == tokenize.STRING:
        try:
            value = ast.literal_eval(token.string)
        except ValueError:  # an f-string
            return False
        return isinstance(value, str) and value in MODE_STRINGS
    return False


def test_only_the_listed_files_name_a_therapy_mode() -> None:
    naming = set()
    for folder in LIBRARY:
        for path in _sources(folder):
            text = path.read_text(encoding="utf-8")
            tokens = tokenize.generate_tokens(io.StringIO(text).readline)
            if any(_names_a_mode(t) for t in tokens):
                naming.add(path.relative_to(ROOT).as_posix())
    assert naming <= MODE_FILES
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    row = next(line for line in doc.splitlines() if line.startswith("| a therapy mode |"))
    assert all(f"`{name}" in row for name in MODE_FILES), row


@pytest.mark.parametrize(
    ("source", "names"),
    [
        ('out["periodic"] = {**action["periodic"]}', True),  # a mode's doses picked out by key
        ('if kind == "flex":', True),
        ("Continuous(300.0)", True),
        ('f"{dose} flex"', False),
        ('log.info("stopped")', False),
    ],
)
def test_the_mode_scan_sees_keys_and_names(source: str, names: bool) -> None:
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    assert any(_names_a_mode(t) for t in tokens) is names
