"""Stroke volume model shared by the closed-form and the stroke-level views of the drive.

Stroke i moves `stroke_volume * (1 + systematic + e_k)` where k = i // block_strokes and e_k is
drawn once per block from N(0, cv^2). The cumulative volume after s strokes (s may be
fractional) is therefore piecewise linear in s, which makes volumes between any two events a
closed-form expression, independent of how often the rig looks: the same seed gives the same
strokes whatever the query pattern.
"""

from __future__ import annotations

import bisect
from array import array

import numpy as np

_CHUNK_BLOCKS = 1024
# A drive never runs backwards: a block factor is floored at 5 % of nominal.
_MIN_FACTOR = 0.05


class StrokeVolumeModel:
    """Cumulative delivered volume as a function of cumulative stroke count."""

    def __init__(
        self,
        stroke_volume_ml: float,
        systematic_fraction: float,
        random_cv_fraction: float,
        block_strokes: int,
        seed: int,
    ) -> None:
        self.stroke_volume_ml = stroke_volume_ml
        self.block_strokes = block_strokes
        self._systematic = systematic_fraction
        self._cv = random_cv_fraction
        self._rng = np.random.default_rng(seed)
        # Packed doubles (8 bytes each; a list of floats takes 32): 64 KiB per pump less in a
        # farm. Indexing still gives Python floats, so the arithmetic is unchanged.
        self._factors = array("d")
        self._cum_ml = array("d", [0.0])  # volume at the start of each block

    def _ensure(self, block: int) -> None:
        while len(self._factors) <= block:
            draws = (
                self._rng.normal(0.0, self._cv, _CHUNK_BLOCKS)
                if self._cv > 0
                else np.zeros(_CHUNK_BLOCKS)
            )
            factors = np.maximum(1.0 + self._systematic + draws, _MIN_FACTOR)
            block_ml = factors * (self.stroke_volume_ml * self.block_strokes)
            cum = self._cum_ml[-1] + np.cumsum(block_ml)
            self._factors.frombytes(np.ascontiguousarray(factors, dtype=np.float64).tobytes())
            self._cum_ml.frombytes(np.ascontiguousarray(cum, dtype=np.float64).tobytes())

    def factor(self, block: int) -> float:
        """Stroke volume multiplier of block `block`."""
        self._ensure(block)
        return self._factors[block]

    def block_of(self, strokes: float) -> int:
        """Block index holding stroke position `strokes`."""
        return int(strokes // self.block_strokes)

    def volume_at(self, strokes: float) -> float:
        """Cumulative volume after `strokes` strokes."""
        k = self.block_of(strokes)
        self._ensure(k)
        return self._cum_ml[k] + self._factors[k] * self.stroke_volume_ml * (
            strokes - k * self.block_strokes
        )

    def strokes_at(self, volume_ml: float) -> float:
        """Inverse of `volume_at`: stroke position where cumulative volume reaches `volume_ml`."""
        while self._cum_ml[-1] < volume_ml:
            self._ensure(len(self._factors))
        k = bisect.bisect_right(self._cum_ml, volume_ml) - 1
        return k * self.block_strokes + (volume_ml - self._cum_ml[k]) / (
            self._factors[k] * self.stroke_volume_ml
        )

    def stroke_volumes_ml(self, first: int, count: int) -> np.ndarray:
        """Volumes of strokes first .. first+count-1 (stroke-level view, same model)."""
        idx = np.arange(first, first + count)
        blocks = idx // self.block_strokes
        if count:
            self._ensure(int(blocks[-1]))
        factors = np.frombuffer(self._factors, dtype=np.float64)[blocks] if count else np.zeros(0)
        return factors * self.stroke_volume_ml
