"""History of one emulated pump: the truth and the firmware's beliefs, sampled at events.

Between two recorded points every quantity is linear (volumes) or constant (rates, alarms), so
resampling onto any grid afterwards is exact; nothing is sampled on a timer during the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class AlarmTransition:
    """An alarm raised or cleared, at simulated time `t_h`."""

    t_h: float
    alarm: str
    raised: bool


def interp_right(
    x_in: npt.ArrayLike, xp: npt.ArrayLike, fp: npt.ArrayLike, left: float | None = None
) -> FloatArray:
    """Linear interpolation that tolerates repeated `xp` (a jump): at and after a repeated
    point it takes the last value there. (np.interp needs strictly increasing `xp`.)"""
    x = np.asarray(x_in, dtype=np.float64)
    xp_a = np.asarray(xp, dtype=np.float64)
    fp_a = np.asarray(fp, dtype=np.float64)
    i = np.searchsorted(xp_a, x, side="right") - 1
    before = i < 0
    i = np.clip(i, 0, len(xp_a) - 1)
    j = np.minimum(i + 1, len(xp_a) - 1)
    span = xp_a[j] - xp_a[i]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(span > 0, (x - xp_a[i]) / span, 0.0)
    out: FloatArray = fp_a[i] + np.clip(frac, 0.0, 1.0) * (fp_a[j] - fp_a[i])
    out[before] = fp_a[0] if left is None else left
    return out


class Recorder:
    """Append-only columns; `grid()` turns them into evenly spaced samples."""

    def __init__(self) -> None:
        # Tip history: drug rates leaving to CSF (catheter tip) and to tissue, piecewise constant.
        self.seg_t0_h: list[float] = []
        self.seg_t1_h: list[float] = []
        self.seg_csf_mcg_per_h: list[float] = []
        self.seg_tissue_mcg_per_h: list[float] = []
        self.tissue_bolus_t_h: list[float] = []
        self.tissue_bolus_mcg: list[float] = []
        # Truth points (hardware breakpoints and pump events).
        self.truth_t_h: list[float] = []
        self.truth_reservoir_ml: list[float] = []
        self.truth_battery_fraction: list[float] = []
        # Firmware points (pump events only).
        self.fw_t_h: list[float] = []
        self.fw_reservoir_ml: list[float] = []
        self.fw_rate_ml_per_day: list[float] = []
        self.fw_alarm_mask: list[int] = []
        self.alarm_transitions: list[AlarmTransition] = []
        self._last_mask = 0

    def add_segment(self, t0_h: float, t1_h: float, csf: float, tissue: float) -> None:
        """One piece of the tip history (merged with the previous one when seamless and equal)."""
        if (
            self.seg_t1_h
            and self.seg_t1_h[-1] == t0_h
            and self.seg_csf_mcg_per_h[-1] == csf
            and self.seg_tissue_mcg_per_h[-1] == tissue
        ):
            self.seg_t1_h[-1] = t1_h
            return
        self.seg_t0_h.append(t0_h)
        self.seg_t1_h.append(t1_h)
        self.seg_csf_mcg_per_h.append(csf)
        self.seg_tissue_mcg_per_h.append(tissue)

    def add_tissue_bolus(self, t_h: float, mass_mcg: float) -> None:
        """An instantaneous amount reached tissue."""
        self.tissue_bolus_t_h.append(t_h)
        self.tissue_bolus_mcg.append(mass_mcg)

    def add_truth(self, t_h: float, reservoir_ml: float, battery_fraction: float) -> None:
        """Truth at a breakpoint."""
        self.truth_t_h.append(t_h)
        self.truth_reservoir_ml.append(reservoir_ml)
        self.truth_battery_fraction.append(battery_fraction)

    def add_firmware(
        self,
        t_h: float,
        reservoir_ml: float,
        rate_ml_per_day: float,
        alarm_mask: int,
        alarm_names: dict[int, str],
    ) -> None:
        """Firmware beliefs at a pump event; alarm changes become transitions."""
        self.fw_t_h.append(t_h)
        self.fw_reservoir_ml.append(reservoir_ml)
        self.fw_rate_ml_per_day.append(rate_ml_per_day)
        self.fw_alarm_mask.append(alarm_mask)
        changed = alarm_mask ^ self._last_mask
        if changed:
            for bit, name in alarm_names.items():
                if changed & (1 << bit):
                    self.alarm_transitions.append(
                        AlarmTransition(t_h, name, bool(alarm_mask & (1 << bit)))
                    )
            self._last_mask = alarm_mask

    # ------------------------------------------------------------------ resampling
    def cumulative_points(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(t, cumulative CSF mcg, cumulative tissue mcg) at every segment edge and bolus."""
        t0 = np.asarray(self.seg_t0_h)
        t1 = np.asarray(self.seg_t1_h)
        csf = np.asarray(self.seg_csf_mcg_per_h) * (t1 - t0)
        tissue = np.asarray(self.seg_tissue_mcg_per_h) * (t1 - t0)
        bt = np.asarray(self.tissue_bolus_t_h)
        nb = len(bt)
        # A bolus is a jump: one point just before it (no increment), one after it.
        times = np.concatenate([t0, t1, bt, bt])
        d_csf = np.concatenate([np.zeros_like(t0), csf, np.zeros(2 * nb)])
        d_tis = np.concatenate(
            [np.zeros_like(t0), tissue, np.zeros(nb), np.asarray(self.tissue_bolus_mcg)]
        )
        # Order ties so the cumulative curve is right on both sides of a shared time: a segment
        # that ends there, then a jump (before, after), then a segment that starts there.
        kind = np.concatenate(
            [np.full(len(t0), 3.0), np.zeros_like(t1), np.full(nb, 1.0), np.full(nb, 2.0)]
        )
        order = np.lexsort((kind, times))
        return times[order], np.cumsum(d_csf[order]), np.cumsum(d_tis[order])

    def grid(self, times_in_h: npt.ArrayLike) -> dict[str, FloatArray]:
        """Columns sampled at `times_in_h` (exact: linear or step between recorded points)."""
        times_h = np.asarray(times_in_h, dtype=np.float64)
        out: dict[str, FloatArray] = {"time_h": times_h}
        out["reservoir_true_ml"] = interp_right(times_h, self.truth_t_h, self.truth_reservoir_ml)
        out["battery_remaining_pct"] = 100.0 * interp_right(
            times_h, self.truth_t_h, self.truth_battery_fraction
        )
        out["reservoir_estimated_ml"] = interp_right(times_h, self.fw_t_h, self.fw_reservoir_ml)
        idx = np.searchsorted(self.fw_t_h, times_h, side="right") - 1
        idx = np.clip(idx, 0, len(self.fw_t_h) - 1)
        out["rate_ml_per_day"] = np.asarray(self.fw_rate_ml_per_day)[idx]
        out["alarm_mask"] = np.asarray(self.fw_alarm_mask, dtype=np.float64)[idx]
        t, csf, tissue = self.cumulative_points()
        if len(t):
            out["delivered_csf_mcg"] = interp_right(times_h, t, csf, left=0.0)
            out["delivered_tissue_mcg"] = interp_right(times_h, t, tissue, left=0.0)
        else:
            out["delivered_csf_mcg"] = np.zeros_like(times_h)
            out["delivered_tissue_mcg"] = np.zeros_like(times_h)
        return out
