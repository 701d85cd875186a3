"""Messages shared by the protocol tests: a plain continuous program and a status around it."""

from __future__ import annotations

from itpump.protocol import messages as m

__all__ = ["PROGRAM", "STATUS"]

PROGRAM = m.TherapyProgram(
    max_daily_dose_ng=600_000,
    concentration_ng_per_ml=2_000_000,
    catheter_length_mm=1100,
    catheter_volume_nl_per_cm=2600,
    patient_bolus=None,
    mode=m.ContinuousMode(400_000),
    drug_name="baclofen",
    patient_id="P-0001",
)
STATUS = m.InterrogateResponse(
    time_s=1_700_000_000,
    therapy_state=m.TherapyState.RUNNING,
    reservoir_volume_nl=15_000_000,
    reservoir_capacity_nl=20_000_000,
    low_reservoir_threshold_nl=2_000_000,
    rate_nl_per_day=200_000,
    dose_24h_ng=400_000,
    patient_boluses_24h=0,
    battery_per_mille=870,
    battery_eri=False,
    battery_eos=False,
    projected_low_reservoir_s=None,
    projected_eri_s=None,
    program=PROGRAM,
    alarms=(),
)
