"""Telemetry command handling: typed protocol requests in, firmware calls, typed responses out.

This is the firmware's side of the link above the sans-IO protocol: the protocol layer has
already checked framing, session, MAC, replay and role; here every request is validated by the
firmware and applied atomically, or refused with a specific code and nothing changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from itpump.firmware_stubs.alarms import AlarmId, Severity
from itpump.firmware_stubs.errors import Refusal
from itpump.firmware_stubs.firmware import Firmware, PumpStatus
from itpump.firmware_stubs.therapy import (
    CatheterSettings,
    FlexPeriod,
    FlexStep,
    PatientBolusSettings,
    PeriodicBolus,
    TherapyMode,
    TherapyProgram,
    validate_program,
)
from itpump.protocol import messages as m
from itpump.protocol.codes import ResultCode
from itpump.protocol.connection import PumpIdentity
from itpump.protocol.transfer import ProgramReceiver
from itpump.protocol.units import (
    cm_from_mm,
    epoch_s_from_float,
    mcg_from_ng,
    milli_from_float,
    ml_from_nl,
    mm_from_cm,
    ng_from_mcg,
    nl_from_ml,
    nl_from_ul,
    ul_from_nl,
)

log = logging.getLogger(__name__)

CAPABILITIES = (
    m.Capability.FLEX
    | m.Capability.PERIODIC_BOLUS
    | m.Capability.PATIENT_BOLUS
    | m.Capability.BRIDGE_BOLUS
    | m.Capability.PRIMING_BOLUS
    | m.Capability.CLINICIAN_BOLUS
)
LOG_PAGE_SIZE = m.MAX_LOG_ENTRIES_PER_PAGE
_WIRE_PERIOD = {FlexPeriod.DAILY: m.FlexPeriod.DAILY, FlexPeriod.WEEKLY: m.FlexPeriod.WEEKLY}
_FW_PERIOD = {v: k for k, v in _WIRE_PERIOD.items()}
_WIRE_STATE = {s.name: m.TherapyState[s.name] for s in m.TherapyState}
# volume_ml, drug, concentration_mcg_per_ml, aspirated_ml (None: not measured), bridge
RefillHook = Callable[[float, str, float, float | None, bool], None]
# length_cm, volume_ul_per_cm -> volume a prime may now push (mL)
CatheterRevisionHook = Callable[[float, float], float]


def identity_of(firmware: Firmware) -> PumpIdentity:
    """What this pump says in IDENTIFY."""
    ident = firmware.identify()
    return PumpIdentity(
        serial=ident.serial,
        model=ident.model,
        firmware_version=ident.firmware_version,
        capabilities=CAPABILITIES,
        max_flex_steps=firmware.cfg.flex_max_steps,
    )


# ---------------------------------------------------------------------- program conversion
def program_from_wire(wire: m.TherapyProgram) -> TherapyProgram:
    """Wire program -> firmware program (units: ng -> mcg)."""
    mode = wire.mode
    pb = wire.patient_bolus
    patient = (
        None
        if pb is None
        else PatientBolusSettings(
            mcg_from_ng(pb.dose_ng), pb.duration_min, pb.lockout_min, pb.max_per_day
        )
    )
    max_daily = mcg_from_ng(wire.max_daily_dose_ng)
    if isinstance(mode, m.ContinuousMode):
        return TherapyProgram(
            TherapyMode.CONTINUOUS,
            max_daily,
            mcg_from_ng(mode.dose_ng_per_day),
            patient_bolus=patient,
        )
    if isinstance(mode, m.FlexMode):
        steps = tuple(FlexStep(s.start_min, mcg_from_ng(s.dose_ng_per_day)) for s in mode.steps)
        return TherapyProgram(
            TherapyMode.FLEX,
            max_daily,
            flex_period=_FW_PERIOD[mode.period],
            flex_steps=steps,
            patient_bolus=patient,
        )
    if isinstance(mode, m.PeriodicBolusMode):
        periodic = PeriodicBolus(
            mcg_from_ng(mode.bolus_dose_ng),
            mode.bolus_duration_min,
            mode.interval_min,
            mode.first_offset_min,
        )
        return TherapyProgram(
            TherapyMode.PERIODIC_BOLUS,
            max_daily,
            mcg_from_ng(mode.basal_dose_ng_per_day),
            periodic=periodic,
            patient_bolus=patient,
        )
    return TherapyProgram(TherapyMode.STOPPED, max_daily, patient_bolus=patient)


def program_to_wire(firmware: Firmware, status: PumpStatus) -> m.TherapyProgram:
    """The active program with its program-wide settings, as sent in INTERROGATE."""
    program = status.program
    mode: m.TherapyModeBlock
    if program.mode is TherapyMode.CONTINUOUS:
        mode = m.ContinuousMode(ng_from_mcg(program.dose_mcg_per_day))
    elif program.mode is TherapyMode.FLEX:
        mode = m.FlexMode(
            _WIRE_PERIOD[program.flex_period],
            tuple(
                m.FlexStep(s.start_min, ng_from_mcg(s.dose_mcg_per_day)) for s in program.flex_steps
            ),
        )
    elif program.mode is TherapyMode.PERIODIC_BOLUS and program.periodic is not None:
        p = program.periodic
        mode = m.PeriodicBolusMode(
            ng_from_mcg(program.dose_mcg_per_day),
            ng_from_mcg(p.dose_mcg),
            round(p.duration_min),
            round(p.interval_min),
            round(p.first_offset_min),
        )
    else:
        mode = m.StoppedMode()
    pb = program.patient_bolus
    patient = (
        None
        if pb is None
        else m.PatientBolusSettings(
            ng_from_mcg(pb.dose_mcg), round(pb.duration_min), round(pb.lockout_min), pb.max_per_day
        )
    )
    return m.TherapyProgram(
        max_daily_dose_ng=ng_from_mcg(program.max_daily_dose_mcg),
        concentration_ng_per_ml=ng_from_mcg(status.drug.concentration_mcg_per_ml),
        catheter_length_mm=mm_from_cm(status.catheter.length_cm),
        catheter_volume_nl_per_cm=nl_from_ul(status.catheter.volume_ul_per_cm),
        patient_bolus=patient,
        mode=mode,
        drug_name=status.drug.name,
        patient_id=status.patient_id,
    )


#: The latest instant a u32 "s since epoch" field holds: 2106-02-07T06:28:15Z.
LATEST_WIRE_EPOCH_S = 0xFFFF_FFFF


def _s_or_none(rtc_s: float | None) -> int | None:
    """A projected instant for the wire. ``None`` (nothing projected) stays ``None``; a
    projection beyond the field's range saturates at :data:`LATEST_WIRE_EPOCH_S`, read as
    "at or after". Not "none": that would say no ERI or low reservoir is coming at all."""
    if rtc_s is None:
        return None
    return min(max(epoch_s_from_float(rtc_s), 1), LATEST_WIRE_EPOCH_S)


# ---------------------------------------------------------------------- handler
class CommandHandler:
    """Answers every request the protocol layer delivers, using one firmware instance."""

    def __init__(
        self,
        firmware: Firmware,
        refill: RefillHook | None = None,
        revise_catheter: CatheterRevisionHook | None = None,
    ) -> None:
        """`refill` performs a refill; by default only the firmware is told. The emulator
        passes one that also moves the liquid, since the septum is hardware; likewise
        `revise_catheter` for the new catheter of a revision."""
        self.firmware = firmware
        self.receiver = ProgramReceiver()
        self._refill_hook: RefillHook = refill or firmware.refill
        self._revise_hook: CatheterRevisionHook = revise_catheter or firmware.revise_catheter
        self._handlers: dict[type[m.Request], Callable[[m.Request], m.Response]] = {
            m.InterrogateRequest: self._interrogate,
            m.ReadLogRequest: self._read_log,
            m.SetClockRequest: self._set_clock,
            m.SetAlarmThresholdsRequest: self._set_threshold,
            m.AckAlarmRequest: self._ack_alarm,
            m.ProgramBeginRequest: self._program_begin,
            m.ProgramDataRequest: self._program_data,
            m.ProgramVerifyRequest: self._program_verify,
            m.ProgramCommitRequest: self._program_commit,
            m.ProgramAbortRequest: lambda _r: self.receiver.abort(),
            m.BolusRequest: self._bolus,
            m.StopTherapyRequest: self._stop,
            m.ResumeTherapyRequest: self._resume,
            m.RefillRequest: self._refill,
            m.CatheterRevisionRequest: self._revise_catheter,
            m.MriValveResetRequest: self._reset_valve,
            m.AlarmTestRequest: self._alarm_test,
        }

    def handle(self, request: m.Request) -> m.Response:
        """The response to one request; refusals never change state."""
        handler = self._handlers.get(type(request))
        if handler is None:
            return m.Refusal.make(ResultCode.NOT_SUPPORTED, f"{type(request).__name__}")
        try:
            return handler(request)
        except Refusal as refusal:
            log.info("refused %s: %s", type(request).__name__, refusal)
            return m.Refusal.make(refusal.code, refusal.detail)

    def session_changed(self) -> None:
        """A session started or ended: a half-done program transfer is discarded."""
        self.receiver.abort()

    # -- status
    def _interrogate(self, _request: m.Request) -> m.Response:
        fw = self.firmware
        status = fw.status()
        alarms = tuple(
            m.Alarm(
                int(a.alarm),
                m.AlarmSeverity.CRITICAL
                if a.severity is Severity.CRITICAL
                else m.AlarmSeverity.NON_CRITICAL,
                epoch_s_from_float(a.raised_rtc_s),
                a.acknowledged,
            )
            for a in status.alarms
        )
        return m.InterrogateResponse(
            time_s=epoch_s_from_float(status.rtc_s),
            therapy_state=_WIRE_STATE[status.therapy_state.name],
            reservoir_volume_nl=nl_from_ml(status.reservoir_estimate_ml),
            reservoir_capacity_nl=nl_from_ml(status.reservoir_capacity_ml),
            low_reservoir_threshold_nl=nl_from_ml(status.low_reservoir_threshold_ml),
            rate_nl_per_day=nl_from_ml(status.commanded_rate_ml_per_day),
            dose_24h_ng=min(ng_from_mcg(status.dose_last_24h_mcg), m.MAX_MASS_NG),
            patient_boluses_24h=min(status.patient_boluses_last_24h, 255),
            battery_per_mille=round(1000 * status.battery_remaining_fraction),
            battery_eri=status.eri,
            battery_eos=status.eos,
            projected_low_reservoir_s=_s_or_none(status.projected_low_reservoir_rtc_s),
            projected_eri_s=_s_or_none(status.projected_eri_rtc_s),
            program=program_to_wire(fw, status),
            alarms=alarms[: m.MAX_ALARMS],
            projected_empty_s=_s_or_none(status.projected_empty_rtc_s),
            unprimed_nl=nl_from_ml(status.unprimed_ml),
            clock_valid=status.clock_valid,
        )

    def _read_log(self, request: m.Request) -> m.Response:
        assert isinstance(request, m.ReadLogRequest)
        entries, pages = self.firmware.read_log(request.page, LOG_PAGE_SIZE)
        return m.ReadLogResponse(
            page=request.page,
            total_pages=pages,
            total_entries=len(self.firmware.log),
            entries=tuple(
                m.LogEntry(
                    e.index,
                    epoch_s_from_float(e.rtc_s),
                    int(e.code),
                    tuple(milli_from_float(a) for a in e.args[: m.MAX_LOG_ARGS]),
                )
                for e in entries
            ),
        )

    # -- settings
    def _set_clock(self, request: m.Request) -> m.Response:
        assert isinstance(request, m.SetClockRequest)
        previous = epoch_s_from_float(self.firmware.hal.rtc_s())
        self.firmware.set_clock(float(request.time_s))
        return m.SetClockResponse(previous)

    def _set_threshold(self, request: m.Request) -> m.Response:
        assert isinstance(request, m.SetAlarmThresholdsRequest)
        self.firmware.set_low_reservoir_threshold(ml_from_nl(request.low_reservoir_nl))
        return m.Ack()

    def _ack_alarm(self, request: m.Request) -> m.Response:
        assert isinstance(request, m.AckAlarmRequest)
        alarm = None
        if request.alarm_id is not None:
            try:
                alarm = AlarmId(request.alarm_id)
            except ValueError:
                raise Refusal(
                    ResultCode.OUT_OF_RANGE,
                    f"alarm_id={request.alarm_id} unknown; known 1..{len(AlarmId)}",
                ) from None
        return m.AckAlarmResponse(self.firmware.acknowledge_alarm(alarm))

    # -- program transfer
    def _program_begin(self, request: m.Request) -> m.Response:
        assert isinstance(request, m.ProgramBeginRequest)
        return self.receiver.begin(request)

    def _program_data(self, request: m.Request) -> m.Response:
        assert isinstance(request, m.ProgramDataRequest)
        return self.receiver.data(request)

    def _program_verify(self, _request: m.Request) -> m.Response:
        wire = self.receiver.assemble()
        if isinstance(wire, m.Refusal):
            return wire
        try:
            self._check_program(wire)
        except Refusal:
            self.receiver.reject()
            raise
        return self.receiver.mark_verified(wire)

    def _check_program(self, wire: m.TherapyProgram) -> None:
        fw = self.firmware
        drug = fw.status().drug
        if wire.concentration_ng_per_ml != ng_from_mcg(drug.concentration_mcg_per_ml) or (
            wire.drug_name != drug.name
        ):
            raise Refusal(
                ResultCode.INVALID_STATE,
                f"program is for {wire.drug_name} {mcg_from_ng(wire.concentration_ng_per_ml):g} "
                f"mcg/mL; reservoir holds {drug.name or 'nothing'} "
                f"{drug.concentration_mcg_per_ml:g} mcg/mL (refill first)",
            )
        if len(getattr(wire.mode, "steps", ())) > fw.cfg.flex_max_steps:
            raise Refusal(
                ResultCode.TOO_MANY_STEPS, f"flex steps: allowed 1..{fw.cfg.flex_max_steps}"
            )
        validate_program(program_from_wire(wire), drug.concentration_mcg_per_ml, fw.cfg)

    def _program_commit(self, request: m.Request) -> m.Response:
        assert isinstance(request, m.ProgramCommitRequest)
        wire = self.receiver.commit(request)
        if isinstance(wire, m.Refusal):
            return wire
        fw = self.firmware
        # Everything is validated before anything changes (state may have moved since VERIFY).
        self._check_program(wire)
        catheter = None
        if wire.catheter_length_mm and wire.catheter_volume_nl_per_cm:
            catheter = CatheterSettings(
                cm_from_mm(wire.catheter_length_mm), ul_from_nl(wire.catheter_volume_nl_per_cm)
            )
        fw.program_with_settings(program_from_wire(wire), wire.patient_id or None, catheter)
        return m.Ack()

    # -- delivery
    def _bolus(self, request: m.Request) -> m.Response:
        assert isinstance(request, m.BolusRequest)
        fw = self.firmware
        bolus = request.bolus
        conc = fw.status().drug.concentration_mcg_per_ml
        if isinstance(bolus, m.ClinicianBolus):
            fw.clinician_bolus(mcg_from_ng(bolus.dose_ng), bolus.duration_min, bolus.then_resume)
            volume = mcg_from_ng(bolus.dose_ng) / conc if conc else 0.0
            return m.BolusResponse(bolus.dose_ng, nl_from_ml(volume), 0)
        if isinstance(bolus, m.PrimingBolus):
            volume_ml = fw.prime(None if bolus.volume_nl is None else ml_from_nl(bolus.volume_nl))
            return m.BolusResponse(ng_from_mcg(volume_ml * conc), nl_from_ml(volume_ml), 0)
        if isinstance(bolus, m.BridgeBolus):
            old = (
                None
                if bolus.old_concentration_ng_per_ml is None
                else mcg_from_ng(bolus.old_concentration_ng_per_ml)
            )
            volume_ml = fw.bridge_bolus(
                None if bolus.volume_nl is None else ml_from_nl(bolus.volume_nl), old
            )
            dose = volume_ml * (old or conc)
            return m.BolusResponse(ng_from_mcg(dose), nl_from_ml(volume_ml), 0)
        if isinstance(bolus, m.PatientBolus):
            fw.patient_bolus()
            pb = fw.status().program.patient_bolus
            dose_mcg = pb.dose_mcg if pb is not None else 0.0
            return m.BolusResponse(
                ng_from_mcg(dose_mcg), nl_from_ml(dose_mcg / conc if conc else 0.0), 0
            )
        return m.BolusResponse(0, 0, min(fw.cancel_bolus(), 255))

    def _revise_catheter(self, request: m.Request) -> m.Response:
        assert isinstance(request, m.CatheterRevisionRequest)
        unprimed_ml = self._revise_hook(
            cm_from_mm(request.catheter_length_mm), ul_from_nl(request.catheter_volume_nl_per_cm)
        )
        return m.CatheterRevisionResponse(nl_from_ml(unprimed_ml))

    def _alarm_test(self, _request: m.Request) -> m.Response:
        self.firmware.alarm_test()
        return m.Ack()

    def _reset_valve(self, _request: m.Request) -> m.Response:
        self.firmware.reset_mri_valve()
        return m.Ack()

    def _stop(self, _request: m.Request) -> m.Response:
        self.firmware.stop_therapy()
        return m.Ack()

    def _resume(self, _request: m.Request) -> m.Response:
        self.firmware.resume_therapy()
        return m.Ack()

    def _refill(self, request: m.Request) -> m.Response:
        assert isinstance(request, m.RefillRequest)
        fw = self.firmware
        before = fw.status()
        aspirated = None if request.aspirated_nl is None else ml_from_nl(request.aspirated_nl)
        self._refill_hook(
            ml_from_nl(request.volume_nl),
            request.drug_name,
            mcg_from_ng(request.concentration_ng_per_ml),
            aspirated,
            request.bridge_bolus,
        )
        after = fw.status()
        bridging = after.therapy_state.name == "BRIDGING" and (
            before.therapy_state.name != "BRIDGING"
        )
        bridge_nl = nl_from_ml(fw.path_volume_ml()) if bridging else 0
        return m.RefillResponse(
            reservoir_volume_nl=nl_from_ml(after.reservoir_estimate_ml),
            bridge_volume_nl=bridge_nl,
            projected_low_reservoir_s=_s_or_none(after.projected_low_reservoir_rtc_s),
        )
