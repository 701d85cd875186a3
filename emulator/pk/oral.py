"""Oral baclofen comparator, for the label's "plasma concentrations 100 times less than those
occurring with oral administration".

The same patient takes baclofen by mouth: the gut is modelled through the depot route with the
oral absorption rate and bioavailability (sources in parameters.py); systemic disposition is
the patient's own. The comparison itself (which oral and intrathecal doses are "equally
effective") is defined in docs/pk.md and tests/test_pk_label.py.
"""

from __future__ import annotations

import numpy as np

from itpump.emulator.pk.model import PKModel
from itpump.emulator.pk.parameters import (
    BACLOFEN_ORAL_ABSORPTION_RATE_PER_H,
    BACLOFEN_ORAL_BIOAVAILABILITY,
    PKParameters,
)

MCG_PER_MG = 1000.0


def oral_comparator(parameters: PKParameters) -> PKModel:
    """The patient of `parameters` dosed by mouth (doses go to the depot route, CMT 2)."""
    return PKModel(
        parameters.replace(
            tissue_absorption_rate_per_h=BACLOFEN_ORAL_ABSORPTION_RATE_PER_H,
            tissue_bioavailability=BACLOFEN_ORAL_BIOAVAILABILITY,
        )
    )


def oral_average_plasma_ng_per_ml(
    parameters: PKParameters,
    daily_dose_mg: float,
    doses_per_day: int,
    *,
    days: int = 7,
    resolution_h: float = 0.01,
) -> float:
    """Time-averaged plasma concentration over the last day of `days` of regular oral dosing
    (equal doses every 24/doses_per_day h), i.e. at steady state."""
    if daily_dose_mg <= 0.0 or doses_per_day < 1 or days < 2:
        raise ValueError("need a positive daily dose, >= 1 dose a day and >= 2 days")
    model = oral_comparator(parameters)
    interval_h = 24.0 / doses_per_day
    dose_times = np.arange(days * doses_per_day) * interval_h
    dose_mcg = daily_dose_mg * MCG_PER_MG / doses_per_day
    times = np.arange((days - 1) * 24.0, days * 24.0 + resolution_h / 2, resolution_h)
    plasma = model.predict(
        [0.0],
        [0.0],
        None,
        dose_times,
        None,
        np.full(dose_times.shape, dose_mcg),
        times,
    ).plasma_ng_per_ml
    return float(np.trapezoid(plasma, times) / (times[-1] - times[0]))
