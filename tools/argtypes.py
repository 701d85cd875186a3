"""argparse value types shared by the sub-commands: a bad value is a usage error naming it."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def number(text: str) -> float:
    """Any float (nan and inf included: a later range check names them)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _real(text: str) -> float:
    """A number that is not nan (nan compares false with any bound, so a range message
    would be wrong about it)."""
    value = number(text)
    if math.isnan(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    return value


def _whole(text: str) -> int:
    """A whole number; '1e9' is read as 1000000000 so that the range check, not 'not a whole
    number', answers a whole number written in exponent form."""
    try:
        return int(text)
    except ValueError:
        as_float = number(text)
        if not (math.isfinite(as_float) and as_float == int(as_float)):
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        return int(as_float)


def positive_float(text: str) -> float:
    """A number > 0."""
    value = _real(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def non_negative_float(text: str) -> float:
    """A number >= 0."""
    value = _real(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1."""
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def int_in_range(low: int, high: int) -> Callable[[str], int]:
    """A whole number from `low` to `high` (exponent form too: '1e5')."""

    def parse(text: str) -> int:
        value = _whole(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low}..{high} (got {text})")
        return value

    parse.__name__ = f"int {low}..{high}"  # argparse names the type in some messages
    return parse


def float_in_range(low: float, high: float, *, low_open: bool = False) -> Callable[[str], float]:
    """A number from `low` (excluded when `low_open`) to `high`; nan and inf are refused."""

    def parse(text: str) -> float:
        value = _real(text)
        above_low = value > low if low_open else value >= low
        if not (above_low and value <= high):  # written so that nan fails too
            bracket = "(" if low_open else "["
            raise argparse.ArgumentTypeError(f"must be in {bracket}{low:g}, {high:g}] (got {text})")
        return value

    parse.__name__ = f"number {low:g}..{high:g}"
    return parse
