"""Conversions between the firmware's float units and the protocol's fixed-point integers.

The wire carries integers only (see :mod:`protocol.messages`); these helpers round to the
nearest wire unit so that a value survives a float -> wire -> float round trip to within
half a wire unit.
"""

from __future__ import annotations

import math

__all__ = [
    "NG_PER_MCG",
    "NL_PER_ML",
    "NL_PER_UL",
    "cm_from_mm",
    "epoch_s_from_float",
    "float_from_milli",
    "mcg_from_ng",
    "milli_from_float",
    "ml_from_nl",
    "mm_from_cm",
    "ng_from_mcg",
    "nl_from_ml",
    "nl_from_ul",
    "ul_from_nl",
]

NG_PER_MCG = 1000
NL_PER_ML = 1_000_000
NL_PER_UL = 1000
MM_PER_CM = 10


def _round(value: float) -> int:
    if not math.isfinite(value):
        raise ValueError(f"{value!r} cannot be sent on the wire")
    return round(value)


def ng_from_mcg(mcg: float) -> int:
    """Micrograms (or mcg/day, mcg/mL) to nanograms (ng/day, ng/mL)."""
    return _round(mcg * NG_PER_MCG)


def mcg_from_ng(ng: int) -> float:
    """Nanograms to micrograms (also for per-day and per-mL quantities)."""
    return ng / NG_PER_MCG


def nl_from_ml(ml: float) -> int:
    """Millilitres (or mL/day) to nanolitres (nL/day)."""
    return _round(ml * NL_PER_ML)


def ml_from_nl(nl: int) -> float:
    """Nanolitres to millilitres."""
    return nl / NL_PER_ML


def nl_from_ul(ul: float) -> int:
    """Microlitres (e.g. catheter uL/cm) to nanolitres (nL/cm)."""
    return _round(ul * NL_PER_UL)


def ul_from_nl(nl: int) -> float:
    """Nanolitres to microlitres."""
    return nl / NL_PER_UL


def mm_from_cm(cm: float) -> int:
    """Catheter length in centimetres to millimetres."""
    return _round(cm * MM_PER_CM)


def cm_from_mm(mm: int) -> float:
    """Catheter length in millimetres to centimetres."""
    return mm / MM_PER_CM


def epoch_s_from_float(seconds: float) -> int:
    """A float clock reading to whole seconds since the epoch (rounded down)."""
    if not math.isfinite(seconds):
        raise ValueError(f"{seconds!r} is not a time")
    return math.floor(seconds)


def milli_from_float(value: float) -> int:
    """An event-log argument to its wire form (thousandths)."""
    return _round(value * 1000)


def float_from_milli(value: int) -> float:
    """An event-log argument from its wire form."""
    return value / 1000
