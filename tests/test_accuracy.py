"""Flow accuracy (emulator/accuracy.py): the standard's formulas by hand, and the two mechanisms."""

from __future__ import annotations

import numpy as np
import pytest

from itpump.emulator.accuracy import (
    IEC_WINDOWS_MIN,
    AccuracyInputError,
    AccuracySettings,
    analyse,
    cumulative_at,
    mean_error_pct,
    trumpet_pct,
    window_errors_pct,
)
from itpump.emulator.device_profile import load_profile


def _one_stroke_per_interval(
    intervals: int, sample_min: float, volume_ml: float
) -> tuple[np.ndarray, np.ndarray]:
    """Strokes in the middle of each interval, all of the same volume."""
    times = (np.arange(intervals) + 0.5) * sample_min
    return times, np.full(intervals, volume_ml)


def test_hand_computed_example() -> None:
    # 1-min samples, set rate 1 mL/min; the intervals deliver 1, 0, 2 and 1 mL.
    cum = cumulative_at([0.5, 2.5, 2.6, 3.5], [1.0, 1.0, 1.0, 1.0], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(cum, [0.0, 1.0, 1.0, 3.0, 4.0])
    # 2-min windows (N - n + 1 = 3 of them) hold 1, 2 and 3 mL against 2 mL expected.
    np.testing.assert_allclose(window_errors_pct(cum, 2, 1.0, 1.0), [-50.0, 0.0, 50.0])
    ep_max, ep_min = trumpet_pct(cum, 1.0, [1.0, 2.0, 4.0], 1.0)
    np.testing.assert_allclose(ep_max, [100.0, 50.0, 0.0])
    np.testing.assert_allclose(ep_min, [-100.0, -50.0, 0.0])
    assert mean_error_pct(cum, 1.0, 1.0) == 0.0


def test_a_stroke_on_a_sample_time_counts_in_the_interval_ending_there() -> None:
    np.testing.assert_array_equal(cumulative_at([1.0], [2.0], [0.0, 1.0, 2.0]), [0.0, 2.0, 2.0])


@pytest.mark.parametrize("systematic_pct", [0.0, 5.0, -3.2])
def test_uniform_delivery_gives_its_systematic_error_in_every_window(
    systematic_pct: float,
) -> None:
    rate_ml_per_min = 0.001
    sample_min = 0.5
    times, volumes = _one_stroke_per_interval(
        120, sample_min, rate_ml_per_min * sample_min * (1 + systematic_pct / 100)
    )
    cum = cumulative_at(times, volumes, np.arange(121) * sample_min)
    ep_max, ep_min = trumpet_pct(cum, sample_min, IEC_WINDOWS_MIN, rate_ml_per_min)
    np.testing.assert_allclose(ep_max, systematic_pct, atol=1e-9)
    np.testing.assert_allclose(ep_min, systematic_pct, atol=1e-9)
    assert mean_error_pct(cum, sample_min, rate_ml_per_min) == pytest.approx(systematic_pct)


def test_windows_must_fit_the_period_and_the_sample_grid() -> None:
    cum = np.arange(5, dtype=np.float64)
    with pytest.raises(ValueError, match="does not fit"):
        window_errors_pct(cum, 5, 1.0, 1.0)
    with pytest.raises(ValueError, match="not a multiple"):
        trumpet_pct(cum, 1.0, [1.5], 1.0)


def test_larger_discrete_deliveries_widen_the_short_window_spread() -> None:
    rate = 0.5  # mL/day: a 2-min window expects 0.69 uL
    results = {
        name: analyse(load_profile(name), AccuracySettings(rate, seed=3))
        for name in ("peristaltic-20", "valve-gated-20")
    }
    spreads = {}
    for name, result in results.items():
        profile = result.profile
        unit_ml = profile.stroke_volume_ul / 1000 * (1 + profile.flow_error_systematic_pct / 100)
        expected_ml = rate / 1440 * IEC_WINDOWS_MIN[0]
        # At this rate every 2-min window holds k or k + 1 strokes: the spread is one stroke
        # (pulse) of the profile, as a percentage of what the window should hold.
        spreads[name] = result.ep_max_pct[0] - result.ep_min_pct[0]
        assert spreads[name] == pytest.approx(100 * unit_ml / expected_ml, rel=0.05)
    # 2 uL pulses against 0.5 uL strokes, at the same rate.
    assert spreads["valve-gated-20"] > 3.5 * spreads["peristaltic-20"]
    # Pulses 5.8 min apart leave some 2- and 5-min windows empty; strokes 1.4 min apart never.
    np.testing.assert_array_equal(results["valve-gated-20"].ep_min_pct[:2], [-100.0, -100.0])
    assert results["peristaltic-20"].ep_min_pct.min() > -50.0


def test_a_systematic_mechanism_error_shows_in_every_window_of_a_real_run() -> None:
    exact = load_profile("peristaltic-20").model_copy(
        update={"flow_error_systematic_pct": 5.0, "flow_error_random_cv_pct": 0.0}
    )
    rate = 24.0
    result = analyse(exact, AccuracySettings(rate))
    assert result.mean_error_pct == pytest.approx(5.0, abs=0.1)
    stroke_ml = exact.stroke_volume_ul / 1000
    for window, high, low in zip(
        IEC_WINDOWS_MIN, result.ep_max_pct, result.ep_min_pct, strict=True
    ):
        # A window can only be off the systematic error by the stroke it cuts at either end.
        one_stroke_pct = 100 * 1.05 * stroke_ml / (rate / 1440 * window)
        assert 5.0 - one_stroke_pct - 1e-9 <= low <= high <= 5.0 + one_stroke_pct + 1e-9


def test_the_start_up_curve_covers_every_interval_and_adds_up() -> None:
    settings = AccuracySettings(1.0, analysis_start_h=0.5, analysis_h=1.5)
    result = analyse(load_profile("valve-gated-20"), settings)
    assert len(result.sample_end_min) == 240  # 2 h of 0.5-min intervals from the start
    assert result.sample_end_min[-1] == 120.0
    np.testing.assert_allclose(
        np.cumsum(result.flow_ml_per_day) * 0.5 / 1440, result.cumulative_ml, rtol=1e-12
    )
    # Nothing leaves before the first pulse completes (one pulse period after the start).
    pulse_period_min = 2e-3 / (1.0 / 1440)
    assert np.all(result.cumulative_ml[result.sample_end_min < pulse_period_min - 0.5] == 0)


def test_same_seed_same_strokes_other_seed_other_volumes() -> None:
    profile = load_profile("valve-gated-20")
    settings = AccuracySettings(5.0, seed=11)
    first, again = analyse(profile, settings), analyse(profile, settings)
    np.testing.assert_array_equal(first.cumulative_ml, again.cumulative_ml)
    other = analyse(profile, AccuracySettings(5.0, seed=12))
    assert not np.array_equal(first.cumulative_ml, other.cumulative_ml)


def test_a_run_that_would_empty_the_reservoir_is_refused() -> None:
    # 24 mL/day empties 20 mL in 20 h.
    settings = AccuracySettings(24.0, analysis_start_h=1.0, analysis_h=24.0)
    with pytest.raises(AccuracyInputError, match="empty the 20 mL reservoir") as info:
        analyse(load_profile("peristaltic-20"), settings)
    assert info.value.field == "analysis_h"
