"""`itpump simulate`: run a therapy scenario headless and write its outputs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from itpump.emulator.device_profile import ProfileError
from itpump.emulator.scenario import (
    DEFAULT_SCENARIO,
    ScenarioError,
    load_scenario,
    shipped_scenarios,
)
from itpump.tools.cli import UsageError
from itpump.tools.extras import require_plotting
from itpump.tools.outdir import check_out_dir, staged_out_dir

#: The scenario file's own seed range (emulator.scenario.ScenarioHeader.seed).
MAX_SEED = 2**63 - 1

EPILOG = """\
SCENARIO is a TOML file (schema: docs/scenarios.md) or the name of a shipped scenario:
  {names}
Outputs in --out DIR: timeseries.csv (truth vs pump estimate at every sample),
summary.json (mass balance, alarms, refusals), report.png, and dose_records.csv (the drug
that truly left the catheter as NONMEM-style records, CMT 1 = CSF, CMT 2 = tissue, with an
observation row per sample: feed it to `itpump pk` or your own pharmacometric tool).
Limits (refused with exit status 2 before anything runs): a scenario file of at most 1 MiB,
at most 30 years simulated, at most 1,000,000 samples and 100,000 action occurrences
(docs/scenarios.md, "Limits").
Exit status: 0 run completed, 2 bad input (one line naming the field or option; nothing
written: outputs appear in --out only once all of them are complete).
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `simulate` sub-command."""
    parser = sub.add_parser(
        "simulate",
        help="run a therapy scenario headless (months in seconds)",
        description="Run a therapy scenario in simulated time and write timeseries, summary "
        "and report.",
        epilog=EPILOG.format(names=", ".join(shipped_scenarios())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "scenario",
        nargs="?",
        default=DEFAULT_SCENARIO,
        help=f"scenario file or shipped name (default: {DEFAULT_SCENARIO})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("out"),
        help="output directory, created if missing (default: ./out)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="random seed (default: the scenario's own seed)"
    )
    parser.add_argument("--no-plot", action="store_true", help="skip report.png")
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (it is also hidden when stderr is not a terminal)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the summary as JSON instead of a human-readable digest",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the scenario and write outputs."""
    if not args.no_plot:
        require_plotting("report.png", "pass --no-plot")
    # Imported here: numpy/scipy/matplotlib would slow every other sub-command's start.
    from itpump.emulator.outputs import (
        json_text,
        summary,
        timeseries,
        write_dose_records_csv,
        write_report_png,
        write_summary_json,
        write_timeseries_csv,
    )
    from itpump.emulator.runner import ScenarioRun

    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        raise UsageError(f"--seed must be 0..{MAX_SEED} (got {args.seed})")
    out: Path = args.out
    check_out_dir(out)  # before a run that may take minutes
    try:
        scenario = load_scenario(args.scenario)
        sim = ScenarioRun(scenario, args.seed)
    except (ScenarioError, ProfileError) as exc:
        raise UsageError(str(exc)) from None
    show_progress = not args.no_progress and sys.stderr.isatty()
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=round(scenario.end_h / 24.0, 2), unit="day", desc=scenario.scenario.name)

        def progress(t_h: float) -> None:
            bar.update(round(t_h / 24.0, 2) - bar.n)

        result = sim.run(progress)
        bar.close()
    else:
        result = sim.run()
    columns = timeseries(result)
    data = summary(result, columns)
    with staged_out_dir(out) as stage:
        write_timeseries_csv(stage / "timeseries.csv", result, columns)
        write_dose_records_csv(stage / "dose_records.csv", result, columns["time_h"])
        write_summary_json(stage / "summary.json", data)
        if not args.no_plot:
            write_report_png(stage / "report.png", result, columns)
    if args.json:
        print(json_text(data))
        return 0
    mb = data["mass_balance_mcg"]
    print(
        f"{data['scenario']}: {data['duration_h'] / 24:g} days of {data['profile']} "
        f"(serial {data['serial']}, seed {data['seed']}) in {data['wall_time_s']:.2f} s, "
        f"{data['simpy_events']} SimPy events"
    )
    print(
        f"  drug filled {mb['filled']:.1f} mcg: to CSF {mb['delivered_to_csf']:.1f}, "
        f"to tissue {mb['lost_to_tissue']:.1f}, aspirated {mb['aspirated_at_refill']:.1f}, "
        f"in pump {mb['in_reservoir'] + mb['in_catheter_and_tubing']:.1f} "
        f"(imbalance {mb['relative_imbalance']:.1e})"
    )
    final = data["final"]
    print(
        f"  reservoir at end: true {final['reservoir_true_ml']:.3f} mL, pump estimate "
        f"{final['reservoir_estimated_ml']:.3f} mL; alarms: "
        f"{', '.join(final['active_alarms']) or 'none'}"
    )
    if data["emptied_before_low_reservoir_alarm"]:
        print(
            f"  WARNING: reservoir truly empty at {data['reservoir_truly_empty_utc']} "
            "before any low-reservoir alarm"
        )
    for warning in data["warnings"]:
        print(f"  WARNING: {warning}")
    exposure = data["exposure"]
    if exposure["no_pk_model_for"] is not None and exposure["reference_levels_of"] is None:
        print(f"  no PK model for {exposure['no_pk_model_for']}: no concentrations, no exposure")
    elif exposure["no_pk_model_for"] is not None:
        print(
            f"  no PK model for {exposure['no_pk_model_for']}: concentrations and exposure "
            f"are {exposure['reference_levels_of']}'s alone"
        )
    if exposure["systemic_overdose"]:
        print(
            f"  WARNING: systemic overdose: plasma {exposure['plasma_peak_ng_per_ml']:.0f} ng/mL "
            f"at {exposure['plasma_peak_utc']}, above the CNS-depression threshold "
            f"{exposure['plasma_cns_depression_threshold_ng_per_ml']:g} ng/mL for "
            f"{exposure['plasma_above_cns_depression_h']:.1f} h"
        )
    low, high = exposure["csf_therapeutic_range_ng_per_ml"] or (0.0, 0.0)
    if exposure["csf_above_range_h"]:
        print(
            f"  WARNING: lumbar CSF above the therapeutic range ({high:g} ng/mL) from "
            f"{exposure['csf_above_range_first_utc']} for {exposure['csf_above_range_h']:.1f} h "
            f"(peak {exposure['csf_lumbar_peak_ng_per_ml']:.0f} ng/mL): intrathecal overdose"
        )
    if exposure["csf_below_range_h"]:
        print(
            f"  WARNING: lumbar CSF fell below the therapeutic range ({low:g} ng/mL) at "
            f"{exposure['csf_below_range_first_utc']}, for {exposure['csf_below_range_h']:.1f} h: "
            "withdrawal risk"
        )
    shown = 5
    for refusal in data["refusals"][:shown]:
        print(
            f"  refused: action #{refusal['action']} {refusal['type']} at "
            f"{refusal['t_h']:.2f} h: {refusal['code']}: {refusal['detail']}"
        )
    if len(data["refusals"]) > shown:
        print(f"  ... and {len(data['refusals']) - shown} more refusals (see summary.json)")
    print(f"  outputs in {out}/")
    return 0
