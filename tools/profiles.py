"""`itpump profiles`: list the device profiles and show one."""

from __future__ import annotations

import argparse
import json

from itpump.emulator.device_profile import PROFILE_PATH_ENV, ProfileError, available_profiles, load_profile
from itpump.tools.cli import UsageError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `profiles` sub-command."""
    parser = sub.add_parser(
        "profiles",
        help="list device profiles (pump models), or show one",
        description=f"List device profiles. Add your own: a TOML file passed by path, or a "
        f"directory of them named in ${PROFILE_PATH_ENV}.",
    )
    parser.add_argument("name", nargs="?", help="show this profile (name or .toml path)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """List or show profiles."""
    if args.name:
        try:
            profile = load_profile(args.name)
        except ProfileError as exc:
            raise UsageError(str(exc)) from None
        if args.json:
            print(json.dumps(profile.model_dump(mode="json"), indent=2))
        else:
            for key, value in profile.model_dump(mode="json").items():
                print(f"{key:32} {value}")
        return 0
    rows: list[dict[str, object]] = []
    for name, path in available_profiles().items():
        try:
            p = load_profile(str(path))
            rows.append(
                {
                    "name": name,
                    "mechanism": p.mechanism.value,
                    "reservoir_ml": p.reservoir_capacity_ml,
                    "rate_ml_per_day": [p.min_rate_ml_per_day, p.max_rate_ml_per_day],
                    "description": p.description,
                    "path": str(path),
                }
            )
        except ProfileError as exc:
            rows.append({"name": name, "error": str(exc), "path": str(path)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        if "error" in row:
            print(f"{row['name']:18} INVALID: {row['error']}")
        else:
            rate = row["rate_ml_per_day"]
            assert isinstance(rate, list)
            print(
                f"{row['name']:18} {row['mechanism']:12} {row['reservoir_ml']:>5g} mL  "
                f"{rate[0]:g}-{rate[1]:g} mL/day  {row['description']}"
            )
    return 0
