"""Faults the rig can inject into the physical pump, with their parameters and ranges."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FaultKind(StrEnum):
    """Every injectable hardware fault (telemetry link faults live in the transport layer)."""

    MOTOR_STALL = "motor_stall"  # drive does not turn; firmware sees it and alarms
    OCCLUSION = "occlusion"  # catheter blocked: nothing reaches the tip, reservoir keeps its drug
    LEAK = "leak"  # part of the flow leaves the catheter into tissue
    DISCONNECTION = "disconnection"  # all of the flow goes to tissue
    FLOW_BIAS = "flow_bias"  # mechanism delivers more (or less) than commanded, unseen
    POCKET_FILL = "pocket_fill"  # the next refill is injected into the pocket, not the reservoir
    BATTERY_DROP = "battery_drop"  # cell suddenly holds less charge (premature ERI/EOS)
    BATTERY_DEAD = "battery_dead"  # no power at all: pump silent, nothing moves
    MEMORY_ERROR = "memory_error"  # non-volatile memory checksum fails
    MRI = "mri"  # strong magnetic field: motor stalls (and may restart late) / valve shuts


# kind -> (parameter, low, high, default); kinds absent here take no parameter.
FAULT_PARAMETERS: dict[FaultKind, tuple[str, float, float, float]] = {
    FaultKind.OCCLUSION: ("severity", 0.0, 1.0, 1.0),
    FaultKind.LEAK: ("fraction", 0.0, 1.0, 0.5),
    FaultKind.FLOW_BIAS: ("percent", -90.0, 200.0, 15.0),
    FaultKind.BATTERY_DROP: ("remaining_pct", 0.0, 100.0, 5.0),
    # A peristaltic drive may not restart at once when the field ends; no delivery for that
    # long after the clear (valve-gated pumps have no motor and ignore it).
    FaultKind.MRI: ("restart_delay_h", 0.0, 168.0, 0.0),
}


class FaultError(ValueError):
    """A fault request with an unknown kind or a parameter out of range."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault and its single parameter (if the kind has one)."""

    kind: FaultKind
    value: float = 0.0

    @staticmethod
    def make(kind: str, value: float | None = None) -> Fault:
        """Validate and build a fault; errors name the parameter and its allowed range."""
        try:
            fk = FaultKind(kind)
        except ValueError:
            allowed = ", ".join(k.value for k in FaultKind)
            raise FaultError(f"unknown fault kind {kind!r}; allowed: {allowed}") from None
        spec = FAULT_PARAMETERS.get(fk)
        if spec is None:
            if value is not None:
                raise FaultError(f"fault {fk.value} takes no parameter")
            return Fault(fk)
        name, low, high, default = spec
        v = default if value is None else value
        if not low <= v <= high:
            raise FaultError(
                f"fault {fk.value}: {name}={v:g} outside allowed range {low:g}..{high:g}"
            )
        return Fault(fk, v)
