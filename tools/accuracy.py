"""`itpump accuracy`: start-up and trumpet curves (IEC 60601-2-24 method) of a profile's drive."""

from __future__ import annotations

import argparse
from pathlib import Path

from itpump.tools.argtypes import number
from itpump.tools.cli import UsageError
from itpump.tools.extras import require_plotting
from itpump.tools.outdir import check_out_dir, staged_out_dir

DESCRIPTION = """\
Flow accuracy of a pump model by the IEC 60601-2-24 method: run a full pump with the profile
at a constant rate, take every stroke (pulse) of its mechanism model, sample the delivered
volume every sample interval and compute the start-up curve (flow of each interval from the
start), the trumpet curve (largest and smallest mean flow error over every observation window
of each length in the analysis period) and the overall error A.
"""

EPILOG = """\
Defaults are the standard's: 0.5-min samples, windows of 2, 5, 11, 19 and 31 min, analysis
over the second hour. At implanted-pump rates a 2-min window holds about one stroke, so its
error is mostly stroke discreteness; for windows that mean something clinically, analyse days
with windows in hours, e.g.
  itpump accuracy --profile valve-gated-20 --rate 0.5 --sample-min 5 \\
      --windows-min 60,120,240,480,720,1440 --analysis-start-h 24 --analysis-h 72
(docs/accuracy.md explains the method, the formulas and this choice).

Outputs in --out DIR: trumpet.csv (window_min, ep_max_pct, ep_min_pct), startup.csv
(time_min, volume_ml, flow_ml_per_day), summary.json (overall error A, parameters, profile,
rate, seed), trumpet.png and startup.png.
Exit status: 0 done, 2 bad input (one line naming the option; nothing written).
"""

# Settings fields (emulator.accuracy) -> the option the user typed.
_FLAGS = {
    "profile": "--profile",
    "rate_ml_per_day": "--rate",
    "sample_min": "--sample-min",
    "windows_min": "--windows-min",
    "analysis_start_h": "--analysis-start-h",
    "analysis_h": "--analysis-h",
    "seed": "--seed",
}


def _windows(text: str) -> tuple[float, ...]:
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated minutes, e.g. 2,5")
    return tuple(number(part) for part in parts)


# The standard's defaults, as in emulator.accuracy (IEC_*), written out so that building the
# parser does not import numpy; a test keeps the two in step.
# Range checks live in emulator.accuracy.validate (they depend on the profile): the flags only
# parse numbers, so nan and inf reach the range check and get its message.
DEFAULT_SAMPLE_MIN = "0.5"
DEFAULT_WINDOWS_MIN = "2,5,11,19,31"
DEFAULT_ANALYSIS_START_H = "1"
DEFAULT_ANALYSIS_H = "1"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `accuracy` sub-command."""
    parser = sub.add_parser(
        "accuracy",
        help="flow-accuracy start-up and trumpet curves of a pump model (IEC 60601-2-24)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--profile",
        required=True,
        metavar="P",
        help="profile name or .toml path (see `itpump profiles`)",
    )
    parser.add_argument(
        "--rate",
        required=True,
        metavar="ML_PER_DAY",
        type=number,
        help="programmed rate in mL/day, within the profile's range (e.g. 0.048-24 for "
        "peristaltic-20)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("accuracy-out"),
        help="output directory, created if missing (default: ./accuracy-out)",
    )
    parser.add_argument(
        "--sample-min",
        metavar="MIN",
        type=number,
        default=number(DEFAULT_SAMPLE_MIN),
        help=f"sample interval in min (default {DEFAULT_SAMPLE_MIN}, the standard's)",
    )
    parser.add_argument(
        "--windows-min",
        metavar="MIN,...",
        type=_windows,
        default=_windows(DEFAULT_WINDOWS_MIN),
        help="observation windows in min, each a multiple of the sample interval (default "
        f"{DEFAULT_WINDOWS_MIN}, the standard's)",
    )
    parser.add_argument(
        "--analysis-start-h",
        metavar="H",
        type=number,
        default=number(DEFAULT_ANALYSIS_START_H),
        help="start of the analysis period in h from the start of delivery (default "
        f"{DEFAULT_ANALYSIS_START_H}: the second hour, as in the standard)",
    )
    parser.add_argument(
        "--analysis-h",
        metavar="H",
        type=number,
        default=number(DEFAULT_ANALYSIS_H),
        help=f"length of the analysis period in h (default {DEFAULT_ANALYSIS_H})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the mechanism's stroke-volume model, as in a scenario (default 0)",
    )
    parser.add_argument("--no-plot", action="store_true", help="skip trumpet.png and startup.png")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate everything, compute, render, then write the outputs and print a digest."""
    if not args.no_plot:
        require_plotting("trumpet.png and startup.png", "pass --no-plot")
    # Imported here: numpy and matplotlib would slow every other sub-command's start.
    from itpump.emulator.accuracy import AccuracyInputError, AccuracySettings, analyse
    from itpump.emulator.accuracy_outputs import render_outputs, write_outputs
    from itpump.emulator.device_profile import Mechanism, ProfileError, load_profile

    out: Path = args.out
    check_out_dir(out)
    try:
        profile = load_profile(args.profile)
    except ProfileError as exc:
        raise UsageError(f"--profile: {exc}") from None
    settings = AccuracySettings(
        rate_ml_per_day=args.rate,
        sample_min=args.sample_min,
        windows_min=tuple(args.windows_min),
        analysis_start_h=args.analysis_start_h,
        analysis_h=args.analysis_h,
        seed=args.seed,
    )
    try:
        result = analyse(profile, settings)
    except AccuracyInputError as exc:
        raise UsageError(f"{_FLAGS[exc.field]}: {exc}") from None
    with staged_out_dir(out) as stage:
        write_outputs(stage, render_outputs(result, plots=not args.no_plot))

    s = result.settings
    units = "pulses" if profile.mechanism is Mechanism.VALVE_GATED else "strokes"
    print(
        f"{profile.model} at {s.rate_ml_per_day:g} mL/day (seed {s.seed}): analysis "
        f"{s.analysis_start_h:g}-{s.end_h:g} h, {result.analysis_strokes} {units}, "
        f"overall error A = {result.mean_error_pct:+.2f} %"
    )
    print(f"  window_min  ep_max_pct  ep_min_pct  {units + '/window':>14}")
    for window, high, low, strokes in zip(
        s.windows_min,
        result.ep_max_pct,
        result.ep_min_pct,
        result.expected_strokes_per_window,
        strict=True,
    ):
        print(f"  {window:>10g}  {high:>+10.2f}  {low:>+10.2f}  {strokes:>14.1f}")
    shortest = int(result.expected_strokes_per_window.argmin())
    if result.expected_strokes_per_window[shortest] < 10:
        print(
            f"  note: a {s.windows_min[shortest]:g}-min window holds "
            f"{result.expected_strokes_per_window[shortest]:.1f} {units} on average, so its "
            f"error is mostly the discreteness of {units} (docs/accuracy.md: windows in hours)"
        )
    print(f"  outputs in {out}/")
    return 0
