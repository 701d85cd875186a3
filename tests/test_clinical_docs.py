"""docs/clinical.md names real tests, and README lists every shipped scenario."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from itpump.emulator.scenario import shipped_scenarios

ROOT = Path(__file__).parents[1]


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def test_every_test_docs_clinical_names_exists() -> None:
    text = (ROOT / "docs" / "clinical.md").read_text(encoding="utf-8")
    cited = 0
    # "tests/test_x.py::name", then "::other" cells refer to the same file.
    current: Path | None = None
    for match in re.finditer(r"`(tests/[\w/]+\.py)?(?:::(\w+))?`", text):
        file, name = match.groups()
        if file is not None:
            current = ROOT / file
            assert current.exists(), file
        if name is not None:
            assert current is not None, name
            assert name in _test_names(current), f"{current.name}::{name}"
            cited += 1
    assert cited >= 30


def test_readme_lists_every_shipped_scenario() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [name for name in shipped_scenarios() if f"| `{name}`" not in readme]
    assert missing == []
