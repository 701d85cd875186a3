"""Refusals: the firmware's way of saying no without changing anything."""

from __future__ import annotations

from itpump.protocol.codes import ResultCode


class Refusal(Exception):
    """A command refused with a specific code; `detail` names the field and allowed range."""

    def __init__(self, code: ResultCode, detail: str) -> None:
        super().__init__(f"{code.name}: {detail}")
        self.code = code
        self.detail = detail


def check_range(field: str, value: float, low: float, high: float, unit: str = "") -> None:
    """Refuse with OUT_OF_RANGE unless low <= value <= high (NaN is always refused)."""
    if not (low <= value <= high):
        suffix = f" {unit}" if unit else ""
        raise Refusal(
            ResultCode.OUT_OF_RANGE,
            f"{field}={value:g}{suffix} outside allowed range {low:g}..{high:g}{suffix}",
        )
