"""Every curl example in docs/control.md runs against a served pump and is answered 2xx."""

from __future__ import annotations

import asyncio
import re
import shlex
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from itpump.emulator.control.app import ControlServer
from itpump.emulator.farm import PortSpec, PumpFarm
from itpump.emulator.scenario import load_scenario

DOC = Path(__file__).resolve().parent.parent / "docs" / "control.md"


def curl_examples() -> list[str]:
    """The curl lines of the document's bash blocks, in order."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    return [line for block in blocks for line in block.splitlines() if line.startswith("curl ")]


def as_request(line: str, url: str, serial: str) -> tuple[str, str, dict[str, str], bytes]:
    """Method, URL, headers and body of one `curl -s [-X M] URL [-H h] [-d body]` line."""
    words = shlex.split(line.replace("$URL", url).replace("$SERIAL", serial))
    assert words[0] == "curl"
    method, target, headers, body = "GET", "", {}, b""
    i = 1
    while i < len(words):
        word = words[i]
        if word == "-s":
            i += 1
        elif word == "-X":
            method, i = words[i + 1], i + 2
        elif word == "-H":
            name, _, value = words[i + 1].partition(":")
            headers[name.strip()] = value.strip()
            i += 2
        elif word == "-d":
            body, i = words[i + 1].encode(), i + 2
            if method == "GET":
                method = "POST"
        else:
            assert not target, f"unexpected word {word!r} in {line!r}"
            target, i = word, i + 1
    return method, target, headers, body


@pytest.fixture
async def control_url() -> AsyncIterator[tuple[str, str]]:
    farm = PumpFarm(load_scenario("clinic-ready"), port=PortSpec("null"), speed=0.0)
    server = ControlServer(farm, 0)
    async with farm:
        task = asyncio.create_task(farm.run())
        url = await server.start()
        yield url, farm.pumps[0].serial
        await server.close()
        farm.stop()
        await task


def test_the_document_has_an_example_for_every_route_family() -> None:
    text = "\n".join(curl_examples())
    for route in (
        "/pumps",
        "/clock/advance",
        "/clock/speed",
        "/faults",
        "/truth",
        "/reported",
        "/head",
        "/link",
        "/snapshot",
        "/restore",
        "/reset",
    ):
        assert route in text, route


async def test_every_curl_example_is_answered(control_url: tuple[str, str]) -> None:
    url, serial = control_url
    assert serial == "PP20-000001"  # the serial the document shows
    async with httpx.AsyncClient() as http:
        for line in curl_examples():
            method, target, headers, body = as_request(line, url, serial)
            response = await http.request(method, target, headers=headers, content=body)
            assert response.is_success, f"{line}\n-> {response.status_code} {response.text}"
            response.json()  # every answer is JSON
