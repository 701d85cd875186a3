"""asyncio programmer client: the same operations as :class:`~programmer.client.PumpClient`.

::

    async with AsyncPumpClient("socket://127.0.0.1:7000", key=key) as pump:
        await pump.connect()
        status = await pump.interrogate()

**How it avoids blocking the loop.** pyserial is blocking, so every port call (open, read,
write, close) runs in the default thread pool via :func:`asyncio.to_thread`. A read waits at
most ``read_slice_s`` (20 ms) for its first byte and returns as soon as bytes arrive, so a
response is seen without delay and retransmission timers, driven by ``time.monotonic`` on the
loop side, fire at most one slice late. This works the same for a PTY path, ``socket://``,
``rfc2217://`` and any other pyserial URL, which is why it was chosen over non-blocking file
descriptor reads (PTY only). The cost is a thread hop per read: fine for a programmer, which
exchanges a few frames per second.

Operations on one client are serialised by a lock (the protocol is stop-and-wait). If a task
is cancelled in the middle of an exchange, the exchange itself finishes in the background
(answer or timeout) so that the protocol state stays consistent; the next operation waits
for it first. A cancelled program transfer is not committed (the pump discards it when the
session ends, or at the next PROGRAM_BEGIN).
"""

from __future__ import annotations

import asyncio
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
from itpump.programmer.client import PumpClient
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

__all__ = ["AsyncPumpClient"]

_log = logging.getLogger(__name__)
T = TypeVar("T")


class AsyncPumpClient(ClientBase):
    """asyncio twin of :class:`~programmer.client.PumpClient` (same arguments and methods).

    The port is opened by :meth:`open` or ``async with``, not by the constructor (opening
    ``rfc2217://`` talks to the network).
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
        self._url = port if isinstance(port, str) else None
        self._port: Port | None = None if isinstance(port, str) else port
        self._read_slice_s = read_slice_s
        self._serial_options = serial_options
        if self._port is not None:
            self._port.timeout = read_slice_s
        self._lock = asyncio.Lock()
        self._inflight: asyncio.Task[m.ResponseBody] | None = None

    # -- properties

    @property
    def port(self) -> serial.SerialBase:
        if self._port is None:
            raise RuntimeError("AsyncPumpClient not opened")
        return self._port

    # -- plumbing

    async def open(self) -> None:
        """Open the port (in a worker thread). Idempotent."""
        if self._port is None:
            assert self._url is not None
            self._port = await asyncio.to_thread(
                open_port, self._url, self._read_slice_s, **self._serial_options
            )

    async def _exchange_io(self, request: m.Request) -> m.ResponseBody:
        port = self.port
        core = self._core
        await asyncio.to_thread(write_all, port, core.start(request))
        while True:
            step = core.advance()
            if isinstance(step, bytes):
                await asyncio.to_thread(write_all, port, step)
            elif step is not None:
                return step
            elif data := await asyncio.to_thread(read_some, port):
                core.conn.receive_data(data)

    async def _settle(self) -> None:
        """Wait for an exchange left running by a cancelled operation."""
        inflight = self._inflight
        if inflight is not None and not inflight.done():
            await asyncio.wait({inflight})

    async def _exchange(self, request: m.Request) -> m.ResponseBody:
        task = asyncio.create_task(self._exchange_io(request))
        # Retrieve the outcome even if nobody awaits it any more (cancelled caller).
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._inflight = task
        return await asyncio.shield(task)

    async def run(self, operation: Operation[T]) -> T:
        async with self._lock:
            await self.open()
            await self._settle()
            try:
                request = next(operation)
                while True:
                    try:
                        body = await self._exchange(request)
                    except PumpError as exc:
                        request = operation.throw(exc)
                    else:
                        request = operation.send(body)
            except StopIteration as stop:
                result: T = stop.value
                return result
            finally:
                operation.close()

    async def request(self, request: m.Request) -> m.ResponseBody:

        def one() -> Operation[m.ResponseBody]:
            body = yield request
            return body

        return await self.run(one())

    # -- session

    async def identify(self, versions: tuple[int, ...] = (1,)) -> PumpInfo:
        return await self.run(ops.identify(versions))

    async def authenticate(
        self, role: Role = Role.CLINICIAN, key: KeySource | None = None
    ) -> SessionDetails:
        return await self.run(self._core.authenticate(role, key))

    async def connect(self, role: Role = Role.CLINICIAN, key: KeySource | None = None) -> PumpInfo:
        return await self.run(self._core.connect(role, key))

    async def end_session(self) -> None:
        await self.run(ops.end_session())

    # -- status

    async def interrogate(self) -> PumpStatus:
        return await self.run(ops.interrogate())

    async def read_log_page(self, page: int) -> LogPage:
        return await self.run(ops.read_log_page(page))

    async def read_log(self, page: int | None = None) -> list[LogRecord]:
        return await self.run(ops.read_log(page))

    # -- settings

    async def set_clock(self, when: datetime) -> datetime:
        return await self.run(ops.set_clock(when))

    async def set_low_reservoir_alarm(self, volume_ml: float) -> None:
        await self.run(ops.set_low_reservoir_alarm(volume_ml))

    async def acknowledge_alarm(self, alarm: int | None = None) -> int:
        return await self.run(ops.acknowledge_alarm(alarm))

    # -- therapy

    async def program(
        self,
        program: Program | m.TherapyProgram,
        *,
        commit: bool = True,
        confirm: Callable[[Program], bool] | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> Program:
        return await self.run(
            ops.program(program, commit=commit, confirm=confirm, chunk_bytes=chunk_bytes)
        )

    async def abort_program(self) -> None:
        await self.run(ops.simple(m.ProgramAbortRequest()))

    async def bolus_clinician(
        self, dose_mcg: float, duration_min: int, then_resume: bool = True
    ) -> BolusResult:
        return await self.run(ops.bolus(ops.clinician_bolus(dose_mcg, duration_min, then_resume)))

    async def prime(self, volume_ml: float | None = None) -> BolusResult:
        return await self.run(ops.bolus(m.PrimingBolus(ops.optional_nl(volume_ml))))

    async def bridge_bolus(
        self, volume_ml: float | None = None, old_concentration_mcg_per_ml: float | None = None
    ) -> BolusResult:
        return await self.run(ops.bridge_bolus(volume_ml, old_concentration_mcg_per_ml))

    async def patient_bolus(self) -> BolusResult:
        return await self.run(ops.bolus(m.PatientBolus()))

    async def cancel_bolus(self) -> int:
        return (await self.run(ops.bolus(m.CancelBolus()))).cancelled

    async def refill(
        self,
        volume_ml: float,
        drug: str,
        concentration_mcg_per_ml: float,
        aspirated_ml: float | None = None,
        bridge: bool = True,
    ) -> RefillResult:
        return await self.run(
            ops.refill(volume_ml, drug, concentration_mcg_per_ml, aspirated_ml, bridge)
        )

    async def revise_catheter(
        self, length_cm: float, volume_ul_per_cm: float = TYPICAL_CATHETER_VOLUME_UL_PER_CM
    ) -> float:
        return await self.run(ops.revise_catheter(length_cm, volume_ul_per_cm))

    async def alarm_test(self) -> None:
        await self.run(ops.simple(m.AlarmTestRequest()))

    async def reset_mri_valve(self) -> None:
        await self.run(ops.simple(m.MriValveResetRequest()))

    async def stop_therapy(self) -> None:
        await self.run(ops.simple(m.StopTherapyRequest()))

    async def resume_therapy(self) -> None:
        await self.run(ops.simple(m.ResumeTherapyRequest()))

    # -- lifetime

    async def close(self) -> None:
        """Close the port (after any exchange still running)."""
        await self._settle()
        port, self._port = self._port, None
        if port is not None:
            await asyncio.to_thread(close_port, port)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """End the session (one attempt, unless the link just failed), then close the port."""
        try:
            if self._core.session is not None and not isinstance(
                exc, LinkError | asyncio.CancelledError
            ):
                try:
                    with self._core.single_attempt():
                        await self.end_session()
                except PumpError as end_exc:
                    _log.info("END_SESSION on close failed: %s", end_exc)
        finally:
            await self.close()


def _document_twins() -> None:
    """Each operation is documented once, on the blocking client; its async twin shows the
    same text (so help() and IDEs show it on both)."""
    for name, method in vars(AsyncPumpClient).items():
        twin = getattr(PumpClient, name, None)
        if callable(method) and not name.startswith("_") and method.__doc__ is None:
            method.__doc__ = None if twin is None else twin.__doc__


_document_twins()
