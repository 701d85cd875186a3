"""Virtual populations: log-normal inter-individual variability, vectorised across patients.

All patients share one dosing schedule; each has its own parameters (and weight). The solver
works window by window over the output times with every patient in one numpy batch, so there is
no Python loop over patients, and each window's outputs are reduced to percentiles at once:
memory is bounded by `max_elements`, not by patients x output times.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from itpump.emulator.pk.parameters import (
    BACLOFEN_VARIABILITY_CV_PERCENT,
    FloatArray,
    PKParameters,
    sample_parameter_arrays,
)
from itpump.emulator.pk.schedule import InputSchedule
from itpump.emulator.pk.solver import DEFAULT_MAX_ELEMENTS, ExactSolver
from itpump.emulator.pk.system import OUTPUT_NAMES, build_system

logger = logging.getLogger(__name__)

DEFAULT_PERCENTILES: tuple[float, ...] = (5.0, 50.0, 95.0)
# Above this many patients x times x outputs, per-patient arrays are refused (they would not
# fit in memory); percentiles are always available.
MAX_INDIVIDUAL_VALUES = 50_000_000
DEFAULT_BLAS_THREADS = 1
"""BLAS threads during a population batch (see `simulate_population`)."""


@dataclass(frozen=True)
class PopulationResult:
    """Percentiles across patients at each output time (and optionally every patient).

    `percentiles[name]` has shape (len(percentile_levels), len(times_h)); `individual[name]`,
    when requested, has shape (n_patients, len(times_h)).
    """

    times_h: FloatArray
    percentile_levels: tuple[float, ...]
    percentiles: dict[str, FloatArray]
    parameters: dict[str, FloatArray]
    individual: dict[str, FloatArray] | None
    n_patients: int
    uses_matrix_exponential: NDArray[np.bool_]


def percentiles_over_patients(window: FloatArray, levels: Sequence[float]) -> FloatArray:
    """Percentiles (numpy's default 'linear' definition) of window (T, P, o) over P,
    returned as (o, len(levels), T).

    A full sort of the contiguous patient axis is used because numpy's SIMD sort beats
    `np.percentile`'s multi-point partition by about 2x at population sizes.
    """
    ordered = np.sort(window.transpose(2, 0, 1), axis=-1)  # (o, T, P)
    n = ordered.shape[-1]
    result = np.empty((ordered.shape[0], len(levels), ordered.shape[1]))
    for i, level in enumerate(levels):
        position = level / 100.0 * (n - 1)
        lower = int(np.floor(position))
        upper = min(lower + 1, n - 1)
        fraction = position - lower
        result[:, i, :] = ordered[..., lower] + fraction * (
            ordered[..., upper] - ordered[..., lower]
        )
    return result


def simulate_population(
    parameters: PKParameters,
    schedule: InputSchedule,
    times_h: FloatArray,
    *,
    n_patients: int,
    seed: int | np.random.SeedSequence | None = 0,
    variability_cv_percent: Mapping[str, float] = BACLOFEN_VARIABILITY_CV_PERCENT,
    weights_kg: FloatArray | float | None = None,
    percentile_levels: Sequence[float] = DEFAULT_PERCENTILES,
    keep_individual: bool = False,
    pre_dose: NDArray[np.bool_] | None = None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    blas_threads: int | None = DEFAULT_BLAS_THREADS,
) -> PopulationResult:
    """Simulate `n_patients` virtual patients on `schedule`; deterministic given `seed`.

    Individual parameters: theta_i = theta * exp(eta_i) with the CV% of
    `variability_cv_percent` (see `sample_parameter_arrays`). `weights_kg` (scalar or one per
    patient) defaults to `parameters.weight_kg`. `pre_dose` flags outputs that must not see a
    bolus given at their exact time. Results do not depend on `max_elements`.

    `blas_threads` caps the BLAS thread pool during the batch (None: leave it as it is). The
    batch is many small (4x4, 5x5) products, for which BLAS threads only add hand-offs; on the
    2-core machine of BENCHMARKS.md, shared with other work, one thread was ~2x faster than
    the default and far steadier.
    """
    times = np.asarray(times_h, dtype=np.float64)
    levels = tuple(float(level) for level in percentile_levels)
    if any(not 0.0 <= level <= 100.0 for level in levels):
        raise ValueError("percentile levels must be within 0-100")
    if keep_individual and n_patients * times.size * len(OUTPUT_NAMES) > MAX_INDIVIDUAL_VALUES:
        raise ValueError("too many values to keep every patient; use percentiles only")
    rng = np.random.default_rng(seed)
    arrays = sample_parameter_arrays(
        parameters, n_patients, rng, variability_cv_percent, weights_kg
    )
    system = build_system(arrays, parameters.has_csf_peripheral)
    solver = ExactSolver(system)
    n_expm = int(np.count_nonzero(solver.uses_matrix_exponential))
    if n_expm:
        logger.info("%d patients need the matrix exponential path", n_expm)

    summary = np.empty((len(OUTPUT_NAMES), len(levels), times.size))
    individual = np.empty((len(OUTPUT_NAMES), n_patients, times.size)) if keep_individual else None
    x0 = np.zeros((n_patients, system.layout.size))
    limit = (
        contextlib.nullcontext()
        if blas_threads is None
        else threadpool_limits(limits=blas_threads, user_api="blas")
    )
    with limit:
        for positions, window in solver.iter_outputs(
            schedule, times, x0, pre_dose=pre_dose, max_elements=max_elements
        ):
            summary[:, :, positions] = percentiles_over_patients(window, levels)
            if individual is not None:
                individual[:, :, positions] = window.transpose(2, 1, 0)
    return PopulationResult(
        times_h=times.copy(),
        percentile_levels=levels,
        percentiles={name: summary[i] for i, name in enumerate(OUTPUT_NAMES)},
        parameters=arrays,
        individual=(
            None
            if individual is None
            else {name: individual[i] for i, name in enumerate(OUTPUT_NAMES)}
        ),
        n_patients=n_patients,
        uses_matrix_exponential=solver.uses_matrix_exponential,
    )
