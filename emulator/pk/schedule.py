"""Piecewise-constant input rates plus instantaneous boluses, on a breakpoint grid.

The solver only ever sees this normalised form: breakpoints s_0 < s_1 < ... (s_0 is the start
time), the rate of each route on [s_k, s_{k+1}) (the last one holds for ever), and the bolus
amount of each route given at s_k.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from itpump.emulator.pk.parameters import FloatArray
from itpump.emulator.pk.system import N_ROUTES, ROUTE_CSF, ROUTE_TISSUE


def _as_1d(name: str, values: ArrayLike | None, length: int | None = None) -> FloatArray:
    array = np.zeros(0) if values is None else np.asarray(values, dtype=np.float64)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if length is not None and array.shape[0] != length:
        raise ValueError(f"{name} has {array.shape[0]} values, expected {length}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    return array


@dataclass(frozen=True)
class InputSchedule:
    """Normalised dosing history: see the module docstring."""

    breakpoints_h: FloatArray  # (K,), strictly increasing, breakpoints_h[0] = start time
    rates_mcg_per_h: FloatArray  # (K, 2): route rates on [s_k, s_{k+1})
    boluses_mcg: FloatArray  # (K, 2): route amounts given at s_k

    @property
    def start_h(self) -> float:
        """The time the schedule (and the initial state) starts at."""
        return float(self.breakpoints_h[0])

    @classmethod
    def from_segments(
        cls,
        seg_start_h: ArrayLike,
        seg_csf_rate_mcg_per_h: ArrayLike,
        seg_tissue_rate_mcg_per_h: ArrayLike | None = None,
        bolus_t_h: ArrayLike | None = None,
        bolus_csf_mcg: ArrayLike | None = None,
        bolus_tissue_mcg: ArrayLike | None = None,
        *,
        start_h: float = 0.0,
    ) -> InputSchedule:
        """Segments that each hold until the next one starts (rate 0 before the first).

        Segment starts must be non-decreasing; of segments with equal starts the last one wins
        (a zero-length segment changes nothing). Boluses may come in any order; boluses at the
        same time add up. Nothing may happen before `start_h`.
        """
        starts = _as_1d("seg_start_h", seg_start_h)
        csf_rates = _as_1d("seg_csf_rate_mcg_per_h", seg_csf_rate_mcg_per_h, starts.shape[0])
        tissue_rates = (
            np.zeros_like(starts)
            if seg_tissue_rate_mcg_per_h is None
            else _as_1d("seg_tissue_rate_mcg_per_h", seg_tissue_rate_mcg_per_h, starts.shape[0])
        )
        bolus_times = _as_1d("bolus_t_h", bolus_t_h)
        n_bolus = bolus_times.shape[0]
        bolus_csf = (
            np.zeros(n_bolus)
            if bolus_csf_mcg is None or np.size(bolus_csf_mcg) == 0
            else _as_1d("bolus_csf_mcg", bolus_csf_mcg, n_bolus)
        )
        bolus_tissue = (
            np.zeros(n_bolus)
            if bolus_tissue_mcg is None or np.size(bolus_tissue_mcg) == 0
            else _as_1d("bolus_tissue_mcg", bolus_tissue_mcg, n_bolus)
        )
        if not math.isfinite(start_h):
            raise ValueError("start_h must be finite")
        if np.any(np.diff(starts) < 0.0):
            raise ValueError("seg_start_h must be non-decreasing")
        for name, values in (
            ("segment rates", np.concatenate([csf_rates, tissue_rates])),
            ("bolus amounts", np.concatenate([bolus_csf, bolus_tissue])),
        ):
            if np.any(values < 0.0):
                raise ValueError(f"{name} must be >= 0")
        if np.any(starts < start_h) or np.any(bolus_times < start_h):
            raise ValueError(f"segments and boluses must not start before {start_h} h")

        breakpoints = np.unique(np.concatenate([[start_h], starts, bolus_times]))
        # Rate in force at each breakpoint: the last segment starting at or before it.
        governing = np.searchsorted(starts, breakpoints, side="right") - 1
        rates = np.zeros((breakpoints.shape[0], N_ROUTES))
        active = governing >= 0
        rates[active, ROUTE_CSF] = csf_rates[governing[active]]
        rates[active, ROUTE_TISSUE] = tissue_rates[governing[active]]
        boluses = np.zeros((breakpoints.shape[0], N_ROUTES))
        index = np.searchsorted(breakpoints, bolus_times)
        np.add.at(boluses[:, ROUTE_CSF], index, bolus_csf)
        np.add.at(boluses[:, ROUTE_TISSUE], index, bolus_tissue)
        return cls(breakpoints, rates, boluses)

    @classmethod
    def from_infusions(
        cls,
        infusions: Sequence[tuple[float, float, float, int]],
        boluses: Sequence[tuple[float, float, int]] = (),
        *,
        start_h: float = 0.0,
    ) -> InputSchedule:
        """Possibly overlapping infusions (start_h, end_h, rate_mcg_per_h, route) that add up,
        and boluses (time_h, amount_mcg, route): the NONMEM reading of dose records."""
        times = {start_h}
        for start, end, rate, route in infusions:
            if not (math.isfinite(start) and math.isfinite(end) and math.isfinite(rate)):
                raise ValueError("infusion times and rates must be finite")
            if start < start_h or end < start or rate < 0.0 or route not in (0, 1):
                raise ValueError(f"invalid infusion {(start, end, rate, route)}")
            times.update((start, end))
        for time, amount, route in boluses:
            if not (math.isfinite(time) and math.isfinite(amount)):
                raise ValueError("bolus times and amounts must be finite")
            if time < start_h or amount < 0.0 or route not in (0, 1):
                raise ValueError(f"invalid bolus {(time, amount, route)}")
            times.add(time)
        breakpoints = np.array(sorted(times))
        rates = np.zeros((breakpoints.shape[0], N_ROUTES))
        # Sweep: each breakpoint's rate is the exact (fsum) total of the infusions running on
        # [s_k, s_{k+1}), so infusions that end leave exactly zero behind, not rounding dust.
        starting: dict[float, list[int]] = {}
        ending: dict[float, list[int]] = {}
        for number, (start, end, _rate, _route) in enumerate(infusions):
            if end > start:
                starting.setdefault(start, []).append(number)
                ending.setdefault(end, []).append(number)
        running: set[int] = set()
        for k, time in enumerate(breakpoints.tolist()):
            running.difference_update(ending.get(time, ()))
            running.update(starting.get(time, ()))
            for route in (ROUTE_CSF, ROUTE_TISSUE):
                rates[k, route] = math.fsum(
                    infusions[i][2] for i in running if infusions[i][3] == route
                )
        amounts = np.zeros((breakpoints.shape[0], N_ROUTES))
        for time, amount, route in boluses:
            amounts[int(np.searchsorted(breakpoints, time)), route] += amount
        return cls(breakpoints, rates, amounts)

    @classmethod
    def empty(cls, start_h: float = 0.0) -> InputSchedule:
        """No dosing at all."""
        return cls(np.array([start_h]), np.zeros((1, N_ROUTES)), np.zeros((1, N_ROUTES)))
