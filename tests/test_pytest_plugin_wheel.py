"""The plugin as a user gets it: build the wheel, install it into a fresh venv, run plain
`pytest` on a project holding nothing but an ini file and a test using `itpump_pump`.

The fresh venv has no pip and no packages of its own; one .pth line makes the current
environment's site-packages (pytest, simpy, numpy, ...) importable after it. A path added by a
.pth line is not a site directory, so the .pth files in it are not run: the editable install
of the development checkout there stays inactive and cannot shadow the wheel.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("emulator", "protocol", "firmware_stubs", "tools", "programmer")

USER_INI = """\
[pytest]
itpump_warmup = 2d
"""

USER_TEST = '''\
import itpump.emulator as emulator
import pytest
from itpump.programmer import PumpClient


@pytest.mark.itpump(port="tcp")
def test_my_programmer_identifies_the_pump(itpump_pump):
    with PumpClient(itpump_pump.url, key=itpump_pump.key) as programmer:
        assert programmer.connect().serial == itpump_pump.serial
    assert itpump_pump.now_h() == 48.0  # the ini option reached the plugin
    print("itpump from", emulator.__file__)
'''


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.timeout(600)
def test_installed_wheel_serves_pumps_to_a_plain_pytest_project(tmp_path: Path) -> None:
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "-q", "--no-deps", "-w", str(dist), str(src)], tmp_path)
    (wheel,) = dist.glob("itpump-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    _run([*pip, "--python", str(python), "install", "-q", "--no-deps", str(wheel)], tmp_path)
    site = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path
    ).strip()
    host = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "zz_host_packages.pth").write_text("\n".join(sorted(host)) + "\n")

    project = tmp_path / "user_project"
    project.mkdir()
    (project / "pytest.ini").write_text(USER_INI)
    (project / "test_rig.py").write_text(USER_TEST)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    out = _run(
        [str(python), "-m", "pytest", "-s", "--strict-markers", "-p", "no:cacheprovider"],
        project,
        env,
    )
    assert "1 passed" in out
    # The plugin and the emulator came from the wheel, not from this checkout.
    (origin,) = re.findall(r"itpump from (\S+)", out)
    assert Path(origin).is_relative_to(venv)
