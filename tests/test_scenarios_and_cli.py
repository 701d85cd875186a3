"""Scenario files, their error messages, and the simulate / profiles commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from itpump.emulator.device_profile import (
    PROFILE_PATH_ENV,
    ProfileError,
    available_profiles,
    load_profile,
)
from itpump.emulator.runner import expand_actions
from itpump.emulator.scenario import (
    SHIPPED_SCENARIO_DIR,
    ScenarioError,
    load_scenario,
    parse_duration_h,
    parse_scenario,
    shipped_scenarios,
)
from itpump.tools.cli import main

BASE = {
    "scenario": {"name": "t", "duration": "2d"},
    "actions": [
        {"at": "0h", "type": "refill", "volume_ml": 20, "concentration_mcg_per_ml": 500},
    ],
}


def with_action(action: dict[str, object]) -> dict[str, object]:
    data: dict[str, object] = json.loads(json.dumps(BASE))
    actions = data["actions"]
    assert isinstance(actions, list)
    actions.append(action)
    return data


@pytest.mark.parametrize(
    ("text", "hours"),
    [("90d", 2160.0), ("1d 8h", 32.0), ("30m", 0.5), ("2w", 336.0), ("0", 0.0), (1.5, 1.5)],
)
def test_durations(text: object, hours: float) -> None:
    assert parse_duration_h(text) == pytest.approx(hours)


@pytest.mark.parametrize("bad", ["ninety days", "5x", "1d junk", True])
def test_bad_durations_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration_h(bad)


def test_error_names_action_field_and_allowed_values() -> None:
    data = with_action(
        {"at": "1h", "type": "program", "mode": "continuous", "dose_mcg_per_day": -5}
    )
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data, "x.toml")
    message = str(info.value)
    assert "action #2 (program at 1h): dose_mcg_per_day" in message
    assert "-5 mcg/day: mode 'continuous' needs a dose > 0" in message


def test_unknown_action_type_lists_allowed_types() -> None:
    with pytest.raises(ScenarioError, match=r"action #2 .*'refill'.*'prime'"):
        parse_scenario(with_action({"at": "1h", "type": "explode"}))


def test_unknown_fault_kind_is_caught_before_running() -> None:
    with pytest.raises(ScenarioError, match="unknown fault kind 'gremlin'; allowed: motor_stall"):
        parse_scenario(with_action({"at": "1h", "type": "fault", "kind": "gremlin"}))


def test_repeating_actions_expand_until_the_end() -> None:
    scenario = parse_scenario(with_action({"at": "1h", "every": "12h", "type": "patient_bolus"}))
    times = [t for t, _, a in expand_actions(scenario) if a.type == "patient_bolus"]
    assert times == [1.0, 13.0, 25.0, 37.0]


def test_every_shipped_scenario_loads() -> None:
    names = shipped_scenarios()
    assert {"baclofen-180d", "over-infusion", "concentration-change", "motor-stall"} <= set(names)
    for name in names:
        assert load_scenario(name).end_h > 0


def test_user_profile_directory_is_searched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (Path(__file__).parents[1] / "emulator/profiles/peristaltic-20.toml").read_text()
    (tmp_path / "my-pump.toml").write_text(
        text.replace('model = "peristaltic-20"', 'model = "my-pump"')
    )
    monkeypatch.setenv(PROFILE_PATH_ENV, str(tmp_path))
    assert "my-pump" in available_profiles()
    assert load_profile("my-pump").model == "my-pump"


def test_simulate_writes_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["simulate", "motor-stall", "--out", str(tmp_path), "--seed", "3"])
    assert status == 0
    header = (tmp_path / "timeseries.csv").read_text().splitlines()[0].split(",")
    assert {
        "time_h",
        "time_utc",
        "reservoir_true_ml",
        "reservoir_estimated_ml",
        "rate_ml_per_day",
        "delivered_csf_mcg",
        "alarms",
    } <= set(header)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["seed"] == 3
    assert summary["mass_balance_mcg"]["relative_imbalance"] < 1e-9
    assert any(a["alarm"] == "motor_stall" and a["event"] == "raised" for a in summary["alarms"])
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "motor-stall: 20 days" in capsys.readouterr().out


def test_simulate_bad_file_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[scenario]\nname = "x"\nduration = "1d"\n[[actions]]\nat = "1h"\n'
        'type = "refill"\nvolume_ml = -1\nconcentration_mcg_per_ml = 500\n'
    )
    out = tmp_path / "out"
    assert main(["simulate", str(bad), "--out", str(out)]) == 2
    assert not out.exists()
    assert "action #1 (refill at 1h): volume_ml" in capsys.readouterr().err


def test_profiles_lists_both_mechanisms(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["mechanism"] for r in rows} == {"peristaltic", "valve_gated"}
    assert main(["profiles", "nonexistent"]) == 2
    assert "known profiles" in capsys.readouterr().err


def test_simulate_exports_dose_records_that_pk_reproduces(tmp_path: Path) -> None:
    import csv

    out = tmp_path / "run"
    assert main(["simulate", "withdrawal-occlusion", "--out", str(out), "--no-plot"]) == 0
    pred = tmp_path / "pred.csv"
    assert main(["pk", str(out / "dose_records.csv"), "--out", str(pred)]) == 0
    series = list(csv.DictReader((out / "timeseries.csv").open()))
    predicted = list(csv.DictReader(pred.open()))
    assert len(predicted) == len(series)
    for row, p in zip(series[::37], predicted[::37], strict=True):
        assert float(p["TIME"]) == pytest.approx(float(row["time_h"]))
        assert float(p["CSF_LUMBAR"]) == pytest.approx(
            float(row["csf_lumbar_ng_per_ml"]), rel=1e-5, abs=1e-9
        )
        assert float(p["PLASMA"]) == pytest.approx(
            float(row["plasma_ng_per_ml"]), rel=1e-5, abs=1e-9
        )


def test_unreadable_and_invalid_toml_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.toml"
    bad.write_text("[scenario\nname = 1\n")
    with pytest.raises(ScenarioError, match=r"scenario .*broken.toml: not valid TOML"):
        load_scenario(str(bad))
    with pytest.raises(ProfileError, match=r"cannot read profile .*missing.toml"):
        load_profile(str(tmp_path / "missing.toml"))


def test_outputs_get_the_usual_file_mode(tmp_path: Path) -> None:
    import os
    import stat

    out = tmp_path / "run"
    assert main(["simulate", "motor-stall", "--out", str(out), "--no-plot"]) == 0
    umask = os.umask(0)
    os.umask(umask)
    for name in ("timeseries.csv", "dose_records.csv"):
        mode = stat.S_IMODE((out / name).stat().st_mode)
        assert mode == 0o666 & ~umask, name


def test_the_catheter_tip_level_reaches_the_patient_model() -> None:
    from itpump.emulator.outputs import timeseries
    from itpump.emulator.runner import ScenarioRun

    base = load_scenario("clinic-ready")

    def lumbar_on_day_3(tip_cm: float) -> float:
        implant = base.implant.model_copy(update={"catheter_tip_cm": tip_cm})
        run = ScenarioRun(base.model_copy(update={"implant": implant}))
        assert run.pk_model is not None
        assert run.pk_model.parameters.catheter_tip_cm == tip_cm
        run.env.run(until=72.0)
        run.pump.truth()
        return float(timeseries(run.result, np.array([72.0]))["csf_lumbar_ng_per_ml"][0])

    # A tip 10 cm up the spine leaves less drug at the lumbar sampling level (docs/pk.md).
    assert lumbar_on_day_3(10.0) < 0.9 * lumbar_on_day_3(0.0)


def test_a_catheter_tip_out_of_range_is_refused_naming_the_field(tmp_path: Path) -> None:
    text = (SHIPPED_SCENARIO_DIR / "clinic-ready.toml").read_text(encoding="utf-8")
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("[patient]", "[implant]\ncatheter_tip_cm = 250\n\n[patient]"))
    with pytest.raises(ScenarioError, match="catheter_tip_cm"):
        load_scenario(str(bad))
