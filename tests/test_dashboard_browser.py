"""The dashboard in a real headless Chromium against a served farm.

The browser is the system's Chromium (tests/browser.py finds or installs it, or the test
fails saying what is missing). Every wait is on the page: a selector, a text, or a value the
page's script exposes after a server-sent event arrived; nothing sleeps. A screenshot of each
page is kept in `build/test-artifacts/dashboard/` (or `$ITPUMP_TEST_ARTIFACTS`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from itpump.emulator.control.app import ControlServer
from itpump.emulator.farm import PortSpec, PumpFarm
from itpump.emulator.scenario import load_scenario
from itpump.emulator.transports import NullModem
from itpump.protocol import messages as m
from itpump.protocol.auth import seeded_nonce_source
from itpump.protocol.connection import ProgrammerConnection
from tests.browser import LAUNCH_ARGS, ensure_chromium

# Generous: the first test on a fresh machine may install Chromium (apt-get) in its set-up.
pytestmark = pytest.mark.timeout(600)

ARTIFACTS = Path(
    os.environ.get(
        "ITPUMP_TEST_ARTIFACTS",
        Path(__file__).resolve().parent.parent / "build" / "test-artifacts",
    )
) / "dashboard"
WAIT_MS = 20_000


@dataclass
class Served:
    farm: PumpFarm
    url: str
    http: httpx.AsyncClient
    page: Page


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    return ensure_chromium()


@pytest.fixture
async def served(chromium_path: Path) -> AsyncIterator[Served]:
    farm = PumpFarm(load_scenario("clinic-ready"), count=3, port=PortSpec("null"), speed=0.0)
    server = ControlServer(farm, 0)
    async with farm:
        task = asyncio.create_task(farm.run())
        url = await server.start()
        async with async_playwright() as pw, httpx.AsyncClient(base_url=url) as http:
            browser: Browser = await pw.chromium.launch(
                executable_path=str(chromium_path), args=list(LAUNCH_ARGS)
            )
            # A laptop screen.
            page = await browser.new_page(viewport={"width": 1366, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            yield Served(farm, url, http, page)
            await browser.close()
            assert errors == [], f"the page's script failed: {errors}"
        await server.close()
        farm.stop()
        await task


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000  # a real render, not an empty page
    return target


async def live(page: Page) -> None:
    """Wait until the page's event stream is open and has delivered a first message."""
    await expect(page.locator("#live")).to_have_attribute("data-state", "open", timeout=WAIT_MS)
    await page.wait_for_function("window.itpumpDashboard.messages > 0", timeout=WAIT_MS)


async def test_overview_lists_pumps_filters_sorts_and_follows_time(served: Served) -> None:
    page = served.page
    serials = [p.serial for p in served.farm.pumps]
    await page.goto(served.url + "/")
    await live(page)
    rows = page.locator("#pumps tbody tr")
    await expect(rows).to_have_count(3)
    for serial in serials:
        await expect(page.locator(f'tr[data-serial="{serial}"] th a')).to_have_text(serial)

    # Time moves on the server: the page follows without reloading.
    await served.http.post("/clock/advance", json={"hours": 24})
    await expect(page.locator("#clock-t")).to_have_text("48.000", timeout=WAIT_MS)
    first = page.locator(f'tr[data-serial="{serials[0]}"] [data-c="t_h"]')
    await expect(first).to_have_text("48.000", timeout=WAIT_MS)

    # A fault on one pump: the filter finds it by fault name, by keyboard.
    await served.http.post(f"/pumps/{serials[1]}/faults", json={"kind": "leak"})
    leak_cell = page.locator(f'tr[data-serial="{serials[1]}"] [data-c="faults"]')
    await expect(leak_cell).to_have_text("leak", timeout=WAIT_MS)
    await page.focus("#filter")
    await page.keyboard.type("leak")
    await expect(page.locator("#pumps tbody tr:visible")).to_have_count(1)
    await expect(page.locator("#filter-count")).to_have_text("1 of 3 shown")
    await page.fill("#filter", "")
    await expect(page.locator("#pumps tbody tr:visible")).to_have_count(3)

    # Sorting by a header button, twice: descending serials.
    sort = page.locator('button[data-sort="serial"]')
    await sort.focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#pumps thead th").first).to_have_attribute("aria-sort", "descending")
    await expect(rows.first).to_have_attribute("data-serial", sorted(serials)[-1])
    await screenshot(page, "overview")


async def test_occlusion_parts_reported_and_true_reservoir(served: Served) -> None:
    page = served.page
    serial = served.farm.pumps[0].serial
    await page.goto(f"{served.url}/ui/pumps/{serial}")
    await live(page)
    gap = page.locator("#reservoir-gap")
    await expect(gap).to_have_text("+0.003 mL")  # primed and running: they agree

    # Keyboard only: focus the control and press Enter.
    await page.focus("#inject-occlusion")
    await page.keyboard.press("Enter")
    await expect(page.locator("#calls li").first).to_contain_text(
        f'POST /pumps/{serial}/faults {{"kind":"occlusion"}}'
    )
    await expect(page.locator("#calls li").first).to_contain_text("→ 200")
    await expect(page.locator('#status [data-c="faults"]')).to_have_text("occlusion")
    t_before = served.farm.now_h()
    await page.get_by_role("button", name="+1 day").click()
    await expect(page.locator("#clock-t")).to_have_text(f"{t_before + 24:.3f}", timeout=WAIT_MS)

    # The lines part: the pump believes it delivered a day's drug; nothing left the reservoir.
    await page.wait_for_function(
        """() => {
            const v = window.itpumpDashboard.view, h = v && v.history, n = h ? h.t_h.length - 1 : 0;
            return h && h.t_h[n] >= %f
                && h.reservoir_true_ml[n] - h.reservoir_reported_ml[n] > 0.3;
        }"""
        % (t_before + 24 - 1e-6),
        timeout=WAIT_MS,
    )
    chart = await page.evaluate(
        """() => { const d = window.itpumpDashboard.charts.reservoir.data;
                   return {n: d[0].length, truth: d[1], reported: d[2]}; }"""
    )
    assert chart["n"] == len(chart["truth"]) == len(chart["reported"]) > 100
    # Before the fault the lines coincide; at the end they are apart by about a day's volume.
    assert abs(chart["truth"][0] - chart["reported"][0]) < 0.05
    assert chart["truth"][-1] - chart["reported"][-1] == pytest.approx(0.4, abs=0.05)
    await expect(gap).to_contain_text("-0.39")
    # The true dose line stops while the programmed one rises.
    dose = await page.evaluate("() => window.itpumpDashboard.charts.dose.data")
    assert dose[2][-1] - dose[1][-1] > 150  # mcg programmed but not delivered (200 mcg/day)
    await screenshot(page, "pump-occlusion")

    # Clear it again, from the page.
    await page.click("#clear-occlusion")
    await expect(page.locator('#status [data-c="faults"]')).to_have_text("none", timeout=WAIT_MS)


async def test_pump_page_shows_conversation_snapshot_and_head(served: Served) -> None:
    page = served.page
    pump = served.farm.pumps[0]
    await page.goto(f"{served.url}/ui/pumps/{pump.serial}")
    await live(page)
    # The page is watching: a programmer's first frame appears, decoded, as it happens.
    assert isinstance(pump.transport, NullModem)
    client = pump.transport.connect()
    programmer = ProgrammerConnection(seeded_nonce_source(1), key=pump.key)
    client.write(programmer.send(m.IdentifyRequest(), 0.0))
    await client.read_exactly(1)
    conversation = page.locator("#conversation")
    await expect(conversation).to_contain_text("IDENTIFY request", timeout=WAIT_MS)
    await expect(conversation).to_contain_text("IDENTIFY response", timeout=WAIT_MS)

    await page.click("#snapshot")
    restore = page.locator("#snapshots button")
    await expect(restore).to_have_count(1, timeout=WAIT_MS)
    await page.click("#lift-head")
    await expect(page.locator('#status [data-c="head_placed"]')).to_have_text(
        "lifted", timeout=WAIT_MS
    )
    await page.click("#place-head")
    await expect(page.locator('#status [data-c="head_placed"]')).to_have_text(
        "placed", timeout=WAIT_MS
    )
    # The event log and the alarm timeline are drawn from the pump's own records.
    await expect(page.locator("#events tr").first).to_be_visible()
    await page.select_option("#speed", "3600")
    await page.click("#set-speed")
    await expect(page.locator("#clock-speed")).to_have_text("3600", timeout=WAIT_MS)
    await page.select_option("#speed", "0")
    await page.click("#set-speed")
    await expect(page.locator("#clock-speed")).to_have_text("stepped", timeout=WAIT_MS)
    await screenshot(page, "pump-conversation")
