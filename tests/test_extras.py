"""Lighter install: plotting and sweeps are extras, and a command that needs a missing one says
so in one line before it runs."""

from __future__ import annotations

import importlib.util
from importlib.machinery import ModuleSpec
from importlib.metadata import requires
from pathlib import Path

import pytest

from itpump.tools.cli import main

OPTIONAL = ("matplotlib", "dask", "pyarrow")


def test_plotting_and_dask_are_not_core_requirements() -> None:
    for requirement in requires("itpump") or []:
        name = requirement.split(";")[0].split("[")[0].split(">")[0].split("=")[0].strip()
        if name.lower() in OPTIONAL:
            assert "extra ==" in requirement, requirement


@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Pretend the named modules are not installed (as after a plain `pip install itpump`)."""
    hidden: list[str] = []
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> ModuleSpec | None:
        return None if name.split(".")[0] in hidden else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    return hidden


@pytest.mark.parametrize(
    ("hide", "argv", "words"),
    [
        (
            ["matplotlib"],
            ["simulate", "--out", "{tmp}/o"],
            "matplotlib, needed for report.png, is not installed",
        ),
        (
            ["matplotlib"],
            ["accuracy", "--profile", "peristaltic-20", "--rate", "0.5", "--out", "{tmp}/o"],
            "matplotlib, needed for trumpet.png and startup.png, is not installed",
        ),
        (
            ["matplotlib"],
            ["pk", "{examples}/baclofen_bolus.csv", "--plot", "{tmp}/p.png"],
            "matplotlib, needed for --plot, is not installed",
        ),
        (
            ["distributed"],
            ["sweep", "occlusion-withdrawal", "--out", "{tmp}/o"],
            "pip install 'itpump[sweep]'",
        ),
    ],
)
def test_a_missing_extra_is_named_before_anything_runs(
    without: list[str],
    hide: list[str],
    argv: list[str],
    words: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import itpump.emulator.pk as pk

    examples = Path(pk.__file__).parent / "examples"
    without.extend(hide)
    args = [a.replace("{tmp}", str(tmp_path)).replace("{examples}", str(examples)) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert words in err
    assert "pip install 'itpump[" in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_no_plot_runs_without_matplotlib(
    without: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    without.append("matplotlib")
    out = tmp_path / "o"
    code = main(
        ["accuracy", "--profile", "peristaltic-20", "--rate", "0.5", "--no-plot", "--out", str(out)]
    )
    assert code == 0, capsys.readouterr().err
    assert (out / "trumpet.csv").is_file()
    assert not (out / "trumpet.png").exists()
