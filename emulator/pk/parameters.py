"""Parameters of the intrathecal baclofen PK/PD model, each with the source of its default.

Every number below is a test target or a documented assumption; docs/pk.md has the same table
with the derivations. Units are in the names: mL, h, mcg, cm, kg; rate constants are per hour.

Sources (the intrathecal baclofen label and the literature cited in docs/pk.md):
- LABEL: Lioresal Intrathecal label, clinical pharmacology (the project seed file).
- KROIN_1993: Kroin, Ali, York & Penn, Neurosurgery 1993;33:226 (spinal CSF gradient).
- PENN_KROIN_1987: terminal CSF half-life ~4-5 h.
- ORAL: Kochak 1985; Agarwal 2015 (J Child Neurol 30:37, absolute oral bioavailability 74 %,
  AUC CV 18-24 %); He 2014 (paediatric oral population PK, CL/F 0.273 L/h/kg, IIV 33 %).
- SALLERIN: Sallerin et al., Eur J Clin Pharmacol (4 patients, CSF half-life 0.9-5 h, CSF
  clearance 13-80 mL/h): the size of inter-individual variability in the CSF.
- CSF_PENETRATION: monographs (Martindale-derived): after oral doses CSF concentrations are
  about 12 % of plasma concentrations (Knutsson, Lindblom & Martensson 1974).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

LN2 = math.log(2.0)

# --- Label figures (LABEL) -------------------------------------------------------------------
LABEL_CSF_HALF_LIFE_H = 1.51
LABEL_CSF_CLEARANCE_ML_PER_H = 30.0
LABEL_LUMBAR_TO_CISTERNAL_RATIO = 4.0

# --- Derived one-compartment CSF figures ------------------------------------------------------
# V = CL / k = CL * t1/2 / ln 2: the volume that makes the label's clearance and half-life agree.
BACLOFEN_CSF_VOLUME_ML = LABEL_CSF_CLEARANCE_ML_PER_H * LABEL_CSF_HALF_LIFE_H / LN2

MAX_CATHETER_TIP_CM = 100.0
"""Largest catheter tip level either side of the lumbar sampling site: the length of the adult
spinal canal, give or take."""

# --- Spinal gradient (KROIN_1993, LABEL) -------------------------------------------------------
# An exponential fall-off with a 22 cm length constant reproduces Kroin's T2/T12 tracer ratio
# (43 % over ~20 cm). The lumbar-to-cisternal distance is then the one that gives the label's
# 4:1 (22 cm * ln 4 = 30.5 cm): an effective distance along the CSF path, not an anatomical one.
BACLOFEN_GRADIENT_LENGTH_CONSTANT_CM = 22.0
BACLOFEN_CISTERNAL_DISTANCE_CM = BACLOFEN_GRADIENT_LENGTH_CONSTANT_CM * math.log(
    LABEL_LUMBAR_TO_CISTERNAL_RATIO
)

# --- Effect compartment (calibrated to the LABEL timings) -------------------------------------
# ke0 = 0.13 /h is the value for which one threshold (half of the peak or of the steady state)
# reproduces every label timing: bolus onset 0.85 h, peak 3.8 h, effect lasting 7.7 h past the
# peak; infusion first effect 7.7 h, maximum (95 % of steady state) 25.6 h. The derived 0.117 /h
# puts the bolus peak at exactly 4.0 h but the infusion's half-maximal time at 8.3 h.
BACLOFEN_EFFECT_RATE_CONSTANT_PER_H = 0.13

# --- Systemic disposition (ORAL) --------------------------------------------------------------
# Oral CL/F 10.8 L/h with F = 0.74 gives CL = 8.0 L/h; Varea/F ~59 L gives V = 43.7 L;
# t1/2 = ln 2 * V / CL = 3.8 h, inside the reported 3.5-4.5 h.
BACLOFEN_ORAL_BIOAVAILABILITY = 0.74
BACLOFEN_SYSTEMIC_CLEARANCE_ML_PER_H = 8000.0
BACLOFEN_PLASMA_VOLUME_ML = 59_000.0 * BACLOFEN_ORAL_BIOAVAILABILITY
REFERENCE_WEIGHT_KG = 70.0
# Allometric exponents (standard theory-based allometry: 0.75 for clearance, 1 for volume).
CLEARANCE_WEIGHT_EXPONENT = 0.75
VOLUME_WEIGHT_EXPONENT = 1.0
# Oral absorption, only used by the oral comparator (tmax ~2 h, inside the reported 0.5-3 h).
BACLOFEN_ORAL_ABSORPTION_RATE_PER_H = 1.0

# --- Plasma -> CSF (CSF_PENETRATION) ------------------------------------------------------------
# Entry into CSF from blood, expressed as the steady-state CSF/plasma ratio it produces; the
# influx clearance is ratio * CSF clearance, so a plasma level Cp alone holds CSF at ratio * Cp.
BACLOFEN_CSF_PLASMA_PENETRATION_RATIO = 0.12

# --- Tissue (subcutaneous) depot: ASSUMPTION --------------------------------------------------
# Drug leaking from a catheter or injected into the pump pocket is absorbed like a subcutaneous
# injection of a small hydrophilic molecule: first order, half-life ~0.7 h, complete.
TISSUE_ABSORPTION_RATE_PER_H = 1.0
TISSUE_BIOAVAILABILITY = 1.0

# --- Optional second CSF compartment (PENN_KROIN_1987) ------------------------------------------
# With CSF clearance fixed at 30 mL/h, these three values give a log-linear half-life of 1.51 h
# over 0.5-4 h after a lumbar bolus (how the label's figure was measured) and a terminal
# half-life of 4.5 h; the two volumes add up to 135 mL, the adult CSF volume.
CSF2_CENTRAL_VOLUME_ML = 67.67
CSF2_PERIPHERAL_VOLUME_ML = 67.67
CSF2_INTERCOMPARTMENTAL_CLEARANCE_ML_PER_H = 22.29


@dataclass(frozen=True)
class PKParameters:
    """Typical-value parameters of one patient; clearances and volumes at `weight_kg`.

    Systemic clearance and plasma volume are given for a 70 kg adult and scaled to `weight_kg`
    allometrically (see `scaled_systemic_clearance_ml_per_h`). CSF parameters do not scale with
    weight: CSF volume and turnover reach adult values in early childhood.
    """

    # CSF (lumbar) compartment, concentration at the catheter tip.
    csf_clearance_ml_per_h: float = LABEL_CSF_CLEARANCE_ML_PER_H
    csf_volume_ml: float = BACLOFEN_CSF_VOLUME_ML
    # Second CSF compartment; a volume of 0 switches it off (the default).
    csf_peripheral_volume_ml: float = 0.0
    csf_intercompartmental_clearance_ml_per_h: float = 0.0
    # Spinal gradient: C(x) = C_tip * exp(-|x - tip| / lambda), x in cm cranial of the lumbar
    # sampling level (lumbar puncture level, where the label's CSF samples were taken).
    gradient_length_constant_cm: float = BACLOFEN_GRADIENT_LENGTH_CONSTANT_CM
    cisternal_distance_cm: float = BACLOFEN_CISTERNAL_DISTANCE_CM
    catheter_tip_cm: float = 0.0
    # Effect site: dCe/dt = ke0 * (C_tip - Ce).
    effect_rate_constant_per_h: float = BACLOFEN_EFFECT_RATE_CONSTANT_PER_H
    # Systemic compartment (70 kg values).
    systemic_clearance_ml_per_h: float = BACLOFEN_SYSTEMIC_CLEARANCE_ML_PER_H
    plasma_volume_ml: float = BACLOFEN_PLASMA_VOLUME_ML
    csf_plasma_penetration_ratio: float = BACLOFEN_CSF_PLASMA_PENETRATION_RATIO
    # Tissue depot.
    tissue_absorption_rate_per_h: float = TISSUE_ABSORPTION_RATE_PER_H
    tissue_bioavailability: float = TISSUE_BIOAVAILABILITY
    # Covariate.
    weight_kg: float = REFERENCE_WEIGHT_KG

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not math.isfinite(value):
                raise ValueError(f"{field.name} must be finite, got {value!r}")
        positive = (
            "csf_clearance_ml_per_h",
            "csf_volume_ml",
            "gradient_length_constant_cm",
            "cisternal_distance_cm",
            "effect_rate_constant_per_h",
            "systemic_clearance_ml_per_h",
            "plasma_volume_ml",
            "weight_kg",
        )
        for name in positive:
            if getattr(self, name) <= 0.0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        non_negative = (
            "csf_peripheral_volume_ml",
            "csf_intercompartmental_clearance_ml_per_h",
            "csf_plasma_penetration_ratio",
            "tissue_absorption_rate_per_h",
            "tissue_bioavailability",
        )
        for name in non_negative:
            if getattr(self, name) < 0.0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.tissue_bioavailability > 1.0:
            raise ValueError("tissue_bioavailability must be <= 1")
        if (self.csf_peripheral_volume_ml > 0.0) != (
            self.csf_intercompartmental_clearance_ml_per_h > 0.0
        ):
            raise ValueError(
                "the second CSF compartment needs both csf_peripheral_volume_ml and "
                "csf_intercompartmental_clearance_ml_per_h > 0 (or both 0 to switch it off)"
            )

    @property
    def has_csf_peripheral(self) -> bool:
        """True when the optional second CSF compartment is switched on."""
        return self.csf_peripheral_volume_ml > 0.0

    @property
    def scaled_systemic_clearance_ml_per_h(self) -> float:
        """Systemic clearance at `weight_kg`: CL70 * (WT/70)^0.75."""
        ratio = self.weight_kg / REFERENCE_WEIGHT_KG
        return float(self.systemic_clearance_ml_per_h * ratio**CLEARANCE_WEIGHT_EXPONENT)

    @property
    def scaled_plasma_volume_ml(self) -> float:
        """Plasma (systemic) volume at `weight_kg`: V70 * (WT/70)."""
        ratio = self.weight_kg / REFERENCE_WEIGHT_KG
        return float(self.plasma_volume_ml * ratio**VOLUME_WEIGHT_EXPONENT)

    def replace(self, **changes: Any) -> PKParameters:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def baclofen(
        cls, weight_kg: float = REFERENCE_WEIGHT_KG, *, csf_peripheral: bool = False
    ) -> PKParameters:
        """Default intrathecal baclofen parameters; `csf_peripheral` adds the slow CSF phase."""
        if csf_peripheral:
            return cls(
                csf_volume_ml=CSF2_CENTRAL_VOLUME_ML,
                csf_peripheral_volume_ml=CSF2_PERIPHERAL_VOLUME_ML,
                csf_intercompartmental_clearance_ml_per_h=CSF2_INTERCOMPARTMENTAL_CLEARANCE_ML_PER_H,
                weight_kg=weight_kg,
            )
        return cls(weight_kg=weight_kg)


# Parameters that may carry inter-individual variability: the ones `build_system` reads.
VARIABLE_PARAMETERS: tuple[str, ...] = (
    "csf_clearance_ml_per_h",
    "csf_volume_ml",
    "csf_peripheral_volume_ml",
    "csf_intercompartmental_clearance_ml_per_h",
    "gradient_length_constant_cm",
    "effect_rate_constant_per_h",
    "systemic_clearance_ml_per_h",
    "plasma_volume_ml",
    "csf_plasma_penetration_ratio",
    "tissue_absorption_rate_per_h",
)

# Default inter-individual variability, CV % of a log-normal distribution.
# CSF: SALLERIN's ranges (half-life 0.9-5 h, clearance 13-80 mL/h in 4 patients) are wide.
# Systemic: ORAL (AUC CV 18-24 % in adults, CL/F IIV 33 % in children) -> 25 %.
# Gradient: the label says the inter-patient variability of the 4:1 ratio "was great" -> 30 %
# on the length constant gives a 90 % range of about 2:1 to 10:1. ke0 and tissue absorption:
# assumptions (the label: onset, peak and duration "may vary with individual patients").
BACLOFEN_VARIABILITY_CV_PERCENT: Mapping[str, float] = MappingProxyType(
    {
        "csf_clearance_ml_per_h": 40.0,
        "csf_volume_ml": 30.0,
        "gradient_length_constant_cm": 30.0,
        "effect_rate_constant_per_h": 40.0,
        "systemic_clearance_ml_per_h": 25.0,
        "plasma_volume_ml": 25.0,
        "tissue_absorption_rate_per_h": 50.0,
    }
)


def cv_percent_to_omega(cv_percent: float) -> float:
    """Log-normal sigma for a CV%: CV = sqrt(exp(omega^2) - 1), so omega^2 = ln(1 + CV^2)."""
    if not math.isfinite(cv_percent) or cv_percent < 0.0:
        raise ValueError(f"CV% must be finite and >= 0, got {cv_percent!r}")
    return math.sqrt(math.log1p((cv_percent / 100.0) ** 2))


def typical_parameter_arrays(
    params: PKParameters, n_patients: int = 1, weights_kg: FloatArray | float | None = None
) -> dict[str, FloatArray]:
    """Every field of `params` as a float array of length `n_patients` (no variability)."""
    arrays = {
        field.name: np.full(n_patients, float(getattr(params, field.name)))
        for field in dataclasses.fields(params)
    }
    if weights_kg is not None:
        weights = np.broadcast_to(np.asarray(weights_kg, dtype=np.float64), (n_patients,))
        if not np.all(np.isfinite(weights)) or np.any(weights <= 0.0):
            raise ValueError("weights_kg must be finite and > 0")
        arrays["weight_kg"] = weights.astype(np.float64, copy=True)
    return arrays


def sample_parameter_arrays(
    params: PKParameters,
    n_patients: int,
    rng: np.random.Generator,
    variability_cv_percent: Mapping[str, float] = BACLOFEN_VARIABILITY_CV_PERCENT,
    weights_kg: FloatArray | float | None = None,
) -> dict[str, FloatArray]:
    """Individual parameters theta_i = theta * exp(eta_i), eta_i ~ N(0, omega^2), vectorised.

    The etas are drawn in one call, one column per entry of VARIABLE_PARAMETERS (in that fixed
    order, whether or not the parameter varies), so a seed gives the same patients whatever the
    variability settings of other parameters and however the population is later chunked.
    """
    if n_patients < 1:
        raise ValueError("n_patients must be >= 1")
    unknown = set(variability_cv_percent) - set(VARIABLE_PARAMETERS)
    if unknown:
        raise ValueError(f"no variability allowed on {sorted(unknown)}")
    arrays = typical_parameter_arrays(params, n_patients, weights_kg)
    eta = rng.standard_normal((n_patients, len(VARIABLE_PARAMETERS)))
    for column, name in enumerate(VARIABLE_PARAMETERS):
        omega = cv_percent_to_omega(variability_cv_percent.get(name, 0.0))
        if omega > 0.0:
            arrays[name] = arrays[name] * np.exp(omega * eta[:, column])
    return arrays
