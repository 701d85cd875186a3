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


def positive_float(text: str) -> float:
    """A number > 0."""
    value = number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def non_negative_float(text: str) -> float:
    """A number >= 0."""
    value = number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def int_in_range(low: int, high: int) -> Callable[[str], int]:
    """A whole number from `low` to `high`; '1e5' is read as 100000 so that a number written
    in exponent form gets the range in its message, not 'not a whole number'."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            as_float = number(text)
            if not (math.isfinite(as_float) and as_float == int(as_float)):
                raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
            value = int(as_float)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low}..{high} (got {text})")
        return value

    parse.__name__ = f"int {low}..{high}"  # argparse names the type in some messages
    return parse


def float_in_range(low: float, high: float, *, low_open: bool = False) -> Callable[[str], float]:
    """A number from `low` (excluded when `low_open`) to `high`; nan and inf are refused."""

    def parse(text: str) -> float:
        value = number(text)
        above_low = value > low if low_open else value >= low
        if not (above_low and value <= high):  # written so that nan fails too
            bracket = "(" if low_open else "["
            raise argparse.ArgumentTypeError(f"must be in {bracket}{low:g}, {high:g}] (got {text})")
        return value

    parse.__name__ = f"number {low:g}..{high:g}"
    return parse
