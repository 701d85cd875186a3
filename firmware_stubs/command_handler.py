"""Telemetry command handling: typed protocol requests in, firmware calls, typed responses out.

This is the firmware's side of the link above the sans-IO protocol: the protocol layer has
already checked framing, session, MAC, replay and role; here every request is validated by the
firmware and applied atomically, or refused with a specific code and nothing changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from itpump.firmware_stubs.alarms import Severity
from itpump.firmware_stubs.errors import Refusal
from itpump.firmware_stubs.firmware import Firmware
from itpump.protocol import messages as m
from itpump.protocol.codes import AlarmId, ResultCode
from itpump.protocol.connection import PumpIdentity
from itpump.protocol.therapy import Program
from itpump.protocol.transfer import TRANSFER_REQUESTS, ProgramReceiver
from itpump.protocol.units import (
    cm_from_mm,
    epoch_s_from_float,
    mcg_from_ng,
    milli_from_float,
    ml_from_nl,
    ng_from_mcg,
    nl_from_ml,
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


#: The latest instant a u32 "s since epoch" field holds: 2106-02-07T06:28:15Z.
LATEST_WIRE_EPOCH_S = 0xFFFF_FFFF


def _s_or_none(rtc_s: float | None) -> int | None:
    """A projected instant for the wire. ``None`` (nothing projected) stays ``None``; a
    projection beyond the field's range saturates at :data:`LATEST_WIRE_EPOCH_S`, read as
    "at or after". Not "none": that would say no ERI or low reservoir is coming at all."""
    if rtc_s is None:
        return None
    return min(max(epoch_s_from_float(rtc_s), 1), LATEST_WIRE_EPOCH_S)


def _wire_s(rtc_s: float) -> int:
    """An instant the pump reports (its clock, an alarm's or a log entry's time) for a u32
    field: beyond 2106 (a rig can advance a clock set to 2100 by years) it saturates at
    :data:`LATEST_WIRE_EPOCH_S`, so the pump keeps answering rather than failing every
    INTERROGATE and READ_LOG from then on."""
    return min(max(epoch_s_from_float(rtc_s), 0), LATEST_WIRE_EPOCH_S)


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
        # The program last reported and its wire form (~5 us to build and validate): kept
        # while the firmware's active_program() returns that same immutable object.
        self._program_wire: tuple[Program, m.TherapyProgram] | None = None
        self._refill_hook: RefillHook = refill or firmware.refill
        self._revise_hook: CatheterRevisionHook = revise_catheter or firmware.revise_catheter
        self._handlers: dict[type[m.Request], Callable[[m.Request], m.Response]] = {
            m.InterrogateRequest: self._interrogate,
            m.ReadLogRequest: self._read_log,
            m.SetClockRequest: self._set_clock,
            m.SetAlarmThresholdsRequest: self._set_threshold,
            m.AckAlarmRequest: self._ack_alarm,
            **{t: self._program_transfer for t in TRANSFER_REQUESTS},
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
                _wire_s(a.raised_rtc_s),
                a.acknowledged,
            )
            for a in status.alarms
        )
        return m.InterrogateResponse(
            time_s=_wire_s(status.rtc_s),
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
            program=self._wire_program(fw.active_program()),
            alarms=alarms[: m.MAX_ALARMS],
            projected_empty_s=_s_or_none(status.projected_empty_rtc_s),
            unprimed_nl=nl_from_ml(status.unprimed_ml),
            clock_valid=status.clock_valid,
        )

    def _wire_program(self, program: Program) -> m.TherapyProgram:
        cached = self._program_wire
        if cached is not None and cached[0] is program:
            return cached[1]
        wire = program.to_wire()
        self._program_wire = (program, wire)
        return wire

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
                    _wire_s(e.rtc_s),
                    int(e.code),
                    tuple(milli_from_float(a) for a in e.args[: m.MAX_LOG_ARGS]),
                )
                for e in entries
            ),
        )

    # -- settings
    def _set_clock(self, request: m.Request) -> m.Response:
        assert isinstance(request, m.SetClockRequest)
        # The answer is built before the clock changes: an answer that failed after the
        # change would report an error for a clock that had been set.
        answer = m.SetClockResponse(_wire_s(self.firmware.hal.rtc_s()))
        self.firmware.set_clock(float(request.time_s))
        return answer

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
    def _program_transfer(self, request: m.Request) -> m.Response:
        return self.receiver.handle(request, self._check_program, self._apply_program)

    def _check_program(self, wire: m.TherapyProgram) -> None:
        """Refuses (raises `Refusal`) a program this pump cannot run as it stands now."""
        self.firmware.check_program(Program.from_wire(wire))

    def _apply_program(self, wire: m.TherapyProgram) -> m.Response:
        fw = self.firmware
        # Everything is validated before anything changes (state may have moved since VERIFY).
        fw.commit_program(Program.from_wire(wire))
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
