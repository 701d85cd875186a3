"""An in-process fake pump for the programmer tests, and checks of the fake itself.

:class:`FakePump` is a transport ``ByteHandler``: the real sans-IO ``PumpConnection`` (so
framing, sessions, MACs, replay and retransmission cache are the real thing) in front of a
tiny canned "firmware" that keeps just enough state to answer every request type. Tests can
make it refuse a request, swallow replies (to force retransmissions), go silent (timeouts)
or tamper with its program echo. :func:`served` puts it on a real TCP port (pyserial
``socket://``) or a real PTY with the emulator's transports.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from itpump.emulator.transports import PtyTransport, PumpTransport, TcpTransport
from itpump.protocol import messages as m
from itpump.protocol.auth import role_key, seeded_nonce_source
from itpump.protocol.codes import ResultCode
from itpump.protocol.connection import (
    AutoReply,
    PumpConnection,
    PumpEvent,
    PumpIdentity,
    RequestReceived,
    ResentResponse,
)
from itpump.protocol.transfer import TRANSFER_REQUESTS, ProgramReceiver

DEVICE_KEY = bytes(range(32))  # the fake pump's own key
KEY = role_key(DEVICE_KEY, m.Role.CLINICIAN)  # what a clinician programmer is given
KEY_HEX = KEY.hex()
PATIENT_KEY = role_key(DEVICE_KEY, m.Role.PATIENT)
PATIENT_KEY_HEX = PATIENT_KEY.hex()
SERIAL = "FK20-000042"
IDENTITY = PumpIdentity(
    serial=SERIAL,
    model="fake-20",
    firmware_version="0.9.0",
    capabilities=m.Capability.FLEX | m.Capability.PATIENT_BOLUS | m.Capability.CLINICIAN_BOLUS,
    max_flex_steps=8,
)
CLOCK_S = 1_767_261_600  # 2026-01-01 10:00 UTC
PROGRAM = m.TherapyProgram(
    max_daily_dose_ng=600_000,
    concentration_ng_per_ml=2_000_000,
    catheter_length_mm=1100,
    catheter_volume_nl_per_cm=2600,
    patient_bolus=m.PatientBolusSettings(25_000, 10, 180, 4),
    mode=m.ContinuousMode(400_000),
    drug_name="baclofen",
    patient_id="P-0001",
)
LOG_ENTRIES = 40  # 3 pages of 16


def _log_entry(index: int) -> m.LogEntry:
    code = (10, 20, 21, 30)[index % 4]  # PROGRAM_CHANGED, BOLUS_STARTED/COMPLETED, REFILL
    return m.LogEntry(index, CLOCK_S - 3600 * (LOG_ENTRIES - index), code, (2600, -1500))


class ManualClock:
    """A programmer clock that moves only when the test says so.

    Given to a client as ``clock``, it makes retransmissions and timeouts happen when the test
    advances it (typically once the pump has seen a request), never because the machine was
    slow: a frozen clock never times out, however long an answer takes.
    """

    def __init__(self, start_s: float = 0.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, dt_s: float) -> None:
        """Move the clock forward by ``dt_s`` seconds."""
        self.now_s += dt_s


class FakePump:
    """A ``ByteHandler`` pump with canned, slightly stateful answers."""

    def __init__(
        self, *, key: bytes = DEVICE_KEY, allow_unauthenticated: bool = False, seed: int = 1
    ) -> None:
        self.connection = PumpConnection(
            IDENTITY,
            key,
            seeded_nonce_source(seed),
            allow_unauthenticated=allow_unauthenticated,
        )
        #: every request that got an answer (protocol-level ones included), in order
        self.requests: list[m.Request] = []
        #: requests that reached the "firmware"
        self.firmware_requests: list[m.Request] = []
        self.calls = 0
        #: called (on the transport's loop) with every request answered
        self.on_request: Callable[[m.Request], object] | None = None
        #: called (on the transport's loop) for every retransmission that reached the pump
        #: (answered from the cache, or swallowed when silent)
        self.on_resent: Callable[[], object] | None = None
        self.swallow = 0  # drop this many non-empty replies
        self.silent = False  # answer nothing at all
        self.tamper_echo = False  # PROGRAM_VERIFY echoes a different program
        #: PROGRAM_COMMIT keeps the patient id and catheter when the program leaves them
        #: empty/unset, as the pump does (off: the program is stored as sent)
        self.keep_unset = False
        self.refuse: dict[m.MessageType, m.Refusal] = {}
        self.refuse_once: dict[m.MessageType, m.Refusal] = {}
        self.receiver = ProgramReceiver()
        self.program = PROGRAM
        self.clock_s = CLOCK_S
        self.low_threshold_nl = 2_000_000
        self.state = m.TherapyState.RUNNING
        self.reservoir_nl = 3_250_000
        self.log = [_log_entry(i) for i in range(LOG_ENTRIES)]
        self.alarms = [m.Alarm(1, m.AlarmSeverity.NON_CRITICAL, CLOCK_S - 3600, False)]

    # -- ByteHandler

    def __call__(self, data: bytes, /) -> bytes:
        self.calls += 1
        reply = self.connection.respond(data, self._firmware, on_event=self._on_event)
        if self.silent:
            return b""
        if reply and self.swallow:
            self.swallow -= 1
            return b""
        return reply

    def _on_event(self, event: PumpEvent) -> None:
        if isinstance(event, AutoReply | RequestReceived) and event.request is not None:
            self._record(event.request)
        elif isinstance(event, ResentResponse) and self.on_resent is not None:
            self.on_resent()

    def _firmware(self, request: m.Request) -> m.Response:
        self.firmware_requests.append(request)
        return self.handle(request)

    def _record(self, request: m.Request) -> None:
        self.requests.append(request)
        if self.on_request is not None:
            self.on_request(request)

    def link_closed(self) -> None:
        """The client went away: the session ends, as on a real pump."""
        self.connection.link_lost()
        self.receiver.abort()

    # -- "firmware"

    def count(self, request_type: type[m.Request]) -> int:
        """How many requests of a type were answered."""
        return sum(isinstance(r, request_type) for r in self.requests)

    def status(self) -> m.InterrogateResponse:
        """What INTERROGATE answers."""
        return m.InterrogateResponse(
            time_s=self.clock_s,
            therapy_state=self.state,
            reservoir_volume_nl=self.reservoir_nl,
            reservoir_capacity_nl=20_000_000,
            low_reservoir_threshold_nl=self.low_threshold_nl,
            rate_nl_per_day=200_000,
            dose_24h_ng=400_000,
            patient_boluses_24h=1,
            battery_per_mille=870,
            battery_eri=False,
            battery_eos=False,
            projected_low_reservoir_s=CLOCK_S + 6 * 86_400,
            projected_eri_s=CLOCK_S + 3 * 365 * 86_400,
            program=self.program,
            alarms=tuple(self.alarms),
        )

    def handle(self, request: m.Request) -> m.Response:
        """Answer one request that passed the protocol checks."""
        kind = request.TYPE
        if kind in self.refuse_once:
            return self.refuse_once.pop(kind)
        if kind in self.refuse:
            return self.refuse[kind]
        if isinstance(request, m.InterrogateRequest):
            return self.status()
        if isinstance(request, m.ReadLogRequest):
            return self._log_page(request.page)
        if isinstance(request, m.SetClockRequest):
            previous, self.clock_s = self.clock_s, request.time_s
            return m.SetClockResponse(previous)
        if isinstance(request, m.SetAlarmThresholdsRequest):
            self.low_threshold_nl = request.low_reservoir_nl
            return m.Ack()
        if isinstance(request, m.AckAlarmRequest):
            hits = [
                a for a in self.alarms if request.alarm_id is None or a.alarm_id == request.alarm_id
            ]
            self.alarms = [replace(a, acknowledged=True) if a in hits else a for a in self.alarms]
            return m.AckAlarmResponse(len(hits))
        if isinstance(request, TRANSFER_REQUESTS):
            response = self.receiver.handle(request, apply=self._commit)
            if self.tamper_echo and isinstance(response, m.ProgramVerifyResponse):
                echo = response.program
                tampered = replace(echo, max_daily_dose_ng=echo.max_daily_dose_ng + 1)
                response = replace(response, program=tampered)
            return response
        if isinstance(request, m.BolusRequest):
            return self._bolus(request.bolus)
        if isinstance(request, m.StopTherapyRequest):
            self.state = m.TherapyState.STOPPED
            return m.Ack()
        if isinstance(request, m.ResumeTherapyRequest):
            if self.state is m.TherapyState.RUNNING:
                return m.Refusal.make(ResultCode.INVALID_STATE, "therapy is already running")
            self.state = m.TherapyState.RUNNING
            return m.Ack()
        if isinstance(request, m.RefillRequest):
            self.reservoir_nl = request.volume_nl
            changed = request.concentration_ng_per_ml != self.program.concentration_ng_per_ml
            bridge = 286_000 if changed and request.bridge_bolus else 0
            return m.RefillResponse(request.volume_nl, bridge, CLOCK_S + 80 * 86_400)
        raise AssertionError(f"unexpected request {request!r}")

    def _commit(self, program: m.TherapyProgram) -> None:
        self.program = self._keeping_unset(program) if self.keep_unset else program

    def _keeping_unset(self, new: m.TherapyProgram) -> m.TherapyProgram:
        """As on the pump: an empty patient id and an unset catheter keep the current ones."""
        old = self.program
        if not new.patient_id:
            new = replace(new, patient_id=old.patient_id)
        if not (new.catheter_length_mm and new.catheter_volume_nl_per_cm):
            new = replace(
                new,
                catheter_length_mm=old.catheter_length_mm,
                catheter_volume_nl_per_cm=old.catheter_volume_nl_per_cm,
            )
        return new

    def _log_page(self, page: int) -> m.Response:
        newest_first = self.log[::-1]
        size = m.MAX_LOG_ENTRIES_PER_PAGE
        total_pages = math.ceil(len(newest_first) / size)
        if page >= max(total_pages, 1):
            return m.Refusal.make(
                ResultCode.LOG_PAGE_OUT_OF_RANGE, f"page={page}; pages 0..{total_pages - 1}"
            )
        entries = tuple(newest_first[page * size : (page + 1) * size])
        return m.ReadLogResponse(page, total_pages, len(newest_first), entries)

    def _bolus(self, bolus: m.BolusKind) -> m.Response:
        if isinstance(bolus, m.ClinicianBolus):
            if bolus.dose_ng > 200_000:
                dose = bolus.dose_ng // 1000
                return m.Refusal.make(
                    ResultCode.DAILY_DOSE_EXCEEDED,
                    f"dose_mcg={dose} would bring the 24 h dose to {dose + 400} mcg; "
                    "max_daily_dose_mcg is 600",
                )
            return m.BolusResponse(bolus.dose_ng, bolus.dose_ng // 2, 0)
        if isinstance(bolus, m.PatientBolus):
            return m.BolusResponse(25_000, 12_500, 0)
        if isinstance(bolus, m.PrimingBolus):
            return m.BolusResponse(0, bolus.volume_nl or 300_000, 0)
        if isinstance(bolus, m.BridgeBolus):
            return m.BolusResponse(572_000, bolus.volume_nl or 286_000, 0)
        return m.BolusResponse(0, 0, 1)


@contextlib.asynccontextmanager
async def served(pump: FakePump, kind: str = "tcp") -> AsyncIterator[str]:
    """Serve ``pump`` on a real TCP port or PTY; yields the URL a programmer opens."""
    transport: PumpTransport = TcpTransport(pump) if kind == "tcp" else PtyTransport(pump)
    async with transport:
        yield transport.url


# --- checks of the fake itself ----------------------------------------------------------------


def test_fake_pump_answers_identify_through_the_real_protocol() -> None:
    from itpump.protocol.connection import ProgrammerConnection, ResponseReceived

    pump = FakePump()
    programmer = ProgrammerConnection(seeded_nonce_source(3))
    programmer.receive_data(pump(programmer.send(m.IdentifyRequest(), now_s=0.0)))
    event = programmer.next_event()
    assert isinstance(event, ResponseReceived)
    assert isinstance(event.response, m.IdentifyResponse)
    assert event.response.serial == SERIAL
    assert pump.count(m.IdentifyRequest) == 1


def test_fake_pump_log_pages() -> None:
    pump = FakePump()
    first = pump._log_page(0)
    assert isinstance(first, m.ReadLogResponse)
    assert (first.total_pages, first.total_entries, first.entries[0].index) == (3, 40, 39)
    beyond = pump._log_page(3)
    assert isinstance(beyond, m.Refusal)
    assert beyond.result is ResultCode.LOG_PAGE_OUT_OF_RANGE
