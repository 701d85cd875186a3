"""report.png as a clinician reads it, checked on the figure's objects (no pixels)."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import ConciseDateFormatter

from itpump.emulator.outputs import timeseries
from itpump.emulator.report import (
    dose_bin_days,
    fault_periods,
    programmed_dose,
    report_figure,
)
from itpump.emulator.runner import RunResult, ScenarioRun
from itpump.emulator.scenario import ProgramAction, load_scenario


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
    assert any("therapeutic range 130-1240" in label for label in _labels(csf))
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
    assert csf.get_ylim()[1] == pytest.approx(1240.0 * 1.12)
    FigureCanvasAgg(figure).draw()  # type: ignore[no-untyped-call]
