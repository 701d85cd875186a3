"""Predictions for parsed dose records: the logic behind `itpump pk`.

Without a population, each subject is predicted with the typical parameters (at its weight).
With a population of N, each subject's regimen is given to N virtual patients drawn with the
default inter-individual variability, and the 5th/50th/95th percentiles are reported.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from itpump.emulator.pk.model import PKModel
from itpump.emulator.pk.parameters import BACLOFEN_VARIABILITY_CV_PERCENT, FloatArray, PKParameters
from itpump.emulator.pk.population import DEFAULT_PERCENTILES, simulate_population
from itpump.emulator.pk.records import Observation, SubjectRecords, format_csv
from itpump.emulator.pk.system import OUTPUT_NAMES

logger = logging.getLogger(__name__)

# Output column of each model output (ng/mL).
OUTPUT_COLUMNS: Mapping[str, str] = {
    "csf_lumbar_ng_per_ml": "CSF_LUMBAR",
    "csf_cisternal_ng_per_ml": "CSF_CISTERNAL",
    "plasma_ng_per_ml": "PLASMA",
    "effect_ng_per_ml": "CE",
}


def percentile_column(output_column: str, level: float) -> str:
    """E.g. CSF_LUMBAR_P05 for the 5th percentile of CSF_LUMBAR."""
    return (
        f"{output_column}_P{level:02.0f}" if level == int(level) else f"{output_column}_P{level:g}"
    )


@dataclass(frozen=True)
class SubjectPrediction:
    """One subject's predicted values (per value column) at its observation records, and
    optionally on a dense grid for plotting."""

    subject_id: str
    weight_kg: float
    observations: tuple[Observation, ...]
    values: dict[str, FloatArray]
    curve_times_h: FloatArray
    curves: dict[str, FloatArray]
    # Dose records (for plot markers): (time h, route index of pk.system: ROUTE_CSF or
    # ROUTE_TISSUE) of boluses and infusion starts.
    boluses: tuple[tuple[float, int], ...] = ()
    infusion_starts: tuple[tuple[float, int], ...] = ()


@dataclass(frozen=True)
class PredictionRun:
    """All subjects' predictions plus how they were made."""

    value_columns: tuple[str, ...]
    subjects: tuple[SubjectPrediction, ...]
    population: int | None
    percentile_levels: tuple[float, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        """The output file's columns."""
        return ("ID", "TIME", *self.value_columns)

    def csv_text(self) -> str:
        """The prediction file: one row per observation record, in input order."""
        rows = []
        for subject in self.subjects:
            for i, observation in enumerate(subject.observations):
                rows.append(
                    [
                        subject.subject_id,
                        observation.time_text,
                        *(f"{subject.values[column][i]:.6g}" for column in self.value_columns),
                    ]
                )
        return format_csv(self.columns, rows)


def _value_columns(population: int | None, levels: Sequence[float]) -> tuple[str, ...]:
    if population is None:
        return tuple(OUTPUT_COLUMNS[name] for name in OUTPUT_NAMES)
    return tuple(
        percentile_column(OUTPUT_COLUMNS[name], level) for name in OUTPUT_NAMES for level in levels
    )


def predict_subjects(
    subjects: Sequence[SubjectRecords],
    *,
    parameters: PKParameters | None = None,
    population: int | None = None,
    seed: int = 0,
    variability_cv_percent: Mapping[str, float] = BACLOFEN_VARIABILITY_CV_PERCENT,
    curve_points: int = 0,
) -> PredictionRun:
    """Predict every subject; `curve_points` > 0 adds a dense grid per subject for plots.

    Each subject's virtual population uses its own child of `seed` (numpy SeedSequence
    spawning), so adding or removing a subject does not change the others' results.
    """
    base = parameters if parameters is not None else PKParameters.baclofen()
    if population is not None and population < 1:
        raise ValueError("population must be >= 1")
    levels = DEFAULT_PERCENTILES
    columns = _value_columns(population, levels)
    children = np.random.SeedSequence(seed).spawn(len(subjects))
    results = []
    for subject, child_seed in zip(subjects, children, strict=True):
        weight = subject.weight_kg if subject.weight_kg is not None else base.weight_kg
        subject_parameters = base.replace(weight_kg=weight)
        schedule = subject.schedule()
        obs_times = np.array([observation.time_h for observation in subject.observations])
        pre_dose = np.array([observation.pre_dose for observation in subject.observations])
        curve_times = (
            np.linspace(0.0, subject.last_time_h, curve_points) if curve_points > 0 else np.zeros(0)
        )
        values: dict[str, FloatArray] = {}
        curves: dict[str, FloatArray] = {}
        if population is None:
            model = PKModel(subject_parameters)
            at_obs = model.predict_schedule(schedule, obs_times, pre_dose=pre_dose).as_dict()
            on_grid = model.predict_schedule(schedule, curve_times).as_dict()
            for name in OUTPUT_NAMES:
                values[OUTPUT_COLUMNS[name]] = at_obs[name]
                curves[OUTPUT_COLUMNS[name]] = on_grid[name]
        else:
            # Observations and the plotting grid share one population (same patients).
            all_times = np.concatenate([obs_times, curve_times])
            flags = np.concatenate([pre_dose, np.zeros(curve_times.shape, dtype=bool)])
            result = simulate_population(
                subject_parameters,
                schedule,
                all_times,
                n_patients=population,
                seed=child_seed,
                variability_cv_percent=variability_cv_percent,
                pre_dose=flags,
            )
            n_obs = obs_times.shape[0]
            for name in OUTPUT_NAMES:
                for i, level in enumerate(result.percentile_levels):
                    column = percentile_column(OUTPUT_COLUMNS[name], level)
                    values[column] = result.percentiles[name][i, :n_obs]
                    curves[column] = result.percentiles[name][i, n_obs:]
        logger.info(
            "subject %s: %d observations, %.1f kg", subject.subject_id, obs_times.size, weight
        )
        results.append(
            SubjectPrediction(
                subject_id=subject.subject_id,
                weight_kg=weight,
                observations=tuple(subject.observations),
                values=values,
                curve_times_h=curve_times,
                curves=curves,
                boluses=tuple((t, route) for t, _amount, route in subject.boluses),
                infusion_starts=tuple(
                    (start, route) for start, _end, _rate, route in subject.infusions
                ),
            )
        )
    return PredictionRun(columns, tuple(results), population, levels)
