"""Conversions between the firmware's float units and the protocol's fixed-point integers.

The wire carries integers only (see :mod:`protocol.messages`); these helpers round to the
nearest wire unit so that a value survives a float -> wire -> float round trip to within
half a wire unit.
"""

from __future__ import annotations

import math
import re

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
    "parse_duration_h",
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


_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)")
_UNIT_H = {"w": 168.0, "d": 24.0, "h": 1.0, "m": 1 / 60, "s": 1 / 3600}
_H_PER_YEAR = 8766.0


def _too_long(value: object, max_h: float) -> ValueError:
    if max_h >= _H_PER_YEAR:
        return ValueError(
            f"{value!r} is longer than the {max_h / _H_PER_YEAR:g}-year limit ({max_h:g} h)"
        )
    return ValueError(f"{value!r} is longer than the {max_h:g} h limit")


def parse_duration_h(value: object, max_h: float = math.inf) -> float:
    """'90d', '1d 8h', '30m', '2w' (or a bare number of hours) -> hours, at most ``max_h``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '90d', '1d 8h', '30m'")
    if isinstance(value, int | float):
        number = float(value)
        if number > max_h:  # False for nan: the caller's own check refuses it
            raise _too_long(value, max_h)
        return number
    if not isinstance(value, str):
        raise ValueError("expected a duration such as '90d', '1d 8h', '30m'")
    text = value.strip().lower()
    if text == "0":
        return 0.0
    pos = 0
    total = 0.0
    for match in _DURATION_RE.finditer(text):
        if text[pos : match.start()].strip():
            break
        total += float(match.group(1)) * _UNIT_H[match.group(2)]
        pos = match.end()
        if total > max_h:
            # Checked here, not only by the caller's bound: '9' * 400 parses to inf, and a
            # bare float message would not say which limit applies.
            raise _too_long(value, max_h)
    if pos == 0 or text[pos:].strip():
        raise ValueError(
            f"{value!r} is not a duration; use numbers with units w, d, h, m, s, e.g. '1d 8h'"
        )
    return total
