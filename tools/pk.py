"""`itpump pk`: predict CSF, plasma and effect-site concentrations for NONMEM-style records."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from itpump.emulator.pk.parameters import MAX_CATHETER_TIP_CM
from itpump.tools.argtypes import float_in_range, int_in_range
from itpump.tools.cli import UsageError
from itpump.tools.extras import require_plotting

if TYPE_CHECKING:
    from itpump.emulator.pk.batch import PredictionRun

logger = logging.getLogger(__name__)

#: Most virtual patients per subject. The population is solved in one numpy batch (about
#: 1.2 ms and 1 kB of parameters per patient for a 90-day regimen, BENCHMARKS.md): 100,000
#: take about two minutes per subject; 1e8 would take a day and gigabytes of memory.
MAX_POPULATION = 100_000

#: Points per subject on the plotted curves: enough to resolve a daily pattern over a year.
PLOT_POINTS = 4000

DESCRIPTION = """\
Predict intrathecal baclofen concentrations (ng/mL) for a file of NONMEM-style dose and
observation records, with the label-calibrated PK/PD model (docs/pk.md).
"""

EPILOG = """\
input file (CSV with a header row; lines starting with # are comments):
  ID    subject; one subject's records must be contiguous
  TIME  hours from the start (>= 0), non-decreasing within a subject
  AMT   dose in mcg (> 0 on dose records; 0 or '.' on observation records)
  RATE  mcg/h; 0 = bolus, > 0 = infusion of AMT over AMT/RATE hours
  EVID  1 = dose record, 0 = observation record (a row to predict)
  CMT   1 = intrathecal (CSF at the catheter tip), 2 = subcutaneous/tissue depot
        (catheter leak, pump-pocket fill); ignored on observation records
  WT    optional body weight in kg, constant per subject (default 70); scales
        systemic clearance (^0.75) and volume (^1)
  Other columns (MDV, DV, ...) are ignored. Overlapping infusions add up. An
  observation at the time of a dose includes it if the dose record comes first.

output (one row per observation record, same order):
  ID,TIME,CSF_LUMBAR,CSF_CISTERNAL,PLASMA,CE    CE = effect-site concentration
  with --population N: each value column becomes three, the 5th, 50th and 95th
  percentiles over N virtual patients per subject (log-normal inter-individual
  variability, reproducible with --seed):
  ID,TIME,CSF_LUMBAR_P05,CSF_LUMBAR_P50,CSF_LUMBAR_P95,CSF_CISTERNAL_P05,...,CE_P95

limits (refused before any computation, exit status 2): file at most 64 MiB and
1,000,000 records; TIME (and infusion ends) 0..876600 h (100 years); AMT at most 1e6 mcg;
RATE at most 1e6 mcg/h; WT 0.5..500 kg; --population at most 100000.

A malformed file is reported with its line and column, and nothing is written.
example:
  itpump pk emulator/pk/examples/baclofen_bolus.csv --out pred.csv --plot pred.png
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `pk` sub-command."""
    parser = subparsers.add_parser(
        "pk",
        help="predict concentrations for NONMEM-style dose records",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("doses", metavar="DOSES.csv", type=Path, help="dose/observation records")
    parser.add_argument(
        "--out", metavar="PRED.csv", type=Path, help="write predictions here (default: stdout)"
    )
    parser.add_argument(
        "--population",
        metavar="N",
        type=int_in_range(1, MAX_POPULATION),
        help=f"simulate N virtual patients per subject (1..{MAX_POPULATION}) and report "
        "percentiles 5/50/95",
    )
    parser.add_argument(
        "--seed", metavar="S", type=int, default=0, help="random seed for --population (default 0)"
    )
    parser.add_argument(
        "--plot", metavar="FILE.png", type=Path, help="also save a concentration plot"
    )
    parser.add_argument(
        "--catheter-tip-cm",
        metavar="CM",
        type=float_in_range(-MAX_CATHETER_TIP_CM, MAX_CATHETER_TIP_CM),
        default=0.0,
        help="catheter tip, cm cranial of the lumbar sampling level (default 0: lumbar)",
    )
    parser.add_argument(
        "--csf-peripheral",
        action="store_true",
        help="add the second CSF compartment (terminal CSF half-life ~4.5 h)",
    )
    parser.set_defaults(func=run)


def _check_destination(path: Path | None, option: str) -> None:
    if path is None:
        return
    if path.is_dir():
        raise UsageError(f"{option}: {path} is a directory; give a file name")
    if path.parent.exists() and not path.parent.is_dir():
        raise UsageError(f"{option}: {path.parent} is not a directory")
    if not path.parent.is_dir():
        raise UsageError(f"{option}: directory {path.parent} does not exist")
    # Checked first so a long computation is not lost; a write can still fail later (root
    # passes this check on /proc, a disk fills), which `_write_outputs` reports in one line.
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option}: directory {path.parent} is not writable")


def _cannot_write(option: str, path: Path, exc: OSError) -> UsageError:
    return UsageError(f"{option}: cannot write {path}: {exc.strerror or exc}")


def _write_outputs(args: argparse.Namespace, text: str, run_result: PredictionRun) -> None:
    """Write the plot and the predictions, all or nothing: the plot is rendered to a staged
    name beside it first and renamed into place only once the predictions are written, so a
    failure of either leaves neither (and a failed plot prints no predictions)."""
    from itpump.emulator.pk.plotting import save_plot
    from itpump.emulator.pk.records import move_into_place, output_target, write_text_atomically

    staged: Path | None = None
    try:
        if args.plot is not None:
            # Staged beside the final file (a symlink's target), so the rename stays on one
            # file system.
            final_plot, _ = output_target(args.plot)
            staged = final_plot.with_name(f".{final_plot.name}.staged{args.plot.suffix}")
            try:
                save_plot(run_result, staged, title=f"itpump pk: {args.doses.name}")
            except OSError as exc:
                raise _cannot_write("--plot", args.plot, exc) from None
        if args.out is None:
            sys.stdout.write(text)
        else:
            try:
                write_text_atomically(args.out, text)
            except OSError as exc:
                raise _cannot_write("--out", args.out, exc) from None
            logger.info("wrote %s", args.out)
        if staged is not None:
            try:
                move_into_place(staged, args.plot)
            except OSError as exc:
                raise _cannot_write("--plot", args.plot, exc) from None
            staged = None
            logger.info("wrote %s", args.plot)
    finally:
        if staged is not None:
            staged.unlink(missing_ok=True)


def run(args: argparse.Namespace) -> int:
    """Validate everything, compute, then write the outputs."""
    # Imported here: scipy and matplotlib would slow every other sub-command's start.
    from itpump.emulator.pk.batch import predict_subjects
    from itpump.emulator.pk.parameters import PKParameters
    from itpump.emulator.pk.records import DoseFileError, read_dose_file

    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0 (got {args.seed})")
    _check_destination(args.out, "--out")
    _check_destination(args.plot, "--plot")
    for option, path in (("--out", args.out), ("--plot", args.plot)):
        if path is not None and os.path.realpath(path) == os.path.realpath(args.doses):
            raise UsageError(f"{option}: {path} is the input file; name another file")
    if args.plot is not None:
        require_plotting("--plot", "leave --plot out")
        from itpump.emulator.pk.plotting import supported_plot_suffixes

        suffix = args.plot.suffix.lower().lstrip(".")
        if suffix not in supported_plot_suffixes():
            choices = ", ".join(sorted(supported_plot_suffixes()))
            raise UsageError(f"--plot: unsupported file type {args.plot.suffix!r} ({choices})")
    if args.population is None and args.seed != 0:
        logger.warning("--seed has no effect without --population")
    try:
        parameters = PKParameters.baclofen(csf_peripheral=args.csf_peripheral).replace(
            catheter_tip_cm=args.catheter_tip_cm
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        subjects = read_dose_file(args.doses)
    except FileNotFoundError:
        raise UsageError(f"{args.doses}: no such file") from None
    except DoseFileError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"{args.doses}: {exc.strerror}") from None

    run_result = predict_subjects(
        subjects,
        parameters=parameters,
        population=args.population,
        seed=args.seed,
        curve_points=PLOT_POINTS if args.plot is not None else 0,
    )
    text = run_result.csv_text()
    _write_outputs(args, text, run_result)
    return 0
