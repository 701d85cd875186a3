"""docs/programmer.md's quick start shows what the default pump really prints.

The documented steps run against a pump served in process as `itpump serve` serves it
(scenario clinic-ready, warm-up 1d) on TCP, with simulated time held still (speed 0) so that
the output is exactly that of a real `itpump serve` within its first second. The PTY path of
the document is replaced by the TCP URL: the output does not depend on the port.
"""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

import pytest

from itpump.emulator.farm import PortSpec, PumpFarm
from itpump.emulator.scenario import load_scenario, parse_duration_h
from itpump.protocol.auth import DEFAULT_MASTER_KEY
from itpump.tools.cli import main

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "programmer.md"
DOC_PORT = "/tmp/ttyPUMP0"
GUARD_S = 30.0


def quick_start() -> list[tuple[list[str], list[str]]]:
    """The quick start's console block as (command words, output lines) pairs."""
    text = DOC_PATH.read_text(encoding="utf-8")
    section = text[text.index("## Quick start") :]
    block = section[section.index("```console\n") + len("```console\n") :]
    block = block[: block.index("```")]
    steps: list[tuple[list[str], list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((shlex.split(line[2:], comments=True), []))
        else:
            steps[-1][1].append(line)
    return steps


def test_the_quick_start_has_the_steps_this_test_runs() -> None:
    commands = [words[:2] for words, _ in quick_start()]
    assert commands[0] == ["itpump", "serve"]
    assert commands[1][0] == "export"
    assert all(words == ["itpump", "ctl"] for words in commands[2:])
    assert len(commands) >= 3


async def test_quick_start_output_is_what_the_default_pump_prints(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = quick_start()
    (serve_words, serve_output), (export_words, _), *ctl_steps = steps
    assert "--link" in serve_words
    name, _, value = export_words[1].partition("=")
    assert (name, value.encode()) == ("ITPUMP_MASTER_KEY", DEFAULT_MASTER_KEY)
    monkeypatch.setenv(name, value)
    monkeypatch.delenv("ITPUMP_KEY", raising=False)
    farm = PumpFarm(
        load_scenario("clinic-ready"),
        port=PortSpec.parse("tcp:0"),
        speed=0.0,
        warmup_h=parse_duration_h("1d"),  # `itpump serve`'s default --warmup
    )
    async with farm:
        info = farm.pumps[0].describe()
        key, patient_key = str(info["key"]), str(info["patient_key"])
        assert serve_output == [
            f"{info['serial']}  {info['model']}  {DOC_PORT}  key={key[:4]}...{key[-4:]}  "
            f"patient_key={patient_key[:4]}...{patient_key[-4:]}"
        ]
        for words, documented in ctl_steps:
            argv = [info["url"] if word == DOC_PORT else word for word in words[1:]]
            status = await asyncio.wait_for(asyncio.to_thread(main, argv), GUARD_S)
            assert status == 0, capsys.readouterr().err
            assert capsys.readouterr().out.splitlines() == documented, shlex.join(words)
