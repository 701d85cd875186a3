"""Exact solution of the batched linear system for bolus and piecewise-constant inputs.

Between two breakpoints the input is constant, so the state moves by the exact affine map

    x(t0 + d) = e^{A d} x(t0) + (integral_0^d e^{A s} ds) B u.

Two ways of evaluating that map, chosen per patient:
- modal (fast path): A = V diag(lambda) V^-1, so the map is diagonal in z = V^-1 x: every step
  and every output time costs a few elementwise exponentials, for any number of distinct step
  lengths. Used when the eigenvector matrix is well conditioned (cond(V) <= COND_LIMIT).
- matrix exponential (safe path): expm of the augmented matrix [[A, B], [0, 0]] d, which stays
  exact when rate constants coincide and A is defective (V singular); slower, one expm per
  distinct step length, so it only serves the patients the modal path cannot.

The chain of steps x_{k+1} = Phi_k x_k + b_k is solved with a log-depth prefix scan of affine
maps (vectorised over steps and patients, no Python loop over steps) and the outputs between
breakpoints are evaluated directly from the preceding breakpoint. Work is cut into windows of
output times so that memory stays bounded for any population size and run length.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from itpump.emulator.pk.parameters import FloatArray
from itpump.emulator.pk.schedule import InputSchedule
from itpump.emulator.pk.system import LinearSystem

logger = logging.getLogger(__name__)

# Rounding error of the modal path grows like cond(V) * machine epsilon; 1e4 keeps it near
# 1e-12 of the run's concentration scale. The default model has cond ~13; in a virtual
# population about 4 patients in 10,000 (two rate constants within ~0.1 %) take the expm path.
COND_LIMIT = 1.0e4

# Default bound on the elements of one working array (steps or outputs x patients x states x
# routes); 2e6 float64 is 16 MB, so a window's temporaries stay within ~100-200 MB.
DEFAULT_MAX_ELEMENTS = 2_000_000

Array = NDArray[Any]  # float64 or complex128


class _Group(Protocol):
    """One way of evaluating the exact step map, for a subset of patients."""

    @property
    def n_patients(self) -> int: ...

    def to_coords(self, x: FloatArray) -> Array: ...

    def from_coords(self, z: Array) -> FloatArray: ...

    def transition(self, delta_h: FloatArray) -> tuple[Array, Array]: ...

    def forced(self, integral: Array, rates: FloatArray) -> Array: ...

    def jump(self, amounts: FloatArray) -> Array: ...

    def apply(self, phi: Array, z: Array) -> Array: ...

    def compose(self, outer: Array, inner: Array) -> Array: ...

    def outputs(self, z: Array) -> FloatArray: ...

    def combine(
        self, phi: Array, integral: Array, state: Array, rates: FloatArray, out: Array
    ) -> None: ...


def _step(group: _Group, delta_h: FloatArray, rates: FloatArray) -> tuple[Array, Array]:
    """(Phi, forced response from zero) for steps of `delta_h` under constant `rates`."""
    phi, integral = group.transition(delta_h)
    return phi, group.forced(integral, rates)


def _route_gain(g: Array, rates: FloatArray) -> Array:
    """(K, P, n) = g (P, n, m) applied to rates (K, m), as one BLAS product."""
    n_patients, n, m = g.shape
    product = g.reshape(n_patients * n, m) @ rates.T
    result: Array = product.T.reshape(rates.shape[0], n_patients, n)
    return result


@dataclass(frozen=True)
class _ModalGroup:
    lam: Array  # (P, n)
    v: Array  # (P, n, n)
    v_inv: Array  # (P, n, n)
    g: Array  # (P, n, m) = V^-1 B
    h: Array  # (P, o, n) = C V

    @property
    def n_patients(self) -> int:
        return int(self.lam.shape[0])

    def to_coords(self, x: FloatArray) -> Array:
        result: Array = np.einsum("pij,pj->pi", self.v_inv, x)
        return result

    def from_coords(self, z: Array) -> FloatArray:
        return np.ascontiguousarray(np.einsum("pij,pj->pi", self.v, z).real)

    def transition(self, delta_h: FloatArray) -> tuple[Array, Array]:
        x = self.lam[None, :, :] * delta_h[:, None, None]
        phi = np.exp(x)
        # integral_0^d e^{lambda s} ds = expm1(lambda d) / lambda (accurate for small
        # lambda d, where (e^x - 1) / lambda would cancel), and d itself where lambda = 0.
        zero = self.lam == 0.0
        if np.any(zero):
            safe = np.where(zero, 1.0, self.lam)[None, :, :]
            d = np.broadcast_to(delta_h[:, None, None], x.shape)
            integral: Array = np.where(zero[None, :, :], d, np.expm1(x) / safe)
        else:
            integral = np.expm1(x) / self.lam[None, :, :]
        return phi, integral

    def forced(self, integral: Array, rates: FloatArray) -> Array:
        result: Array = integral * _route_gain(self.g, rates)
        return result

    def jump(self, amounts: FloatArray) -> Array:
        return _route_gain(self.g, amounts)

    def apply(self, phi: Array, z: Array) -> Array:
        result: Array = phi * z
        return result

    def compose(self, outer: Array, inner: Array) -> Array:
        result: Array = outer * inner
        return result

    def outputs(self, z: Array) -> FloatArray:
        y: Array = np.einsum("pon,kpn->kpo", self.h, z, optimize=True)
        return y if y.dtype == np.float64 else y.real

    def combine(
        self, phi: Array, integral: Array, state: Array, rates: FloatArray, out: Array
    ) -> None:
        """out = phi * state + integral * (G rates): outputs sharing one breakpoint."""
        np.multiply(phi, state[None, :, :], out=out)
        out += integral * _route_gain(self.g, rates[None, :])


def _reachable(augmented: FloatArray) -> NDArray[np.bool_]:
    """(P, N, N): True where entry (i, j) of exp(M d) can be nonzero, i.e. where i is reachable
    from j in the graph of M's nonzero entries (every power of M is zero elsewhere)."""
    size = augmented.shape[-1]
    reach: NDArray[np.bool_] = (augmented != 0.0) | np.eye(size, dtype=bool)
    # Squaring doubles the path length covered; paths longer than size - 1 repeat a node.
    for _ in range(max(1, (size - 1).bit_length())):
        counts = reach.astype(np.int64)
        reach = np.greater(counts @ counts, 0)
    return reach


@dataclass(frozen=True)
class _ExpmGroup:
    a: FloatArray  # (P, n, n)
    b: FloatArray  # (P, n, m)
    c: FloatArray  # (P, o, n)

    @property
    def n_patients(self) -> int:
        return int(self.a.shape[0])

    def to_coords(self, x: FloatArray) -> Array:
        return x.copy()

    def from_coords(self, z: Array) -> FloatArray:
        return np.ascontiguousarray(z.real)

    def transition(self, delta_h: FloatArray) -> tuple[Array, Array]:
        n_patients, n, m = self.b.shape
        if delta_h.size == 0:
            return np.zeros((0, n_patients, n, n)), np.zeros((0, n_patients, n, m))
        augmented = np.zeros((n_patients, n + m, n + m))
        augmented[:, :n, :n] = self.a
        augmented[:, :n, n:] = self.b
        # One expm per distinct step length: regular grids repeat the same few lengths.
        unique, inverse = np.unique(delta_h, return_inverse=True)
        # Imported here: scipy costs ~0.2 s to import and only the rare safe path needs it
        # (every `itpump simulate` would pay it otherwise).
        from scipy.linalg import expm

        exponentials = expm(augmented[None, :, :, :] * unique[:, None, None, None])
        # expm's Pade solve and squarings leak rounding (~1e-16 of the largest entry) into
        # entries that are exactly zero, e.g. drug in CSF from a tissue dose when nothing flows
        # from blood to CSF: a concentration that must be 0 came out as -7e-14 ng/mL. Those
        # entries are zero in every power of the matrix, so they are zeroed by structure.
        exponentials = np.where(_reachable(augmented)[None], exponentials, 0.0)
        exponentials = exponentials[inverse.reshape(-1)]
        return exponentials[:, :, :n, :n], exponentials[:, :, :n, n:]

    def forced(self, integral: Array, rates: FloatArray) -> Array:
        result: Array = np.einsum("kpnm,km->kpn", integral, rates)
        return result

    def jump(self, amounts: FloatArray) -> Array:
        result: Array = np.einsum("pnm,km->kpn", self.b, amounts)
        return result

    def apply(self, phi: Array, z: Array) -> Array:
        result: Array = np.einsum("...ij,...j->...i", phi, z)
        return result

    def compose(self, outer: Array, inner: Array) -> Array:
        result: Array = outer @ inner
        return result

    def outputs(self, z: Array) -> FloatArray:
        y: Array = np.einsum("pon,kpn->kpo", self.c, z)
        return y.real

    def combine(
        self, phi: Array, integral: Array, state: Array, rates: FloatArray, out: Array
    ) -> None:
        """out = Phi state + Gamma rates: outputs sharing one breakpoint."""
        out[...] = self.apply(phi, state[None, :, :]) + integral @ rates


# Above this many breakpoints among a window's outputs, outputs are gathered in one vectorised
# step rather than evaluated run by run (a Python loop per run).
_MAX_RUNS_PER_WINDOW = 16

# Output offsets (time since the last breakpoint) are shared when they agree to 2^-40 h
# (3 ns), so that a regular output grid needs only a few distinct transition matrices even
# when its times carry rounding noise; the time shift is far below any rate's resolution.
_OFFSET_QUANTUM_H = 2.0**-40
_OFFSET_QUANTUM_LIMIT_H = 1.0e6
# Offsets shorter than this (0.2 s) are kept as they are: there the 2^-41 h shift is no longer
# small next to the offset itself (an output 1e-189 h into a 1e-186 h infusion was moved to the
# infusion's start and read 0), while at 2^-16 h it is at most 2^-25 of the offset.
_OFFSET_QUANTUM_MIN_H = 2.0**-16


def _quantise_offsets(offsets_h: FloatArray) -> FloatArray:
    if offsets_h.size == 0 or offsets_h.max() > _OFFSET_QUANTUM_LIMIT_H:
        return offsets_h
    quantised: FloatArray = np.where(
        offsets_h < _OFFSET_QUANTUM_MIN_H,
        offsets_h,
        np.round(offsets_h / _OFFSET_QUANTUM_H) * _OFFSET_QUANTUM_H,
    )
    return quantised


class _TransitionCache:
    """Transitions for distinct output offsets, kept across windows within a size budget."""

    def __init__(self, group: _Group, max_elements: int) -> None:
        self._group = group
        self._max_elements = max_elements
        self._offsets = np.zeros(0)
        self._phi: Array = np.zeros(0)
        self._integral: Array = np.zeros(0)

    def lookup(self, offsets_h: FloatArray) -> tuple[Array, Array, NDArray[np.intp]]:
        """Tables of (Phi, integral) and the row of each offset in them, computing only
        offsets not seen before. Rows are returned rather than gathered copies so that runs of
        consecutive offsets (a regular output grid) can be read as views."""
        unique, inverse = np.unique(offsets_h, return_inverse=True)
        inverse = inverse.reshape(-1)
        missing = unique[~np.isin(unique, self._offsets, assume_unique=True)]
        if missing.size:
            phi_new, integral_new = self._group.transition(missing)
            per_offset = phi_new[0].size + integral_new[0].size
            if (self._offsets.size + missing.size) * per_offset > self._max_elements:
                # Over budget: forget what was kept; serve this window on its own if even it
                # does not fit (irregular output times), else start keeping afresh.
                self._offsets = np.zeros(0)
                if unique.size * per_offset > self._max_elements:
                    phi, integral = self._group.transition(unique)
                    return phi, integral, inverse
                missing = unique
                phi_new, integral_new = self._group.transition(unique)
            if self._offsets.size == 0:
                self._offsets, self._phi, self._integral = missing, phi_new, integral_new
            else:
                offsets = np.concatenate([self._offsets, missing])
                order = np.argsort(offsets, kind="stable")
                self._offsets = offsets[order]
                self._phi = np.concatenate([self._phi, phi_new])[order]
                self._integral = np.concatenate([self._integral, integral_new])[order]
        index: NDArray[np.intp] = np.searchsorted(self._offsets, unique)[inverse]
        return self._phi, self._integral, index


def _rows(table: Array, index: NDArray[np.intp]) -> Array:
    """table[index], as a view when the rows are consecutive."""
    first = int(index[0])
    if index.size == 1 or np.all(np.diff(index) == 1):
        return table[first : first + index.size]
    result: Array = table[index]
    return result


def _affine_prefix_scan(group: _Group, phi: Array, forcing: Array, z0: Array) -> Array:
    """States Z[0..K] of Z[k+1] = phi_k Z[k] + forcing_k, Z[0] = z0, by a Hillis-Steele scan.

    Composing affine maps (phi2, f2) o (phi1, f1) = (phi2 phi1, phi2 f1 + f2) is associative,
    so log2(K) vectorised passes replace K sequential steps. Every phi is a contraction (the
    system only loses drug), so the products cannot overflow; underflow to 0 is the true limit.
    """
    n_steps = phi.shape[0]
    phi = phi.copy()
    forcing = forcing.copy()
    distance = 1
    while distance < n_steps:
        # Right-hand sides are evaluated from the previous pass before assignment.
        forcing[distance:] = group.apply(phi[distance:], forcing[:-distance]) + forcing[distance:]
        phi[distance:] = group.compose(phi[distance:], phi[:-distance])
        distance *= 2
    states = np.empty((n_steps + 1, *z0.shape), dtype=np.result_type(phi, forcing, z0))
    states[0] = z0
    states[1:] = group.apply(phi, z0[None]) + forcing
    return states


@dataclass(frozen=True)
class _ExtendedSchedule:
    """Steps between extended indices: Z_ext[0] is the initial state, Z_ext[i + 1] the state
    just after the boluses at breakpoint i."""

    breakpoints_h: FloatArray
    rates: FloatArray
    step_delta_h: FloatArray  # (K,): length of step i (0 for the first)
    step_rates: FloatArray  # (K, m): input during step i
    step_jumps: FloatArray  # (K, m): bolus at the end of step i

    @classmethod
    def of(cls, schedule: InputSchedule) -> _ExtendedSchedule:
        breakpoints = schedule.breakpoints_h
        m = schedule.rates_mcg_per_h.shape[1]
        return cls(
            breakpoints_h=breakpoints,
            rates=schedule.rates_mcg_per_h,
            step_delta_h=np.concatenate([[0.0], np.diff(breakpoints)]),
            step_rates=np.concatenate([np.zeros((1, m)), schedule.rates_mcg_per_h[:-1]]),
            step_jumps=schedule.boluses_mcg,
        )

    def advance(self, group: _Group, z: Array, first: int, last: int) -> Array:
        """Z_ext[first..last] given Z_ext[first] = z."""
        steps = slice(first, last)
        phi, forcing = _step(group, self.step_delta_h[steps], self.step_rates[steps])
        forcing = forcing + group.jump(self.step_jumps[steps])
        return _affine_prefix_scan(group, phi, forcing, z)


def _windows(ext_index: NDArray[np.int64], rows: int) -> list[tuple[int, int]]:
    """Cut sorted outputs into [j0, j1) windows needing at most `rows` outputs + states."""
    n = ext_index.shape[0]
    key = np.arange(n) + ext_index
    windows: list[tuple[int, int]] = []
    j0 = 0
    while j0 < n:
        limit = rows - 2 + j0 + int(ext_index[j0])
        j1 = max(j0 + 1, int(np.searchsorted(key, limit, side="right")))
        windows.append((j0, j1))
        j0 = j1
    return windows


class ExactSolver:
    """Exact evaluation of a `LinearSystem` (any number of patients) under an `InputSchedule`."""

    def __init__(self, system: LinearSystem, *, cond_limit: float = COND_LIMIT) -> None:
        self.system = system
        self.n_outputs = int(system.c.shape[1])
        lam, v = np.linalg.eig(system.a)
        with np.errstate(all="ignore"):
            cond = np.linalg.cond(v)
        modal = np.isfinite(cond) & (cond <= cond_limit) & np.all(np.isfinite(lam), axis=1)
        # The modal group spans every patient whenever any patient can use it: ill-conditioned
        # patients get inert placeholders there (their outputs are overwritten by the expm
        # group), so the common case never scatters outputs through an index array.
        self._groups: list[tuple[NDArray[np.intp] | slice, _Group]] = []
        n_patients = system.n_patients
        bad = np.flatnonzero(~modal)
        if bad.size < n_patients:
            lam = lam.copy()
            v = v.copy()
            lam[bad] = -1.0
            v[bad] = np.eye(v.shape[1])
            v_inv = np.linalg.inv(v)
            g = v_inv @ system.b
            h = system.c @ v
            g[bad] = 0.0
            h[bad] = 0.0
            self._groups.append((slice(None), _ModalGroup(lam=lam, v=v, v_inv=v_inv, g=g, h=h)))
        if bad.size:
            logger.debug(
                "%d of %d patients have coinciding rate constants: matrix exponential path",
                bad.size,
                n_patients,
            )
            index: NDArray[np.intp] | slice = slice(None) if bad.size == n_patients else bad
            self._groups.append(
                (index, _ExpmGroup(a=system.a[bad], b=system.b[bad], c=system.c[bad]))
            )
        self._modal = modal

        # One modal patient: unbatched arrays for `step_one`.
        self._one: tuple[Array, Array, Array, Array, bool] | None = None
        if self.system.n_patients == 1 and isinstance(self._groups[0][1], _ModalGroup):
            one = self._groups[0][1]
            self._one = (
                one.lam[0],
                one.v[0],
                one.v_inv[0],
                one.g[0],
                bool(np.any(one.lam[0] == 0.0)),
            )

    @property
    def n_patients(self) -> int:
        """Batch size."""
        return self.system.n_patients

    @property
    def uses_matrix_exponential(self) -> NDArray[np.bool_]:
        """Per patient: True where the safe (expm) path is used."""
        flags: NDArray[np.bool_] = ~self._modal
        return flags

    def step_one(self, x: FloatArray, delta_h: float, rates: FloatArray) -> FloatArray:
        """State (n,) of a one-patient solver after `delta_h` h of constant `rates` (m,).

        The event-driven emulator calls this once per event, so the modal case avoids the
        batched machinery: three small matrix-vector products and two exponentials.
        """
        if self.n_patients != 1:
            raise ValueError("step_one needs a one-patient solver")
        if self._one is None:
            stepped: FloatArray = self.step(x[None, :], delta_h, rates)[0]
            return stepped
        lam, v, v_inv, g, has_zero = self._one
        x_lam = lam * delta_h
        if has_zero:
            safe = np.where(lam == 0.0, 1.0, lam)
            integral = np.where(lam == 0.0, delta_h, np.expm1(x_lam) / safe)
        else:
            integral = np.expm1(x_lam) / lam
        z = np.exp(x_lam) * (v_inv @ x) + integral * (g @ rates)
        result: FloatArray = (v @ z).real
        return result

    def step(self, x: FloatArray, delta_h: float, rates: FloatArray) -> FloatArray:
        """States (P, n) after `delta_h` hours of constant input `rates` (m,)."""
        result = np.empty_like(x)
        delta = np.array([delta_h])
        for index, group in self._groups:
            phi, forcing = _step(group, delta, rates.reshape(1, -1))
            z = group.apply(phi[0], group.to_coords(x[index])) + forcing[0]
            result[index] = group.from_coords(z)
        return result

    def outputs(self, x: FloatArray) -> FloatArray:
        """Outputs (P, o) of states (P, n)."""
        y: FloatArray = np.einsum("pon,pn->po", self.system.c, x)
        return y

    def iter_outputs(
        self,
        schedule: InputSchedule,
        times_h: FloatArray,
        x0: FloatArray,
        *,
        pre_dose: NDArray[np.bool_] | None = None,
        max_elements: int = DEFAULT_MAX_ELEMENTS,
    ) -> Iterator[tuple[NDArray[np.intp], FloatArray]]:
        """Yield (positions in `times_h`, outputs (T_w, P, o)) window by window.

        Outputs at a bolus time include that bolus unless `pre_dose` is True for the output
        (NONMEM's reading of an observation record placed before a dose record).
        """
        times = np.asarray(times_h, dtype=np.float64)
        if times.ndim != 1:
            raise ValueError("times_h must be one-dimensional")
        if not np.all(np.isfinite(times)):
            raise ValueError("times_h must be finite")
        if times.size and times.min() < schedule.start_h:
            raise ValueError(f"output times must not be before the start, {schedule.start_h} h")
        flags = np.zeros(times.shape, dtype=bool) if pre_dose is None else np.asarray(pre_dose)
        if flags.shape != times.shape:
            raise ValueError("pre_dose must have one flag per output time")
        if times.size == 0:
            return
        ext = _ExtendedSchedule.of(schedule)
        breakpoints = schedule.breakpoints_h
        ext_index = np.where(
            flags,
            np.searchsorted(breakpoints, times, side="left"),
            np.searchsorted(breakpoints, times, side="right"),
        ).astype(np.int64)
        order = np.lexsort((ext_index, times))
        times_sorted = times[order]
        ext_sorted = ext_index[order]
        governing = np.maximum(ext_sorted - 1, 0)
        offsets_h = _quantise_offsets(
            np.where(ext_sorted > 0, times_sorted - breakpoints[governing], 0.0)
        )
        out_rates = np.where((ext_sorted > 0)[:, None], schedule.rates_mcg_per_h[governing], 0.0)

        n_states = self.system.a.shape[1]
        n_routes = self.system.b.shape[2]
        per_row = max(1, self.n_patients * n_states * n_routes)
        rows = max(2, max_elements // per_row)
        windows = _windows(ext_sorted, rows)

        carried: list[tuple[int, Array]] = [
            (0, group.to_coords(x0[index])) for index, group in self._groups
        ]
        caches = [_TransitionCache(group, 4 * max_elements) for _, group in self._groups]
        for j0, j1 in windows:
            e_lo, e_hi = int(ext_sorted[j0]), int(ext_sorted[j1 - 1])
            window_ext = ext_sorted[j0:j1]
            # Runs of outputs governed by the same breakpoint (contiguous: times are sorted).
            edges = [0, *(np.flatnonzero(np.diff(window_ext)) + 1).tolist(), j1 - j0]
            y: FloatArray | None = None
            for number, (index, group) in enumerate(self._groups):
                position, z = carried[number]
                # Catch up to the window's first breakpoint without keeping the states between.
                while position < e_lo:
                    stride = min(e_lo - position, rows)
                    z = ext.advance(group, z, position, position + stride)[-1]
                    position += stride
                states = ext.advance(group, z, e_lo, e_hi)
                phi, integral, table_rows = caches[number].lookup(offsets_h[j0:j1])
                if len(edges) - 1 <= _MAX_RUNS_PER_WINDOW:
                    # Few breakpoints in the window (population grids): broadcast each run's
                    # breakpoint state instead of gathering a copy per output.
                    at_outputs = np.empty(
                        (j1 - j0, *states.shape[1:]), dtype=np.result_type(phi, states)
                    )
                    for a, b in itertools.pairwise(edges):
                        group.combine(
                            _rows(phi, table_rows[a:b]),
                            _rows(integral, table_rows[a:b]),
                            states[int(window_ext[a]) - e_lo],
                            out_rates[j0 + a],
                            at_outputs[a:b],
                        )
                else:
                    # Many short runs (irregular histories): one vectorised gather.
                    at_outputs = group.apply(
                        phi[table_rows], states[window_ext - e_lo]
                    ) + group.forced(integral[table_rows], out_rates[j0:j1])
                values = group.outputs(at_outputs)
                if isinstance(index, slice):
                    y = values
                else:
                    if y is None:
                        y = np.empty((j1 - j0, self.n_patients, self.n_outputs))
                    y[:, index, :] = values
                carried[number] = (e_hi, states[-1])
            assert y is not None
            yield order[j0:j1], y
