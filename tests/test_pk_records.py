"""NONMEM-style records: strict reading with line/column errors, writing, and round trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from itpump.emulator.pk import PKModel
from itpump.emulator.pk.records import (
    DoseFileError,
    parse_dose_records,
    read_dose_file,
    write_dose_records,
)
from tests.tolerances import MODAL_ROUNDING_ULPS, assert_close_to_peak

MODEL = PKModel.baclofen_default()
HEADER = "ID,TIME,AMT,RATE,EVID,CMT\n"


def _predict_subject(text: str) -> dict[str, np.ndarray]:
    (subject,) = parse_dose_records(text)
    times = np.array([obs.time_h for obs in subject.observations])
    flags = np.array([obs.pre_dose for obs in subject.observations])
    return MODEL.predict_schedule(subject.schedule(), times, pre_dose=flags).as_dict()


def test_written_records_read_back_to_the_same_predictions(tmp_path: Path) -> None:
    # A run's history: segments with a gap, a tissue leak, boluses in both routes.
    seg_start = np.array([0.0, 10.0, 30.0, 31.5])
    seg_end = np.array([10.0, 25.0, 31.5, 60.0])
    csf_rate = np.array([12.5, 14.0, 0.0, 13.0])
    tissue_rate = np.array([0.0, 0.0, 40.0, 0.0])
    bolus_t = np.array([5.0, 30.0])
    bolus_csf = np.array([50.0, 0.0])
    bolus_tissue = np.array([0.0, 8000.0])
    obs = np.array([0.0, 5.0, 12.3, 25.0, 29.0, 30.0, 31.0, 45.0, 72.0])
    path = tmp_path / "run.csv"
    count = write_dose_records(
        path,
        seg_start,
        seg_end,
        csf_rate,
        tissue_rate,
        bolus_t_h=bolus_t,
        bolus_csf_mcg=bolus_csf,
        bolus_tissue_mcg=bolus_tissue,
        obs_times_h=obs,
        subject_id="pt-7",
        weight_kg=62.5,
    )
    # 3 CSF infusions (the zero-rate segment is skipped), 1 tissue infusion, 2 boluses, 9 obs.
    assert count == 15
    (subject,) = read_dose_file(path)
    assert subject.subject_id == "pt-7"
    assert subject.weight_kg == 62.5
    assert not any(observation.pre_dose for observation in subject.observations)
    from_file = MODEL.predict_schedule(subject.schedule(), obs).as_dict()
    # The same history given directly: gaps are zero-rate segments.
    starts = [0.0, 10.0, 25.0, 30.0, 31.5, 60.0]
    direct = MODEL.predict(
        starts,
        [12.5, 14.0, 0.0, 0.0, 13.0, 0.0],
        [0.0, 0.0, 0.0, 40.0, 0.0, 0.0],
        bolus_t,
        bolus_csf,
        bolus_tissue,
        obs,
    ).as_dict()
    # The file gives the same schedule, so only the solver's own rounding may differ.
    for name, values in direct.items():
        assert_close_to_peak(from_file[name], values, peak_ulps=MODAL_ROUNDING_ULPS)


def test_written_records_are_sorted_with_doses_before_observations(tmp_path: Path) -> None:
    path = tmp_path / "run.csv"
    write_dose_records(
        path, [2.0], [4.0], [10.0], bolus_t_h=[1.0], bolus_csf_mcg=[50.0], obs_times_h=[2.0, 0.0]
    )
    lines = path.read_text().splitlines()
    assert lines[0] == "ID,TIME,AMT,RATE,EVID,CMT,MDV,DV"
    assert lines[1:] == [
        "1,0.0,0,0,0,1,0,.",
        "1,1.0,50.0,0,1,1,1,.",
        "1,2.0,20.0,10.0,1,1,1,.",
        "1,2.0,0,0,0,1,0,.",
    ]


def test_writing_refuses_bad_histories_and_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "run.csv"
    with pytest.raises(ValueError, match="seg_end_h"):
        write_dose_records(path, [2.0], [1.0], [10.0])
    with pytest.raises(ValueError, match="rates"):
        write_dose_records(path, [0.0], [1.0], [-1.0])
    with pytest.raises(FileNotFoundError):
        write_dose_records(tmp_path / "missing" / "run.csv", [0.0], [1.0], [1.0])
    assert list(tmp_path.iterdir()) == []


def test_observation_before_a_dose_at_the_same_time_is_pre_dose() -> None:
    text = HEADER + "1,0,.,.,0,.\n1,0,50,0,1,1\n1,0,.,.,0,.\n1,2,.,.,0,.\n"
    (subject,) = parse_dose_records(text)
    assert [obs.pre_dose for obs in subject.observations] == [True, False, False]
    values = _predict_subject(text)["csf_lumbar_ng_per_ml"]
    assert values[0] == 0.0
    assert values[1] == pytest.approx(50_000.0 / MODEL.parameters.csf_volume_ml)


def test_overlapping_infusions_add_up() -> None:
    both = _predict_subject(HEADER + "1,0,100,10,1,1\n1,5,60,20,1,1\n1,8,.,.,0,.\n1,20,.,.,0,.\n")
    first = _predict_subject(HEADER + "1,0,100,10,1,1\n1,8,.,.,0,.\n1,20,.,.,0,.\n")
    second = _predict_subject(HEADER + "1,5,60,20,1,1\n1,8,.,.,0,.\n1,20,.,.,0,.\n")
    # Superposition holds exactly; each of the three runs rounds on its own (modal path).
    assert_close_to_peak(
        both["csf_lumbar_ng_per_ml"],
        first["csf_lumbar_ng_per_ml"] + second["csf_lumbar_ng_per_ml"],
        peak_ulps=3 * MODAL_ROUNDING_ULPS,
    )


def test_comments_blank_lines_extra_columns_case_and_bom_are_accepted() -> None:
    text = (
        "\ufeff# a comment\n\nid,Time,AMT,rate,EVID,CMT,DV,MDV,wt\n"
        "# another\n1,0,50,0,1,1,.,1,80\n1,1,.,.,0,.,.,0,80\n"
    )
    (subject,) = parse_dose_records(text)
    assert subject.weight_kg == 80.0
    assert subject.boluses == [(0.0, 50.0, 0)]
    assert [obs.time_text for obs in subject.observations] == ["1"]


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment"),
    [
        (HEADER + "1,0,abc,0,1,1\n1,1,.,.,0,.\n", 2, "AMT", "not a number"),
        ("ID,TIME,AMT,EVID,CMT\n1,0,50,1,1\n", 1, "RATE", "required column missing"),
        ("ID,TIME,AMT,RATE,EVID,CMT,AMT\n", 1, "AMT", "appears twice"),
        (HEADER + "1,0,50,0,1\n", 2, None, "5 fields"),
        (HEADER + "1,0,50,0,3,1\n", 2, "EVID", "one of 0, 1"),
        (HEADER + "1,0,50,0,1,3\n", 2, "CMT", "one of 1, 2"),
        (HEADER + "1,0,50,-1,1,1\n", 2, "RATE", "not supported"),
        (HEADER + "1,0,0,0,1,1\n", 2, "AMT", "AMT > 0"),
        (HEADER + "1,5,.,.,0,.\n1,4,.,.,0,.\n", 3, "TIME", "earlier"),
        (HEADER + "1,-1,.,.,0,.\n", 2, "TIME", ">= 0"),
        (HEADER + "1,nan,.,.,0,.\n", 2, "TIME", "finite"),
        (HEADER + "1,0,.,.,0,.\n2,0,.,.,0,.\n1,1,.,.,0,.\n", 4, "ID", "not contiguous"),
        (HEADER + "1,0,5,.,0,.\n", 2, "AMT", "observation record"),
        ("ID,TIME,AMT,RATE,EVID,CMT,WT\n1,0,.,.,0,.,70\n1,1,.,.,0,.,71\n", 3, "WT", "constant"),
        ("ID,TIME,AMT,RATE,EVID,CMT,WT\n1,0,.,.,0,.,-3\n", 2, "WT", "> 0"),
        (HEADER + ",0,.,.,0,.\n", 2, "ID", "missing"),
        (HEADER + "1,0,50,0,1,1\n", 1, "EVID", "no observation records"),
        ("# only a comment\n", 1, None, "no header"),
    ],
)
def test_malformed_files_name_the_line_and_column(
    text: str, line: int, column: str | None, fragment: str
) -> None:
    with pytest.raises(DoseFileError) as caught:
        parse_dose_records(text, "doses.csv")
    error = caught.value
    assert (error.line, error.column) == (line, column)
    assert fragment in error.message
    assert str(error).startswith(f"doses.csv: line {line}")


def test_line_numbers_count_comments_and_blank_lines() -> None:
    text = "# header follows\n" + HEADER + "\n# dose\n1,0,5x,0,1,1\n"
    with pytest.raises(DoseFileError) as caught:
        parse_dose_records(text)
    assert caught.value.line == 5


def test_the_shipped_examples_are_valid() -> None:
    examples = Path(__file__).resolve().parent.parent / "emulator" / "pk" / "examples"
    files = sorted(examples.glob("*.csv"))
    assert len(files) >= 2
    for path in files:
        subjects = read_dose_file(path)
        assert all(subject.observations for subject in subjects)
