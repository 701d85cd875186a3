"""`itpump serve`: emulated pumps on serial ports, for programmer software under test."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from itpump.emulator.device_profile import MIN_BAUD, ProfileError, load_profile
from itpump.emulator.scenario import ScenarioError, load_scenario, parse_duration_h
from itpump.tools.argtypes import float_in_range
from itpump.tools.cli import UsageError

if TYPE_CHECKING:
    from itpump.emulator.device_profile import DeviceProfile
    from itpump.emulator.farm import ServedPump
    from itpump.emulator.scenario import Scenario

from itpump.protocol.auth import DEFAULT_MASTER_KEY

EPILOG = """\
Each pump prints one line: serial, model, URL to open, the clinician key and the patient
key (hex): each opens sessions of its role only. With K = HMAC-SHA256(master key, serial),
a role's key is HMAC-SHA256(K, "itpump/v1/role-key" | role byte: 1 clinician, 2 patient);
the default master key is the documented test key {master!r}. With --json each line is a
JSON object (for CI scripts).

Ports: pty (default; a raw pseudo-terminal, open its path like a serial port; --link gives it a
stable name; with several pumps '{{n}}' in the link is replaced by the pump index, otherwise the
index is appended), tcp:PORT (pyserial socket://127.0.0.1:PORT; pump i on PORT+i, 0 = free
ports), rfc2217:PORT (pyserial rfc2217://).

Time: --speed 1 is real time, 3600 makes an hour pass per second; --speed max runs as fast as
possible. Frames act at the current simulated time. Stop with Ctrl-C or SIGTERM.
A warning line goes to stderr at start when the pumps' batteries would be flat within an hour
of real time at that speed (at the profile's idle current alone; a flat pump never answers);
a --warmup longer than the battery's life is refused.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `serve` sub-command."""
    parser = sub.add_parser(
        "serve",
        help="serve emulated pumps on PTY / TCP / RFC 2217 ports (runs until Ctrl-C)",
        description="Start N emulated pumps, each on its own port, and run them in simulated "
        "time until interrupted.",
        epilog=EPILOG.format(master=DEFAULT_MASTER_KEY.decode()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--profile", help="device profile (default: the scenario's)")
    parser.add_argument("--count", type=int, default=1, help="number of pumps (default 1)")
    parser.add_argument(
        "--speed",
        default="1",
        help="simulated seconds per real second, 0.001..1e7, or 'max' (default 1)",
    )
    parser.add_argument("--port", default="pty", help="pty | tcp:PORT | rfc2217:PORT (default pty)")
    parser.add_argument("--link", help="stable symlink for the PTY, e.g. /tmp/ttyPUMP0")
    parser.add_argument(
        "--scenario",
        default="clinic-ready",
        help="scenario each pump plays (default: clinic-ready: filled, primed, "
        "continuous 200 mcg/day)",
    )
    parser.add_argument("--seed", type=int, help="seed of pump 0 (pump i gets seed + i)")
    parser.add_argument(
        "--warmup",
        default="1d",
        help="simulated time to run before the ports open, e.g. '1d', '90d', "
        "'0' (default 1d: the scenario's implant, fill, priming and programming "
        "are done when the software under test first connects)",
    )
    parser.add_argument(
        "--baud",
        type=int,
        help="pace bytes at this baud rate, 300..1000000 (default: the profile's, 19200 for "
        "the shipped ones; 0 = no pacing, as fast as the host allows)",
    )
    parser.add_argument(
        "--turnaround-ms",
        type=float_in_range(0.0, MAX_TURNAROUND_MS),
        metavar="MS",
        help="delay before the pump starts to answer, in ms (default: the profile's, 5 for "
        "the shipped ones; 0 = answer at once, to measure your own software without it)",
    )
    parser.add_argument(
        "--corruption",
        type=float,
        default=0.0,
        help="probability that a byte is corrupted on the link (default 0)",
    )
    parser.add_argument("--master-key", help="master key (text) the per-pump keys derive from")
    parser.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="accept commands outside an authenticated session (older devices)",
    )
    parser.add_argument(
        "--control",
        type=int,
        metavar="PORT",
        help="serve the rig control API (HTTP/JSON: time, faults, head, truth, snapshots) "
        "on 127.0.0.1:PORT, 0 = a free port; its URL is printed after the pumps "
        "(see docs/control.md)",
    )
    parser.add_argument(
        "--stepped",
        action="store_true",
        help="start with simulated time frozen: it moves only when the rig advances it "
        "(POST /clock/advance); needs --control",
    )
    parser.add_argument(
        "--state",
        metavar="PATH",
        help="keep every pump's whole state in this SQLite file: committed before each "
        "telemetry reply, after each control change, every few seconds and at stop; an "
        "existing file resumes the pumps and the clock where they were (trusted input: "
        "point it only at files itpump wrote)",
    )
    parser.add_argument(
        "--unclean-restart",
        choices=("resume", "power-on-reset"),
        default=None,
        help="needs --state; when the file was not closed by a clean stop (the server was "
        "killed): 'resume' each pump exactly where it was committed (default), or treat the "
        "kill as a power loss: each pump comes back in its power-on-reset state (clock and "
        "program lost, minimum rate, critical alarm), if its profile resets on power loss",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per pump line")
    parser.add_argument(
        "--capture",
        metavar="FILE",
        help="record every telemetry byte to FILE (pcapng, opens in Wireshark; "
        "see `itpump decode` and docs/capture.md)",
    )
    parser.set_defaults(func=run)


# Paced speeds allowed for --speed, in simulated seconds per real second. 1e7 is about 116
# simulated days per real second: the OS sleeps in ~1 ms steps, already ~3 simulated hours at
# 1e7, and the model computes a pump-year in ~0.2 s (BENCHMARKS.md), ~1.6e8 simulated s per
# real s for one pump, so a paced farm of several pumps cannot go much faster than the bound
# anyway ('max' is the honest request), and 1e308 or inf would overflow the runtime's
# arithmetic. Below 1e-3 (a simulated second every ~17 real minutes) nothing happens within a
# rig session and the real-time waits grow towards overflow.
SPEED_MIN = 1e-3
SPEED_MAX = 1e7


def _speed(text: str) -> float | None:
    """``--speed``: 'max' (None: as fast as possible) or a finite number within the bounds."""
    if text.strip().lower() == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    # Written so that nan (which fails every comparison) is refused too.
    if not SPEED_MIN <= value <= SPEED_MAX:
        raise UsageError(
            f"--speed must be 'max' or a number from {SPEED_MIN:g} to {SPEED_MAX:g} "
            f"simulated seconds per real second (got {text!r})"
        )
    return value


#: Longest reply delay accepted by --turnaround-ms: a real telemetry head answers in ms.
MAX_TURNAROUND_MS = 1000.0
#: Fastest pacing accepted by --baud (and by a profile's telemetry.baud).
MAX_BAUD = 1_000_000
#: Real time under which `serve` warns that the battery will be flat (see battery_warning).
BATTERY_WARNING_REAL_S = 3600.0


def battery_life_h(profile: DeviceProfile, remaining_pct: float) -> float | None:
    """Simulated hours until the cell is flat at the profile's idle current alone (an upper
    bound: delivery and telemetry draw more), from `remaining_pct` of capacity; None when the
    profile draws no idle current."""
    idle_ma = profile.battery.idle_current_ua / 1000.0
    if idle_ma <= 0:
        return None
    return profile.battery.capacity_mah * remaining_pct / 100.0 / idle_ma


def battery_source(profile: DeviceProfile, scenario: Scenario) -> str:
    """Where battery_life_h's figure comes from, for messages."""
    return (
        f"{profile.battery.capacity_mah:g} mAh x {scenario.implant.battery_remaining_pct:g} % "
        f"at {profile.battery.idle_current_ua:g} uA idle"
    )


def battery_warning(
    life_h: float | None, warmup_h: float, speed: float | None, model: str
) -> str | None:
    """The warning `serve` prints when the pumps' batteries go flat within an hour of real time
    (a dead pump never answers, which looks like a broken link), or None.

    `speed` is simulated seconds per real second; None is 'max' (as fast as possible: always
    warned, a pump-year takes well under a second); 0 is stepped (the rig moves time: never).
    """
    if life_h is None or speed == 0.0:
        return None
    left_h = life_h - warmup_h
    if speed is None:
        return (
            f"--speed max: the battery of {model} is flat after at most {left_h:.4g} simulated "
            "hours, which takes seconds at full speed; the pumps then stop answering"
        )
    real_s = left_h * 3600.0 / speed
    if real_s >= BATTERY_WARNING_REAL_S:
        return None
    return (
        f"--speed {speed:g}: the battery of {model} is flat after at most {left_h:.4g} "
        f"simulated hours, {real_s / 60.0:.3g} min of real time; the pumps then stop "
        "answering (lower --speed, or use --stepped)"
    )


def run(args: argparse.Namespace) -> int:
    """Build the farm and serve until signalled."""
    from itpump.emulator.farm import PortSpec, PortSpecError, PumpFarm, serve_until_signalled
    from itpump.emulator.state import StateFileError
    from itpump.emulator.transports import (
        PTY_AVAILABLE,
        PTY_UNAVAILABLE_MESSAGE,
        LinkConfig,
        LinkPathError,
    )

    if not 1 <= args.count <= 1000:
        raise UsageError(f"--count must be 1..1000 (got {args.count})")
    if not 0.0 <= args.corruption <= 1.0:
        raise UsageError(f"--corruption must be 0..1 (got {args.corruption})")
    if args.baud is not None and args.baud != 0 and not MIN_BAUD <= args.baud <= MAX_BAUD:
        raise UsageError(
            f"--baud must be 0 (no pacing) or {MIN_BAUD}..{MAX_BAUD} (got {args.baud})"
        )
    if args.seed is not None and args.seed < 0:
        raise UsageError(f"--seed must be >= 0 (got {args.seed})")
    if args.master_key is not None and not args.master_key:
        raise UsageError("--master-key must not be empty")
    try:
        warmup_h = parse_duration_h(args.warmup)
    except ValueError as exc:
        raise UsageError(f"--warmup: {exc}") from None
    if args.control is not None and not 0 <= args.control <= 65535:
        raise UsageError(f"--control must be a port 0..65535, 0 = a free port (got {args.control})")
    if args.stepped and args.control is None:
        raise UsageError("--stepped needs --control PORT: only the control API moves time then")
    if args.stepped and args.speed != "1":
        raise UsageError("--stepped and --speed exclude each other (stepped is speed 0)")
    if args.unclean_restart is not None and args.state is None:
        # Refused rather than ignored: without a state file nothing survives a kill, so a
        # user asking for power-on-reset behaviour would silently get a fresh farm.
        raise UsageError(
            "--unclean-restart goes with --state PATH: only a state file tells a kill from a "
            "clean stop"
        )
    if args.link and not args.port.startswith("pty"):
        raise UsageError("--link goes with --port pty")
    try:
        port = PortSpec.parse(args.port)
        profile = load_profile(args.profile) if args.profile else None
        # checked against the profile the pump runs, not the one the scenario names
        scenario = load_scenario(args.scenario, profile)
    except (PortSpecError, ScenarioError, ProfileError) as exc:
        raise UsageError(str(exc)) from None
    try:
        battery_profile = profile or load_profile(scenario.scenario.profile)
    except ProfileError as exc:
        raise UsageError(str(exc)) from None
    speed = 0.0 if args.stepped else _speed(args.speed)
    life_h = battery_life_h(battery_profile, scenario.implant.battery_remaining_pct)
    if life_h is not None and life_h <= warmup_h:
        raise UsageError(
            f"--warmup {args.warmup}: the battery of {battery_profile.model} is flat after at "
            f"most {life_h:.4g} simulated hours ({battery_source(battery_profile, scenario)}), "
            "so the pumps would never answer; use a shorter --warmup"
        )
    warning = battery_warning(life_h, warmup_h, speed, battery_profile.model)
    if warning is not None:
        print(f"itpump serve: warning: {warning}", file=sys.stderr, flush=True)
    if port.kind == "pty" and not PTY_AVAILABLE:
        raise UsageError(f"--port pty: {PTY_UNAVAILABLE_MESSAGE}")
    if port.port and port.port + args.count - 1 > 65535:
        raise UsageError(
            f"--port {args.port} --count {args.count}: pump i listens on PORT+i, so PORT must be "
            f"at most {65536 - args.count} (or 0 for free ports)"
        )
    if args.capture is not None:
        if not args.capture or Path(args.capture).is_dir():
            raise UsageError(f"--capture: name a file (got {args.capture!r})")
        try:
            open(args.capture, "ab").close()  # fail here, not inside the farm, on a bad path
        except (OSError, ValueError) as exc:
            raise UsageError(f"--capture: cannot write {args.capture!r}: {exc}") from None
    if args.state is not None and (not args.state or Path(args.state).is_dir()):
        raise UsageError(f"--state: name a file (got {args.state!r})")
    link_config = None
    if args.baud or args.corruption or args.turnaround_ms is not None:
        link_config = LinkConfig(
            baud=args.baud or None,
            corruption_rate=args.corruption,
            seed=args.seed or 0,
            turnaround_s=(args.turnaround_ms or 0.0) / 1000.0,
        )
    try:
        farm = PumpFarm(
            scenario,
            count=args.count,
            port=port,
            speed=speed,
            seed=args.seed,
            link_path=args.link,
            link_config=link_config,
            profile=profile,
            master_key=args.master_key.encode() if args.master_key else DEFAULT_MASTER_KEY,
            allow_unauthenticated=True if args.allow_unauthenticated else None,
            warmup_h=warmup_h,
            pace=args.baud is None,
            # An explicit --turnaround-ms replaces the profile's (0: replies at once).
            turnaround=args.turnaround_ms is None,
            capture=args.capture,
            state=args.state,
            unclean_restart=args.unclean_restart or "resume",
        )
    except StateFileError as exc:
        raise UsageError(f"--state: {exc}") from None

    def ready(pumps: list[ServedPump], control_url: str | None) -> None:
        for served in pumps:
            info = served.describe()
            if args.json:
                print(json.dumps(info), flush=True)
            else:
                print(
                    f"{info['serial']}  {info['model']}  {info['url']}  key={info['key']}  "
                    f"patient_key={info['patient_key']}",
                    flush=True,
                )
        if control_url is not None:
            if args.json:
                print(json.dumps({"control": control_url}), flush=True)
            else:
                print(f"control  {control_url}", flush=True)

    try:
        asyncio.run(serve_until_signalled(farm, ready, control_port=args.control))
    except LinkPathError as exc:
        raise UsageError(f"--link: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot open the port: {exc}") from None
    print("stopped", file=sys.stderr)
    return 0
