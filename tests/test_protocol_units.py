"""Float <-> fixed-point conversions and the recommended timeout."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from itpump.protocol import units
from itpump.protocol.connection import DEFAULT_TIMEOUT_S, recommended_timeout_s


def test_examples() -> None:
    assert units.ng_from_mcg(400.0) == 400_000
    assert units.ng_from_mcg(0.0005) == 0  # below half a nanogram
    assert units.nl_from_ml(0.048) == 48_000
    assert units.nl_from_ul(2.6) == 2600
    assert units.mm_from_cm(110.0) == 1100
    assert units.epoch_s_from_float(1_767_261_600.9) == 1_767_261_600
    assert units.milli_from_float(-1.0) == -1000
    assert units.mcg_from_ng(1) == 0.001
    assert units.ml_from_nl(2_000_000) == 2.0
    assert units.ul_from_nl(2600) == 2.6
    assert units.cm_from_mm(1100) == 110.0
    assert units.float_from_milli(2600) == 2.6


@given(st.floats(0, 1e6, allow_nan=False))
def test_round_trip_within_half_a_unit(mcg: float) -> None:
    assert math.isclose(units.mcg_from_ng(units.ng_from_mcg(mcg)), mcg, abs_tol=0.0005 + 1e-9)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_values_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="wire"):
        units.ng_from_mcg(bad)
    with pytest.raises(ValueError, match="time"):
        units.epoch_s_from_float(bad)


def test_recommended_timeout() -> None:
    assert recommended_timeout_s(19_200) == DEFAULT_TIMEOUT_S
    assert recommended_timeout_s(9_600, 100) == pytest.approx(0.25 + 12_000 / 9_600)
