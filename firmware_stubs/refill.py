"""The aspiration check at a refill: does the residual the clinician withdrew match what the
pump believes is left?

The difference grows with the volume infused since the last refill (a pump that over-infuses
by 10 % is 1.8 mL off after 18 mL, 0.2 mL off after 2 mL), so the tolerance does too: a fixed
floor for the measurement (syringe reading, dead space) plus a fraction of the volume infused
(the mechanism's accuracy). Both are `FirmwareConfig` values:
`refill_tolerance_min_ml` and `refill_tolerance_fraction_of_infused`.
"""

from __future__ import annotations

from itpump.firmware_stubs.config import FirmwareConfig


def aspiration_tolerance_ml(cfg: FirmwareConfig, infused_ml: float) -> float:
    """Largest |aspirated - expected| that is not logged as a discrepancy."""
    return cfg.refill_tolerance_min_ml + cfg.refill_tolerance_fraction_of_infused * max(
        infused_ml, 0.0
    )


def is_discrepancy(
    cfg: FirmwareConfig, expected_ml: float, aspirated_ml: float, infused_ml: float
) -> bool:
    """Whether the measured residual is too far from the estimate to be measurement error."""
    return abs(aspirated_ml - expected_ml) > aspiration_tolerance_ml(cfg, infused_ml)
