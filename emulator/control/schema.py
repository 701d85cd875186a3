"""JSON shapes of the control API: requests (validated, unknown fields refused) and responses.

These pydantic models are the API's contract: FastAPI validates requests with them and
publishes them in the OpenAPI document (docs/control-openapi.json), from which a rig in any
language can generate its client. Units are in the field names.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from itpump.emulator.faults import FAULT_PARAMETERS, FaultKind
from itpump.emulator.pk.thresholds import classify

if TYPE_CHECKING:
    from itpump.emulator.farm import AlarmStop, PumpSnapshot, ServedPump
    from itpump.emulator.pk import Concentrations
    from itpump.emulator.pump import Truth
    from itpump.firmware_stubs.firmware import PumpStatus

MAX_ADVANCE_H = 10 * 8766.0
"""Longest single advance (ten years): the loop serves no telemetry while time is stepped."""

MAX_SPEED = 1e7
"""Fastest finite speed (simulated s per real s); use "max" for as fast as possible."""

MIN_SPEED = 1e-3
"""Slowest running speed (as `itpump serve --speed`); 0 means stepped."""


class Request(BaseModel):
    """Base of every request body: unknown fields are an error, not silently ignored."""

    # strict: "24" is not 24 and true is not 1 hour; JSON numbers still fill float fields.
    model_config = ConfigDict(extra="forbid", strict=True)


# ---------------------------------------------------------------------- requests
class AdvanceRequest(Request):
    """Run simulated time now: `{"hours": H}`, or `{"until": "next_alarm"}` with an optional
    `limit_hours` (default a year) and `serial` (watch only that pump)."""

    hours: float | None = Field(default=None, ge=0, le=MAX_ADVANCE_H, allow_inf_nan=False)
    until: Literal["next_alarm"] | None = None
    limit_hours: float | None = Field(default=None, gt=0, le=MAX_ADVANCE_H, allow_inf_nan=False)
    serial: str | None = Field(default=None, description="with until: watch only this pump")

    @model_validator(mode="after")
    def _one_way(self) -> AdvanceRequest:
        if (self.hours is None) == (self.until is None):
            raise ValueError('give either "hours" or "until": "next_alarm"')
        if self.hours is not None and (self.limit_hours is not None or self.serial is not None):
            raise ValueError('"limit_hours" and "serial" go with "until", not "hours"')
        return self


DEFAULT_ALARM_LIMIT_H = 24.0 * 365
"""How far `until: next_alarm` runs when no alarm comes and no limit is given."""


class SpeedRequest(Request):
    """Simulated seconds per real second; 0 = stepped (frozen until advanced); "max"."""

    speed: Annotated[float, Field(ge=0, le=MAX_SPEED, allow_inf_nan=False)] | Literal["max"]

    @field_validator("speed")
    @classmethod
    def _stepped_or_running(cls, speed: float | str) -> float | str:
        # Between 0 and the minimum the runtime's waits would overflow for no use.
        if isinstance(speed, float) and 0 < speed < MIN_SPEED:
            raise ValueError(f"speed must be 0 (stepped) or {MIN_SPEED:g}..{MAX_SPEED:g}")
        return speed


class FaultRequest(Request):
    """Start a hardware fault now; `value` is the kind's parameter (see the kind's range)."""

    # Not strict: FastAPI validates the parsed JSON, where the kind is a string.
    kind: FaultKind = Field(strict=False)
    value: float | None = Field(
        default=None,
        allow_inf_nan=False,
        description="occlusion: severity 0..1 (default 1); leak: fraction 0..1 (default 0.5); "
        "flow_bias: percent -90..200 (default 15); battery_drop: remaining_pct 0..100 "
        "(default 5); other kinds take none",
    )

    @field_validator("value")
    @classmethod
    def _value_in_range(cls, value: float | None, info: ValidationInfo) -> float | None:
        kind = info.data.get("kind")
        if kind is None or value is None:
            return value  # a bad kind is reported on its own field
        spec = FAULT_PARAMETERS.get(kind)
        if spec is None:
            raise ValueError(f"fault {kind.value} takes no value")
        name, low, high, _ = spec
        if not low <= value <= high:
            raise ValueError(f"{kind.value} {name} must be {low:g}..{high:g} (got {value:g})")
        return value


class HeadRequest(Request):
    """Place the telemetry head on the pump (true) or lift it off (false)."""

    placed: bool


class LinkRequest(Request):
    """Link faults from now on; a missing field keeps its value."""

    corruption_rate: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    drop_rate: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)


class CaptureRequest(Request):
    """Where to write the telemetry capture (pcapng; truncated if it exists)."""

    path: str = Field(min_length=1, max_length=4096, description="a file path on the server")


class RestoreRequest(Request):
    """Which kept snapshot to restore."""

    snapshot: str = Field(min_length=1, max_length=200)


# ---------------------------------------------------------------------- responses
def _iso(epoch_s: float | None) -> dt.datetime | None:
    return None if epoch_s is None else dt.datetime.fromtimestamp(epoch_s, dt.UTC)


class PumpInfo(BaseModel):
    """One served pump: who it is, where to open it, its key and its own clock."""

    serial: str
    model: str
    url: str
    key: str = Field(description="the pump's clinician key, hex (opens CLINICIAN sessions)")
    t_h: float = Field(description="the pump's own simulated time (hours since its start)")
    rtc: dt.datetime | None = Field(description="the pump's real-time clock (UTC)")
    head_placed: bool

    @classmethod
    def of(cls, served: ServedPump) -> PumpInfo:
        """Read at the current simulated time."""
        t_h = served.now_h()
        return cls(
            serial=served.serial,
            model=served.pump.profile.model,
            url=served.url,
            key=served.key.hex(),
            t_h=t_h,
            rtc=_iso(served.pump.hal.rtc_s()),
            head_placed=served.head_placed,
        )


class ClockState(BaseModel):
    """The farm's simulated clock."""

    t_h: float = Field(description="farm simulated time, hours since the farm started")
    speed: float | Literal["max"] = Field(
        description="simulated s per real s; 0 = stepped; max = as fast as possible"
    )
    stepped: bool


class PumpAlarmsOut(BaseModel):
    """Alarms one pump newly raised."""

    serial: str
    alarms: list[str]
    pump_t_h: float = Field(description="the pump's own simulated time then")


class AlarmStopOut(BaseModel):
    """The instant an advance stopped, and every watched pump that raised alarms then."""

    t_h: float = Field(description="farm simulated time")
    pumps: list[PumpAlarmsOut]

    @classmethod
    def of(cls, stop: AlarmStop) -> AlarmStopOut:
        """From the farm's record."""
        return cls(
            t_h=stop.t_h,
            pumps=[
                PumpAlarmsOut(serial=p.serial, alarms=list(p.alarms), pump_t_h=p.pump_t_h)
                for p in stop.pumps
            ],
        )


class AdvanceResult(BaseModel):
    """Where an advance ended."""

    t_h: float = Field(description="farm simulated time now")
    stopped_by: Literal["time", "alarm"]
    alarm: AlarmStopOut | None = None


class LedgerOut(BaseModel):
    """Where every microgram that entered the pump is now."""

    filled_mcg: float
    in_reservoir_mcg: float
    in_path_mcg: float
    to_csf_mcg: float
    to_tissue_mcg: float
    aspirated_mcg: float
    explanted_mcg: float = Field(default=0.0, description="left with an explanted catheter")


class ConcentrationsOut(BaseModel):
    """The patient's true concentrations (ng/mL)."""

    csf_lumbar_ng_per_ml: float
    csf_cisternal_ng_per_ml: float
    plasma_ng_per_ml: float
    effect_ng_per_ml: float
    exposure: list[str] = Field(
        description="reference levels crossed now (docs/clinical.md): "
        "plasma_above_cns_depression (>= 500 ng/mL), plasma_above_severe_toxicity "
        "(>= 2316 ng/mL), csf_above_therapeutic (lumbar > 1667 ng/mL), csf_below_therapeutic "
        "(lumbar < 69 ng/mL); empty inside the therapeutic range"
    )

    @classmethod
    def of(cls, conc: Concentrations) -> ConcentrationsOut:
        """From the patient's concentrations, with the reference levels they cross."""
        flags = classify(conc.csf_lumbar_ng_per_ml, conc.plasma_ng_per_ml).flags
        return cls(**dataclasses.asdict(conc), exposure=flags)


class TruthOut(BaseModel):
    """What truly is, now; never sent over telemetry."""

    t_h: float = Field(description="the pump's own simulated time")
    reservoir_ml: float
    reservoir_conc_mcg_per_ml: float
    path_volume_ml: float = Field(description="drug solution in pump tubing and catheter")
    path_mass_mcg: float
    tip_conc_mcg_per_ml: float = Field(description="concentration about to leave the tip")
    battery_remaining_pct: float
    faults: list[str]
    ledger: LedgerOut
    concentrations: ConcentrationsOut | None
    reservoir_drug: str = Field(
        default="", description='the drug truly in the reservoir ("mixed": two drugs)'
    )

    @classmethod
    def of(cls, truth: Truth, conc: Concentrations | None) -> TruthOut:
        """From the pump's truth and its patient."""
        return cls(
            t_h=truth.t_h,
            reservoir_ml=truth.reservoir_ml,
            reservoir_conc_mcg_per_ml=truth.reservoir_conc_mcg_per_ml,
            path_volume_ml=truth.path_volume_ml,
            path_mass_mcg=truth.path_mass_mcg,
            tip_conc_mcg_per_ml=truth.tip_conc_mcg_per_ml,
            battery_remaining_pct=truth.battery_remaining_fraction * 100.0,
            faults=list(truth.faults),
            ledger=LedgerOut(**dataclasses.asdict(truth.ledger)),
            concentrations=None
            if conc is None
            else ConcentrationsOut.of(conc),
            reservoir_drug=truth.reservoir_drug,
        )


class AlarmOut(BaseModel):
    """An active alarm as the pump reports it."""

    id: int
    name: str
    severity: str
    raised: dt.datetime | None
    acknowledged: bool


class ReportedOut(BaseModel):
    """What the pump would report at interrogation now (its beliefs, not the truth)."""

    rtc: dt.datetime | None
    patient_id: str
    drug: str
    concentration_mcg_per_ml: float
    catheter_length_cm: float
    catheter_volume_ul_per_cm: float
    reservoir_estimate_ml: float
    reservoir_capacity_ml: float
    low_reservoir_threshold_ml: float
    therapy_state: str
    program: dict[str, Any] = Field(description="the therapy program in clinical units")
    commanded_rate_ml_per_day: float
    dose_last_24h_mcg: float
    patient_boluses_last_24h: int
    alarms: list[AlarmOut]
    projected_low_reservoir: dt.datetime | None
    projected_eri: dt.datetime | None
    battery_remaining_pct: float
    eri: bool
    eos: bool
    projected_empty: dt.datetime | None = Field(
        default=None,
        description="when the estimate reaches the empty-reservoir alarm (programmed dose "
        "plus the last 7 days' patient-bolus use)",
    )

    @classmethod
    def of(cls, status: PumpStatus) -> ReportedOut:
        """From the firmware's status."""
        return cls(
            rtc=_iso(status.rtc_s),
            patient_id=status.patient_id,
            drug=status.drug.name,
            concentration_mcg_per_ml=status.drug.concentration_mcg_per_ml,
            catheter_length_cm=status.catheter.length_cm,
            catheter_volume_ul_per_cm=status.catheter.volume_ul_per_cm,
            reservoir_estimate_ml=status.reservoir_estimate_ml,
            reservoir_capacity_ml=status.reservoir_capacity_ml,
            low_reservoir_threshold_ml=status.low_reservoir_threshold_ml,
            therapy_state=status.therapy_state.value,
            program=status.program.to_mapping(),
            commanded_rate_ml_per_day=status.commanded_rate_ml_per_day,
            dose_last_24h_mcg=status.dose_last_24h_mcg,
            patient_boluses_last_24h=status.patient_boluses_last_24h,
            alarms=[
                AlarmOut(
                    id=int(a.alarm),
                    name=a.alarm.name.lower(),
                    severity=a.severity.value,
                    raised=_iso(a.raised_rtc_s),
                    acknowledged=a.acknowledged,
                )
                for a in status.alarms
            ],
            projected_low_reservoir=_iso(status.projected_low_reservoir_rtc_s),
            projected_eri=_iso(status.projected_eri_rtc_s),
            battery_remaining_pct=status.battery_remaining_fraction * 100.0,
            eri=status.eri,
            eos=status.eos,
            projected_empty=_iso(status.projected_empty_rtc_s),
        )


class FaultsOut(BaseModel):
    """The pump's active hardware faults after the change."""

    faults: list[str]
    changed: bool = Field(description="false when clearing a fault that was not active")


class HeadOut(BaseModel):
    """Whether the telemetry head is on the pump."""

    placed: bool


class LinkOut(BaseModel):
    """The emulated telemetry link of one pump."""

    head_placed: bool
    corruption_rate: float
    drop_rate: float
    baud: float | None = Field(description="pacing baud rate; null = unpaced")
    turnaround_s: float
    bytes_dropped: int
    bytes_corrupted: int


class SnapshotOut(BaseModel):
    """A kept snapshot of one pump's whole state."""

    id: str
    serial: str
    t_h: float = Field(description="the pump's own simulated time when taken")

    @classmethod
    def of(cls, snap: PumpSnapshot) -> SnapshotOut:
        """From the farm's record."""
        return cls(id=snap.id, serial=snap.serial, t_h=snap.t_h)


class CaptureOut(BaseModel):
    """The farm's telemetry capture (docs/capture.md)."""

    capturing: bool
    path: str | None = Field(description="the file being written, or the one just finished")
    packets_written: int


class ErrorOut(BaseModel):
    """A refused request (404, 409): what was wrong."""

    detail: str
