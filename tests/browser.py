"""A headless Chromium for the dashboard's browser tests: found, or installed, or a clear error.

Playwright (from PyPI) drives the browser, but its `playwright install` downloads builds from
a CDN that CI cannot reach. No package on PyPI ships a maintained Chromium inside its wheel,
so the tests use the operating system's Chromium:

1. `ITPUMP_CHROMIUM` if set (a path to a Chromium or Chrome executable);
2. `chromium`, `chromium-browser`, `google-chrome` or `google-chrome-stable` on PATH;
3. otherwise, on Debian or Ubuntu as root, `apt-get install chromium` once (printed, so a CI
   log says what happened and why);
4. otherwise the test fails with what is missing and the command that installs it.

Playwright speaks the Chrome DevTools Protocol to any recent Chromium, so the distribution's
build works without Playwright's own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Flags for a quiet, hermetic headless run: no sandbox (CI runs as root, where Chromium's
# sandbox refuses to start), no GPU, and none of the background connections a closed network
# refuses (update checks, sync, field trials).
LAUNCH_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
)

INSTALL_HINT = (
    "the dashboard's browser tests need Chromium. Install it with your package manager "
    "(Debian/Ubuntu: `sudo apt-get install chromium`; Fedora: `sudo dnf install chromium`; "
    "macOS: `brew install --cask chromium`) or set ITPUMP_CHROMIUM to a Chromium or Chrome "
    "executable."
)


class BrowserMissingError(RuntimeError):
    """No Chromium could be found or installed."""


def find_chromium() -> Path | None:
    """The Chromium to use, or None when there is none."""
    configured = os.environ.get("ITPUMP_CHROMIUM")
    if configured:
        path = Path(configured)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BrowserMissingError(f"ITPUMP_CHROMIUM={configured!r} is not an executable file")
        return path
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def _can_apt() -> bool:
    geteuid = getattr(os, "geteuid", None)
    return (
        sys.platform.startswith("linux")
        and geteuid is not None
        and geteuid() == 0
        and shutil.which("apt-get") is not None
    )


def install_chromium() -> None:
    """`apt-get install chromium` (Debian's package), saying so on stderr."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(
        "itpump browser tests: no Chromium found; installing Debian's `chromium` package "
        "with apt-get (once per machine)",
        file=sys.stderr,
        flush=True,
    )
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
    ):
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise BrowserMissingError(
                f"`{' '.join(command)}` failed ({result.returncode}): {' | '.join(tail)}; "
                + INSTALL_HINT
            )


def ensure_chromium() -> Path:
    """Find Chromium, installing it when this machine allows; else `BrowserMissingError`."""
    found = find_chromium()
    if found is not None:
        return found
    if not _can_apt():
        raise BrowserMissingError("no Chromium found: " + INSTALL_HINT)
    install_chromium()
    found = find_chromium()
    if found is None:
        raise BrowserMissingError("apt-get installed chromium, not on PATH; " + INSTALL_HINT)
    return found
