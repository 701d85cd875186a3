"""Flow accuracy by the IEC 60601-2-24 method: start-up curve, trumpet curve, mean error.

The standard weighs the delivered volume every sample interval (0.5 min) for two hours, plots
the flow of each interval from the start (start-up curve) and, over the second hour (the
analysis period), the largest and smallest mean percentage flow error of every observation
window of 2, 5, 11, 19 and 31 min that fits in it (trumpet curve), plus the overall error A.

Here the "balance" is the stroke-level delivery of the pump's own mechanism model: a
`PumpHardware` with the chosen profile runs at the chosen rate and `strokes_in_window`
regenerates each stroke (time and volume). The computation itself (`cumulative_at`,
`window_errors_pct`, `trumpet_pct`, `mean_error_pct`) is pure functions over arrays, so it
can be checked by hand and reused on measured data. docs/accuracy.md has the formulas and why
the standard's windows say little at implanted-pump rates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from itpump.emulator.device_profile import DeviceProfile
from itpump.emulator.hardware.pump_hardware import PumpHardware

FloatArray = NDArray[np.float64]

MIN_PER_DAY = 1440.0
# The standard's test: samples every 0.5 min, trumpet over the second hour of a 2 h run.
IEC_SAMPLE_MIN = 0.5
IEC_WINDOWS_MIN: tuple[float, ...] = (2.0, 5.0, 11.0, 19.0, 31.0)
IEC_ANALYSIS_START_H = 1.0
IEC_ANALYSIS_H = 1.0
# Bounds memory and time (one float per sample): ~19 years at 0.5 min, far beyond a reservoir.
MAX_SAMPLES = 20_000_000
# A multiple of the sample interval "to rounding": 0.1 ppm of the interval.
_GRID_TOLERANCE = 1e-7


class AccuracyInputError(ValueError):
    """A setting outside its allowed range. `field` names the setting (as in
    `AccuracySettings`, or "profile"), the message says what is allowed and what was given."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class AccuracySettings:
    """What to run and how to analyse it. Defaults are the standard's (see docs/accuracy.md)."""

    rate_ml_per_day: float
    sample_min: float = IEC_SAMPLE_MIN
    windows_min: tuple[float, ...] = IEC_WINDOWS_MIN
    analysis_start_h: float = IEC_ANALYSIS_START_H
    analysis_h: float = IEC_ANALYSIS_H
    seed: int = 0

    @property
    def end_h(self) -> float:
        """End of the run: the end of the analysis period."""
        return self.analysis_start_h + self.analysis_h


@dataclass(frozen=True, slots=True)
class AccuracyResult:
    """Start-up curve, trumpet curve and overall error of one run."""

    profile: DeviceProfile
    settings: AccuracySettings
    # Start-up curve: one entry per sample interval from the start to the end of the analysis.
    sample_end_min: FloatArray  # end of each sample interval, minutes from the start
    cumulative_ml: FloatArray  # delivered from the start to sample_end_min
    flow_ml_per_day: FloatArray  # mean flow within each sample interval (the standard's Q_i)
    # Trumpet curve over the analysis period, one entry per observation window.
    ep_max_pct: FloatArray
    ep_min_pct: FloatArray
    mean_error_pct: float  # the standard's A over the analysis period
    analysis_delivered_ml: float
    analysis_strokes: int
    stroke_volume_mean_ml: float  # mean volume of a stroke (pulse) in the analysis period

    @property
    def expected_strokes_per_window(self) -> FloatArray:
        """Strokes a window of each length holds on average: below a few, its error is
        dominated by stroke discreteness rather than by the mechanism's volume error."""
        per_min = self.analysis_strokes / (self.settings.analysis_h * 60.0)
        return np.asarray(self.settings.windows_min, dtype=np.float64) * per_min


# ---------------------------------------------------------------------- pure computation
def cumulative_at(
    stroke_times_min: ArrayLike, stroke_volumes_ml: ArrayLike, sample_times_min: ArrayLike
) -> FloatArray:
    """Volume delivered up to and including each sample time, by discrete strokes.

    A stroke that completes exactly at a sample time counts in the interval ending there, as a
    drop that has reached the balance when it is read.
    """
    times = np.asarray(stroke_times_min, dtype=np.float64)
    volumes = np.asarray(stroke_volumes_ml, dtype=np.float64)
    if times.shape != volumes.shape:
        raise ValueError("stroke times and volumes differ in length")
    if np.any(np.diff(times) < 0):
        raise ValueError("stroke times must be non-decreasing")
    cum = np.concatenate(([0.0], np.cumsum(volumes)))
    return cum[np.searchsorted(times, np.asarray(sample_times_min), side="right")]


def window_errors_pct(
    cumulative_ml: ArrayLike, samples_per_window: int, sample_min: float, rate_ml_per_min: float
) -> FloatArray:
    """Mean percentage flow error of every window of `samples_per_window` intervals.

    The standard's Ep of the window starting at sample j is the mean over its P/dt intervals of
    100 (Q_i - r) / r, which is 100 (V_j - r P) / (r P) with V_j the volume delivered in the
    window; windows step by one sample, so a period of N intervals holds N - n + 1 of them.
    """
    cum = np.asarray(cumulative_ml, dtype=np.float64)
    n = samples_per_window
    if n < 1 or n > len(cum) - 1:
        raise ValueError(f"a window of {n} intervals does not fit in {len(cum) - 1}")
    expected_ml = rate_ml_per_min * n * sample_min
    return 100.0 * ((cum[n:] - cum[:-n]) - expected_ml) / expected_ml


def trumpet_pct(
    cumulative_ml: ArrayLike,
    sample_min: float,
    windows_min: Sequence[float],
    rate_ml_per_min: float,
) -> tuple[FloatArray, FloatArray]:
    """Ep(max) and Ep(min) for each window length over one analysis period.

    `cumulative_ml` is the delivered volume at the analysis period's samples (N + 1 values for N
    intervals); each window must be a whole number of sample intervals.
    """
    ep_max = np.empty(len(windows_min))
    ep_min = np.empty(len(windows_min))
    for i, window_min in enumerate(windows_min):
        errors = window_errors_pct(
            cumulative_ml, _intervals(window_min, sample_min), sample_min, rate_ml_per_min
        )
        ep_max[i] = errors.max()
        ep_min[i] = errors.min()
    return ep_max, ep_min


def mean_error_pct(cumulative_ml: ArrayLike, sample_min: float, rate_ml_per_min: float) -> float:
    """The standard's A: 100 (Q - r) / r with Q the mean flow over the whole analysis period."""
    cum = np.asarray(cumulative_ml, dtype=np.float64)
    expected_ml = rate_ml_per_min * (len(cum) - 1) * sample_min
    return float(100.0 * ((cum[-1] - cum[0]) - expected_ml) / expected_ml)


def _intervals(duration_min: float, sample_min: float) -> int:
    """`duration_min` as a whole number of sample intervals (ValueError if it is not one)."""
    n = round(duration_min / sample_min)
    if abs(n * sample_min - duration_min) > _GRID_TOLERANCE * sample_min:
        raise ValueError(f"{duration_min:g} min is not a multiple of {sample_min:g} min")
    return n


# ---------------------------------------------------------------------- validation
def _range_text(profile: DeviceProfile) -> str:
    low = profile.min_rate_ml_per_day
    high = profile.max_rate_ml_per_day
    # A profile minimum of 0 means "any positive rate": a rate of 0 delivers nothing to analyse.
    return f"> 0 and <= {high:g}" if low <= 0 else f"{low:g}..{high:g}"


def validate(profile: DeviceProfile, settings: AccuracySettings) -> None:
    """Raise `AccuracyInputError` naming the first setting that cannot be analysed."""
    s = settings
    rate = s.rate_ml_per_day
    allowed = f"{_range_text(profile)} mL/day for {profile.model}"
    if not (
        math.isfinite(rate)
        and rate > 0
        and profile.min_rate_ml_per_day <= rate <= profile.max_rate_ml_per_day
    ):
        raise AccuracyInputError("rate_ml_per_day", f"must be {allowed} (got {rate:g})")
    if not (math.isfinite(s.sample_min) and s.sample_min > 0):
        raise AccuracyInputError("sample_min", f"must be > 0 min (got {s.sample_min:g})")
    if not (math.isfinite(s.analysis_start_h) and s.analysis_start_h >= 0):
        raise AccuracyInputError("analysis_start_h", f"must be >= 0 h (got {s.analysis_start_h:g})")
    if not (math.isfinite(s.analysis_h) and s.analysis_h > 0):
        raise AccuracyInputError("analysis_h", f"must be > 0 h (got {s.analysis_h:g})")
    for field, hours in (("analysis_start_h", s.analysis_start_h), ("analysis_h", s.analysis_h)):
        try:
            _intervals(hours * 60.0, s.sample_min)
        except ValueError:
            raise AccuracyInputError(
                field,
                f"must be a whole number of {s.sample_min:g}-min sample intervals "
                f"(got {hours:g} h)",
            ) from None
    if (s.analysis_start_h + s.analysis_h) * 60.0 / s.sample_min > MAX_SAMPLES:
        raise AccuracyInputError(
            "sample_min",
            f"must be >= {s.end_h * 60.0 / MAX_SAMPLES:.3g} min for a run to {s.end_h:g} h "
            f"(at most {MAX_SAMPLES} samples; got {s.sample_min:g} min)",
        )
    analysis_min = s.analysis_h * 60.0
    if not s.windows_min:
        raise AccuracyInputError("windows_min", "needs at least one window length")
    for window in s.windows_min:
        if not (math.isfinite(window) and 0 < window <= analysis_min + 1e-9):
            raise AccuracyInputError(
                "windows_min",
                f"each window must be > 0 and <= the {analysis_min:g}-min analysis period "
                f"(got {window:g} min)",
            )
        try:
            _intervals(window, s.sample_min)
        except ValueError:
            raise AccuracyInputError(
                "windows_min",
                f"each window must be a multiple of the {s.sample_min:g}-min sample interval "
                f"(got {window:g} min)",
            ) from None
    if len(set(s.windows_min)) != len(s.windows_min):
        raise AccuracyInputError("windows_min", "lists a window length twice")
    if s.seed < 0:
        raise AccuracyInputError("seed", f"must be >= 0 (got {s.seed})")
    # The mechanism keeps stroking into an empty reservoir (nothing moves): never analyse that.
    worst_factor = 1.0 + max(profile.flow_error_systematic_pct, 0.0) / 100.0 + 0.1
    needed_ml = rate / 24.0 * s.end_h * worst_factor
    if needed_ml > profile.reservoir_capacity_ml:
        longest_h = profile.reservoir_capacity_ml / (rate / 24.0 * worst_factor)
        raise AccuracyInputError(
            "analysis_h",
            f"the run to {s.end_h:g} h would empty the {profile.reservoir_capacity_ml:g} mL "
            f"reservoir of {profile.model} at {rate:g} mL/day; analysis start + length must "
            f"be <= {math.floor(longest_h * 10) / 10:g} h at this rate",
        )


# ---------------------------------------------------------------------- the run
def run_strokes(
    profile: DeviceProfile, rate_ml_per_day: float, end_h: float, seed: int
) -> tuple[FloatArray, FloatArray]:
    """Times (h from start) and volumes (mL) of every stroke of a full pump at a constant rate.

    The drive is commanded exactly as the firmware commands it (rate / stroke volume), so the
    strokes are those an `EmulatedPump` with the same profile and seed would make.
    """
    hardware = PumpHardware(profile, catheter_volume_ml=0.0, seed=seed)
    hardware.refill(0.0, profile.reservoir_capacity_ml, conc_mcg_per_ml=1.0)
    hardware.set_stroke_rate(0.0, rate_ml_per_day / 24.0 / hardware.strokes.stroke_volume_ml)
    # One stroke period past the end, so a stroke completing exactly at the end is included.
    horizon_h = end_h + 24.0 * hardware.strokes.stroke_volume_ml / rate_ml_per_day
    hardware.advance_to(horizon_h)
    if hardware.reservoir_ml <= 0.0:
        raise AccuracyInputError(
            "analysis_h", f"the reservoir of {profile.model} ran dry before {end_h:g} h"
        )
    return hardware.strokes_in_window(0.0, horizon_h)


def analyse(profile: DeviceProfile, settings: AccuracySettings) -> AccuracyResult:
    """Validate, run the pump and compute the start-up curve, trumpet curve and A."""
    validate(profile, settings)
    s = settings
    times_h, volumes_ml = run_strokes(profile, s.rate_ml_per_day, s.end_h, s.seed)
    first = _intervals(s.analysis_start_h * 60.0, s.sample_min)
    count = _intervals(s.analysis_h * 60.0, s.sample_min)
    # Sample k is at k * dt exactly (not a running sum), so long runs keep an exact grid.
    sample_min = np.arange(first + count + 1, dtype=np.float64) * s.sample_min
    cum = cumulative_at(times_h * 60.0, volumes_ml, sample_min)
    rate_ml_per_min = s.rate_ml_per_day / MIN_PER_DAY
    analysis = cum[first:]
    ep_max, ep_min = trumpet_pct(analysis, s.sample_min, s.windows_min, rate_ml_per_min)
    in_analysis = (times_h * 60.0 > sample_min[first]) & (times_h * 60.0 <= sample_min[-1])
    strokes = int(np.count_nonzero(in_analysis))
    return AccuracyResult(
        profile=profile,
        settings=s,
        sample_end_min=sample_min[1:],
        cumulative_ml=cum[1:],
        flow_ml_per_day=np.diff(cum) / s.sample_min * MIN_PER_DAY,
        ep_max_pct=ep_max,
        ep_min_pct=ep_min,
        mean_error_pct=mean_error_pct(analysis, s.sample_min, rate_ml_per_min),
        analysis_delivered_ml=float(analysis[-1] - analysis[0]),
        analysis_strokes=strokes,
        stroke_volume_mean_ml=float(volumes_ml[in_analysis].mean()) if strokes else math.nan,
    )
