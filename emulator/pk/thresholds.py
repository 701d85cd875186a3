"""Reference concentrations a clinician reads the PK outputs against, each with its source.

No public source we hold gives a plasma concentration at which intrathecal baclofen causes CNS
depression: the label says only that baclofen "has been shown to have general CNS depressant
properties ... sedation with tolerance, somnolence, ataxia, and respiratory and cardiovascular
depression", that intrathecal plasma is 0-5 ng/mL, and that it is "100 times less" than with
oral administration. The thresholds below are therefore derived, and docs/clinical.md says how:

- CNS depression (`PLASMA_CNS_DEPRESSION_NG_PER_ML`): the top of the plasma range of effective
  oral therapy, label 5 ng/mL x 100 = 500 ng/mL. Oral therapy is where the label's
  CNS-depressant effects (sedation, somnolence) are seen, so plasma at or above this level
  means systemic exposure like full-dose oral baclofen in a patient whose pump is meant to
  keep it 100 times lower. The model's oral comparator agrees: 80 mg/day (the top of the oral
  maintenance range) in four or three doses peaks at 380-430 ng/mL (tests/test_toxicity.py).
- Severe toxicity (`PLASMA_SEVERE_TOXICITY_NG_PER_ML`): coma, delirium and seizures occurred
  only after oral ingestions of 200 mg or more (Leung, Whyte & Isbister, Emerg Med Australas
  2006;18:77-82); the model's oral comparator (F 0.74, ka 1 /h, the label patient's systemic
  disposition) peaks at 2,316 ng/mL after 200 mg. An estimate for a naive adult, not a
  measured toxic level.

The CSF range is the model's steady-state lumbar CSF over the Canadian product monograph's
maintenance doses, 50-1200 mcg/day: dose / the label's CSF clearance (30 mL/h), 69-1667 ng/mL.
The monograph itself pairs that dose range with 130-1240 ng/mL (DOMAIN.md), which the label's
clearance does not reproduce (it puts 1200 mcg/day at 1667 ng/mL, 1240 ng/mL at ~890
mcg/day); with the monograph's figures a steady 1000 mcg/day, inside the labelled dose range,
read as an overdose for a whole run and < ~94 mcg/day as withdrawal. The band is what the
doses mean, so it is taken from the model that turns doses into concentrations
(docs/clinical.md). Below it a patient on therapy is at risk of withdrawal; above it the dose
is beyond any labelled maintenance dose (the supraspinal spread of an intrathecal overdose
shows first in the CSF, not in plasma: a 10x programming error of 2000 mcg/day keeps plasma
near 10 ng/mL).
"""

from __future__ import annotations

from dataclasses import dataclass

from itpump.emulator.pk.parameters import LABEL_CSF_CLEARANCE_ML_PER_H

#: Label: plasma during intrathecal administration, upper end (ng/mL).
LABEL_INTRATHECAL_PLASMA_MAX_NG_PER_ML = 5.0
#: Label: intrathecal plasma is "100 times less" than with oral administration.
LABEL_ORAL_TO_INTRATHECAL_PLASMA_RATIO = 100.0
#: Plasma at which the label's CNS-depressant effects are expected (derived, see above).
PLASMA_CNS_DEPRESSION_NG_PER_ML = (
    LABEL_INTRATHECAL_PLASMA_MAX_NG_PER_ML * LABEL_ORAL_TO_INTRATHECAL_PLASMA_RATIO
)
#: Oral ingestion above which coma, delirium and seizures were seen (Leung 2006), mg.
SEVERE_TOXICITY_ORAL_DOSE_MG = 200.0
#: The oral comparator's plasma peak after that ingestion (tests/test_toxicity.py checks it).
PLASMA_SEVERE_TOXICITY_NG_PER_ML = 2316.0
#: Canadian product monograph: the maintenance dose range, mcg/day.
MONOGRAPH_DOSE_LOW_MCG_PER_DAY = 50.0
MONOGRAPH_DOSE_HIGH_MCG_PER_DAY = 1200.0
#: The monograph's own CSF figures for that range; not used (they disagree with the model).
MONOGRAPH_CSF_NG_PER_ML = (130.0, 1240.0)


def steady_state_csf_ng_per_ml(dose_mcg_per_day: float) -> float:
    """Lumbar CSF of a steady intrathecal infusion: rate / the label's CSF clearance (the
    plasma's back-flow into the CSF adds < 1 %; tests/test_toxicity.py checks the model)."""
    return dose_mcg_per_day / 24.0 / LABEL_CSF_CLEARANCE_ML_PER_H * 1000.0


#: Steady state of the monograph's dose range in the model, whole ng/mL (69-1667).
CSF_THERAPEUTIC_LOW_NG_PER_ML = float(
    round(steady_state_csf_ng_per_ml(MONOGRAPH_DOSE_LOW_MCG_PER_DAY))
)
CSF_THERAPEUTIC_HIGH_NG_PER_ML = float(
    round(steady_state_csf_ng_per_ml(MONOGRAPH_DOSE_HIGH_MCG_PER_DAY))
)


@dataclass(frozen=True, slots=True)
class ReferenceLevels:
    """The levels one drug's concentrations are read against. They belong to the drug's PK
    model (`pk_model`, as the drug library names it): a drug without a PK model has none, and
    is never drawn or judged against another drug's."""

    pk_model: str
    label_intrathecal_plasma_max_ng_per_ml: float
    plasma_cns_depression_ng_per_ml: float
    plasma_severe_toxicity_ng_per_ml: float
    csf_low_ng_per_ml: float
    csf_high_ng_per_ml: float


BACLOFEN = ReferenceLevels(
    pk_model="baclofen",
    label_intrathecal_plasma_max_ng_per_ml=LABEL_INTRATHECAL_PLASMA_MAX_NG_PER_ML,
    plasma_cns_depression_ng_per_ml=PLASMA_CNS_DEPRESSION_NG_PER_ML,
    plasma_severe_toxicity_ng_per_ml=PLASMA_SEVERE_TOXICITY_NG_PER_ML,
    csf_low_ng_per_ml=CSF_THERAPEUTIC_LOW_NG_PER_ML,
    csf_high_ng_per_ml=CSF_THERAPEUTIC_HIGH_NG_PER_ML,
)
_BY_PK_MODEL = {levels.pk_model: levels for levels in (BACLOFEN,)}


def for_pk_model(pk_model: str) -> ReferenceLevels | None:
    """The reference levels of a drug library PK model name; None for "none" (no PK model)."""
    return _BY_PK_MODEL.get(pk_model)


@dataclass(frozen=True, slots=True)
class Exposure:
    """How one set of concentrations compares with the reference levels."""

    plasma_above_cns_depression: bool
    plasma_above_severe_toxicity: bool
    csf_above_therapeutic: bool
    csf_below_therapeutic: bool

    @property
    def flags(self) -> list[str]:
        """Names of the conditions that hold, e.g. ['plasma_above_cns_depression']."""
        return [name for name in self.__slots__ if getattr(self, name)]


def classify(csf_lumbar_ng_per_ml: float, plasma_ng_per_ml: float) -> Exposure:
    """Compare lumbar CSF and plasma with the reference levels of this module."""
    return Exposure(
        plasma_above_cns_depression=plasma_ng_per_ml >= PLASMA_CNS_DEPRESSION_NG_PER_ML,
        plasma_above_severe_toxicity=plasma_ng_per_ml >= PLASMA_SEVERE_TOXICITY_NG_PER_ML,
        csf_above_therapeutic=csf_lumbar_ng_per_ml > CSF_THERAPEUTIC_HIGH_NG_PER_ML,
        csf_below_therapeutic=csf_lumbar_ng_per_ml < CSF_THERAPEUTIC_LOW_NG_PER_ML,
    )
