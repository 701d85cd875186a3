"""report.png as a clinician reads it, checked on the figure's objects (no pixels)."""

from __future__ import annotations

import datetime as dt
import tomllib

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import ConciseDateFormatter

from itpump.emulator.outputs import run_references, summary, timeseries
from itpump.emulator.report import (
    CSF_AXIS_CAP_OF_RANGE_TOP,
    EVENT_ROWS,
    binned_daily_mcg,
    dose_bin_days,
    dose_bin_edges_h,
    fault_periods,
    mdates_num,
    programmed_dose,
    report_figure,
)
from itpump.emulator.runner import RunResult, ScenarioRun
from itpump.emulator.scenario import (
    SHIPPED_SCENARIO_DIR,
    ProgramAction,
    load_scenario,
    parse_scenario,
)
from itpump.protocol.codes import AlarmId

MORPHINE_TOML = """
[scenario]
name = "morphine"
duration = "2d"
start = 2026-01-05T00:00:00Z

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


@pytest.fixture(scope="module")
def stall() -> RunResult:
    return ScenarioRun(load_scenario("motor-stall")).run()


def _labels(ax: object) -> list[str]:
    return ax.get_legend_handles_labels()[1]  # type: ignore[attr-defined, no-any-return]


def test_the_report_has_calendar_dates_and_honest_concentration_axes(stall: RunResult) -> None:
    figure = report_figure(stall, timeseries(stall))
    reservoir, dose, csf, plasma, timeline = figure.axes
    assert isinstance(timeline.xaxis.get_major_formatter(), ConciseDateFormatter)
    # No symlog kink: CSF linear, plasma log with the reference levels drawn and labelled.
    assert csf.get_yscale() == "linear"
    assert plasma.get_yscale() == "log"
    assert any("therapeutic range 69-1667" in label for label in _labels(csf))
    assert any("withdrawal" in label for label in _labels(csf))
    assert any("CNS depression 500" in label for label in _labels(plasma))
    assert any("severe toxicity 2316" in label for label in _labels(plasma))
    assert "programmed (what the pump was told)" in _labels(dose)
    assert "true: to CSF" in _labels(dose)
    assert "pump estimate" in _labels(reservoir)
    assert "motor-stall" in figure.get_suptitle()


def test_faults_and_actions_are_marked(stall: RunResult) -> None:
    figure = report_figure(stall, timeseries(stall))
    data_panels, timeline = figure.axes[:-1], figure.axes[-1]
    for ax in data_panels:
        assert "fault motor_stall: start" in _labels(ax)
        assert "fault motor_stall: cleared" in _labels(ax)
    assert {"refill", "prime", "program", "fault", "clear fault"} <= set(_labels(timeline))
    assert fault_periods(stall.scenario, stall.outcomes, stall.scenario.end_h) == [
        ("motor_stall", 240.0, 276.0)
    ]


def test_legends_sit_beside_the_data_not_on_it(stall: RunResult) -> None:
    figure = report_figure(stall, timeseries(stall))
    renderer = FigureCanvasAgg(figure).get_renderer()  # type: ignore[no-untyped-call]
    figure.draw(renderer)
    for ax in figure.axes:
        legend = ax.get_legend()
        assert legend is not None
        assert legend.get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1


def test_the_programmed_dose_ignores_what_went_wrong_in_the_pump(stall: RunResult) -> None:
    edges = np.arange(0.0, 21.0) * 24.0
    programmed = programmed_dose(stall.scenario, stall.outcomes).daily_totals_mcg(edges)
    # Programmed at 1 h: 23 h of 200 mcg/day on day 0, then 200 every day, stall or not.
    assert programmed[0] == pytest.approx(200.0 * 23 / 24)
    assert programmed[1:] == pytest.approx(np.full(19, 200.0))


def test_a_flex_pattern_programs_its_daily_total_and_boluses_add_to_their_day() -> None:
    scenario = load_scenario("baclofen-180d")
    run = ScenarioRun(
        scenario.model_copy(
            update={"scenario": scenario.scenario.model_copy(update={"duration": 72.0})}
        )
    )
    result = run.run()
    program = next(a for a in scenario.actions if isinstance(a, ProgramAction))
    assert program.mode == "flex"
    totals = programmed_dose(scenario, result.outcomes).daily_totals_mcg(
        np.array([24.0, 48.0, 72.0])
    )
    # (180 x 7 h + 260 x 6 h + 220 x 7 h + 200 x 4 h) / 24 h = 215, plus two 20 mcg boluses.
    assert totals == pytest.approx([255.0, 255.0])


def test_long_runs_get_wider_dose_bins() -> None:
    assert dose_bin_days(180 * 24.0) == 2
    assert dose_bin_days(100 * 24.0) == 1
    assert dose_bin_days(7 * 365 * 24.0) == 22


def _pk_run(text: str) -> object:
    from itpump.emulator.pk.batch import predict_subjects
    from itpump.emulator.pk.records import parse_dose_records

    return predict_subjects(parse_dose_records(text), curve_points=200)


def test_the_pk_plot_has_a_title_dose_markers_and_days_for_long_runs() -> None:
    from itpump.emulator.pk.batch import PredictionRun
    from itpump.emulator.pk.plotting import render_predictions

    long_run = _pk_run(
        "ID,TIME,AMT,RATE,EVID,CMT\n"
        "1,0,1800,12.5,1,1\n1,72,10000,0,1,2\n1,100,50,0,1,1\n1,144,.,.,0,.\n"
    )
    assert isinstance(long_run, PredictionRun)
    figure = render_predictions(long_run, title="itpump pk: doses.csv")
    csf = figure.axes[0]
    assert figure.axes[-1].get_xlabel() == "time (days)"
    assert "itpump pk: doses.csv" in figure.get_suptitle()
    assert "1 subject, typical parameters" in figure.get_suptitle()
    labels = _labels(csf)
    assert {"ID 1 bolus into CSF", "ID 1 dose into tissue", "ID 1 infusion start"} <= set(labels)
    tissue = csf.get_lines()[labels.index("ID 1 dose into tissue")]
    assert np.asarray(tissue.get_xdata()).tolist() == [3.0]  # 72 h, in days

    many = "".join(f"1,{t},12.5,12.5,1,1\n" for t in range(0, 300, 2))
    rug_run = _pk_run(f"ID,TIME,AMT,RATE,EVID,CMT\n{many}1,310,.,.,0,.\n")
    assert isinstance(rug_run, PredictionRun)
    assert "ID 1 infusion starts (rug, 150)" in _labels(render_predictions(rug_run).axes[0])

    short_run = _pk_run("ID,TIME,AMT,RATE,EVID,CMT\n1,0,50,0,1,1\n1,12,.,.,0,.\n")
    assert isinstance(short_run, PredictionRun)
    assert render_predictions(short_run).axes[-1].get_xlabel() == "time (h)"


def test_a_catheter_revision_is_marked_and_says_whether_the_pump_was_told() -> None:
    result = ScenarioRun(load_scenario("catheter-revision-untold")).run()
    timeline = report_figure(result, timeseries(result)).axes[-1]
    assert {"catheter revision", "refused"} <= set(_labels(timeline))
    notes = [text.get_text() for text in timeline.texts]
    assert "new catheter 100 cm, pump not told" in notes


def test_a_fourfold_overdose_is_drawn_to_scale_and_a_pocket_fill_is_clipped() -> None:
    entry_error = ScenarioRun(load_scenario("concentration-entry-error")).run()
    dose = report_figure(entry_error, timeseries(entry_error)).axes[1]
    assert dose.get_ylim()[1] > 1200.0
    assert not [text for text in dose.texts if "↑" in text.get_text()]
    pocket = ScenarioRun(load_scenario("pocket-fill-partial")).run()
    dose = report_figure(pocket, timeseries(pocket)).axes[1]
    assert dose.get_ylim()[1] == pytest.approx(5 * 600.0)
    (clipped,) = [text.get_text() for text in dose.texts if "↑" in text.get_text()]
    assert clipped.startswith("20,")


def test_a_refill_that_differs_from_its_entry_says_how_on_the_report() -> None:
    for name, note in [
        ("concentration-entry-error", "filled 2000 mcg/mL, entered 500"),
        ("pocket-fill-partial", "50 % into the pocket"),
    ]:
        result = ScenarioRun(load_scenario(name)).run()
        timeline = report_figure(result, timeseries(result)).axes[-1]
        assert [text.get_text() for text in timeline.texts] == [note]


def test_a_run_without_concentrations_still_gets_a_report(stall: RunResult) -> None:
    """A drug without a PK model leaves the concentration columns NaN: the report is drawn
    with its reference levels and no curves (the axis limits were NaN and matplotlib refused)."""
    columns = dict(timeseries(stall))
    for key in ("csf_lumbar_ng_per_ml", "csf_cisternal_ng_per_ml", "effect_ng_per_ml"):
        columns[key] = np.full_like(columns[key], np.nan)
    columns["plasma_ng_per_ml"] = np.full_like(columns["plasma_ng_per_ml"], np.nan)
    figure = report_figure(stall, columns)
    csf = figure.axes[2]
    assert csf.get_ylim()[1] == pytest.approx(1667.0 * 1.12)
    FigureCanvasAgg(figure).draw()  # type: ignore[no-untyped-call]


def test_a_drug_without_pk_draws_no_other_drugs_reference_levels() -> None:
    result = ScenarioRun(parse_scenario(tomllib.loads(MORPHINE_TOML))).run()
    assert result.pk_model is None
    figure = report_figure(result, timeseries(result))
    for ax in figure.axes[2:4]:
        assert not _labels(ax)  # no therapeutic band, no toxicity line, no curve
        assert [text.get_text() for text in ax.texts] == ["no PK model for morphine"]
    FigureCanvasAgg(figure).draw()  # type: ignore[no-untyped-call]
    exposure = summary(result)["exposure"]
    assert exposure["no_pk_model_for"] == "morphine"
    assert exposure["reference_levels_of"] is None
    assert exposure["csf_therapeutic_range_ng_per_ml"] is None
    assert exposure["plasma_cns_depression_threshold_ng_per_ml"] is None


def test_a_drug_without_pk_filled_mid_run_is_named_from_when_it_reaches_the_patient() -> None:
    data = tomllib.loads(MORPHINE_TOML)
    data["actions"].insert(0, {"at": 0, "type": "refill", "volume_ml": 20, "drug": "baclofen",
                               "concentration_mcg_per_ml": 500})
    data["actions"][1]["at"] = "1d"
    result = ScenarioRun(parse_scenario(data)).run()
    refs = run_references(result)
    # Baclofen's levels: the concentrations are baclofen's (morphine's mass is not in them).
    assert refs.levels is not None
    assert refs.levels.pk_model == "baclofen"
    # Named from when morphine left the tip, after the catheter's baclofen: not at the fill.
    assert refs.no_pk_drug == "morphine"
    assert 24.0 < refs.no_pk_from_h < 72.0
    start = result.scenario.scenario.start
    note = refs.no_pk_note(start)
    when = start + dt.timedelta(hours=refs.no_pk_from_h)
    assert note == f"no PK model for morphine from {when:%Y-%m-%d %H:%M}"
    figure = report_figure(result, timeseries(result))
    for ax in figure.axes[2:4]:
        assert [text.get_text() for text in ax.texts] == [f"baclofen only: {note}"]
    assert "true: to CSF, morphine (no PK model)" in _labels(figure.axes[1])
    FigureCanvasAgg(figure).draw()  # type: ignore[no-untyped-call]


def test_a_dose_event_on_a_bin_edge_counts_in_the_bin_it_opens() -> None:
    # Cumulative tissue mcg: 0 until a 40,000 mcg jump at exactly 240 h (a day edge).
    t = np.array([0.0, 240.0, 240.0, 384.0])
    cumulative = np.array([0.0, 0.0, 40_000.0, 40_000.0])
    edges = np.arange(0.0, 16 * 24.0 + 1, 24.0)
    per_day = binned_daily_mcg(edges, t, cumulative)
    assert per_day[10] == pytest.approx(40_000.0)  # the day the refill opens
    assert per_day[9] == 0.0
    # A jump at the run's very end still counts, in the last bin.
    end = np.array([0.0, 384.0, 384.0])
    assert binned_daily_mcg(edges, end, np.array([0.0, 0.0, 5.0]))[-1] == pytest.approx(5.0)


def test_the_last_partial_dose_bin_is_a_mean_over_its_own_length() -> None:
    end_h = 365 * 7 * 24.0  # clinic-ready's 365 weeks: 22 days per bin, the last one short
    edges = dose_bin_edges_h(end_h)
    assert edges[-1] == end_h
    assert np.diff(edges)[-1] < 22 * 24.0
    steady = np.array([0.0, end_h])
    per_day = binned_daily_mcg(edges, steady, np.array([0.0, 200.0 * end_h / 24.0]))
    assert per_day == pytest.approx(np.full(len(edges) - 1, 200.0))


def test_the_pocket_fill_tissue_bar_sits_on_the_refill_day() -> None:
    result = ScenarioRun(load_scenario("pocket-fill")).run()
    dose = report_figure(result, timeseries(result)).axes[1]
    assert "true: to tissue" in _labels(dose)
    # The fill at 10 d 0 h: the clipped bar is on day 10 (x from the stairs' edges).
    (clipped,) = [text for text in dose.texts if "↑" in text.get_text()]
    refill_day = mdates_num(result.scenario.scenario.start, 10 * 24.0 + 12.0)
    assert clipped.xy[0] == pytest.approx(refill_day)  # type: ignore[attr-defined]


def test_an_aspiration_discrepancy_is_a_summary_warning_and_a_report_marker() -> None:
    # under-infusion refilled on day 50: 5.4 mL aspirated where the pump expected 0.5 mL.
    path = SHIPPED_SCENARIO_DIR / "under-infusion.toml"
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    data["actions"].append(
        {"at": "50d", "type": "refill", "volume_ml": 14, "concentration_mcg_per_ml": 500}
    )
    data["scenario"]["duration"] = "52d"
    result = ScenarioRun(parse_scenario(data)).run()
    out = summary(result)
    (found,) = out["refill_discrepancies"]
    assert found["t_h"] == 50 * 24.0
    assert found["aspirated_ml"] - found["expected_ml"] > found["tolerance_ml"]
    (warning,) = out["warnings"]
    assert "aspiration discrepancy" in warning
    timeline = report_figure(result, timeseries(result)).axes[-1]
    assert "aspiration discrepancy" in _labels(timeline)
    assert any(t.get_text().startswith("aspirated 5.") for t in timeline.texts)


def test_the_summary_keeps_the_dates_the_pump_projected() -> None:
    result = ScenarioRun(load_scenario("refill-date-boluses")).run()
    projections = summary(result)["projections"]
    check = next(p for p in projections if p["after"] == "interrogate")
    # The one-week check (9 Feb) shows 9 and 12 Mar; the program on day 0 (no bolus use yet)
    # showed the basal-only 15 and 18 Mar.
    assert check["utc"].startswith("2026-02-09")
    assert check["low_reservoir_utc"].startswith("2026-03-09")
    assert check["empty_utc"].startswith("2026-03-12")
    program = next(p for p in projections if p["after"] == "program")
    assert program["low_reservoir_utc"].startswith("2026-03-15")
    assert program["empty_utc"].startswith("2026-03-18")


def test_a_huge_csf_peak_cuts_the_axis_and_is_written_on_it() -> None:
    result = ScenarioRun(load_scenario("mri-no-safety-valve")).run()
    csf = report_figure(result, timeseries(result)).axes[2]
    assert csf.get_ylim()[1] == pytest.approx(CSF_AXIS_CAP_OF_RANGE_TOP * 1667.0)
    (note,) = [t.get_text() for t in csf.texts]
    assert note.startswith("lumbar peak 10")
    assert "axis cut" in note


def test_events_at_one_instant_on_one_row_are_stacked_not_hidden() -> None:
    result = ScenarioRun(load_scenario("power-reset")).run()
    timeline = report_figure(result, timeseries(result)).axes[-1]
    program_row = [*(a.name.lower() for a in AlarmId), *EVENT_ROWS].index("program")
    ys = [
        float(np.asarray(line.get_ydata())[0])
        for line in timeline.get_lines()
        if line.get_label() in ("set clock", "program", "refused", "_")
        and abs(float(np.asarray(line.get_ydata())[0]) - program_row) < 0.5
    ]
    assert len(ys) >= 3
    assert len(set(ys)) > 1  # set_clock and the programs beside it are not on one spot
