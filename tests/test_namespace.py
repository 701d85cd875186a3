"""One namespace: the project's code imports its own packages only as `itpump.*`, so the same
module is never loaded twice under two names (and nothing generic lands in site-packages —
tests/test_pytest_plugin_wheel.py checks the installed wheel)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = "emulator|protocol|firmware_stubs|tools|programmer"
BARE_IMPORT = re.compile(rf"^\s*(from ({TOP_LEVEL})[.\s]|import ({TOP_LEVEL})\b)", re.M)


def test_no_module_imports_a_bare_top_level_package() -> None:
    offenders = []
    for folder in (*TOP_LEVEL.split("|"), "tests", "benchmarks", "examples"):
        for path in (ROOT / folder).rglob("*.py"):
            for match in BARE_IMPORT.finditer(path.read_text(encoding="utf-8")):
                offenders.append(f"{path.relative_to(ROOT)}: {match.group(0).strip()}")
    assert offenders == []


def test_the_namespace_links_every_package_folder() -> None:
    for name in TOP_LEVEL.split("|"):
        link = ROOT / "itpump" / name
        assert link.is_symlink(), link
        assert link.resolve() == (ROOT / name).resolve()


def test_package_data_is_found_outside_the_checkout(tmp_path: Path) -> None:
    """From another directory only the installed itpump namespace is importable; the shipped
    data files (profiles, scenarios, dissector) must be found through it."""
    import subprocess
    import sys

    code = (
        "import itpump.tools.cli as cli, sys; "
        "sys.exit(cli.main(['decode', '--dissector-path']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_file()
    assert "Traceback" not in done.stderr
    listed = subprocess.run(
        [sys.executable, "-c", "import itpump.tools.cli as c; c.main(['profiles'])"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert "peristaltic-20" in listed.stdout, listed.stderr


def test_ci_runs_exactly_the_readme_test_command_with_the_pins() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert ci.startswith("python3 -m pip install -c constraints.txt -e '.[test]'")
    assert ci in readme.splitlines()
    pins = (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
    pinned = {line.split("==")[0].lower() for line in pins if "==" in line}
    assert {"numpy", "scipy", "fastapi", "pytest", "hypothesis"} <= pinned
