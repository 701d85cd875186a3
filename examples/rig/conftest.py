"""The pumps come from the itpump pytest plugin (installed with itpump): nothing to set up.

This file only connects the software under test to the pump; here the stand-in for it is the
reference programmer, `programmer.PumpClient`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from emulator.rig import RigPump
from programmer import PumpClient, Role


@pytest.fixture
def programmer(itpump_pump: RigPump) -> Iterator[PumpClient]:
    """A clinician programmer in session with the pump (blocking, from the test's thread)."""
    with PumpClient(itpump_pump.url, key=itpump_pump.key) as client:
        client.connect(Role.CLINICIAN)
        yield client
