"""Reservoir projections: when the low-reservoir alarm and the empty state are expected.

A pump only knows what it commanded, so its projection is an extrapolation of the volume it
will command. The programmed basal alone under-projects a patient who uses patient-activated
boluses (issue 10: two 20 mcg boluses a day on 215 mcg/day brought the low alarm 12 days
before the projected date), so the projection adds the patient's recent bolus use: the mean
daily patient-bolus dose over the last `window_s` (7 days by default, `FirmwareConfig.
bolus_use_window_s`), or over the time since tracking began when that is shorter, but never
less than one day (a single bolus in the first minutes must not project a 48x use).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

_DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class ReservoirProjection:
    """Projected instants (RTC seconds), None when the estimate is not falling."""

    low_reservoir_rtc_s: float | None
    empty_rtc_s: float | None


class PatientBolusUse:
    """Patient-bolus doses given over a rolling window (monotonic seconds, mcg)."""

    def __init__(self, window_s: float, since_s: float, *, max_per_day: int) -> None:
        """`max_per_day` is the device's most patient boluses a day (FirmwareConfig): the
        memory holds that many for every day of the window and one more day, so it is bounded
        and, if ever full, drops the oldest first (which only shortens the window)."""
        self.window_s = window_s
        self._since_s = since_s
        days = math.ceil(window_s / _DAY_S) + 1
        self._given: deque[tuple[float, float]] = deque(maxlen=max(1, max_per_day) * days)

    def restart(self, since_s: float) -> None:
        """Forget the use so far (patient boluses newly enabled: the old habit is no guide)."""
        self._since_s = since_s
        self._given.clear()

    def record(self, start_s: float, dose_mcg: float) -> None:
        """A patient bolus started."""
        self._given.append((start_s, dose_mcg))

    def mean_mcg_per_day(self, now_s: float) -> float:
        """Mean daily patient-bolus dose over the window (or the shorter time tracked)."""
        start = now_s - self.window_s
        given = self._given
        while given and given[0][0] <= start:
            given.popleft()
        if not given:
            return 0.0
        span_s = min(self.window_s, max(now_s - self._since_s, _DAY_S))
        return sum(dose for _, dose in given) / (span_s / _DAY_S)


def project_reservoir(
    *,
    rtc_s: float,
    estimate_ml: float,
    daily_ml: float,
    low_threshold_ml: float,
    empty_threshold_ml: float,
) -> ReservoirProjection:
    """When the estimate falling at `daily_ml` reaches the low and the empty thresholds."""
    if daily_ml <= 0:
        return ReservoirProjection(None, None)

    def reached(threshold_ml: float) -> float | None:
        margin = estimate_ml - threshold_ml
        return rtc_s + margin / daily_ml * _DAY_S if margin > 0 else None

    return ReservoirProjection(reached(low_threshold_ml), reached(empty_threshold_ml))
