"""Pump tubing plus catheter: a first-in first-out column of drug parcels.

Liquid is incompressible, so pushing a volume in at the pump end pushes the same volume out
at the catheter tip. After a concentration change the old drug keeps leaving the tip until
the whole path has been flushed, which is why bridge boluses exist.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

_MERGE_REL = 1e-12


@dataclass(slots=True)
class Parcel:
    """A slug of liquid of uniform concentration.

    `pk_conc_mcg_per_ml` is the part of `conc_mcg_per_ml` that is the drug the patient's PK
    model describes (all of it for baclofen, none for a drug without a PK model, the
    baclofen share of a mixed reservoir): the PK model is fed that mass only, the mass
    balance the total."""

    volume_ml: float
    conc_mcg_per_ml: float
    pk_conc_mcg_per_ml: float = math.nan  # NaN: same as conc_mcg_per_ml

    @property
    def pk_conc(self) -> float:
        """Concentration of the PK-modelled drug."""
        pk = self.pk_conc_mcg_per_ml
        return self.conc_mcg_per_ml if pk != pk else pk

    def __setstate__(self, state: tuple[float, ...]) -> None:
        # Parcels pickled before the PK-modelled share existed hold two fields.
        values = (*state, math.nan)[:3]
        self.volume_ml, self.conc_mcg_per_ml, self.pk_conc_mcg_per_ml = values

    def __getstate__(self) -> tuple[float, float, float]:
        return (self.volume_ml, self.conc_mcg_per_ml, self.pk_conc_mcg_per_ml)


class FluidPath:
    """FIFO of parcels with a fixed total volume."""

    def __init__(self, volume_ml: float, initial_conc_mcg_per_ml: float = 0.0) -> None:
        self.volume_ml = volume_ml
        self._parcels: deque[Parcel] = deque()
        if volume_ml > 0:
            self._parcels.append(Parcel(volume_ml, initial_conc_mcg_per_ml))

    @property
    def mass_mcg(self) -> float:
        """Drug held in the path."""
        return sum(p.volume_ml * p.conc_mcg_per_ml for p in self._parcels)

    @property
    def holds_drug(self) -> bool:
        """Whether any parcel holds drug (a dry-running drive still moves it)."""
        return any(p.conc_mcg_per_ml > 0 and p.volume_ml > 0 for p in self._parcels)

    @property
    def drug_reach_ml(self) -> float:
        """Volume from the tip to the pump-end edge of the last parcel holding drug: what
        must leave the tip before the path holds no drug."""
        reach = self.volume_ml
        for parcel in reversed(self._parcels):
            if parcel.conc_mcg_per_ml > 0 and parcel.volume_ml > 0:
                return max(reach, 0.0)
            reach -= parcel.volume_ml
        return 0.0

    @property
    def tip_conc_mcg_per_ml(self) -> float:
        """Concentration of the liquid about to leave the tip."""
        return self._parcels[0].conc_mcg_per_ml if self._parcels else 0.0

    def parcels(self) -> list[Parcel]:
        """Parcels from tip to pump end (copies)."""
        return [Parcel(p.volume_ml, p.conc_mcg_per_ml, p.pk_conc_mcg_per_ml) for p in self._parcels]

    def replace_tip_end(self, keep_ml: float, new_ml: float) -> float:
        """Keep the `keep_ml` nearest the pump end and put `new_ml` of drug-free liquid on the
        tip side of it (a new catheter). Returns the drug mass removed with the rest."""
        kept: deque[Parcel] = deque()
        need = keep_ml
        for parcel in reversed(self._parcels):
            if need <= 0:
                break
            take = min(parcel.volume_ml, need)
            kept.appendleft(Parcel(take, parcel.conc_mcg_per_ml, parcel.pk_conc_mcg_per_ml))
            need -= take
        removed = self.mass_mcg - sum(p.volume_ml * p.conc_mcg_per_ml for p in kept)
        if new_ml > 0:
            kept.appendleft(Parcel(new_ml, 0.0))
        self._parcels = kept
        self.volume_ml = sum(p.volume_ml for p in kept)
        return removed

    def push(
        self, volume_ml: float, conc_mcg_per_ml: float, pk_conc_mcg_per_ml: float = math.nan
    ) -> list[Parcel]:
        """Push `volume_ml` in at the pump end; returns what left the tip, in exit order.
        `pk_conc_mcg_per_ml`: see `Parcel` (NaN: all of it is the PK-modelled drug)."""
        if volume_ml <= 0:
            return []
        if self.volume_ml <= 0:
            return [Parcel(volume_ml, conc_mcg_per_ml, pk_conc_mcg_per_ml)]
        tail = self._parcels[-1] if self._parcels else None
        if (
            tail is not None
            and abs(tail.conc_mcg_per_ml - conc_mcg_per_ml)
            <= _MERGE_REL * max(tail.conc_mcg_per_ml, conc_mcg_per_ml)
            and _same_pk(tail.pk_conc_mcg_per_ml, pk_conc_mcg_per_ml)
        ):
            tail.volume_ml += volume_ml
        else:
            self._parcels.append(Parcel(volume_ml, conc_mcg_per_ml, pk_conc_mcg_per_ml))
        out: list[Parcel] = []
        excess = volume_ml
        while excess > 0 and self._parcels:
            head = self._parcels[0]
            if head.volume_ml <= excess:
                out.append(self._parcels.popleft())
                excess -= head.volume_ml
            else:
                head.volume_ml -= excess
                out.append(Parcel(excess, head.conc_mcg_per_ml, head.pk_conc_mcg_per_ml))
                excess = 0.0
        return out


def _same_pk(a: float, b: float) -> bool:
    # Both "all of it" (NaN) or equal shares: such parcels merge.
    return (a != a and b != b) or a == b
