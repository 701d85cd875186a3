"""timeseries.csv stays byte-identical through performance work (issue 11).

Digests recorded before the event loop, the firmware caches and the column-wise CSV writer
changed (Python 3.11, numpy 2.x, x86_64). If a deliberate model change moves them, record the
new digests in the same commit and say why.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
from pathlib import Path

import pytest

from itpump.emulator.outputs import alarm_names, timeseries, write_timeseries_csv
from itpump.emulator.recorder import FloatArray
from itpump.emulator.runner import RunResult, ScenarioRun
from itpump.emulator.scenario import load_scenario

DIGESTS = {
    "baclofen-180d": "bf1c267cd4a10b2db5a78786b9baf0ffe428b83e1d458682e3c4311253fd3b5e",
    "over-infusion": "b08aa8ebe25268b0580c8b3861001ee13423da536afc2dcc80bbd6573d160440",
}


def _row_by_row(path: Path, result: RunResult, columns: dict[str, FloatArray]) -> None:
    # The writer as it was (csv module, one row at a time): the oracle for the new one.
    start = result.scenario.scenario.start
    names = [n for n in columns if n not in ("time_h", "alarm_mask")]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["time_h", "time_utc", *names, "alarms"])
        for i, t in enumerate(columns["time_h"]):
            stamp = (start + dt.timedelta(hours=float(t))).strftime("%Y-%m-%dT%H:%M:%SZ")
            writer.writerow(
                [
                    f"{t:.12g}",
                    stamp,
                    *(f"{columns[n][i]:.9g}" for n in names),
                    alarm_names(columns["alarm_mask"][i]),
                ]
            )


@pytest.mark.parametrize("name", sorted(DIGESTS))
def test_timeseries_csv_matches_its_recorded_digest(name: str, tmp_path: Path) -> None:
    result = ScenarioRun(load_scenario(name)).run()
    columns = timeseries(result)
    write_timeseries_csv(tmp_path / "new.csv", result, columns)
    _row_by_row(tmp_path / "old.csv", result, columns)
    new = (tmp_path / "new.csv").read_bytes()
    assert new == (tmp_path / "old.csv").read_bytes()
    assert hashlib.sha256(new).hexdigest() == DIGESTS[name]


def test_column_writer_matches_row_writer_on_odd_times_and_an_offset_start(
    tmp_path: Path,
) -> None:
    result = ScenarioRun(load_scenario("over-infusion")).run()
    tz = dt.timezone(dt.timedelta(hours=-5))
    header = result.scenario.scenario
    shifted = header.model_copy(update={"start": header.start.replace(tzinfo=tz)})
    scenario = result.scenario.model_copy(update={"scenario": shifted})
    result = dataclasses.replace(result, scenario=scenario)
    times = [0.0, 1 / 3, 2.999999999, 7.0000001, 12.5, 47.123456789]
    columns = timeseries(result, times)
    write_timeseries_csv(tmp_path / "new.csv", result, columns)
    _row_by_row(tmp_path / "old.csv", result, columns)
    assert (tmp_path / "new.csv").read_bytes() == (tmp_path / "old.csv").read_bytes()
