"""What the pump knows about its fluid path being empty, and so whether it may prime.

A priming bolus pushes the path volume at the maximum rate. Into an empty catheter that only
fills it; into a full one it pushes that volume of drug into the CSF within the hour (issue 10:
977 mcg at 2000 mcg/mL). A real pump allows it only when it knows the path holds no drug
(public practice, docs/clinical.md):

- new implant: catheter and pump tubing were never filled;
- catheter revision: the new catheter is empty (the pump tubing keeps its drug);
- dry reservoir: the tubing may have drawn air, believed only when
  (a) the pump's reservoir estimate reached 0 mL (it ran its estimated reservoir dry, at the
      minimum rate after the empty alarm; a pump with no minimum rate never gets there), or
  (b) at a refill the clinician's measured aspirated residual is at or below
      `FirmwareConfig.dry_aspirate_ml` (a truly dry reservoir).

Why not the empty alarm itself: it fires while the estimate still holds
`empty_reservoir_alarm_ml` (0.5 mL on the shipped profiles), so by the pump's own estimate the
reservoir and the tubing are still full of drug. A tubing prime after a refill then pushes the
tubing volume of drug into the CSF within the hour (a review story: 400 mcg, CSF peak
5372 ng/mL, above the range for 4.5 h). The measured residual is better evidence than the
estimate: a refill whose aspirated residual is above the dry threshold clears a dry-reservoir
belief from (a) (the reservoir was not dry, so neither was the tubing); a refill with no
measured residual leaves the belief as it is.

The firmware keeps `unprimed_ml`, the volume of the path it believes holds no drug. Every
volume it commands (priming, basal, boluses) fills that first, so once it reaches 0 a prime is
refused. It is a belief, like the reservoir estimate: the truth may differ both ways (an
over-infusing pump may draw air before its estimate reaches 0; an estimate run to 0 on an
under-infusing pump, refilled without a measured residual, allows a tubing-volume prime that
pushes drug, as on a real pump).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class PathEmptied(StrEnum):
    """Why the pump believes part of its path holds no drug."""

    NONE = "none"  # full of drug: priming refused
    NEW_IMPLANT = "new_implant"
    CATHETER_REVISION = "catheter_revision"
    EMPTY_RESERVOIR = "empty_reservoir"  # believed dry: estimate at 0 mL or a dry aspirate


@dataclass(frozen=True, slots=True)
class PathState:
    """Volume of the fluid path the pump believes is not filled with drug, and why.

    `catheter_empty_ml` is the part of `unprimed_ml` that lies in the current catheter (at
    the tip end); the rest is in the pump tubing. A revision removes the old catheter with its
    empty part, so only the tubing's empty part carries over (issue 10: two revisions recorded
    for one operation otherwise counted the new catheter twice and a prime pushed drug)."""

    unprimed_ml: float
    reason: PathEmptied
    catheter_empty_ml: float = 0.0

    @staticmethod
    def new_implant(path_volume_ml: float, catheter_ml: float = 0.0) -> PathState:
        """As shipped: nothing in catheter or tubing."""
        return PathState(path_volume_ml, PathEmptied.NEW_IMPLANT, catheter_ml)

    @property
    def primable(self) -> bool:
        """Whether a priming bolus may run."""
        return self.unprimed_ml > _FILLED_ML

    @property
    def tubing_empty_ml(self) -> float:
        """The empty part of the pump tubing."""
        return max(self.unprimed_ml - self.catheter_empty_ml, 0.0)

    def filled(self, volume_ml: float) -> PathState:
        """`volume_ml` was pushed in at the pump end: it fills the empty part first, the
        tubing before the catheter (the drug front advances from the pump)."""
        left = self.unprimed_ml - volume_ml
        if left <= _FILLED_ML:
            return PathState(0.0, PathEmptied.NONE)
        into_catheter_ml = max(volume_ml - self.tubing_empty_ml, 0.0)
        catheter_left_ml = max(self.catheter_empty_ml - into_catheter_ml, 0.0)
        return PathState(left, self.reason, min(catheter_left_ml, left))

    def catheter_set(self, catheter_ml: float, path_volume_ml: float) -> PathState:
        """Catheter settings entered: at a new implant the whole new path is empty; later it
        is a correction of the record, not a new catheter (use a revision for that)."""
        if self.reason is PathEmptied.NEW_IMPLANT:
            return PathState(path_volume_ml, PathEmptied.NEW_IMPLANT, catheter_ml)
        return self

    def catheter_revised(self, catheter_ml: float, path_volume_ml: float) -> PathState:
        """A new catheter was implanted: it is empty; the old one left with its empty part, so
        only the empty part of the tubing adds to it."""
        reason = (
            PathEmptied.NEW_IMPLANT
            if self.reason is PathEmptied.NEW_IMPLANT
            else PathEmptied.CATHETER_REVISION
        )
        unprimed_ml = min(self.tubing_empty_ml + catheter_ml, path_volume_ml)
        return PathState(unprimed_ml, reason, min(catheter_ml, unprimed_ml))

    def reservoir_emptied(self, tubing_ml: float) -> PathState:
        """The pump believes its reservoir ran dry (estimate at 0 mL, or a dry aspirate at a
        refill): the tubing may have drawn air, pushing its drug on into the catheter."""
        if self.unprimed_ml >= tubing_ml:
            return PathState(self.unprimed_ml, self.reason, self.unprimed_ml - tubing_ml)
        reason = PathEmptied.EMPTY_RESERVOIR if self.reason is PathEmptied.NONE else self.reason
        return PathState(tubing_ml, reason, 0.0)

    def reservoir_not_dry(self) -> PathState:
        """A refill measured a residual above the dry threshold: the reservoir never ran dry,
        so a dry-reservoir belief is withdrawn (a new or revised catheter stays empty)."""
        if self.reason is PathEmptied.EMPTY_RESERVOIR:
            return PathState(0.0, PathEmptied.NONE)
        return self


# Below this the path counts as full (float rounding of the settled volumes).
_FILLED_ML = 1e-9
