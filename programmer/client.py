"""Blocking programmer client over any pyserial URL.

::

    from itpump.programmer import PumpClient, Program, Continuous

    with PumpClient("/tmp/ttyPUMP0", key=bytes.fromhex(KEY_HEX)) as pump:
        info = pump.connect()                      # IDENTIFY + AUTH_BEGIN + AUTH_PROOF
        status = pump.interrogate()
        print(status.reservoir_ml, status.projected_low_reservoir)
        pump.program(Program("baclofen", 2000, max_daily_dose_mcg=600,
                             mode=Continuous(450)))
    # leaving the block ends the session (END_SESSION) and closes the port

Everything about the protocol (framing, sequence numbers, MACs, matching answers,
retransmission) is :class:`protocol.connection.ProgrammerConnection`'s job; this class only
moves bytes between it and the port and gives it the time (``time.monotonic``) so it can
retransmit when an answer is late. One request is outstanding at a time; the client is not
thread-safe (use one client per thread, or :class:`programmer.aio.AsyncPumpClient`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import serial

from itpump.programmer import operations as ops
from itpump.programmer._link import (
    READ_SLICE_S,
    ClientBase,
    ClientCore,
    Clock,
    Port,
    close_port,
    open_port,
    read_some,
    write_all,
)
from itpump.programmer.errors import LinkError, PumpError
from itpump.programmer.models import (
    BolusResult,
    LogPage,
    LogRecord,
    PumpInfo,
    PumpStatus,
    RefillResult,
    SessionDetails,
)
from itpump.programmer.operations import KeySource, Operation
from itpump.programmer.program import Program
from itpump.protocol import messages as m
from itpump.protocol.auth import NonceSource
from itpump.protocol.messages import Role
from itpump.protocol.therapy import TYPICAL_CATHETER_VOLUME_UL_PER_CM
from itpump.protocol.transfer import DEFAULT_CHUNK_BYTES

__all__ = ["PumpClient"]

_log = logging.getLogger(__name__)
T = TypeVar("T")


class PumpClient(ClientBase):
    """A clinician or patient programmer talking to one pump (blocking).

    ``port`` is a pyserial URL or device path (``/dev/pts/7``, ``/tmp/ttyPUMP0``,
    ``socket://127.0.0.1:7000``, ``rfc2217://host:port`` ...), opened at once with
    ``serial.serial_for_url``, or an already open pyserial port (its read timeout is set to
    ``read_slice_s``). ``key`` is the pump's key: bytes, a mapping from serial number to key,
    or a function of the serial number (see :func:`programmer.keys.master_key_source`).

    ``timeout_s`` is the first response timeout (default 1 s), doubled by ``backoff`` at each
    of the ``max_attempts`` (default 4) transmissions: 1 + 2 + 4 + 8 = 15 s before
    :class:`~programmer.errors.PumpTimeout`. ``nonce_source`` defaults to ``os.urandom``.
    """

    def __init__(
        self,
        port: str | serial.SerialBase,
        *,
        key: KeySource | None = None,
        timeout_s: float | None = None,
        max_attempts: int | None = None,
        backoff: float | None = None,
        nonce_source: NonceSource | None = None,
        clock: Clock = time.monotonic,
        read_slice_s: float = READ_SLICE_S,
        **serial_options: Any,
    ) -> None:
        self._core = ClientCore(
            key=key,
            timeout_s=timeout_s,
            max_attempts=max_attempts,
            backoff=backoff,
            nonce_source=nonce_source,
            clock=clock,
        )
        if isinstance(port, str):
            self._port: Port = open_port(port, read_slice_s, **serial_options)
        else:
            self._port = port
            self._port.timeout = read_slice_s
        _log.debug("opened %s", self._port.name or self._port.port)

    # -- properties

    @property
    def port(self) -> serial.SerialBase:
        """The pyserial port."""
        return self._port

    # -- plumbing

    def _exchange(self, request: m.Request) -> m.ResponseBody:
        """Send one request and wait for its answer, retransmitting when it is late."""
        core = self._core
        write_all(self._port, core.start(request))
        while True:
            step = core.advance()
            if isinstance(step, bytes):
                write_all(self._port, step)
            elif step is not None:
                return step
            elif data := read_some(self._port):
                core.conn.receive_data(data)

    def run(self, operation: Operation[T]) -> T:
        """Drive an operation of :mod:`programmer.operations` to its result."""
        try:
            request = next(operation)
            while True:
                try:
                    body = self._exchange(request)
                except PumpError as exc:
                    request = operation.throw(exc)
                else:
                    request = operation.send(body)
        except StopIteration as stop:
            result: T = stop.value
            return result
        finally:
            operation.close()

    def request(self, request: m.Request) -> m.ResponseBody:
        """Send any request; returns the response body or raises (low-level escape hatch)."""
        return self._exchange(request)

    # -- session

    def identify(self, versions: tuple[int, ...] = (1,)) -> PumpInfo:
        """IDENTIFY: serial, model, firmware, protocol version and capabilities."""
        return self.run(ops.identify(versions))

    def authenticate(
        self, role: Role = Role.CLINICIAN, key: KeySource | None = None
    ) -> SessionDetails:
        """Open an authenticated session (IDENTIFY first if not done yet).

        Raises :class:`~programmer.errors.AuthenticationError` when there is no key for this
        pump, the pump refuses the proof, or the pump's own proof is wrong.
        """
        return self.run(self._core.authenticate(role, key))

    def connect(self, role: Role = Role.CLINICIAN, key: KeySource | None = None) -> PumpInfo:
        """IDENTIFY, then authenticate as ``role`` when a key is known.

        Without a key, a pump that does not require authentication is used unauthenticated
        (it obeys as CLINICIAN); one that requires it raises
        :class:`~programmer.errors.AuthenticationError`.
        """
        return self.run(self._core.connect(role, key))

    def end_session(self) -> None:
        """END_SESSION (the pump forgets the session)."""
        self.run(ops.end_session())

    # -- status

    def interrogate(self) -> PumpStatus:
        """INTERROGATE: drug, reservoir estimate, program, alarms, battery, clock."""
        return self.run(ops.interrogate())

    def read_log_page(self, page: int) -> LogPage:
        """One page of the event log (0 = newest) with the totals."""
        return self.run(ops.read_log_page(page))

    def read_log(self, page: int | None = None) -> list[LogRecord]:
        """The entries of one page, or of every page (``page=None``); newest first."""
        return self.run(ops.read_log(page))

    # -- settings

    def set_clock(self, when: datetime) -> datetime:
        """Set the pump clock to an aware datetime; returns the clock before the change."""
        return self.run(ops.set_clock(when))

    def set_low_reservoir_alarm(self, volume_ml: float) -> None:
        """Alarm when the estimated reservoir volume falls to ``volume_ml``."""
        self.run(ops.set_low_reservoir_alarm(volume_ml))

    def acknowledge_alarm(self, alarm: int | None = None) -> int:
        """Acknowledge one alarm id (e.g. ``AlarmId.LOW_RESERVOIR``) or all; returns the count."""
        return self.run(ops.acknowledge_alarm(alarm))

    # -- therapy

    def program(
        self,
        program: Program | m.TherapyProgram,
        *,
        commit: bool = True,
        confirm: Callable[[Program], bool] | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> Program:
        """Transfer, verify (the pump's echo is compared) and commit a therapy program.

        See :func:`programmer.operations.program`: ``commit=False`` is a dry run, ``confirm``
        can decline after verification; any failure aborts the transfer. Returns the program
        as the pump verified it.
        """
        return self.run(
            ops.program(program, commit=commit, confirm=confirm, chunk_bytes=chunk_bytes)
        )

    def abort_program(self) -> None:
        """PROGRAM_ABORT: discard any pending or verified program."""
        self.run(ops.simple(m.ProgramAbortRequest()))

    def bolus_clinician(
        self, dose_mcg: float, duration_min: int, then_resume: bool = True
    ) -> BolusResult:
        """A clinician bolus on top of the basal (``then_resume=False``: stop afterwards)."""
        return self.run(ops.bolus(ops.clinician_bolus(dose_mcg, duration_min, then_resume)))

    def prime(self, volume_ml: float | None = None) -> BolusResult:
        """A priming bolus (``None``: the pump computes catheter + tubing volume)."""
        return self.run(ops.bolus(m.PrimingBolus(ops.optional_nl(volume_ml))))

    def bridge_bolus(
        self, volume_ml: float | None = None, old_concentration_mcg_per_ml: float | None = None
    ) -> BolusResult:
        """A bridge bolus pushing the old drug out (``None``: the pump's own values)."""
        return self.run(ops.bridge_bolus(volume_ml, old_concentration_mcg_per_ml))

    def patient_bolus(self) -> BolusResult:
        """A patient-activated bolus (dose and limits from the program)."""
        return self.run(ops.bolus(m.PatientBolus()))

    def cancel_bolus(self) -> int:
        """Cancel every bolus, priming or bridge in progress; returns how many."""
        return self.run(ops.bolus(m.CancelBolus())).cancelled

    def refill(
        self,
        volume_ml: float,
        drug: str,
        concentration_mcg_per_ml: float,
        aspirated_ml: float | None = None,
        bridge: bool = True,
    ) -> RefillResult:
        """Record a refill: the reservoir now holds ``volume_ml`` of ``drug``.

        ``aspirated_ml`` is the residual volume withdrawn (``None``: not measured); with
        ``bridge`` the pump starts a bridge bolus if the concentration changed.
        """
        return self.run(ops.refill(volume_ml, drug, concentration_mcg_per_ml, aspirated_ml, bridge))

    def revise_catheter(
        self, length_cm: float, volume_ul_per_cm: float = TYPICAL_CATHETER_VOLUME_UL_PER_CM
    ) -> float:
        """Record a catheter revision (a new, empty catheter); returns the volume in mL the
        pump now allows a :meth:`prime` to push (the new catheter plus any empty tubing)."""
        return self.run(ops.revise_catheter(length_cm, volume_ul_per_cm))

    def alarm_test(self) -> None:
        """ALARM_TEST: the pump sounds each alarm pattern once."""
        self.run(ops.simple(m.AlarmTestRequest()))

    def reset_mri_valve(self) -> None:
        """MRI_VALVE_RESET: reopen a valve-gated pump's MRI safety valve after a scan."""
        self.run(ops.simple(m.MriValveResetRequest()))

    def stop_therapy(self) -> None:
        """Stop all delivery until :meth:`resume_therapy`."""
        self.run(ops.simple(m.StopTherapyRequest()))

    def resume_therapy(self) -> None:
        """Resume the programmed therapy."""
        self.run(ops.simple(m.ResumeTherapyRequest()))

    # -- lifetime

    def close(self) -> None:
        """Close the port (without ending the session; see :meth:`end_session`)."""
        close_port(self._port)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """End the session (one attempt, unless the link just failed), then close the port."""
        try:
            # Not after a link failure, nor with a request still outstanding (an exchange
            # interrupted by KeyboardInterrupt): the session then ends by idle timeout.
            conn_busy = self._core.conn.busy
            if self._core.session is not None and not conn_busy and not isinstance(exc, LinkError):
                try:
                    with self._core.single_attempt():
                        self.end_session()
                except PumpError as end_exc:
                    _log.info("END_SESSION on close failed: %s", end_exc)
        finally:
            self.close()
