"""Single-patient API: the PK/PD model the emulator and `itpump simulate` drive.

    model = PKModel.baclofen_default(weight_kg=70.0)
    state = model.initial_state()
    state = model.advance(state, 2.0, csf_rate_mcg_per_h=12.5)
    state = model.add_bolus(state, csf_mcg=50.0)
    model.concentrations(state).csf_lumbar_ng_per_ml

`advance` is exact for any duration (no time step); `predict` evaluates a whole dosing history
at many output times in one vectorised call.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from itpump.emulator.pk.parameters import PKParameters, typical_parameter_arrays
from itpump.emulator.pk.schedule import DoseSchedule, InputSchedule
from itpump.emulator.pk.solver import DEFAULT_MAX_ELEMENTS, ExactSolver
from itpump.emulator.pk.system import (
    N_ROUTES,
    OUTPUT_NAMES,
    ROUTE_CSF,
    ROUTE_TISSUE,
    CompartmentLayout,
    LinearSystem,
    build_system,
)

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class PKState:
    """Amounts of drug (mcg) in each compartment and the effect-site concentration, at a time.

    `csf_peripheral_mcg` stays 0 unless the model has the second CSF compartment.
    """

    time_h: float = 0.0
    csf_mcg: float = 0.0
    csf_peripheral_mcg: float = 0.0
    depot_mcg: float = 0.0
    plasma_mcg: float = 0.0
    effect_ng_per_ml: float = 0.0


@dataclass(frozen=True)
class Concentrations:
    """Concentrations (ng/mL) at one instant."""

    csf_lumbar_ng_per_ml: float
    csf_cisternal_ng_per_ml: float
    plasma_ng_per_ml: float
    effect_ng_per_ml: float


@dataclass(frozen=True)
class Prediction:
    """Concentrations (ng/mL) at each of `times_h`, as numpy arrays of the same length."""

    times_h: FloatArray
    csf_lumbar_ng_per_ml: FloatArray
    csf_cisternal_ng_per_ml: FloatArray
    plasma_ng_per_ml: FloatArray
    effect_ng_per_ml: FloatArray

    def as_dict(self) -> dict[str, FloatArray]:
        """The arrays keyed by field name (`times_h` included)."""
        return {
            "times_h": self.times_h,
            "csf_lumbar_ng_per_ml": self.csf_lumbar_ng_per_ml,
            "csf_cisternal_ng_per_ml": self.csf_cisternal_ng_per_ml,
            "plasma_ng_per_ml": self.plasma_ng_per_ml,
            "effect_ng_per_ml": self.effect_ng_per_ml,
        }


class PKModel:
    """Intrathecal PK/PD model of one patient; immutable, safe to share."""

    def __init__(self, parameters: PKParameters) -> None:
        self.parameters = parameters
        self.layout = CompartmentLayout.for_structure(parameters.has_csf_peripheral)
        self.system: LinearSystem = build_system(
            typical_parameter_arrays(parameters), parameters.has_csf_peripheral
        )
        self._solver = ExactSolver(self.system)

    def __repr__(self) -> str:
        return f"PKModel({self.parameters!r})"

    @classmethod
    def baclofen_default(
        cls, weight_kg: float = 70.0, *, csf_peripheral: bool = False, **changes: Any
    ) -> PKModel:
        """The calibrated intrathecal baclofen model (parameters and sources: docs/pk.md).

        `csf_peripheral` switches on the second CSF compartment (terminal half-life 4.5 h);
        keyword `changes` override any other `PKParameters` field, e.g. catheter_tip_cm=10.
        """
        if cls is not PKModel:
            parameters = PKParameters.baclofen(weight_kg, csf_peripheral=csf_peripheral)
            return cls(parameters.replace(**changes) if changes else parameters)
        try:
            key = (float(weight_kg), bool(csf_peripheral), tuple(sorted(changes.items())))
            hash(key)
        except TypeError:  # an unhashable override: build it, uncached
            parameters = PKParameters.baclofen(weight_kg, csf_peripheral=csf_peripheral)
            return cls(parameters.replace(**changes) if changes else parameters)
        return _baclofen_model(key)

    def with_parameters(self, **changes: Any) -> PKModel:
        """A model with some parameters changed."""
        return PKModel(self.parameters.replace(**changes))

    @property
    def uses_matrix_exponential(self) -> bool:
        """True when coinciding rate constants route this model through the expm path."""
        return bool(self._solver.uses_matrix_exponential[0])

    # --- state conversions ------------------------------------------------------------------

    def state_vector(self, state: PKState) -> FloatArray:
        """The state as the solver's vector x."""
        layout = self.layout
        x = np.zeros(layout.size)
        x[layout.csf] = state.csf_mcg
        if layout.csf_peripheral is not None:
            x[layout.csf_peripheral] = state.csf_peripheral_mcg
        elif state.csf_peripheral_mcg != 0.0:
            raise ValueError("this model has no peripheral CSF compartment")
        x[layout.depot] = state.depot_mcg
        x[layout.plasma] = state.plasma_mcg
        x[layout.effect] = state.effect_ng_per_ml
        return x

    def state_from_vector(self, time_h: float, x: FloatArray) -> PKState:
        """Inverse of `state_vector`."""
        layout = self.layout
        return PKState(
            time_h=float(time_h),
            csf_mcg=float(x[layout.csf]),
            csf_peripheral_mcg=(
                0.0 if layout.csf_peripheral is None else float(x[layout.csf_peripheral])
            ),
            depot_mcg=float(x[layout.depot]),
            plasma_mcg=float(x[layout.plasma]),
            effect_ng_per_ml=float(x[layout.effect]),
        )

    # --- single-patient stepping ------------------------------------------------------------

    def initial_state(self, time_h: float = 0.0) -> PKState:
        """A drug-free patient at `time_h`."""
        return PKState(time_h=float(time_h))

    def steady_state(
        self, csf_rate_mcg_per_h: float, tissue_rate_mcg_per_h: float = 0.0, time_h: float = 0.0
    ) -> PKState:
        """The state reached after constant rates for ever (a patient already on therapy)."""
        rates = _validated_rates(csf_rate_mcg_per_h, tissue_rate_mcg_per_h)
        a = self.system.a[0]
        b = self.system.b[0]
        try:
            x = np.linalg.solve(a, -(b @ rates))
        except np.linalg.LinAlgError as exc:
            raise ValueError("no steady state: some compartment is never emptied") from exc
        return self.state_from_vector(time_h, x)

    def advance(
        self,
        state: PKState,
        duration_h: float,
        csf_rate_mcg_per_h: float,
        tissue_rate_mcg_per_h: float = 0.0,
    ) -> PKState:
        """The state `duration_h` later under constant input rates (exact for any duration)."""
        if not math.isfinite(duration_h) or duration_h < 0.0:
            raise ValueError(f"duration_h must be finite and >= 0, got {duration_h!r}")
        rates = _validated_rates(csf_rate_mcg_per_h, tissue_rate_mcg_per_h)
        x_next = self._solver.step_one(self.state_vector(state), float(duration_h), rates)
        return self.state_from_vector(state.time_h + duration_h, x_next)

    def add_bolus(self, state: PKState, csf_mcg: float = 0.0, tissue_mcg: float = 0.0) -> PKState:
        """The state right after instantaneous doses into CSF and/or the tissue depot."""
        amounts = _validated_rates(csf_mcg, tissue_mcg, what="bolus amounts")
        x = self.state_vector(state) + self.system.b[0] @ amounts
        return self.state_from_vector(state.time_h, x)

    def concentrations(self, state: PKState) -> Concentrations:
        """Concentrations (ng/mL) in `state`."""
        y = self.system.c[0] @ self.state_vector(state)
        return Concentrations(*(float(value) for value in y))

    # --- whole-history evaluation -------------------------------------------------------------

    def predict(
        self,
        doses: DoseSchedule,
        times_h: ArrayLike,
        *,
        initial_state: PKState | None = None,
        pre_dose: ArrayLike | None = None,
    ) -> Prediction:
        """Concentrations at `times_h` for a whole dosing history, in one vectorised call.

        An output at a bolus time includes the bolus, unless its `pre_dose` flag is set. The
        history starts from `initial_state` (default: drug-free at 0 h); nothing may happen
        before its time. Exact (no time step); a year of ~5,000 segments and ~10,000 times
        takes milliseconds::

            model.predict(DoseSchedule.bolus(50.0), times_h)
            model.predict(DoseSchedule(seg_start_h=[0, 24], seg_csf_rate_mcg_per_h=[8, 10],
                                       bolus_t_h=[12], bolus_csf_mcg=[25]), times_h)
        """
        start = initial_state if initial_state is not None else self.initial_state()
        schedule = doses.normalised(start.time_h)
        times = np.atleast_1d(np.asarray(times_h, float))
        flags = None if pre_dose is None else np.atleast_1d(np.asarray(pre_dose, dtype=bool))
        return self.predict_schedule(schedule, times, initial_state=start, pre_dose=flags)

    def predict_schedule(
        self,
        schedule: InputSchedule,
        times_h: FloatArray,
        *,
        initial_state: PKState | None = None,
        pre_dose: NDArray[np.bool_] | None = None,
        max_elements: int = DEFAULT_MAX_ELEMENTS,
    ) -> Prediction:
        """`predict` for an already normalised `InputSchedule`."""
        start = initial_state if initial_state is not None else self.initial_state(schedule.start_h)
        if start.time_h != schedule.start_h:
            raise ValueError("initial_state.time_h must equal the schedule's start")
        times = np.asarray(times_h, dtype=np.float64)
        y = np.empty((times.shape[0], len(OUTPUT_NAMES)))
        x0 = self.state_vector(start)[None, :]
        for positions, window in self._solver.iter_outputs(
            schedule, times, x0, pre_dose=pre_dose, max_elements=max_elements
        ):
            y[positions] = window[:, 0, :]
        return Prediction(times.copy(), *(np.ascontiguousarray(y[:, i]) for i in range(4)))


@functools.lru_cache(maxsize=64)
def _baclofen_model(key: tuple[float, bool, tuple[tuple[str, Any], ...]]) -> PKModel:
    # A model is immutable and building one (the system, its eigen-decomposition) costs ~0.5
    # ms: a farm of 1000 pumps of the same patient built it 1000 times at start.
    weight_kg, csf_peripheral, changes = key
    parameters = PKParameters.baclofen(weight_kg, csf_peripheral=csf_peripheral)
    return PKModel(parameters.replace(**dict(changes)) if changes else parameters)


def _validated_rates(csf: float, tissue: float, what: str = "rates") -> FloatArray:
    # Plain float checks: this runs once per emulator event, numpy calls would dominate.
    if not (math.isfinite(csf) and math.isfinite(tissue) and csf >= 0.0 and tissue >= 0.0):
        raise ValueError(f"{what} must be finite and >= 0, got csf={csf!r}, tissue={tissue!r}")
    values = np.empty(N_ROUTES)
    values[ROUTE_CSF] = csf
    values[ROUTE_TISSUE] = tissue
    return values
