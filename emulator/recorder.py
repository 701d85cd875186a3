"""History of one emulated pump: the truth and the firmware's beliefs, sampled at events.

Between two recorded points every quantity is linear (volumes) or constant (rates, alarms), so
resampling onto any grid afterwards is exact; nothing is sampled on a timer during the run.

A bounded recorder (`window_h`) keeps only the last stretch of history (a served pump would
otherwise grow ~2 MB per simulated year). What the dropped part contributed is folded into
its origin: the cumulative doses, the alarms still raised and, given the PK model, the
patient's state, so everything resampled after `start_h` is exactly as if nothing was dropped.

A served pump records a point at every telemetry request, most of them on a straight line
(a steady infusion read again and again: ~200 bytes per request, for ever). A bounded
recorder therefore does not keep a point that the straight line through its neighbours
reproduces: within `VOLUME_TOLERANCE_ML` (1 nL, the wire's resolution) for volumes and
`BATTERY_TOLERANCE` for the battery fraction (each request's telemetry draw is a step far
below it), with the rates and alarms unchanged. `itpump simulate`'s whole history keeps every
point.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

if TYPE_CHECKING:
    from itpump.emulator.pk import PKModel, PKState

FloatArray = NDArray[np.float64]

VOLUME_TOLERANCE_ML = 1e-6 * 1e-3
"""1 nL: a bounded recorder drops a volume point the line through its neighbours gives
within this."""

BATTERY_TOLERANCE = 1e-6
"""Of the battery's charge (fraction): the same for the battery point."""


def _on_line(t0: float, v0: float, t1: float, v1: float, t2: float, v2: float, tol: float) -> bool:
    """Whether (t1, v1) is within `tol` of the line through (t0, v0) and (t2, v2); t0<t1<t2."""
    return abs(v1 - (v0 + (v2 - v0) * (t1 - t0) / (t2 - t0))) <= tol


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
    """Append-only columns; `grid()` turns them into evenly spaced samples.

    `window_h` None (the default, `itpump simulate`) keeps everything. Otherwise the history
    is trimmed to at least the last `window_h` hours, in batches once it spans twice that
    (amortised O(1) per point, at most ~2 x `window_h` held). `pk_model` lets the recorder
    carry the patient's PK state across what it drops (`origin_pk_state`).
    """

    def __init__(self, window_h: float | None = None, pk_model: PKModel | None = None) -> None:
        if window_h is not None and not window_h > 0:
            raise ValueError(f"window_h must be > 0 or None (got {window_h!r})")
        self.window_h = window_h
        # Bounded: a served pump; drop points a line through their neighbours reproduces.
        self._compact = window_h is not None
        self._pk_model = pk_model
        # Where the retained history starts, and what happened before it.
        self.start_h = 0.0
        self.origin_csf_mcg = 0.0
        self.origin_tissue_mcg = 0.0
        self.origin_pk_state: PKState | None = None
        # Bumped at every point added: a cheap "has anything changed" for the dashboard
        # (lengths alone can repeat once the history is trimmed).
        self.revision = 0
        # Tip history: drug rates leaving to CSF (catheter tip) and to tissue, piecewise constant.
        self.seg_t0_h: list[float] = []
        self.seg_t1_h: list[float] = []
        self.seg_csf_mcg_per_h: list[float] = []
        self.seg_tissue_mcg_per_h: list[float] = []
        self.tissue_bolus_t_h: list[float] = []
        self.tissue_bolus_mcg: list[float] = []
        # The part of those that is the drug the PK model describes (baclofen): what the
        # concentrations are computed from. Equal to the totals unless another drug was filled.
        self.seg_pk_csf_mcg_per_h: list[float] = []
        self.seg_pk_tissue_mcg_per_h: list[float] = []
        self.tissue_bolus_pk_mcg: list[float] = []
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

    def __setstate__(self, state: dict[str, object]) -> None:
        # Recorders pickled before points were compacted (state files, snapshots).
        state.setdefault("_compact", state.get("window_h") is not None)
        # ... and before the PK-modelled part was kept apart (all of it was baclofen).
        for pk, total in (
            ("seg_pk_csf_mcg_per_h", "seg_csf_mcg_per_h"),
            ("seg_pk_tissue_mcg_per_h", "seg_tissue_mcg_per_h"),
            ("tissue_bolus_pk_mcg", "tissue_bolus_mcg"),
        ):
            if pk not in state:
                state[pk] = list(state[total])  # type: ignore[call-overload]
        self.__dict__.update(state)

    def add_segment(
        self,
        t0_h: float,
        t1_h: float,
        csf: float,
        tissue: float,
        pk_csf: float | None = None,
        pk_tissue: float | None = None,
    ) -> None:
        """One piece of the tip history (merged with the previous one when seamless and equal).
        `pk_csf` / `pk_tissue`: the PK-modelled drug's part of the rates (None: all of it)."""
        self.revision += 1
        pk_csf = csf if pk_csf is None else pk_csf
        pk_tissue = tissue if pk_tissue is None else pk_tissue
        if (
            self.seg_t1_h
            and self.seg_t1_h[-1] == t0_h
            and self.seg_csf_mcg_per_h[-1] == csf
            and self.seg_tissue_mcg_per_h[-1] == tissue
            and self.seg_pk_csf_mcg_per_h[-1] == pk_csf
            and self.seg_pk_tissue_mcg_per_h[-1] == pk_tissue
        ):
            self.seg_t1_h[-1] = t1_h
            return
        self.seg_t0_h.append(t0_h)
        self.seg_t1_h.append(t1_h)
        self.seg_csf_mcg_per_h.append(csf)
        self.seg_tissue_mcg_per_h.append(tissue)
        self.seg_pk_csf_mcg_per_h.append(pk_csf)
        self.seg_pk_tissue_mcg_per_h.append(pk_tissue)

    def add_tissue_bolus(
        self, t_h: float, mass_mcg: float, pk_mass_mcg: float | None = None
    ) -> None:
        """An instantaneous amount reached tissue (`pk_mass_mcg` of it the PK-modelled drug;
        None: all of it)."""
        self.revision += 1
        self.tissue_bolus_t_h.append(t_h)
        self.tissue_bolus_mcg.append(mass_mcg)
        self.tissue_bolus_pk_mcg.append(mass_mcg if pk_mass_mcg is None else pk_mass_mcg)

    def add_truth(self, t_h: float, reservoir_ml: float, battery_fraction: float) -> None:
        """Truth at a breakpoint (an exact repeat of the last point is not stored again)."""
        # The hardware reports a breakpoint where a gap ends and the pump then records the
        # same instant after its event: the repeat carries nothing (half the truth points).
        t = self.truth_t_h
        res, bat = self.truth_reservoir_ml, self.truth_battery_fraction
        if t and t[-1] == t_h and res[-1] == reservoir_ml and bat[-1] == battery_fraction:
            return
        self.revision += 1
        if (
            self._compact
            and len(t) >= 2
            and t[-2] < t[-1] < t_h
            and _on_line(t[-2], res[-2], t[-1], res[-1], t_h, reservoir_ml, VOLUME_TOLERANCE_ML)
            and _on_line(t[-2], bat[-2], t[-1], bat[-1], t_h, battery_fraction, BATTERY_TOLERANCE)
        ):
            t[-1], res[-1], bat[-1] = t_h, reservoir_ml, battery_fraction
            return
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
        self.revision += 1
        t, res = self.fw_t_h, self.fw_reservoir_ml
        rate, mask = self.fw_rate_ml_per_day, self.fw_alarm_mask
        if (
            self._compact
            and len(t) >= 2
            and t[-2] < t[-1] < t_h
            and rate[-2] == rate[-1]
            and mask[-2] == mask[-1]
            and _on_line(t[-2], res[-2], t[-1], res[-1], t_h, reservoir_ml, VOLUME_TOLERANCE_ML)
        ):
            # The last point only continued its predecessor's line: the new one replaces it.
            t[-1], res[-1], rate[-1], mask[-1] = t_h, reservoir_ml, rate_ml_per_day, alarm_mask
        else:
            t.append(t_h)
            res.append(reservoir_ml)
            rate.append(rate_ml_per_day)
            mask.append(alarm_mask)
        changed = alarm_mask ^ self._last_mask
        if changed:
            for bit, name in alarm_names.items():
                if changed & (1 << bit):
                    self.alarm_transitions.append(
                        AlarmTransition(t_h, name, bool(alarm_mask & (1 << bit)))
                    )
            self._last_mask = alarm_mask
        window = self.window_h
        if window is not None and t_h - self.start_h > 2.0 * window:
            self.trim_before(t_h - window)

    def trim_before(self, cut_h: float) -> None:
        """Drop the history before `cut_h` (kept exact from the new `start_h` on).

        A tip segment that spans the cut is kept whole, so the retained history starts at the
        earlier of `cut_h` and that segment's start. Truth and firmware keep their last point
        before the start (the value there is interpolated from it).
        """
        k = bisect.bisect_right(self.seg_t1_h, cut_h)
        origin = cut_h if k == len(self.seg_t0_h) else min(cut_h, self.seg_t0_h[k])
        if origin <= self.start_h:
            return
        b = bisect.bisect_left(self.tissue_bolus_t_h, origin)
        self._fold_into_origin(k, b, origin)
        del self.seg_t0_h[:k], self.seg_t1_h[:k]
        del self.seg_csf_mcg_per_h[:k], self.seg_tissue_mcg_per_h[:k]
        del self.seg_pk_csf_mcg_per_h[:k], self.seg_pk_tissue_mcg_per_h[:k]
        del self.tissue_bolus_t_h[:b], self.tissue_bolus_mcg[:b], self.tissue_bolus_pk_mcg[:b]
        i = max(bisect.bisect_right(self.truth_t_h, origin) - 1, 0)
        del self.truth_t_h[:i], self.truth_reservoir_ml[:i], self.truth_battery_fraction[:i]
        j = max(bisect.bisect_right(self.fw_t_h, origin) - 1, 0)
        del self.fw_t_h[:j], self.fw_reservoir_ml[:j], self.fw_rate_ml_per_day[:j]
        del self.fw_alarm_mask[:j]
        # Alarm transitions: a span that ended before the origin goes; one still open keeps
        # its raise (the dashboard draws it from when it was raised).
        open_raise: dict[str, AlarmTransition] = {}
        n = 0
        for change in self.alarm_transitions:
            if change.t_h >= origin:
                break
            n += 1
            if change.raised:
                open_raise.setdefault(change.alarm, change)
            else:
                open_raise.pop(change.alarm, None)
        kept = sorted(open_raise.values(), key=lambda c: c.t_h)
        self.alarm_transitions[:n] = kept
        self.start_h = origin

    def _fold_into_origin(self, k: int, b: int, origin: float) -> None:
        # Cumulative doses and (with a PK model) the patient's state at `origin`, through the
        # first `k` segments and `b` boluses, in the order the hardware reported them.
        t0s, t1s = self.seg_t0_h, self.seg_t1_h
        csf, tissue = self.seg_csf_mcg_per_h, self.seg_tissue_mcg_per_h
        for i in range(k):
            self.origin_csf_mcg += csf[i] * (t1s[i] - t0s[i])
            self.origin_tissue_mcg += tissue[i] * (t1s[i] - t0s[i])
        self.origin_tissue_mcg += sum(self.tissue_bolus_mcg[:b])
        model = self._pk_model
        if model is None:
            return
        csf, tissue = self.seg_pk_csf_mcg_per_h, self.seg_pk_tissue_mcg_per_h
        bolus_pk = self.tissue_bolus_pk_mcg
        state = self.origin_pk_state or model.initial_state(self.start_h)

        def advance_to(state: PKState, t_h: float) -> PKState:
            if t_h > state.time_h:
                return model.advance(state, t_h - state.time_h, 0.0, 0.0)
            return state

        j = 0
        for i in range(k):
            while j < b and self.tissue_bolus_t_h[j] <= t0s[i]:
                state = advance_to(state, self.tissue_bolus_t_h[j])
                state = model.add_bolus(state, tissue_mcg=bolus_pk[j])
                j += 1
            state = advance_to(state, t0s[i])
            state = model.advance(state, t1s[i] - t0s[i], csf[i], tissue[i])
        for jj in range(j, b):
            state = advance_to(state, self.tissue_bolus_t_h[jj])
            state = model.add_bolus(state, tissue_mcg=bolus_pk[jj])
        self.origin_pk_state = advance_to(state, origin)

    # ------------------------------------------------------------------ resampling
    def cumulative_points(
        self, *, pk_only: bool = False
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(t, cumulative CSF mcg, cumulative tissue mcg) at every segment edge and bolus;
        `pk_only`: of the PK-modelled drug alone (its share of what was dropped by a bounded
        history is not kept: that part counts all of it)."""
        t0 = np.asarray(self.seg_t0_h, dtype=np.float64)
        t1 = np.asarray(self.seg_t1_h, dtype=np.float64)
        csf_rate = np.asarray(
            self.seg_pk_csf_mcg_per_h if pk_only else self.seg_csf_mcg_per_h, dtype=np.float64
        )
        tissue_rate = np.asarray(
            self.seg_pk_tissue_mcg_per_h if pk_only else self.seg_tissue_mcg_per_h,
            dtype=np.float64,
        )
        bolus_mcg = self.tissue_bolus_pk_mcg if pk_only else self.tissue_bolus_mcg
        bt = np.asarray(self.tissue_bolus_t_h, dtype=np.float64)
        if len(bt) and len(t0):
            # A bolus inside a segment splits it: a segment adds its mass only at its end, so
            # unsplit, the bolus's points carried the total from the segment's start and the
            # curves were flat up to the bolus, then too steep after it (a pocket fill in the
            # middle of days of steady delivery showed a gap, then double the dose).
            k = np.searchsorted(t0, bt, side="right") - 1
            kc = np.maximum(k, 0)
            inside = (k >= 0) & (bt > t0[kc]) & (bt < t1[kc])
            order = np.argsort(bt[inside], kind="stable")
            ks, cuts = k[inside][order], bt[inside][order]
            t0 = np.insert(t0, ks + 1, cuts)
            t1 = np.insert(t1, ks, cuts)
            csf_rate = np.insert(csf_rate, ks + 1, csf_rate[ks])
            tissue_rate = np.insert(tissue_rate, ks + 1, tissue_rate[ks])
        csf = csf_rate * (t1 - t0)
        tissue = tissue_rate * (t1 - t0)
        nb = len(bt)
        # A bolus is a jump: one point just before it (no increment), one after it.
        times = np.concatenate([t0, t1, bt, bt])
        d_csf = np.concatenate([np.zeros_like(t0), csf, np.zeros(2 * nb)])
        d_tis = np.concatenate(
            [np.zeros_like(t0), tissue, np.zeros(nb), np.asarray(bolus_mcg)]
        )
        # Order ties so the cumulative curve is right on both sides of a shared time: a segment
        # that ends there, then a jump (before, after), then a segment that starts there.
        kind = np.concatenate(
            [np.full(len(t0), 3.0), np.zeros_like(t1), np.full(nb, 1.0), np.full(nb, 2.0)]
        )
        order = np.lexsort((kind, times))
        cum_csf = np.cumsum(d_csf[order])
        cum_tis = np.cumsum(d_tis[order])
        if self.origin_csf_mcg or self.origin_tissue_mcg:
            cum_csf += self.origin_csf_mcg  # what the dropped history delivered
            cum_tis += self.origin_tissue_mcg
        return times[order], cum_csf, cum_tis

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
            out["delivered_csf_mcg"] = interp_right(times_h, t, csf, left=self.origin_csf_mcg)
            out["delivered_tissue_mcg"] = interp_right(
                times_h, t, tissue, left=self.origin_tissue_mcg
            )
        else:
            out["delivered_csf_mcg"] = np.full_like(times_h, self.origin_csf_mcg)
            out["delivered_tissue_mcg"] = np.full_like(times_h, self.origin_tissue_mcg)
        return out
