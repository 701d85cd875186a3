"""LivePatient holds the tip segments until someone reads the patient (issue 11)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from itpump.emulator.patient import LivePatient
from itpump.emulator.pk import Concentrations, PKModel


def _stepwise(
    model: PKModel, segments: list[tuple[float, float, float, float]], t_h: float
) -> Concentrations:
    """The reference: every segment applied as it comes, with zero input in the gaps."""
    state = model.initial_state()
    for t0, t1, csf, tissue in segments:
        if t0 > state.time_h:
            state = model.advance(state, t0 - state.time_h, 0.0, 0.0)
        state = model.advance(state, t1 - t0, csf, tissue)
    if t_h > state.time_h:
        state = model.advance(state, t_h - state.time_h, 0.0, 0.0)
    return model.concentrations(state)


def test_held_segments_give_the_concentrations_of_stepping_each_one() -> None:
    model = PKModel.baclofen_default()
    rng = np.random.default_rng(11)
    segments = []
    t = 0.0
    for _ in range(500):
        # Runs of seamless equal-rate pieces (a steady infusion read by telemetry), rate
        # changes, and gaps without flow.
        rate = float(rng.choice([0.0, 8.3, 12.5]))
        for _ in range(int(rng.integers(1, 6))):
            dt = float(rng.uniform(1e-4, 0.5))
            segments.append((t, t + dt, rate, 0.0))
            t += dt
        if rng.random() < 0.2:
            t += float(rng.uniform(0.0, 2.0))
    patient = LivePatient(model)
    for segment in segments:
        patient.on_segment(*segment)
        assert len(patient._pending) <= LivePatient.MAX_PENDING
    live = patient.at(t + 1.0)
    ref = _stepwise(model, segments, t + 1.0)
    for name in ("csf_lumbar_ng_per_ml", "plasma_ng_per_ml", "effect_ng_per_ml"):
        assert getattr(live, name) == pytest.approx(getattr(ref, name), rel=1e-9)


def test_a_steady_infusion_holds_one_segment() -> None:
    patient = LivePatient(PKModel.baclofen_default())
    for i in range(10_000):
        patient.on_segment(i * 1e-3, (i + 1) * 1e-3, 8.3, 0.0)
    assert len(patient._pending) == 1
    assert patient.state.time_h == pytest.approx(10.0)
    assert patient._pending == []


def test_a_tissue_bolus_applies_what_is_held_first() -> None:
    model = PKModel.baclofen_default()
    patient = LivePatient(model)
    patient.on_segment(0.0, 2.0, 10.0, 0.0)
    patient.on_bolus(3.0, 50.0)
    state = model.add_bolus(
        model.advance(model.advance(model.initial_state(), 2.0, 10.0, 0.0), 1.0, 0.0, 0.0),
        tissue_mcg=50.0,
    )
    assert patient.state == state


def test_a_patient_pickled_before_segments_were_held_loads() -> None:
    model = PKModel.baclofen_default()
    patient = LivePatient(model)
    patient.on_segment(0.0, 1.0, 10.0, 0.0)
    old = LivePatient.__new__(LivePatient)
    old.__dict__.update({"model": model, "state": patient.state})  # the former layout
    loaded = pickle.loads(pickle.dumps(old))
    assert loaded.state == patient.state
    loaded.on_segment(1.0, 2.0, 10.0, 0.0)
    assert loaded.at(2.0).csf_lumbar_ng_per_ml > 0
