"""The patient side of an emulated pump: drug leaving the catheter becomes concentrations.

Two views of the same exact PK solution (emulator/pk):
- `LivePatient` is fed tip segments as the simulation runs (for the rig's truth queries);
- `concentration_columns` evaluates a whole recorded run on an output grid in one vectorised
  call (for timeseries.csv and the report).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from itpump.emulator.pk import Concentrations, DoseSchedule, PKModel, PKState
from itpump.emulator.recorder import FloatArray, Recorder
from itpump.firmware_stubs.drug_library import DrugLibrary


def pk_model_for(
    library: DrugLibrary, drugs: list[str], weight_kg: float, catheter_tip_cm: float
) -> PKModel | None:
    """The patient's PK model for the drugs physically filled: the label's baclofen model
    when any of them has it (it is fed that drug's mass only, see `FluidPath`), else None
    (no concentration output). An unknown name or a drug without a PK model is never given
    baclofen's."""
    for drug in drugs:
        entry = library.find(drug)
        if entry is not None and entry.has_pk:
            return PKModel.baclofen_default(weight_kg=weight_kg, catheter_tip_cm=catheter_tip_cm)
    return None

CONCENTRATION_COLUMNS = (
    "csf_lumbar_ng_per_ml",
    "csf_cisternal_ng_per_ml",
    "plasma_ng_per_ml",
    "effect_ng_per_ml",
)


class LivePatient:
    """Incremental PK state, advanced by the tip segments the hardware reports.

    Segments are held until something reads the patient (`at`, a tissue bolus): a served
    pump reports a segment at every telemetry request, and a PK step each time (~20 µs) was a
    tenth of an interrogate while nobody asked for a concentration. A segment that continues
    the last held one at the same rates extends it, so a steady infusion holds one; at most
    `MAX_PENDING` are held before they are applied.
    """

    MAX_PENDING = 64

    def __init__(self, model: PKModel, t0_h: float = 0.0) -> None:
        self.model = model
        self._state: PKState = model.initial_state(t0_h)
        # (t0_h, t1_h, csf mcg/h, tissue mcg/h) reported but not yet applied to `_state`.
        self._pending: list[tuple[float, float, float, float]] = []

    def __setstate__(self, state: dict[str, object]) -> None:
        # A pump stored before segments were held had its state under `state`, none pending.
        if "state" in state:
            state["_state"] = state.pop("state")
        state.setdefault("_pending", [])
        self.__dict__.update(state)

    @property
    def state(self) -> PKState:
        """The state after every segment reported so far (at the end of the last one)."""
        self._apply_pending()
        return self._state

    def _apply_pending(self) -> None:
        pending = self._pending
        if not pending:
            return
        model = self.model
        state = self._state
        for t0_h, t1_h, csf, tissue in pending:
            if t0_h > state.time_h:
                state = model.advance(state, t0_h - state.time_h, 0.0, 0.0)
            state = model.advance(state, t1_h - t0_h, csf, tissue)
        pending.clear()
        self._state = state

    def _advance_to(self, t_h: float) -> None:
        self._apply_pending()
        if t_h > self._state.time_h:
            self._state = self.model.advance(self._state, t_h - self._state.time_h, 0.0, 0.0)

    def on_segment(self, t0_h: float, t1_h: float, csf: float, tissue: float) -> None:
        """Drug left the tip at `csf` mcg/h (and reached tissue at `tissue` mcg/h) on [t0, t1]."""
        pending = self._pending
        if pending:
            last_t0, last_t1, last_csf, last_tissue = pending[-1]
            if last_t1 == t0_h and last_csf == csf and last_tissue == tissue:
                pending[-1] = (last_t0, t1_h, csf, tissue)
                return
            if len(pending) >= self.MAX_PENDING:
                self._apply_pending()
        pending.append((t0_h, t1_h, csf, tissue))

    def on_bolus(self, t_h: float, tissue_mcg: float) -> None:
        """An instantaneous amount reached tissue."""
        self._advance_to(t_h)
        self._state = self.model.add_bolus(self._state, tissue_mcg=tissue_mcg)

    def at(self, t_h: float) -> Concentrations:
        """Concentrations at `t_h` (no input after the last reported segment)."""
        state = self.state
        if t_h > state.time_h:
            state = self.model.advance(state, t_h - state.time_h, 0.0, 0.0)
        return self.model.concentrations(state)


def contiguous_segments(recorder: Recorder) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Recorded tip segments (with gaps of no flow) as back-to-back segment starts and rates
    of the PK-modelled drug."""
    t0 = np.asarray(recorder.seg_t0_h)
    t1 = np.asarray(recorder.seg_t1_h)
    csf = np.asarray(recorder.seg_pk_csf_mcg_per_h)
    tissue = np.asarray(recorder.seg_pk_tissue_mcg_per_h)
    if len(t0) == 0:
        return np.full(1, recorder.start_h), np.zeros(1), np.zeros(1)
    # After each segment, a zero-rate segment that the next start (or nothing) supersedes.
    starts = np.empty(2 * len(t0))
    starts[0::2] = t0
    starts[1::2] = t1
    rates_csf = np.zeros_like(starts)
    rates_csf[0::2] = csf
    rates_tis = np.zeros_like(starts)
    rates_tis[0::2] = tissue
    # Drop zero-length gaps (a segment ending where the next begins).
    keep = np.ones(len(starts), dtype=bool)
    keep[1:-1:2] = t1[:-1] < t0[1:]
    return starts[keep], rates_csf[keep], rates_tis[keep]


def concentration_columns(
    model: PKModel | None, recorder: Recorder, times_h: npt.ArrayLike
) -> dict[str, FloatArray]:
    """CSF lumbar / cisternal, plasma and effect-site concentrations at `times_h`.

    With a bounded recorder, `times_h` must not precede `recorder.start_h`. Without a model
    (a drug the drug library gives no PK model) every column is NaN: no concentration output,
    rather than another drug's.
    """
    if model is None:
        nan = np.full(np.shape(np.asarray(times_h, dtype=np.float64)), np.nan)
        return {name: nan.copy() for name in CONCENTRATION_COLUMNS}
    starts, csf, tissue = contiguous_segments(recorder)
    prediction = model.predict(
        DoseSchedule(
            seg_start_h=starts,
            seg_csf_rate_mcg_per_h=csf,
            seg_tissue_rate_mcg_per_h=tissue,
            bolus_t_h=np.asarray(recorder.tissue_bolus_t_h),
            bolus_csf_mcg=np.zeros(len(recorder.tissue_bolus_t_h)),
            bolus_tissue_mcg=np.asarray(recorder.tissue_bolus_pk_mcg),
        ),
        np.asarray(times_h, dtype=np.float64),
        # A bounded recorder carries the patient's state at the start of what it kept.
        initial_state=recorder.origin_pk_state,
    )
    values = prediction.as_dict()
    return {name: values[name] for name in CONCENTRATION_COLUMNS}
