"""Virtual populations: seeded log-normal variability, vectorised and chunked evaluation."""

from __future__ import annotations

import dataclasses
import tracemalloc

import numpy as np
import pytest

from itpump.emulator.pk import InputSchedule, PKModel, PKParameters
from itpump.emulator.pk.parameters import cv_percent_to_omega, sample_parameter_arrays
from itpump.emulator.pk.population import simulate_population
from itpump.emulator.pk.solver import ExactSolver
from itpump.emulator.pk.system import OUTPUT_NAMES, build_system
from tests.tolerances import MODAL_ROUNDING_ULPS, assert_close_to_peak

BASE = PKParameters.baclofen()
# Four days of a flex regimen with a daily bolus, outputs every 30 minutes.
SCHEDULE = InputSchedule.from_segments(
    np.arange(8) * 12.0,
    np.tile([12.5, 16.0], 4),
    None,
    np.arange(4) * 24.0 + 8.0,
    np.full(4, 25.0),
)
TIMES = np.arange(0.0, 96.0, 0.5)


def test_a_seed_gives_the_same_population_and_another_seed_a_different_one() -> None:
    first = simulate_population(BASE, SCHEDULE, TIMES, n_patients=300, seed=42)
    again = simulate_population(BASE, SCHEDULE, TIMES, n_patients=300, seed=42)
    other = simulate_population(BASE, SCHEDULE, TIMES, n_patients=300, seed=43)
    for name in OUTPUT_NAMES:
        np.testing.assert_array_equal(first.percentiles[name], again.percentiles[name])
        assert not np.array_equal(first.percentiles[name], other.percentiles[name])


def test_chunk_size_does_not_change_any_result() -> None:
    big = simulate_population(BASE, SCHEDULE, TIMES, n_patients=500, seed=1, keep_individual=True)
    small = simulate_population(
        BASE, SCHEDULE, TIMES, n_patients=500, seed=1, keep_individual=True, max_elements=5_000
    )
    assert big.individual is not None
    assert small.individual is not None
    # Other chunks mean other batch shapes, so other BLAS kernels: each patient's curve may
    # differ by its modal rounding, relative to its own peak (plasma decays to ~1e-3 of it).
    for name in OUTPUT_NAMES:
        assert_close_to_peak(
            small.individual[name], big.individual[name], peak_ulps=MODAL_ROUNDING_ULPS, time_axis=1
        )
        assert_close_to_peak(
            small.percentiles[name],
            big.percentiles[name],
            peak_ulps=MODAL_ROUNDING_ULPS,
            time_axis=1,
        )


def test_percentiles_are_numpys_percentiles_of_the_individual_curves() -> None:
    result = simulate_population(
        BASE, SCHEDULE, TIMES, n_patients=401, seed=2, keep_individual=True
    )
    assert result.individual is not None
    for name in OUTPUT_NAMES:
        expected = np.percentile(result.individual[name], [5, 50, 95], axis=0)
        # Both interpolate between the same two sorted neighbours, but numpy's lerp starts from
        # the nearer one and ours from the lower: a couple of ulps of the larger neighbour.
        assert_close_to_peak(result.percentiles[name], expected, peak_ulps=4.0, time_axis=1)


def test_each_virtual_patient_is_the_single_patient_model_with_its_parameters() -> None:
    result = simulate_population(
        BASE, SCHEDULE, TIMES, n_patients=50, seed=3, keep_individual=True, weights_kg=55.0
    )
    assert result.individual is not None
    for patient in (0, 17, 49):
        values = {name: float(array[patient]) for name, array in result.parameters.items()}
        model = PKModel(PKParameters(**values))
        assert model.parameters.weight_kg == 55.0
        single = model.predict_schedule(SCHEDULE, TIMES).as_dict()
        # A batch of 50 and a batch of 1 may run other BLAS kernels: modal rounding apart.
        for name in OUTPUT_NAMES:
            assert_close_to_peak(
                result.individual[name][patient], single[name], peak_ulps=MODAL_ROUNDING_ULPS
            )


def test_sampled_parameters_have_the_requested_log_normal_spread() -> None:
    rng = np.random.default_rng(9)
    arrays = sample_parameter_arrays(BASE, 40_000, rng, {"csf_clearance_ml_per_h": 40.0})
    clearance = arrays["csf_clearance_ml_per_h"]
    log_values = np.log(clearance / BASE.csf_clearance_ml_per_h)
    assert np.std(log_values) == pytest.approx(cv_percent_to_omega(40.0), rel=0.02)
    assert np.median(clearance) == pytest.approx(BASE.csf_clearance_ml_per_h, rel=0.02)
    cv_percent = 100.0 * np.std(clearance) / np.mean(clearance)
    assert cv_percent == pytest.approx(40.0, rel=0.05)
    # Parameters without variability are the typical value for everyone.
    assert np.all(arrays["csf_volume_ml"] == BASE.csf_volume_ml)


def test_cv_percent_conversion_follows_the_log_normal_convention() -> None:
    omega = cv_percent_to_omega(33.4)
    assert 100.0 * np.sqrt(np.exp(omega**2) - 1.0) == pytest.approx(33.4)
    with pytest.raises(ValueError, match="CV%"):
        cv_percent_to_omega(-1.0)
    with pytest.raises(ValueError, match="no variability allowed"):
        sample_parameter_arrays(BASE, 3, np.random.default_rng(0), {"weight_kg": 10.0})


def test_a_batch_mixing_coinciding_and_ordinary_patients_gives_each_its_own_answer() -> None:
    ordinary = BASE.replace(csf_plasma_penetration_ratio=0.0)
    k_csf = ordinary.csf_clearance_ml_per_h / ordinary.csf_volume_ml
    coinciding = ordinary.replace(effect_rate_constant_per_h=k_csf)
    arrays = {
        field.name: np.array([getattr(coinciding, field.name), getattr(ordinary, field.name)])
        for field in dataclasses.fields(PKParameters)
    }
    solver = ExactSolver(build_system(arrays, has_csf_peripheral=False))
    np.testing.assert_array_equal(solver.uses_matrix_exponential, [True, False])
    y = np.empty((TIMES.size, 2, 4))
    for positions, window in solver.iter_outputs(
        SCHEDULE, TIMES, np.zeros((2, 4)), max_elements=3_000
    ):
        y[positions] = window
    for patient, parameters in enumerate((coinciding, ordinary)):
        single = PKModel(parameters).predict_schedule(SCHEDULE, TIMES).as_dict()
        for column, name in enumerate(OUTPUT_NAMES):
            assert_close_to_peak(y[:, patient, column], single[name], peak_ulps=MODAL_ROUNDING_ULPS)


def test_memory_stays_bounded_by_the_chunk_size_not_by_patients_times_outputs() -> None:
    times = np.arange(0.0, 96.0, 1.0 / 12.0)  # 1,152 output times
    n_patients = 2_000
    everything_mb = n_patients * times.size * len(OUTPUT_NAMES) * 8 / 1e6  # 74 MB
    tracemalloc.start()
    try:
        simulate_population(
            BASE, SCHEDULE, times, n_patients=n_patients, seed=4, max_elements=100_000
        )
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_bytes / 1e6 < everything_mb / 4


def test_keeping_every_patient_is_refused_when_it_cannot_fit() -> None:
    with pytest.raises(ValueError, match="too many values"):
        simulate_population(
            BASE, SCHEDULE, np.zeros(20_000), n_patients=1_000, keep_individual=True
        )


def test_the_batch_runs_on_the_asked_blas_threads_and_gives_the_same_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from threadpoolctl import threadpool_info

    import itpump.emulator.pk.population as population

    def blas_threads() -> list[int]:
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    before = blas_threads()
    seen: list[list[int]] = []
    original = population.percentiles_over_patients

    def spy(window: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
        seen.append(blas_threads())
        return original(window, levels)

    with monkeypatch.context() as patch:
        patch.setattr(population, "percentiles_over_patients", spy)
        capped = simulate_population(BASE, SCHEDULE, TIMES, n_patients=200, seed=5)
    free = simulate_population(BASE, SCHEDULE, TIMES, n_patients=200, seed=5, blas_threads=None)
    assert seen
    assert all(threads == [1] * len(before) for threads in seen)
    assert blas_threads() == before  # restored after the batch
    for name in OUTPUT_NAMES:
        assert_close_to_peak(
            capped.percentiles[name], free.percentiles[name], peak_ulps=MODAL_ROUNDING_ULPS
        )
