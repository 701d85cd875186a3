"""Systemic toxicity and therapeutic-range outputs (emulator/pk/thresholds.py).

An overdose must show as one: a pocket fill as plasma above the CNS-depression threshold (while
the spinal effect falls), a 10x programming error as lumbar CSF above the therapeutic range.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from itpump.emulator.control.schema import ConcentrationsOut
from itpump.emulator.outputs import summary, timeseries, write_summary_json
from itpump.emulator.pk import Concentrations, PKModel, PKParameters
from itpump.emulator.pk import thresholds as th
from itpump.emulator.pk.oral import oral_comparator
from itpump.emulator.pk.schedule import DoseSchedule
from itpump.emulator.runner import ScenarioRun
from itpump.emulator.scenario import parse_scenario
from itpump.emulator.sweep.store import write_json_atomic
from itpump.tools.cli import main


def _oral_peak_ng_per_ml(dose_times_h: list[float], dose_mg: float, window_h: float) -> float:
    model = oral_comparator(PKParameters.baclofen())
    times = np.arange(window_h - 24.0, window_h, 0.01)
    doses = DoseSchedule(
        bolus_t_h=np.asarray(dose_times_h),
        bolus_tissue_mcg=np.full(len(dose_times_h), dose_mg * 1000.0),
    )
    return float(model.predict(doses, times).plasma_ng_per_ml.max())


def test_thresholds_are_what_their_sources_give() -> None:
    # Label: intrathecal plasma 0-5 ng/mL, 100 times less than oral.
    assert th.PLASMA_CNS_DEPRESSION_NG_PER_ML == 500.0
    # Leung 2006: 200 mg ingested; the model's oral comparator peak.
    peak = _oral_peak_ng_per_ml([0.0], th.SEVERE_TOXICITY_ORAL_DOSE_MG, 24.0)
    assert peak == pytest.approx(th.PLASMA_SEVERE_TOXICITY_NG_PER_ML, rel=1e-3)
    # 80 mg/day by mouth (top of the oral range) peaks just under the CNS-depression level.
    four_a_day = _oral_peak_ng_per_ml([6.0 * k for k in range(28)], 20.0, 7 * 24.0)
    three_a_day = _oral_peak_ng_per_ml([8.0 * k for k in range(21)], 80.0 / 3, 7 * 24.0)
    assert 380.0 <= four_a_day < three_a_day <= 430.0 < th.PLASMA_CNS_DEPRESSION_NG_PER_ML


def test_the_csf_range_is_the_models_steady_state_over_the_labelled_doses() -> None:
    # The monograph's 50-1200 mcg/day, infused for a month into the label patient's lumbar CSF.
    model = PKModel.baclofen_default()
    for dose_mcg_per_day, edge in (
        (th.MONOGRAPH_DOSE_LOW_MCG_PER_DAY, th.CSF_THERAPEUTIC_LOW_NG_PER_ML),
        (th.MONOGRAPH_DOSE_HIGH_MCG_PER_DAY, th.CSF_THERAPEUTIC_HIGH_NG_PER_ML),
    ):
        doses = DoseSchedule(
            seg_start_h=np.array([0.0]),
            seg_csf_rate_mcg_per_h=np.array([dose_mcg_per_day / 24.0]),
            seg_tissue_rate_mcg_per_h=np.array([0.0]),
        )
        steady = model.predict(doses, np.array([30 * 24.0])).as_dict()["csf_lumbar_ng_per_ml"]
        assert steady[0] == pytest.approx(edge, rel=0.01)
    # A steady dose inside the labelled range is inside the band: 1000 mcg/day was an
    # "intrathecal overdose" against the monograph's 1240 ng/mL.
    assert th.classify(th.steady_state_csf_ng_per_ml(1000.0), 5.0).flags == []
    assert th.classify(th.steady_state_csf_ng_per_ml(60.0), 0.5).flags == []


def test_classify_names_every_reference_level_crossed() -> None:
    assert th.classify(300.0, 2.0).flags == []
    assert th.classify(60.0, 0.5).flags == ["csf_below_therapeutic"]
    assert th.classify(2800.0, 10.0).flags == ["csf_above_therapeutic"]
    assert th.classify(50.0, 2400.0).flags == [
        "plasma_above_cns_depression",
        "plasma_above_severe_toxicity",
        "csf_below_therapeutic",
    ]
    out = ConcentrationsOut.of(Concentrations(60.0, 25.0, 600.0, 150.0))
    assert out.exposure == ["plasma_above_cns_depression", "csf_below_therapeutic"]


def _story(
    actions: list[dict[str, Any]], days: float, sample_interval: str = "15m"
) -> dict[str, Any]:
    base: list[dict[str, Any]] = [
        {"at": "0h", "type": "refill", "volume_ml": 20, "concentration_mcg_per_ml": 2000},
        {"at": "0h", "type": "prime"},
        {
            "at": "1h",
            "type": "program",
            "mode": "continuous",
            "dose_mcg_per_day": 400,
            "max_daily_dose_mcg": 1000,
        },
    ]
    data: dict[str, object] = {
        "scenario": {"name": "t", "duration": f"{days}d", "sample_interval": sample_interval},
        "actions": base + actions,
    }
    result = ScenarioRun(parse_scenario(data)).run()
    return summary(result, timeseries(result))


def test_a_pocket_fill_is_a_systemic_overdose_then_a_silent_withdrawal() -> None:
    data = _story(
        [
            {"at": "3d", "type": "fault", "kind": "pocket_fill"},
            {"at": "3d", "type": "refill", "volume_ml": 20, "concentration_mcg_per_ml": 2000},
        ],
        # The dry drive pushes the path's 0.486 mL (2.4 days at 0.2 mL/day) before the
        # withdrawal starts.
        8,
    )
    exposure = data["exposure"]
    assert exposure["systemic_overdose"]
    assert exposure["plasma_peak_ng_per_ml"] > th.PLASMA_CNS_DEPRESSION_NG_PER_ML
    assert exposure["plasma_peak_utc"].startswith("2026-01-08T")  # hours after the refill
    assert exposure["plasma_above_cns_depression_h"] > 1.0
    # The reservoir is truly empty; the spinal level falls out of range with no alarm.
    assert exposure["csf_below_range_h"] > 24.0
    assert data["final"]["reservoir_true_ml"] == 0.0
    assert data["final"]["reservoir_estimated_ml"] > 19.0
    assert data["final"]["active_alarms"] == []


def test_a_tenfold_programming_error_shows_in_the_csf_not_in_plasma() -> None:
    # 200 mcg/day, then 2000 (a slipped zero) with a limit raised to match: 2000 mcg/day is
    # also the top of a drug library's daily range for baclofen, so nothing refuses it.
    program: dict[str, Any] = {"type": "program", "mode": "continuous"}
    data = _story(
        [
            {**program, "at": "1d", "dose_mcg_per_day": 200, "max_daily_dose_mcg": 500},
            {**program, "at": "2d", "dose_mcg_per_day": 2000, "max_daily_dose_mcg": 2000},
        ],
        4,
    )
    assert data["refusals"] == []
    exposure = data["exposure"]
    assert exposure["csf_above_range_h"] > 24.0
    assert exposure["csf_lumbar_peak_ng_per_ml"] > 1.5 * th.CSF_THERAPEUTIC_HIGH_NG_PER_ML
    # Plasma stays far below the oral-therapy level: the danger is supraspinal, via the CSF.
    assert not exposure["systemic_overdose"]
    assert exposure["plasma_peak_ng_per_ml"] < 50.0


def _strict_json(text: str) -> Any:
    """json.loads that refuses NaN / Infinity, as jq and browsers do."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


MORPHINE_TOML = """
[scenario]
name = "morphine"
duration = "2d"

[[actions]]
at = 0
type = "refill"
volume_ml = 20
drug = "morphine"
concentration_mcg_per_ml = 1000

[[actions]]
at = "1h"
type = "program"
mode = "continuous"
dose_mcg_per_day = 300
max_daily_dose_mcg = 600
"""


def test_a_drug_without_pk_writes_strict_json_with_nulls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "morphine.toml"
    path.write_text(MORPHINE_TOML, encoding="utf-8")
    out = tmp_path / "out"
    assert main(["simulate", str(path), "--out", str(out), "--no-plot", "--json"]) == 0
    printed = _strict_json(capsys.readouterr().out)
    written = _strict_json((out / "summary.json").read_text(encoding="utf-8"))
    for data in (printed, written):
        assert data["exposure"]["plasma_peak_ng_per_ml"] is None
        assert data["exposure"]["plasma_peak_utc"] is None
        assert data["exposure"]["csf_lumbar_peak_ng_per_ml"] is None


def test_a_nan_never_reaches_an_output_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="JSON"):
        write_summary_json(tmp_path / "summary.json", {"x": math.nan})
    with pytest.raises(ValueError, match="JSON"):
        write_json_atomic(tmp_path / "sweep.json", {"x": math.nan})


def test_exposure_does_not_depend_on_the_output_sample_interval() -> None:
    # A 300 mcg clinician bolus at 2 d 3 h: lumbar CSF peaks above the range within minutes
    # and is back in it long before the next 6-hourly sample.
    bolus = [{"at": "2d 3h", "type": "bolus", "dose_mcg": 300, "duration_min": 10}]
    fine = _story(bolus, 3, "5m")["exposure"]
    coarse = _story(bolus, 3, "6h")["exposure"]
    assert coarse == fine
    assert fine["csf_above_range_h"] > 0
    assert fine["csf_above_range_first_utc"].startswith("2026-01-07T11:")  # the bolus
    assert fine["csf_lumbar_peak_ng_per_ml"] > th.CSF_THERAPEUTIC_HIGH_NG_PER_ML


def test_a_projection_beyond_the_calendar_is_written_as_its_last_instant() -> None:
    # 0.001 mcg/day on a pump without a minimum rate projects its reservoir past year 9999:
    # the summary writes the last instant ("at or after"), as the wire saturates its dates.
    from itpump.emulator.outputs import LAST_STAMP

    scenario = parse_scenario(
        {
            "scenario": {"name": "slow", "profile": "valve-gated-20", "seed": 1, "duration": "3d"},
            "actions": [
                {"at": "0h", "type": "refill", "volume_ml": 20, "concentration_mcg_per_ml": 500},
                {"at": "0h", "type": "prime"},
                {
                    "at": "1h",
                    "type": "program",
                    "mode": "continuous",
                    "max_daily_dose_mcg": 480,
                    "dose_mcg_per_day": 0.001,
                },
            ],
        }
    )
    result = ScenarioRun(scenario).run()
    after_program = summary(result, timeseries(result))["projections"][-1]
    assert after_program["after"] == "program"
    assert after_program["low_reservoir_utc"] == LAST_STAMP
    assert after_program["empty_utc"] == LAST_STAMP
