"""Catheter FIFO and stroke-volume model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from itpump.emulator.hardware.fluid_path import FluidPath
from itpump.emulator.hardware.stroke_model import StrokeVolumeModel


def test_old_drug_leaves_the_tip_first_after_a_concentration_change() -> None:
    path = FluidPath(0.5, initial_conc_mcg_per_ml=500.0)
    out = path.push(0.2, 1000.0)
    assert [(p.volume_ml, p.conc_mcg_per_ml) for p in out] == [(0.2, 500.0)]
    out = path.push(0.4, 1000.0)
    assert [p.conc_mcg_per_ml for p in out] == [500.0, 1000.0]
    assert out[0].volume_ml == pytest.approx(0.3)
    assert out[1].volume_ml == pytest.approx(0.1)
    assert path.mass_mcg == pytest.approx(0.5 * 1000.0)
    assert path.tip_conc_mcg_per_ml == 1000.0


@given(st.lists(st.tuples(st.floats(1e-6, 2.0), st.floats(0.0, 2000.0)), max_size=30))
@settings(max_examples=60, deadline=None)
def test_fifo_conserves_volume_and_mass(pushes: list[tuple[float, float]]) -> None:
    path = FluidPath(0.486, 0.0)
    mass_in = 0.0
    mass_out = 0.0
    vol_out = 0.0
    for volume, conc in pushes:
        out = path.push(volume, conc)
        mass_in += volume * conc
        mass_out += sum(p.volume_ml * p.conc_mcg_per_ml for p in out)
        vol_out += sum(p.volume_ml for p in out)
        assert sum(p.volume_ml for p in path.parcels()) == pytest.approx(0.486)
    assert vol_out == pytest.approx(sum(v for v, _ in pushes), abs=1e-9)
    assert mass_in == pytest.approx(mass_out + path.mass_mcg, rel=1e-12, abs=1e-9)


def test_stroke_model_inverse_and_block_factors() -> None:
    model = StrokeVolumeModel(0.0005, 0.02, 0.05, 100, seed=7)
    for strokes in (0.0, 12.5, 99.999, 100.0, 12345.678):
        assert model.strokes_at(model.volume_at(strokes)) == pytest.approx(strokes, abs=1e-6)
    # Stroke-level volumes add up to the closed-form cumulative volume.
    assert model.stroke_volumes_ml(0, 1000).sum() == pytest.approx(model.volume_at(1000.0))
    # Systematic error shows in the mean.
    assert model.volume_at(1e6) / (1e6 * 0.0005) == pytest.approx(1.02, abs=0.005)


def test_stroke_model_same_seed_same_volumes_whatever_the_query_order() -> None:
    a = StrokeVolumeModel(0.0005, 0.0, 0.03, 50, seed=11)
    b = StrokeVolumeModel(0.0005, 0.0, 0.03, 50, seed=11)
    b.volume_at(10_000_000.0)  # b generates far ahead first
    assert [a.volume_at(s) for s in (1.0, 777.7, 51234.5)] == [
        b.volume_at(s) for s in (1.0, 777.7, 51234.5)
    ]
