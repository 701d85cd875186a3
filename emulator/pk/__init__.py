"""PK/PD engine: drug mass delivered at the catheter tip -> CSF, plasma and effect-site
concentrations, calibrated to the intrathecal baclofen label (docs/pk.md)."""

from itpump.emulator.pk.model import Concentrations, PKModel, PKState, Prediction
from itpump.emulator.pk.parameters import BACLOFEN_VARIABILITY_CV_PERCENT, PKParameters
from itpump.emulator.pk.schedule import InputSchedule

__all__ = [
    "BACLOFEN_VARIABILITY_CV_PERCENT",
    "Concentrations",
    "InputSchedule",
    "PKModel",
    "PKParameters",
    "PKState",
    "Prediction",
]
