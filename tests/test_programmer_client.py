"""The programmer client against a fake pump over real ports (TCP ``socket://`` and a PTY).

The pump side runs on the test's event loop (the emulator's transports); blocking client
calls run in ``asyncio.to_thread`` so the loop keeps serving. Retransmissions and timeouts
are driven by a :class:`ManualClock` the test advances once the pump has seen a request, so
they never depend on how fast the machine is; ``GUARD_S`` only guards against hangs and
nothing waits by sleeping.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

import pytest

from itpump.programmer import (
    AlarmId,
    AsyncPumpClient,
    AuthenticationError,
    Continuous,
    Flex,
    KeySource,
    LinkError,
    PatientBolusLimits,
    Program,
    ProgramMismatch,
    PumpClient,
    PumpInfo,
    PumpRefused,
    PumpStatus,
    PumpTimeout,
    ResultCode,
    Role,
    SessionDetails,
    TherapyState,
    derive_pump_key,
    derive_role_key,
    master_key_source,
)
from itpump.programmer import operations as ops
from itpump.protocol import messages as m
from itpump.protocol.auth import seeded_nonce_source
from tests.test_programmer_fakepump import (
    CLOCK_S,
    KEY,
    PATIENT_KEY,
    PROGRAM,
    SERIAL,
    FakePump,
    ManualClock,
    served,
)

GUARD_S = 10.0
T = TypeVar("T")

NEW_PROGRAM = Program(
    drug="baclofen",
    concentration_mcg_per_ml=2000,
    max_daily_dose_mcg=500,
    mode=Flex.parse("00:00=180,07:00=260,22:00=200"),
    patient_id="P-0001",
    patient_bolus=PatientBolusLimits(25, 10, 180, 4),
)


async def blocking(fn: Callable[[], T]) -> T:
    """Run a blocking client call off the loop (the transport needs the loop to answer)."""
    return await asyncio.wait_for(asyncio.to_thread(fn), GUARD_S)


def client(
    url: str,
    *,
    key: bytes | None = KEY,
    timeout_s: float | None = None,
    max_attempts: int | None = None,
    clock: ManualClock | None = None,
) -> PumpClient:
    """A blocking client; its clock is frozen unless the test passes one it advances."""
    return PumpClient(
        url,
        key=key,
        timeout_s=timeout_s,
        max_attempts=max_attempts,
        nonce_source=seeded_nonce_source(11),
        clock=ManualClock() if clock is None else clock,
    )


def event_on_request(pump: FakePump, kind: type[m.Request]) -> asyncio.Event:
    """An event set when the pump receives a request of type ``kind``."""
    seen = asyncio.Event()
    pump.on_request = lambda r: seen.set() if isinstance(r, kind) else None
    return seen


def event_on_resent(pump: FakePump) -> asyncio.Event:
    """An event set when a retransmission reaches the pump."""
    seen = asyncio.Event()
    pump.on_resent = seen.set
    return seen


@pytest.mark.parametrize("kind", ["tcp", "pty"])
async def test_identify_authenticate_interrogate(kind: str) -> None:
    pump = FakePump()
    async with served(pump, kind) as url:

        def visit() -> tuple[PumpInfo, SessionDetails | None, PumpStatus]:
            with client(url) as c:
                info = c.connect()
                return info, c.session, c.interrogate()

        info, session, status = await blocking(visit)
    assert info.serial == SERIAL
    assert info.auth_required
    assert session is not None
    assert session.role is Role.CLINICIAN
    assert status.reservoir_ml == pytest.approx(3.25)
    assert status.time == datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert status.program.mode == Continuous(400)
    assert status.alarms[0].name == "LOW_RESERVOIR"
    assert status.projected_low_reservoir == datetime(2026, 1, 7, 10, tzinfo=UTC)
    # leaving the block ended the session
    assert pump.count(m.EndSessionRequest) == 1
    assert [type(r) for r in pump.requests[:3]] == [
        m.IdentifyRequest,
        m.AuthBeginRequest,
        m.AuthProofRequest,
    ]


async def test_wrong_key_is_an_authentication_error() -> None:
    pump = FakePump()
    async with served(pump) as url:

        def visit() -> None:
            with client(url, key=bytes(32)) as c:
                c.connect()

        with pytest.raises(AuthenticationError) as caught:
            await blocking(visit)
    assert caught.value.code is ResultCode.AUTH_FAILED
    assert SERIAL in str(caught.value)


async def test_keys_by_serial_and_master_key() -> None:
    master = b"rig master key for the tests..."
    pump = FakePump(key=derive_pump_key(master, SERIAL))
    async with served(pump) as url:

        def visit(source: KeySource) -> TherapyState:
            with PumpClient(url, key=source) as c:
                c.connect()
                return c.interrogate().therapy_state

        assert await blocking(lambda: visit(master_key_source(master))) is TherapyState.RUNNING
        table = {SERIAL: derive_role_key(master, SERIAL, Role.CLINICIAN)}
        assert await blocking(lambda: visit(table)) is TherapyState.RUNNING
        with pytest.raises(AuthenticationError, match="no key for pump"):
            await blocking(lambda: visit({"OTHER": KEY}))


async def test_no_key_needs_a_pump_that_allows_it() -> None:
    strict, lax = FakePump(), FakePump(allow_unauthenticated=True)
    async with served(strict) as strict_url, served(lax) as lax_url:

        def visit(url: str) -> float:
            with client(url, key=None) as c:
                c.connect()
                assert c.session is None
                return c.interrogate().reservoir_ml

        with pytest.raises(AuthenticationError, match="requires authentication"):
            await blocking(lambda: visit(strict_url))
        assert await blocking(lambda: visit(lax_url)) == pytest.approx(3.25)


async def test_refusal_raises_with_code_and_detail_and_session_goes_on() -> None:
    pump = FakePump()
    async with served(pump) as url:

        def visit() -> tuple[PumpRefused, float]:
            with client(url) as c:
                c.connect()
                with pytest.raises(PumpRefused) as caught:
                    c.bolus_clinician(900, 30)
                ok = c.bolus_clinician(50, 30)
                return caught.value, ok.dose_mcg

        refused, dose = await blocking(visit)
    assert refused.code is ResultCode.DAILY_DOSE_EXCEEDED
    assert "max_daily_dose_mcg is 600" in refused.detail
    assert isinstance(refused.request, m.BolusRequest)
    assert "DAILY_DOSE_EXCEEDED" in str(refused)
    assert dose == 50


async def test_dropped_response_is_retransmitted_and_not_redone() -> None:
    pump = FakePump()
    clock = ManualClock()
    arrived = event_on_request(pump, m.BolusRequest)
    async with served(pump) as url:

        def visit() -> tuple[int, int]:
            with client(url, timeout_s=0.1, clock=clock) as c:
                c.connect()
                pump.swallow = 1  # the answer to the next request is lost on the way back
                result = c.bolus_clinician(50, 30)
                assert result.dose_mcg == 50
                return c.stats.retransmissions, c.stats.timeouts

        visiting = asyncio.create_task(blocking(visit))
        await asyncio.wait_for(arrived.wait(), GUARD_S)  # the pump got it, its answer is lost
        clock.advance(0.1)  # the first timeout expires: exactly one retransmission is due
        retransmissions, timeouts = await visiting
    assert (retransmissions, timeouts) == (1, 0)
    # the pump answered the retransmission from its cache: one bolus, not two
    assert sum(isinstance(r, m.BolusRequest) for r in pump.firmware_requests) == 1
    assert pump.connection.stats.duplicates == 1


async def test_silent_pump_times_out() -> None:
    pump = FakePump()
    clock = ManualClock()
    arrived = event_on_request(pump, m.InterrogateRequest)
    resent = event_on_resent(pump)
    async with served(pump) as url:

        def visit() -> PumpTimeout:
            with client(url, timeout_s=0.05, max_attempts=2, clock=clock) as c:
                c.connect()
                pump.silent = True
                with pytest.raises(PumpTimeout) as caught:
                    c.interrogate()
                # The clock stays put from here, so END_SESSION on leaving needs an answer.
                pump.silent = False
                return caught.value

        visiting = asyncio.create_task(blocking(visit))
        await asyncio.wait_for(arrived.wait(), GUARD_S)
        clock.advance(0.05)  # first timeout: the client retransmits, waiting twice as long
        await asyncio.wait_for(resent.wait(), GUARD_S)
        clock.advance(0.1)  # second timeout: that was the last attempt
        timeout = await visiting
    assert timeout.attempts == 2
    assert isinstance(timeout.request, m.InterrogateRequest)
    assert isinstance(timeout, LinkError)
    assert timeout.waited_s == pytest.approx(0.05 + 0.1)
    assert pump.connection.stats.duplicates == 1


async def test_sequence_error_is_recovered_with_identify() -> None:
    pump = FakePump()
    async with served(pump) as url:

        def visit() -> PumpClient:
            with client(url) as c:
                c.connect()
                pump.refuse_once[m.MessageType.INTERROGATE] = m.Refusal.make(
                    ResultCode.SEQUENCE_ERROR, "seq=9 behind; last accepted 12"
                )
                c.interrogate()
                return c

        await blocking(visit)
    kinds = [type(r) for r in pump.requests[3:6]]
    assert kinds == [m.InterrogateRequest, m.IdentifyRequest, m.InterrogateRequest]


async def test_full_program_transfer_with_verify() -> None:
    pump = FakePump()
    async with served(pump) as url:

        def visit() -> Program:
            with client(url) as c:
                c.connect()
                return c.program(NEW_PROGRAM, chunk_bytes=16)

        verified = await blocking(visit)
    assert verified == NEW_PROGRAM
    assert pump.program == NEW_PROGRAM.to_wire()
    sent = [type(r) for r in pump.firmware_requests]
    chunks = sent.count(m.ProgramDataRequest)
    assert chunks == -(-len(NEW_PROGRAM.to_wire().encode()) // 16) > 1
    assert sent == [
        m.ProgramBeginRequest,
        *[m.ProgramDataRequest] * chunks,
        m.ProgramVerifyRequest,
        m.ProgramCommitRequest,
    ]


async def test_program_echo_mismatch_aborts_and_commits_nothing() -> None:
    pump = FakePump()
    pump.tamper_echo = True
    async with served(pump) as url:

        def visit() -> None:
            with client(url) as c:
                c.connect()
                c.program(NEW_PROGRAM)

        with pytest.raises(ProgramMismatch):
            await blocking(visit)
    sent = [type(r) for r in pump.firmware_requests]
    assert sent[-1] is m.ProgramAbortRequest
    assert m.ProgramCommitRequest not in sent
    assert pump.program == PROGRAM


async def test_program_refused_at_verify_is_aborted() -> None:
    pump = FakePump()
    pump.refuse[m.MessageType.PROGRAM_VERIFY] = m.Refusal.make(
        ResultCode.TOO_MANY_STEPS, "steps=3 above max_flex_steps=2"
    )
    async with served(pump) as url:

        def visit() -> None:
            with client(url) as c:
                c.connect()
                c.program(NEW_PROGRAM)

        with pytest.raises(PumpRefused) as caught:
            await blocking(visit)
    assert caught.value.code is ResultCode.TOO_MANY_STEPS
    assert [type(r) for r in pump.firmware_requests][-1] is m.ProgramAbortRequest
    assert pump.program == PROGRAM


@pytest.mark.parametrize("code", [ResultCode.ROLE_FORBIDDEN, ResultCode.NOT_AUTHENTICATED])
async def test_program_refused_for_the_role_or_session_is_not_aborted(
    code: ResultCode, caplog: pytest.LogCaptureFixture
) -> None:
    pump = FakePump()
    pump.refuse[m.MessageType.PROGRAM_BEGIN] = m.Refusal.make(code, "no programs for you")
    pump.refuse[m.MessageType.PROGRAM_ABORT] = m.Refusal.make(code, "no aborts either")
    async with served(pump) as url:

        def visit() -> None:
            with client(url) as c:
                c.connect()
                c.program(NEW_PROGRAM)

        with pytest.raises(PumpRefused) as caught:
            await blocking(visit)
    assert caught.value.code is code
    assert pump.count(m.ProgramAbortRequest) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert pump.program == PROGRAM


async def test_program_dry_run_and_confirm() -> None:
    pump = FakePump()
    async with served(pump) as url:

        def visit() -> Program:
            with client(url) as c:
                c.connect()
                echo = c.program(NEW_PROGRAM, commit=False)
                with pytest.raises(ProgramMismatch, match="declined"):
                    c.program(NEW_PROGRAM, confirm=lambda p: p.max_daily_dose_mcg < 100)
                return echo

        echo = await blocking(visit)
    assert echo == NEW_PROGRAM
    assert pump.program == PROGRAM
    assert pump.count(m.ProgramCommitRequest) == 0
    assert pump.count(m.ProgramAbortRequest) == 2


async def test_log_clock_alarms_refill_and_therapy() -> None:
    pump = FakePump()
    async with served(pump) as url:

        def visit() -> None:
            with client(url) as c:
                c.connect()
                records = c.read_log()
                assert [r.index for r in records] == list(range(39, -1, -1))
                assert records[0].event == "REFILL"
                assert records[0].args == (2.6, -1.5)
                assert records[0].labelled_args == {"volume": 2.6, "concentration": -1.5}
                assert len(c.read_log(page=2)) == 8
                assert c.read_log_page(0).total_pages == 3

                with pytest.raises(ValueError, match="timezone"):
                    c.set_clock(datetime(2026, 3, 1, 8))
                previous = c.set_clock(datetime(2026, 3, 1, 8, tzinfo=UTC))
                assert previous == datetime.fromtimestamp(CLOCK_S, UTC)

                assert c.acknowledge_alarm(AlarmId.LOW_RESERVOIR) == 1
                assert c.acknowledge_alarm() == 1
                c.set_low_reservoir_alarm(2.5)

                refill = c.refill(18.0, "baclofen", 1000, aspirated_ml=1.8)
                assert refill.reservoir_ml == 18.0
                assert refill.bridge_volume_ml == pytest.approx(0.286)

                assert c.prime().volume_ml == pytest.approx(0.3)
                assert c.bridge_bolus(volume_ml=0.25).volume_ml == pytest.approx(0.25)
                assert c.patient_bolus().dose_mcg == 25
                assert c.cancel_bolus() == 1
                c.stop_therapy()
                c.resume_therapy()
                with pytest.raises(PumpRefused) as caught:
                    c.resume_therapy()
                assert caught.value.code is ResultCode.INVALID_STATE

        await blocking(visit)
    assert pump.clock_s == int(datetime(2026, 3, 1, 8, tzinfo=UTC).timestamp())
    assert pump.low_threshold_nl == 2_500_000
    assert all(a.acknowledged for a in pump.alarms)
    refill = next(r for r in pump.firmware_requests if isinstance(r, m.RefillRequest))
    assert (refill.volume_nl, refill.aspirated_nl, refill.concentration_ng_per_ml) == (
        18_000_000,
        1_800_000,
        1_000_000,
    )


async def test_patient_role_is_limited_by_the_pump() -> None:
    pump = FakePump()
    async with served(pump) as url:

        def visit() -> None:
            with client(url, key=PATIENT_KEY) as c:
                c.connect(role=Role.PATIENT)
                assert c.patient_bolus().dose_mcg == 25
                with pytest.raises(PumpRefused) as caught:
                    c.bolus_clinician(50, 30)
                assert caught.value.code is ResultCode.ROLE_FORBIDDEN

        await blocking(visit)


async def test_unopenable_port_is_a_link_error() -> None:
    with pytest.raises(LinkError, match="cannot open"):
        await blocking(lambda: PumpClient("/nonexistent/ttyPUMP9"))


async def test_a_tcp_port_sends_each_frame_at_once() -> None:
    # With Nagle's algorithm on (pyserial's default), a retransmission after a frame the pump
    # did not answer waited for the pump's delayed ACK, about 40 ms on Linux.
    async with served(FakePump()) as url:
        programmer = await blocking(lambda: client(url))
        try:
            sock = getattr(programmer.port, "_socket", None)
            assert isinstance(sock, socket.socket)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        finally:
            programmer.close()


# --- asyncio client ---------------------------------------------------------------------------


def _public(cls: type) -> dict[str, object]:
    return {name: getattr(cls, name) for name in dir(cls) if not name.startswith("_")}


def test_async_client_is_a_twin_of_the_blocking_one() -> None:
    """Each client method is written twice (blocking and async): they must not drift apart."""
    blocking_api, async_api = _public(PumpClient), _public(AsyncPumpClient)
    assert set(async_api) - set(blocking_api) == {"open"}
    assert set(blocking_api) <= set(async_api)
    for name, attr in blocking_api.items():
        twin = async_api[name]
        if isinstance(attr, property):
            assert isinstance(twin, property), name
            continue
        assert callable(attr), name
        assert callable(twin), name
        assert inspect.iscoroutinefunction(twin), name
        assert inspect.signature(twin).parameters == inspect.signature(attr).parameters, name
        if name not in ("close", "__enter__", "__exit__"):
            # Documented once, on the blocking client; the twin shows the same text.
            assert twin.__doc__ == attr.__doc__, name
            assert attr.__doc__, name
    # The clinical operations added later are covered like the first ones.
    assert {"revise_catheter", "reset_mri_valve", "alarm_test"} <= set(blocking_api)


def test_async_operations_carry_no_docstring_of_their_own() -> None:
    """One place for each operation's documentation: the blocking client's source."""
    import ast

    import itpump.programmer.aio as aio

    tree = ast.parse(inspect.getsource(aio))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "AsyncPumpClient")
    own_docs = [
        node.name
        for node in cls.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and not node.name.startswith("_")
        and node.name in _public(PumpClient)
        and node.name != "close"
        and ast.get_docstring(node) is not None
    ]
    assert own_docs == []


async def test_async_client_runs_a_clinic_visit_on_the_same_loop() -> None:
    pump = FakePump()
    # A frozen clock: no retransmission, however long the pump takes to answer.
    async with (
        served(pump) as url,
        AsyncPumpClient(url, key=KEY, timeout_s=0.2, clock=ManualClock()) as c,
    ):
        info = await asyncio.wait_for(c.connect(), GUARD_S)
        assert info.serial == SERIAL
        status = await c.interrogate()
        assert status.program.drug == "baclofen"
        # concurrent calls are serialised (stop-and-wait), not interleaved
        first, second = await asyncio.gather(c.interrogate(), c.read_log(page=0))
        assert first.reservoir_ml == pytest.approx(3.25)
        assert len(second) == 16
        assert await c.program(NEW_PROGRAM) == NEW_PROGRAM
        with pytest.raises(PumpRefused) as caught:
            await c.bolus_clinician(900, 30)
        assert caught.value.code is ResultCode.DAILY_DOSE_EXCEEDED
    assert pump.program == NEW_PROGRAM.to_wire()
    assert pump.count(m.EndSessionRequest) == 1


async def test_async_cancelled_exchange_finishes_in_the_background() -> None:
    pump = FakePump()
    clock = ManualClock()
    async with (
        served(pump) as url,
        AsyncPumpClient(url, key=KEY, timeout_s=0.05, clock=clock) as c,
    ):
        await asyncio.wait_for(c.connect(), GUARD_S)
        pump.swallow = 1
        arrived = event_on_request(pump, m.BolusRequest)
        task = asyncio.create_task(c.bolus_clinician(50, 30))
        await asyncio.wait_for(arrived.wait(), GUARD_S)  # the pump got it, answer lost
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Only now may the exchange time out: it is retransmitted in the background and
        # answered, and the next call waits for it first.
        clock.advance(0.05)
        status = await asyncio.wait_for(c.interrogate(), GUARD_S)
        assert status.therapy_state is TherapyState.RUNNING
        assert c.stats.retransmissions == 1
    assert sum(isinstance(r, m.BolusRequest) for r in pump.firmware_requests) == 1


async def test_async_timeout() -> None:
    pump = FakePump()
    clock = ManualClock()
    async with (
        served(pump) as url,
        AsyncPumpClient(url, key=KEY, timeout_s=0.05, max_attempts=2, clock=clock) as c,
    ):
        await asyncio.wait_for(c.connect(), GUARD_S)
        pump.silent = True
        arrived = event_on_request(pump, m.InterrogateRequest)
        resent = event_on_resent(pump)
        task = asyncio.create_task(c.interrogate())
        await asyncio.wait_for(arrived.wait(), GUARD_S)
        clock.advance(0.05)
        await asyncio.wait_for(resent.wait(), GUARD_S)
        clock.advance(0.1)
        with pytest.raises(PumpTimeout) as caught:
            await asyncio.wait_for(task, GUARD_S)
        pump.silent = False  # the clock stays put: END_SESSION on leaving needs an answer
    assert caught.value.attempts == 2
    assert caught.value.waited_s == pytest.approx(0.15)


def _stop_if_low(threshold_ml: float) -> ops.Operation[bool]:
    """A custom sequence, written once for both clients (as in docs/programmer.md)."""
    status = yield from ops.interrogate()
    if status.reservoir_ml < threshold_ml:
        yield from ops.simple(m.StopTherapyRequest())
        return True
    return False


async def test_custom_operation_runs_on_both_clients() -> None:
    pump = FakePump()
    async with served(pump) as url:

        def visit() -> bool:
            with client(url) as c:
                c.connect()
                return c.run(_stop_if_low(1.0))

        assert await blocking(visit) is False
        async with AsyncPumpClient(url, key=KEY) as ac:
            await ac.connect()
            assert await asyncio.wait_for(ac.run(_stop_if_low(5.0)), GUARD_S) is True
    assert pump.state is m.TherapyState.STOPPED


async def test_session_is_tracked_whichever_way_it_was_opened() -> None:
    pump = FakePump()
    async with served(pump) as url:

        def visit() -> tuple[SessionDetails | None, SessionDetails | None]:
            with client(url) as c:
                opened = c.run(ops.authenticate(c.connection, Role.CLINICIAN, KEY))
                tracked = c.session
                c.end_session()
                assert c.session is None
                return opened, tracked

        opened, tracked = await blocking(visit)
    assert opened is not None
    assert tracked == opened
    assert pump.count(m.EndSessionRequest) == 1
