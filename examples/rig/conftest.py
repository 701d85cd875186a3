"""The pumps come from the itpump pytest plugin (installed with itpump): nothing to set up.

This file only holds the programmer side: here the stand-in for the software under test is
the reference programmer, `programmer.PumpClient`.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from itpump.emulator.rig import RigPump
from itpump.programmer import PumpClient, PumpStatus


@pytest.fixture
def interrogate(itpump_pump: RigPump) -> Callable[[], PumpStatus]:
    """A short visit: the programmer connects, reads the status screen, ends the session.

    A new session each time, as at a real visit: after the test advances time the pump has
    long ended any session left open.
    """

    def visit() -> PumpStatus:
        with PumpClient(itpump_pump.url, key=itpump_pump.key) as programmer:
            programmer.connect()
            return programmer.interrogate()

    return visit
