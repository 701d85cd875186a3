"""The exact solver and the single-patient API: semantics, both evaluation paths, edge cases."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from itpump.emulator.pk import InputSchedule, PKModel, PKState, Prediction
from itpump.emulator.pk.solver import ExactSolver
from tests.tolerances import (
    EPS,
    EXPM_ROUNDING_ULPS,
    MODAL_ROUNDING_ULPS,
    assert_close_to_peak,
)

ADULT = PKModel.baclofen_default()


@dataclass(frozen=True)
class Regimen:
    seg_start_h: np.ndarray
    seg_csf_rate_mcg_per_h: np.ndarray
    seg_tissue_rate_mcg_per_h: np.ndarray
    bolus_t_h: np.ndarray
    bolus_csf_mcg: np.ndarray
    bolus_tissue_mcg: np.ndarray

    def predict(self, model: PKModel, times_h: np.ndarray) -> Prediction:
        return model.predict(
            self.seg_start_h,
            self.seg_csf_rate_mcg_per_h,
            self.seg_tissue_rate_mcg_per_h,
            self.bolus_t_h,
            self.bolus_csf_mcg,
            self.bolus_tissue_mcg,
            times_h,
        )

    def schedule(self) -> InputSchedule:
        return InputSchedule.from_segments(
            self.seg_start_h,
            self.seg_csf_rate_mcg_per_h,
            self.seg_tissue_rate_mcg_per_h,
            self.bolus_t_h,
            self.bolus_csf_mcg,
            self.bolus_tissue_mcg,
        )


def _regimen(seed: int, n_segments: int, horizon_h: float) -> Regimen:
    rng = np.random.default_rng(seed)
    starts = np.sort(rng.uniform(0.0, horizon_h, n_segments))
    starts[0] = 0.0
    return Regimen(
        seg_start_h=starts,
        seg_csf_rate_mcg_per_h=rng.uniform(0.0, 40.0, n_segments),
        seg_tissue_rate_mcg_per_h=np.where(
            rng.random(n_segments) < 0.2, rng.uniform(0, 80, n_segments), 0.0
        ),
        bolus_t_h=rng.uniform(0.0, horizon_h, 6),
        bolus_csf_mcg=rng.uniform(0.0, 100.0, 6),
        bolus_tissue_mcg=np.where(rng.random(6) < 0.3, rng.uniform(0, 5000, 6), 0.0),
    )


def _step_through(model: PKModel, regimen: Regimen, times: np.ndarray) -> np.ndarray:
    """Reference: walk the events in time order with advance/add_bolus (one exact step each)."""
    starts = regimen.seg_start_h
    events = sorted(
        [(t, 0, i) for i, t in enumerate(starts)]
        + [(t, 1, i) for i, t in enumerate(regimen.bolus_t_h)]
        + [(t, 2, i) for i, t in enumerate(times)]
    )
    state = model.initial_state()
    csf_rate = tissue_rate = 0.0
    out = np.empty((times.size, 4))
    for t, kind, i in events:
        state = model.advance(state, t - state.time_h, csf_rate, tissue_rate)
        if kind == 0:
            csf_rate = regimen.seg_csf_rate_mcg_per_h[i]
            tissue_rate = regimen.seg_tissue_rate_mcg_per_h[i]
        elif kind == 1:
            state = model.add_bolus(state, regimen.bolus_csf_mcg[i], regimen.bolus_tissue_mcg[i])
        else:
            c = model.concentrations(state)
            out[i] = (
                c.csf_lumbar_ng_per_ml,
                c.csf_cisternal_ng_per_ml,
                c.plasma_ng_per_ml,
                c.effect_ng_per_ml,
            )
    return out


def _as_matrix(prediction: Prediction) -> np.ndarray:
    return np.column_stack(
        [
            getattr(prediction, name)
            for name in (
                "csf_lumbar_ng_per_ml",
                "csf_cisternal_ng_per_ml",
                "plasma_ng_per_ml",
                "effect_ng_per_ml",
            )
        ]
    )


@pytest.mark.parametrize("csf_peripheral", [False, True])
def test_predict_matches_event_by_event_advance(csf_peripheral: bool) -> None:
    model = PKModel.baclofen_default(csf_peripheral=csf_peripheral)
    regimen = _regimen(seed=3, n_segments=12, horizon_h=96.0)
    times = np.sort(np.random.default_rng(4).uniform(0.0, 120.0, 200))
    predicted = _as_matrix(regimen.predict(model, times))
    stepped = _step_through(model, regimen, times)
    # The reference takes one exact step per event and carries each step's rounding into the
    # next: a few ulps of the state per step (the default model's cond(V) is ~13). 16 ulps of
    # the peak per step bounds the sum without depending on how a CPU rounds any one of them.
    n_steps = regimen.seg_start_h.size + regimen.bolus_t_h.size + times.size
    assert_close_to_peak(predicted, stepped, peak_ulps=16.0 * n_steps)


def test_modal_and_matrix_exponential_paths_agree() -> None:
    regimen = _regimen(seed=8, n_segments=20, horizon_h=200.0)
    schedule = regimen.schedule()
    times = np.linspace(0.0, 240.0, 500)
    for model in (ADULT, PKModel.baclofen_default(csf_peripheral=True, catheter_tip_cm=12.0)):
        x0 = np.zeros((1, model.layout.size))
        results = []
        for cond_limit in (math.inf, 0.0):  # all modal, then all expm
            solver = ExactSolver(model.system, cond_limit=cond_limit)
            assert solver.uses_matrix_exponential[0] == (cond_limit == 0.0)
            y = np.empty((times.size, 4))
            for positions, window in solver.iter_outputs(schedule, times, x0, max_elements=200):
                y[positions] = window[:, 0, :]
            results.append(y)
        # Each path is exact up to its own rounding: the solver's bound for the modal one, the
        # squarings' for expm (whose steps here reach ||A d|| ~ 100).
        assert_close_to_peak(
            results[0], results[1], peak_ulps=MODAL_ROUNDING_ULPS + EXPM_ROUNDING_ULPS
        )


def test_coinciding_csf_and_effect_rate_constants_match_the_closed_form() -> None:
    # ke0 equal to the CSF elimination rate makes A defective (a Jordan block): the modal path
    # cannot represent it, the matrix exponential path must. Ce = C0 k t exp(-k t) exactly.
    base = PKModel.baclofen_default(csf_plasma_penetration_ratio=0.0)
    k_per_h = base.parameters.csf_clearance_ml_per_h / base.parameters.csf_volume_ml
    model = base.with_parameters(effect_rate_constant_per_h=k_per_h)
    assert model.uses_matrix_exponential
    dose_mcg = 100.0
    c0 = dose_mcg * 1000.0 / model.parameters.csf_volume_ml
    times = np.array([0.25, 1.0, 4.0, 10.0, 30.0])
    ce = model.predict([0.0], [0.0], None, [0.0], [dose_mcg], None, times).effect_ng_per_ml
    expected = c0 * k_per_h * times * np.exp(-k_per_h * times)
    # Relative to the channel's peak, not to each value: at 30 h Ce has decayed to 4e-5 of its
    # peak but still carries expm's rounding of the peak (5e-12 of the value there). The
    # largest sampled value (4 h, 80 % of the true peak at 1/k = 2.2 h) stands for the peak.
    assert_close_to_peak(ce, expected, peak_ulps=EXPM_ROUNDING_ULPS)


def test_coinciding_absorption_and_systemic_elimination_match_the_closed_form() -> None:
    base = PKModel.baclofen_default(csf_plasma_penetration_ratio=0.0)
    k_per_h = (
        base.parameters.scaled_systemic_clearance_ml_per_h / base.parameters.scaled_plasma_volume_ml
    )
    model = base.with_parameters(tissue_absorption_rate_per_h=k_per_h)
    assert model.uses_matrix_exponential
    dose_mcg = 10_000.0
    times = np.array([0.5, 2.0, 8.0, 24.0])
    plasma = model.predict([0.0], [0.0], None, [0.0], None, [dose_mcg], times).plasma_ng_per_ml
    expected = (
        dose_mcg
        * 1000.0
        / model.parameters.scaled_plasma_volume_ml
        * k_per_h
        * times
        * np.exp(-k_per_h * times)
    )
    # As above: the largest sampled value (8 h; the peak is at 1/k = 5.5 h) stands for the peak.
    assert_close_to_peak(plasma, expected, peak_ulps=EXPM_ROUNDING_ULPS)


@pytest.mark.parametrize("relative_gap", [1e-3, 1e-6, 1e-9, 1e-12])
def test_nearly_coinciding_rate_constants_stay_continuous(relative_gap: float) -> None:
    base = PKModel.baclofen_default(csf_plasma_penetration_ratio=0.0)
    k_per_h = base.parameters.csf_clearance_ml_per_h / base.parameters.csf_volume_ml
    exact = base.with_parameters(effect_rate_constant_per_h=k_per_h)
    near = base.with_parameters(effect_rate_constant_per_h=k_per_h * (1.0 + relative_gap))
    times = np.linspace(0.0, 24.0, 97)
    ce_exact = exact.predict([0.0], [5.0], None, [0.0], [50.0], None, times).effect_ng_per_ml
    ce_near = near.predict([0.0], [5.0], None, [0.0], [50.0], None, times).effect_ng_per_ml
    # The true difference is of the order of the gap itself (about 0.6 gap of the peak);
    # rounding must not add to it beyond what either path (modal or expm) rounds anyway.
    assert_close_to_peak(
        ce_near,
        ce_exact,
        rtol=10 * relative_gap,
        peak_ulps=MODAL_ROUNDING_ULPS + EXPM_ROUNDING_ULPS,
    )


def test_output_at_a_bolus_time_includes_the_bolus_unless_pre_dose() -> None:
    c0 = 50.0 * 1000.0 / ADULT.parameters.csf_volume_ml
    result = ADULT.predict(
        [0.0], [0.0], None, [2.0], [50.0], None, [2.0, 2.0], pre_dose=[False, True]
    )
    assert result.csf_lumbar_ng_per_ml[0] == pytest.approx(c0)
    assert result.csf_lumbar_ng_per_ml[1] == 0.0
    # A pre-dose flag at a time without a dose changes nothing.
    a = ADULT.predict([0.0], [3.0], None, None, None, None, [1.5], pre_dose=[True])
    b = ADULT.predict([0.0], [3.0], None, None, None, None, [1.5])
    assert a.csf_lumbar_ng_per_ml[0] == b.csf_lumbar_ng_per_ml[0] > 0.0


def test_pre_dose_at_the_start_time_is_the_initial_state() -> None:
    start = PKState(time_h=5.0, csf_mcg=10.0)
    result = ADULT.predict(
        [5.0],
        [1.0],
        None,
        [5.0],
        [40.0],
        None,
        [5.0, 5.0],
        initial_state=start,
        pre_dose=[True, False],
    )
    expected = 1000.0 / ADULT.parameters.csf_volume_ml
    assert result.csf_lumbar_ng_per_ml[0] == pytest.approx(10.0 * expected)
    assert result.csf_lumbar_ng_per_ml[1] == pytest.approx(50.0 * expected)


def test_window_size_does_not_change_results() -> None:
    regimen = _regimen(seed=21, n_segments=40, horizon_h=300.0)
    schedule = regimen.schedule()
    times = np.sort(np.random.default_rng(5).uniform(0.0, 320.0, 700))
    big = ADULT.predict_schedule(schedule, times)
    for max_elements in (1, 50, 4000):
        small = ADULT.predict_schedule(schedule, times, max_elements=max_elements)
        # Other windows mean other array shapes, so other BLAS kernels and summation orders.
        assert_close_to_peak(_as_matrix(small), _as_matrix(big), peak_ulps=MODAL_ROUNDING_ULPS)


def test_unsorted_and_repeated_output_times_come_back_in_the_order_asked() -> None:
    times = np.array([10.0, 1.0, 5.0, 1.0, 0.0])
    result = ADULT.predict([0.0], [4.0], None, None, None, None, times)
    sorted_result = ADULT.predict([0.0], [4.0], None, None, None, None, np.sort(times))
    order = np.argsort(times, kind="stable")
    np.testing.assert_array_equal(
        result.csf_lumbar_ng_per_ml[order], sorted_result.csf_lumbar_ng_per_ml
    )
    np.testing.assert_array_equal(result.times_h, times)


def test_segments_hold_until_the_next_start_and_equal_starts_keep_the_last() -> None:
    schedule = InputSchedule.from_segments(
        [1.0, 3.0, 3.0], [2.0, 9.0, 5.0], None, [3.0, 3.0, 0.5], [1.0, 2.0, 4.0]
    )
    np.testing.assert_array_equal(schedule.breakpoints_h, [0.0, 0.5, 1.0, 3.0])
    np.testing.assert_array_equal(schedule.rates_mcg_per_h[:, 0], [0.0, 0.0, 2.0, 5.0])
    np.testing.assert_array_equal(schedule.boluses_mcg[:, 0], [0.0, 4.0, 0.0, 3.0])


def test_overlapping_infusions_add_up_and_leave_exact_zero_when_they_end() -> None:
    schedule = InputSchedule.from_infusions(
        [(0.0, 0.3, 0.1, 0), (0.1, 0.3, 0.2, 0), (0.3, 1.0, 0.7, 1)]
    )
    np.testing.assert_array_equal(schedule.breakpoints_h, [0.0, 0.1, 0.3, 1.0])
    np.testing.assert_array_equal(
        schedule.rates_mcg_per_h[:, 0], [0.1, math.fsum([0.1, 0.2]), 0.0, 0.0]
    )
    np.testing.assert_array_equal(schedule.rates_mcg_per_h[:, 1], [0.0, 0.0, 0.7, 0.0])


def test_steady_state_is_what_a_long_infusion_reaches() -> None:
    long_run = ADULT.advance(ADULT.initial_state(), 1000.0, 12.5, 3.0)
    steady = ADULT.steady_state(12.5, 3.0, time_h=1000.0)
    for field in ("csf_mcg", "depot_mcg", "plasma_mcg", "effect_ng_per_ml"):
        assert getattr(long_run, field) == pytest.approx(getattr(steady, field), rel=1e-9)
    # Starting at steady state, an infusion at the same rate changes nothing.
    later = ADULT.advance(steady, 50.0, 12.5, 3.0)
    assert later.csf_mcg == pytest.approx(steady.csf_mcg, rel=MODAL_ROUNDING_ULPS * EPS)


def test_concentrations_follow_volumes_and_the_spinal_gradient() -> None:
    state = PKState(csf_mcg=20.0, plasma_mcg=100.0, effect_ng_per_ml=7.0)
    c = ADULT.concentrations(state)
    tip_ng_per_ml = 20.0 * 1000.0 / ADULT.parameters.csf_volume_ml
    assert c.csf_lumbar_ng_per_ml == pytest.approx(tip_ng_per_ml)
    assert c.csf_cisternal_ng_per_ml == pytest.approx(tip_ng_per_ml / 4.0)
    assert c.plasma_ng_per_ml == pytest.approx(
        100.0 * 1000.0 / ADULT.parameters.scaled_plasma_volume_ml
    )
    assert c.effect_ng_per_ml == 7.0
    # A thoracic tip 10 cm up: lumbar falls off below it, cisternal rises.
    thoracic = PKModel.baclofen_default(catheter_tip_cm=10.0).concentrations(state)
    assert thoracic.csf_lumbar_ng_per_ml == pytest.approx(tip_ng_per_ml * math.exp(-10.0 / 22.0))
    assert thoracic.csf_cisternal_ng_per_ml == pytest.approx(
        tip_ng_per_ml * math.exp(-(22.0 * math.log(4.0) - 10.0) / 22.0)
    )


def test_tissue_depot_without_absorption_keeps_its_drug() -> None:
    # ka = 0 gives A a zero eigenvalue: the integral of exp(lambda t) must fall back to t.
    model = PKModel.baclofen_default(tissue_absorption_rate_per_h=0.0)
    state = model.advance(model.initial_state(), 3.0, 0.0, tissue_rate_mcg_per_h=2.0)
    assert state.depot_mcg == pytest.approx(6.0, rel=MODAL_ROUNDING_ULPS * EPS)
    assert state.plasma_mcg == 0.0
    with pytest.raises(ValueError, match="steady state"):
        model.steady_state(0.0, 1.0)


def test_a_pocket_fill_shows_as_a_plasma_spike() -> None:
    steady = ADULT.steady_state(12.5)
    baseline = ADULT.concentrations(steady).plasma_ng_per_ml
    filled = ADULT.add_bolus(steady, tissue_mcg=20.0 * 500.0)
    peak = max(
        ADULT.concentrations(ADULT.advance(filled, t, 12.5)).plasma_ng_per_ml
        for t in np.arange(0.5, 6.0, 0.25)
    )
    assert peak > 50.0 * baseline
    assert ADULT.concentrations(
        ADULT.advance(filled, 72.0, 12.5)
    ).plasma_ng_per_ml == pytest.approx(baseline, rel=0.01)


def test_invalid_inputs_are_refused() -> None:
    state = ADULT.initial_state()
    with pytest.raises(ValueError, match="duration_h"):
        ADULT.advance(state, -1.0, 1.0)
    with pytest.raises(ValueError, match="rates"):
        ADULT.advance(state, 1.0, -1.0)
    with pytest.raises(ValueError, match="bolus"):
        ADULT.add_bolus(state, csf_mcg=math.nan)
    with pytest.raises(ValueError, match="before the start"):
        ADULT.predict([0.0], [1.0], None, None, None, None, [-1.0])
    with pytest.raises(ValueError, match="non-decreasing"):
        ADULT.predict([2.0, 1.0], [1.0, 1.0], None, None, None, None, [3.0])
    with pytest.raises(ValueError, match="peripheral"):
        ADULT.concentrations(PKState(csf_peripheral_mcg=1.0))
    with pytest.raises(ValueError, match="csf_volume_ml"):
        PKModel.baclofen_default(csf_volume_ml=0.0)
