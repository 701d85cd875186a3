"""The model equations: compartments, inputs and outputs as a batched linear system.

    dx/dt = A x + B u(t),    y = C x

x holds amounts in mcg (CSF, optional peripheral CSF, tissue depot, plasma) and the effect-site
concentration in ng/mL; u holds the two input rates in mcg/h (route 0: intrathecal at the
catheter tip, NONMEM CMT 1; route 1: tissue/subcutaneous depot, CMT 2); y holds the four
reported concentrations in ng/mL. Every array has a leading patient axis so a population is
one batch.

Flows (all first order):
- CSF -> blood by bulk flow of CSF, CL_csf (the label: clearance ~ CSF turnover).
- CSF <-> peripheral CSF, Q (only when the second compartment is on).
- blood -> CSF, ratio * CL_csf (oral penetration: CSF ~12 % of plasma at steady state).
- tissue depot -> blood, ka, with bioavailability F on entry to the depot.
- blood -> elimination, CL_sys * (WT/70)^0.75.
- effect site follows the tip concentration with ke0 (a virtual compartment: no mass).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from itpump.emulator.pk.parameters import (
    CLEARANCE_WEIGHT_EXPONENT,
    REFERENCE_WEIGHT_KG,
    VOLUME_WEIGHT_EXPONENT,
    FloatArray,
)

# mcg/mL -> ng/mL
NG_PER_MCG = 1000.0

ROUTE_CSF = 0
ROUTE_TISSUE = 1
N_ROUTES = 2

OUTPUT_NAMES: tuple[str, ...] = (
    "csf_lumbar_ng_per_ml",
    "csf_cisternal_ng_per_ml",
    "plasma_ng_per_ml",
    "effect_ng_per_ml",
)


@dataclass(frozen=True)
class CompartmentLayout:
    """Index of each state in x; `csf_peripheral` is None when that compartment is off."""

    csf: int
    csf_peripheral: int | None
    depot: int
    plasma: int
    effect: int

    @property
    def size(self) -> int:
        """Number of states."""
        return self.effect + 1

    @classmethod
    def for_structure(cls, has_csf_peripheral: bool) -> CompartmentLayout:
        """The layout with or without the peripheral CSF compartment."""
        if has_csf_peripheral:
            return cls(csf=0, csf_peripheral=1, depot=2, plasma=3, effect=4)
        return cls(csf=0, csf_peripheral=None, depot=1, plasma=2, effect=3)


@dataclass(frozen=True)
class LinearSystem:
    """Batched A (P,n,n), B (P,n,2) and C (P,4,n) for P patients."""

    layout: CompartmentLayout
    a: FloatArray
    b: FloatArray
    c: FloatArray

    @property
    def n_patients(self) -> int:
        """Batch size P."""
        return int(self.a.shape[0])


def spinal_gradient_factors(
    gradient_length_constant_cm: FloatArray,
    cisternal_distance_cm: FloatArray,
    catheter_tip_cm: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """(lumbar, cisternal) concentration as a fraction of the tip concentration.

    The profile along the neuraxis is C(x) = C_tip * exp(-|x - tip| / lambda), applied at every
    instant (quasi-steady): mixing along the spine is taken as fast next to the hours-long
    kinetics the label reports.
    """
    lumbar = np.exp(-np.abs(catheter_tip_cm) / gradient_length_constant_cm)
    cisternal = np.exp(
        -np.abs(cisternal_distance_cm - catheter_tip_cm) / gradient_length_constant_cm
    )
    return lumbar, cisternal


def build_system(p: Mapping[str, FloatArray], has_csf_peripheral: bool) -> LinearSystem:
    """Assemble A, B, C from per-patient parameter arrays (see `typical_parameter_arrays`)."""
    layout = CompartmentLayout.for_structure(has_csf_peripheral)
    n_patients = int(np.asarray(p["csf_clearance_ml_per_h"]).shape[0])
    n = layout.size
    a = np.zeros((n_patients, n, n))
    b = np.zeros((n_patients, n, N_ROUTES))
    c = np.zeros((n_patients, len(OUTPUT_NAMES), n))

    v_csf = p["csf_volume_ml"]
    cl_csf = p["csf_clearance_ml_per_h"]
    weight_ratio = p["weight_kg"] / REFERENCE_WEIGHT_KG
    cl_sys = p["systemic_clearance_ml_per_h"] * weight_ratio**CLEARANCE_WEIGHT_EXPONENT
    v_plasma = p["plasma_volume_ml"] * weight_ratio**VOLUME_WEIGHT_EXPONENT
    cl_in = p["csf_plasma_penetration_ratio"] * cl_csf
    ka = p["tissue_absorption_rate_per_h"]
    ke0 = p["effect_rate_constant_per_h"]
    csf, depot, plasma, effect = layout.csf, layout.depot, layout.plasma, layout.effect

    a[:, csf, csf] = -cl_csf / v_csf
    a[:, plasma, csf] = cl_csf / v_csf
    if layout.csf_peripheral is not None:
        q = p["csf_intercompartmental_clearance_ml_per_h"]
        v2 = p["csf_peripheral_volume_ml"]
        peripheral = layout.csf_peripheral
        a[:, csf, csf] -= q / v_csf
        a[:, peripheral, csf] = q / v_csf
        a[:, csf, peripheral] = q / v2
        a[:, peripheral, peripheral] = -q / v2
    a[:, plasma, plasma] = -(cl_sys + cl_in) / v_plasma
    a[:, csf, plasma] = cl_in / v_plasma
    a[:, depot, depot] = -ka
    a[:, plasma, depot] = ka
    a[:, effect, csf] = ke0 * NG_PER_MCG / v_csf
    a[:, effect, effect] = -ke0

    b[:, csf, ROUTE_CSF] = 1.0
    b[:, depot, ROUTE_TISSUE] = p["tissue_bioavailability"]

    lumbar, cisternal = spinal_gradient_factors(
        p["gradient_length_constant_cm"], p["cisternal_distance_cm"], p["catheter_tip_cm"]
    )
    c[:, 0, csf] = NG_PER_MCG / v_csf * lumbar
    c[:, 1, csf] = NG_PER_MCG / v_csf * cisternal
    c[:, 2, plasma] = NG_PER_MCG / v_plasma
    c[:, 3, effect] = 1.0
    return LinearSystem(layout=layout, a=a, b=b, c=c)
