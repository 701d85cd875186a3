"""Effect timings as the label words them, defined as thresholds on the effect-site
concentration Ce (justification: docs/pk.md, "Effect timings").

One threshold, half-maximal, defines "effect" everywhere:
- bolus onset: Ce first reaches half of its peak; peak: the time of the Ce maximum;
  duration: how long after the peak Ce stays at or above half of its peak.
- infusion first effect: Ce reaches half of its steady state; maximum: Ce reaches 95 % of its
  steady state (changes of < 5 % are below what a spasticity score resolves).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from itpump.emulator.pk.model import PKModel
from itpump.emulator.pk.parameters import FloatArray

EFFECT_THRESHOLD_FRACTION = 0.5
EFFECT_MAXIMUM_FRACTION = 0.95


@dataclass(frozen=True)
class BolusEffectTiming:
    """Times (h after the bolus) of the bolus effect milestones."""

    onset_h: float
    peak_h: float
    offset_h: float
    peak_effect_ng_per_ml: float

    @property
    def duration_after_peak_h(self) -> float:
        """How long the effect lasts past its peak (the label's 'effects may last 4-8 h')."""
        return self.offset_h - self.peak_h

    @property
    def time_above_threshold_h(self) -> float:
        """Onset to offset."""
        return self.offset_h - self.onset_h


@dataclass(frozen=True)
class InfusionEffectTiming:
    """Times (h after the start of a constant infusion in a drug-free patient)."""

    first_effect_h: float
    maximum_h: float
    steady_state_effect_ng_per_ml: float


def _crossing(times_h: FloatArray, values: FloatArray, level: float, rising: bool) -> float:
    """First time `values` crosses `level` (upwards or downwards), linearly interpolated."""
    above = values >= level
    hits = (
        np.flatnonzero(above[1:] & ~above[:-1])
        if rising
        else np.flatnonzero(~above[1:] & above[:-1])
    )
    if hits.size == 0:
        raise ValueError("the level is not crossed within the horizon")
    i = int(hits[0])
    t0, t1, v0, v1 = times_h[i], times_h[i + 1], values[i], values[i + 1]
    return float(t0 + (level - v0) * (t1 - t0) / (v1 - v0))


def bolus_effect_timing(
    model: PKModel,
    dose_mcg: float = 50.0,
    *,
    threshold_fraction: float = EFFECT_THRESHOLD_FRACTION,
    horizon_h: float = 72.0,
    resolution_h: float = 0.001,
) -> BolusEffectTiming:
    """Onset, peak and end of effect of an intrathecal bolus given to a drug-free patient."""
    times = np.arange(0.0, horizon_h + resolution_h / 2, resolution_h)
    ce = model.predict([0.0], [0.0], None, [0.0], [dose_mcg], None, times).effect_ng_per_ml
    peak = int(np.argmax(ce))
    # Refine the peak with the parabola through the three samples around it.
    if 0 < peak < times.size - 1:
        y0, y1, y2 = ce[peak - 1], ce[peak], ce[peak + 1]
        shift = 0.5 * (y0 - y2) / (y0 - 2.0 * y1 + y2)
        peak_h = float(times[peak] + shift * resolution_h)
    else:
        peak_h = float(times[peak])
    level = threshold_fraction * float(ce[peak])
    onset = _crossing(times[: peak + 1], ce[: peak + 1], level, rising=True)
    offset = _crossing(times[peak:], ce[peak:], level, rising=False)
    return BolusEffectTiming(onset, peak_h, offset, float(ce[peak]))


def infusion_effect_timing(
    model: PKModel,
    csf_rate_mcg_per_h: float,
    *,
    threshold_fraction: float = EFFECT_THRESHOLD_FRACTION,
    maximum_fraction: float = EFFECT_MAXIMUM_FRACTION,
    horizon_h: float = 240.0,
    resolution_h: float = 0.001,
) -> InfusionEffectTiming:
    """First effect and maximum of a constant intrathecal infusion started at 0 h."""
    times = np.arange(0.0, horizon_h + resolution_h / 2, resolution_h)
    ce = model.predict([0.0], [csf_rate_mcg_per_h], None, None, None, None, times)
    steady = model.concentrations(model.steady_state(csf_rate_mcg_per_h)).effect_ng_per_ml
    effect = ce.effect_ng_per_ml
    return InfusionEffectTiming(
        first_effect_h=_crossing(times, effect, threshold_fraction * steady, rising=True),
        maximum_h=_crossing(times, effect, maximum_fraction * steady, rising=True),
        steady_state_effect_ng_per_ml=steady,
    )
