"""Floating-point comparisons that hold on any CPU, BLAS kernel and supported numpy/scipy.

A concentration that has decayed to 1e-5 of its peak still carries the rounding error of the
peak (the solver sums exponentials scaled by the run, not by the current value), so a bound
relative to each value fails on decayed values as soon as a different BLAS kernel or CPU
rounds the last bit differently. These helpers hold every value of a channel to an absolute
error counted in ulps of that channel's peak (plus, where the true difference is relative, a
relative term), and the bounds themselves are named with the reason for their size.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from itpump.emulator.pk.solver import COND_LIMIT

EPS = float(np.finfo(np.float64).eps)

# The modal path's rounding grows like cond(V) * eps of the run's scale, and the solver sends a
# patient to the expm path above COND_LIMIT (emulator/pk/solver.py): two evaluations of the
# same exact map (other windows, chunks, batch sizes, BLAS kernels) may differ by that much.
MODAL_ROUNDING_ULPS = COND_LIMIT

# scipy's expm (Pade 13 with scaling and squaring) has a backward error of about one ulp, but
# each of its s squarings can double the forward error; for the ||A t|| <= ~100 of these tests
# s <= 7, i.e. ~2^7 ulps of the largest entry, which bounds the output relative to its peak.
# 256 ulps of the peak leaves a factor of 2 for the output map and a closed form's own rounding.
EXPM_ROUNDING_ULPS = 256.0


def assert_close_to_peak(
    actual: ArrayLike,
    desired: ArrayLike,
    *,
    peak_ulps: float,
    rtol: float = 0.0,
    time_axis: int = 0,
) -> None:
    """Assert ``|actual - desired| <= peak_ulps * eps * peak + rtol * |desired|`` elementwise.

    ``peak`` is the largest ``|desired|`` of each channel along ``time_axis`` (a 1-D array is
    one channel), so a value that has decayed is held to the error of its channel's peak.
    """
    a = np.asarray(actual, dtype=np.float64)
    d = np.asarray(desired, dtype=np.float64)
    assert a.shape == d.shape, f"shapes differ: {a.shape} != {d.shape}"
    if d.size == 0:
        return
    peak = np.max(np.abs(d), axis=time_axis, keepdims=True)
    bound = peak_ulps * EPS * peak + rtol * np.abs(d)
    error = np.abs(a - d)
    bad = ~(error <= bound)  # also catches NaN
    if bad.any():
        worst = np.unravel_index(int(np.argmax(np.where(bad, error - bound, -np.inf))), d.shape)
        peak_at = float(np.broadcast_to(peak, d.shape)[worst])
        raise AssertionError(
            f"{int(bad.sum())} of {d.size} values differ by more than {peak_ulps:g} ulps of "
            f"their channel's peak (+ rtol {rtol:g}); worst at {worst}: actual "
            f"{float(a[worst])!r}, desired {float(d[worst])!r}, error "
            f"{float(error[worst]) / (EPS * peak_at) if peak_at else float('inf'):.1f} ulps "
            f"of the peak {peak_at!r}"
        )
