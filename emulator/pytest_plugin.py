"""pytest plugin: emulated pumps as fixtures (registered through the ``pytest11`` entry point).

After ``pip install itpump`` every test can ask for:

- ``itpump_pump``: one pump (:class:`~emulator.rig.RigPump`), served from a background
  thread so blocking software under test can open ``itpump_pump.url`` directly;
- ``itpump_farm``: several pumps (:class:`~emulator.rig.RigFarm`), the same way;
- ``itpump_pump_async`` / ``itpump_farm_async``: the same handles, the farm running on the
  test's own event loop (needs pytest-asyncio).

Each test gets new pumps in the scenario's state after the warm-up, in stepped time (speed
0) unless told otherwise. Options come from ``@pytest.mark.itpump(...)`` (closest marker
wins, key by key) over ini options ``itpump_<name>`` over the defaults. The full reference
is docs/rig.md.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from itpump.emulator.rig import (
    DEFAULT_PORT,
    DEFAULT_SCENARIO,
    RigFarm,
    RigOptionError,
    RigOptions,
    RigPump,
    serve_in_thread,
    serve_on_loop,
)

MARKER = "itpump"
INI_PREFIX = "itpump_"

# name -> (help, default as written in an ini file)
_INI_OPTIONS: dict[str, tuple[str, str]] = {
    "scenario": (
        f"scenario each itpump pump plays: shipped name or .toml path (default {DEFAULT_SCENARIO})",
        DEFAULT_SCENARIO,
    ),
    "profile": ("device profile name or .toml path (default: the scenario's)", ""),
    "port": (
        f"itpump transport: tcp, pty, rfc2217, tcp:PORT, rfc2217:PORT (default {DEFAULT_PORT})",
        DEFAULT_PORT,
    ),
    "speed": (
        "itpump simulated seconds per real second; 0 = stepped by the test (default), max",
        "0",
    ),
    "count": ("number of pumps of itpump_farm (default 1)", "1"),
    "warmup": ("simulated time run before each itpump test, e.g. 1d, 36h, 0 (default 1d)", "1d"),
    "seed": ("seed of itpump pump 0 (default: the scenario's)", ""),
    "pace": ("pace itpump bytes at the profile's baud rate: true/false (default false)", "false"),
}

_BASE_OPTIONS = pytest.StashKey[RigOptions]()

HAVE_PYTEST_ASYNCIO = importlib.util.find_spec("pytest_asyncio") is not None


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ini options (``itpump_scenario``, ``itpump_port``, ...)."""
    for name, (help_text, default) in _INI_OPTIONS.items():
        parser.addini(INI_PREFIX + name, help_text, type="string", default=default)


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker (for ``--strict-markers``) and check the ini options once."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}(scenario=, profile=, port=, speed=, count=, warmup=, seed=, pace=): "
        "options of the itpump fixtures for this test (see itpump's docs/rig.md)",
    )
    values: dict[str, object] = {name: config.getini(INI_PREFIX + name) for name in _INI_OPTIONS}
    base_dir = config.inipath.parent if config.inipath is not None else config.rootpath
    try:
        config.stash[_BASE_OPTIONS] = RigOptions.from_values(
            values, source=f"ini {INI_PREFIX}", base_dir=base_dir
        )
    except RigOptionError as exc:
        raise pytest.UsageError(str(exc)) from None


def rig_options(request: pytest.FixtureRequest, *, single: bool) -> RigOptions:
    """The options of the requesting test: defaults < ini < markers (outermost first)."""
    base = request.config.stash[_BASE_OPTIONS]
    node = request.node
    # iter_markers yields the closest first; apply the outermost first so the closest wins.
    markers = list(node.iter_markers(MARKER))[::-1]
    base_dir = Path(str(node.path)).parent
    options = base
    count_from_marker = False
    for mark in markers:
        if mark.args:
            pytest.fail(
                f"@pytest.mark.{MARKER} takes keyword options only "
                f"({', '.join(RigOptions.NAMES)}); got {mark.args!r}",
                pytrace=False,
            )
        try:
            options = RigOptions.from_values(
                dict(mark.kwargs), base=options, source=f"@pytest.mark.{MARKER} ", base_dir=base_dir
            )
        except RigOptionError as exc:
            pytest.fail(str(exc), pytrace=False)
        count_from_marker = count_from_marker or "count" in mark.kwargs
    if single:
        if count_from_marker and options.count != 1:
            pytest.fail(
                f"@pytest.mark.{MARKER} count={options.count}: itpump_pump serves one pump; "
                "use itpump_farm for several",
                pytrace=False,
            )
        options = RigOptions.from_values({"count": 1}, base=options)
    return options


def _require_asyncio_test(request: pytest.FixtureRequest, name: str, sync_name: str) -> None:
    # A plain test would hold the loop the farm lives on while it runs: nothing would answer.
    if request.node.get_closest_marker("asyncio") is None:
        pytest.fail(
            f"{name} serves pumps on the test's event loop: use it from an asyncio test "
            f"(async def, run by pytest-asyncio); a plain test uses {sync_name}",
            pytrace=False,
        )


def _refuse_both(request: pytest.FixtureRequest, pump: str, farm: str) -> None:
    # Two fixtures would be two worlds with two clocks: advancing one would not move the other.
    if farm in request.fixturenames:
        pytest.fail(
            f"a test uses either {pump} or {farm}, not both (use {farm}.pumps[0])", pytrace=False
        )


@pytest.fixture
def itpump_pump(request: pytest.FixtureRequest) -> Iterator[RigPump]:
    """One emulated pump served from a background thread (open ``.url`` with ``.key``)."""
    _refuse_both(request, "itpump_pump", "itpump_farm")
    with serve_in_thread(rig_options(request, single=True)) as farm:
        yield farm.pumps[0]


@pytest.fixture
def itpump_farm(request: pytest.FixtureRequest) -> Iterator[RigFarm]:
    """``count`` emulated pumps served from a background thread (``.pumps[i].url``)."""
    with serve_in_thread(rig_options(request, single=False)) as farm:
        yield farm


if HAVE_PYTEST_ASYNCIO:
    import pytest_asyncio

    # loop_scope="function": the farm must live on the loop the test itself runs on; a test
    # on a wider loop gets a clear error from the handle instead of a silent hang.
    @pytest_asyncio.fixture(loop_scope="function")
    async def itpump_pump_async(request: pytest.FixtureRequest) -> AsyncIterator[RigPump]:
        """One emulated pump served on the test's event loop (pytest-asyncio)."""
        _require_asyncio_test(request, "itpump_pump_async", "itpump_pump")
        _refuse_both(request, "itpump_pump_async", "itpump_farm_async")
        async with serve_on_loop(rig_options(request, single=True)) as farm:
            yield farm.pumps[0]

    @pytest_asyncio.fixture(loop_scope="function")
    async def itpump_farm_async(request: pytest.FixtureRequest) -> AsyncIterator[RigFarm]:
        """``count`` emulated pumps served on the test's event loop (pytest-asyncio)."""
        _require_asyncio_test(request, "itpump_farm_async", "itpump_farm")
        async with serve_on_loop(rig_options(request, single=False)) as farm:
            yield farm

else:

    @pytest.fixture
    def itpump_pump_async() -> RigPump:
        """Needs pytest-asyncio: says so."""
        pytest.fail("itpump_pump_async needs pytest-asyncio (pip install pytest-asyncio)")

    @pytest.fixture
    def itpump_farm_async() -> RigFarm:
        """Needs pytest-asyncio: says so."""
        pytest.fail("itpump_farm_async needs pytest-asyncio (pip install pytest-asyncio)")
