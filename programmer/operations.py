"""The high-level operations, written once for the blocking and the asyncio client.

Each operation is a generator that *yields* the requests to send and is *sent* the body of
each successful response; a refusal or a link failure is *thrown* into it as a
:class:`~programmer.errors.PumpError` at the ``yield`` (so an operation can clean up, e.g.
abort a program transfer, and re-raise). Its return value is the operation's result. No I/O
and no clock here: :mod:`programmer.client` and :mod:`programmer.aio` drive these generators
over a serial port.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Mapping
from datetime import datetime
from typing import TypeVar

from itpump.programmer.errors import (
    AuthenticationError,
    LinkError,
    ProgramMismatch,
    PumpError,
    PumpRefused,
)
from itpump.programmer.models import (
    BolusResult,
    LogPage,
    LogRecord,
    PumpInfo,
    PumpStatus,
    RefillResult,
    SessionDetails,
    datetime_from_s,
    s_from_datetime,
)
from itpump.programmer.program import Program
from itpump.protocol import messages as m
from itpump.protocol.codes import ResultCode
from itpump.protocol.connection import ProgrammerConnection
from itpump.protocol.messages import Role
from itpump.protocol.therapy import TYPICAL_CATHETER_VOLUME_UL_PER_CM
from itpump.protocol.transfer import (
    DEFAULT_CHUNK_BYTES,
    commit_request,
    transfer_requests,
    verify_matches,
)
from itpump.protocol.units import ml_from_nl, mm_from_cm, ng_from_mcg, nl_from_ml, nl_from_ul

__all__ = [
    "HANDSHAKE_ATTEMPTS",
    "KeySource",
    "Operation",
    "acknowledge_alarm",
    "authenticate",
    "bolus",
    "bridge_bolus",
    "call",
    "clinician_bolus",
    "connect",
    "end_session",
    "identify",
    "interrogate",
    "optional_ng",
    "optional_nl",
    "program",
    "read_log",
    "read_log_page",
    "refill",
    "resolve_key",
    "set_clock",
    "set_low_reservoir_alarm",
    "simple",
]

_log = logging.getLogger(__name__)

#: Handshakes tried when the pump answers CHALLENGE_REPLACED (another transmitter's
#: AUTH_BEGIN on a shared link): bounded, as that transmitter may be a flood.
HANDSHAKE_ATTEMPTS = 3

T = TypeVar("T")
B = TypeVar("B", bound=m.ResponseBody)

#: yields requests, is sent response bodies, returns the result
Operation = Generator[m.Request, m.ResponseBody, T]

#: the pump key: one key, a table by serial number, or a function of the serial number
KeySource = bytes | Mapping[str, bytes] | Callable[[str], bytes]


def call(request: m.Request, expected: type[B]) -> Operation[B]:
    """Send ``request`` and return its response body, checked to be an ``expected``.

    A SEQUENCE_ERROR refusal (our sequence number is outside the pump's window, e.g. after
    another programmer used the link) is recovered as the specification says: IDENTIFY, then
    the request once more (with a new sequence number and counter; nothing was done).
    """
    try:
        body = yield request
    except PumpRefused as exc:
        if exc.code is not ResultCode.SEQUENCE_ERROR or isinstance(request, m.IdentifyRequest):
            raise
        _log.info("sequence error (%s): resynchronising with IDENTIFY", exc.detail)
        yield m.IdentifyRequest()
        body = yield request
    if not isinstance(body, expected):  # the connection decodes by type: a bug if reached
        raise PumpError(f"unexpected {type(body).__name__} (wanted {expected.__name__})")
    return body


def simple(request: m.Request) -> Operation[None]:
    """A request whose successful answer has no body (Ack)."""
    yield from call(request, m.Ack)


# --- session ----------------------------------------------------------------------------------


def identify(versions: tuple[int, ...] = (1,)) -> Operation[PumpInfo]:
    """IDENTIFY: serial, model, versions and capabilities."""
    body = yield from call(m.IdentifyRequest(versions), m.IdentifyResponse)
    return PumpInfo.from_wire(body)


def resolve_key(source: KeySource | None, serial: str) -> bytes:
    """The key for the pump ``serial`` from a key source; :class:`AuthenticationError` if none."""
    if source is None:
        raise AuthenticationError(f"no key for pump {serial!r}")
    if isinstance(source, bytes | bytearray):
        return bytes(source)
    if isinstance(source, Mapping):
        try:
            return bytes(source[serial])
        except KeyError:
            raise AuthenticationError(f"no key for pump {serial!r}") from None
    return source(serial)


def authenticate(
    conn: ProgrammerConnection, role: Role, key: KeySource | None
) -> Operation[SessionDetails]:
    """IDENTIFY if needed, then AUTH_BEGIN and AUTH_PROOF; checks the pump's proof.

    ``conn`` builds the handshake requests (nonce, transcript); it is the same connection the
    driver sends them on.
    """
    if conn.pump is None:
        yield from identify()
    assert conn.pump is not None
    pump_key = resolve_key(key, conn.pump.serial)
    attempt = 1
    while True:
        try:
            challenge = yield from call(conn.auth_begin(role), m.AuthBeginResponse)
            proof = conn.auth_proof(pump_key)
            answer = yield from call(proof, m.AuthProofResponse)
            break
        except PumpRefused as exc:
            if exc.code is ResultCode.CHALLENGE_REPLACED and attempt < HANDSHAKE_ATTEMPTS:
                # Another transmitter's AUTH_BEGIN on this link replaced our challenge; the
                # key is right and nothing was counted against it: begin again.
                _log.warning("challenge replaced (attempt %d): %s", attempt, exc.detail)
                attempt += 1
                continue
            raise _auth_error(conn.pump.serial, role, exc) from exc
    _log.info("session 0x%08X as %s", challenge.session_id, role.name)
    return SessionDetails(challenge.session_id, role, answer.idle_timeout_s)


def _auth_error(serial: str, role: Role, exc: PumpRefused) -> AuthenticationError:
    return AuthenticationError(
        f"pump {serial} refused authentication as {role.name}: "
        f"{exc.code.name} {exc.detail}".rstrip(),
        exc.code,
    )


def connect(conn: ProgrammerConnection, role: Role, key: KeySource | None) -> Operation[PumpInfo]:
    """IDENTIFY, then authenticate as ``role`` when there is a key.

    Without a key, a pump that does not require authentication is used unauthenticated (it
    obeys as CLINICIAN); one that requires it raises :class:`AuthenticationError`.
    """
    info = yield from identify()
    if key is None:
        if info.auth_required:
            raise AuthenticationError(f"pump {info.serial} requires authentication: no key")
        _log.info("pump %s accepts unauthenticated commands; no session", info.serial)
        return info
    yield from authenticate(conn, role, key)
    return info


def end_session() -> Operation[None]:
    """END_SESSION."""
    yield from simple(m.EndSessionRequest())


# --- status and log ---------------------------------------------------------------------------


def interrogate() -> Operation[PumpStatus]:
    """INTERROGATE: the full status."""
    body = yield from call(m.InterrogateRequest(), m.InterrogateResponse)
    return PumpStatus.from_wire(body)


def read_log_page(page: int) -> Operation[LogPage]:
    """READ_LOG of one page (0 = newest)."""
    body = yield from call(m.ReadLogRequest(page), m.ReadLogResponse)
    return LogPage.from_wire(body)


def read_log(page: int | None = None) -> Operation[list[LogRecord]]:
    """One page, or (``page=None``) every page; newest entry first, without duplicates.

    Entries added while the pages are read shift older entries to later pages; entries are
    told apart by their index, so none is listed twice.
    """
    if page is not None:
        return list((yield from read_log_page(page)).records)
    records: dict[int, LogRecord] = {}
    number, total = 0, 1
    while number < total:
        try:
            current = yield from read_log_page(number)
        except PumpRefused as exc:
            if exc.code is ResultCode.LOG_PAGE_OUT_OF_RANGE:
                break  # empty log, or it shrank while we read it
            raise
        for record in current.records:
            records.setdefault(record.index, record)
        total = current.total_pages
        number += 1
    return sorted(records.values(), key=lambda r: r.index, reverse=True)


# --- settings ---------------------------------------------------------------------------------


def set_clock(when: datetime) -> Operation[datetime]:
    """SET_CLOCK; returns the pump's clock before the change."""
    body = yield from call(m.SetClockRequest(s_from_datetime(when)), m.SetClockResponse)
    return datetime_from_s(body.previous_time_s)


def set_low_reservoir_alarm(volume_ml: float) -> Operation[None]:
    """SET_ALARM_THRESHOLDS: the low-reservoir alarm volume."""
    yield from simple(m.SetAlarmThresholdsRequest(nl_from_ml(volume_ml)))


def acknowledge_alarm(alarm: int | None = None) -> Operation[int]:
    """ACK_ALARM of one alarm id, or every alarm; returns how many were acknowledged."""
    body = yield from call(m.AckAlarmRequest(alarm), m.AckAlarmResponse)
    return body.acknowledged


# --- therapy ----------------------------------------------------------------------------------


#: refusals after which PROGRAM_ABORT is not tried (it would be refused the same way)
_NO_ABORT_CODES = frozenset({ResultCode.ROLE_FORBIDDEN, ResultCode.NOT_AUTHENTICATED})


def program(
    new: Program | m.TherapyProgram,
    *,
    commit: bool = True,
    confirm: Callable[[Program], bool] | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Operation[Program]:
    """The whole transfer: BEGIN, DATA..., VERIFY (echo checked), then COMMIT.

    ``confirm`` sees the program as the pump decoded it, before anything changes; returning
    False aborts. With ``commit=False`` the program is verified by the pump and then aborted
    (a dry run). On a refusal, a mismatching echo or a declined confirmation the transfer is
    aborted with PROGRAM_ABORT and the error raised; after a link failure, or a refusal for
    the role or a missing session (ROLE_FORBIDDEN, NOT_AUTHENTICATED), no abort is tried
    (an uncommitted program never takes effect, and the pump discards it when the session
    ends). Returns the program as the pump verified it.
    """
    wire = new.to_wire() if isinstance(new, Program) else new
    *transfer, verify_request = transfer_requests(wire, chunk_bytes)
    try:
        for request in transfer:
            if isinstance(request, m.ProgramDataRequest):
                stored = yield from call(request, m.ProgramDataResponse)
                expected = request.offset + len(request.chunk)
                if stored.received_bytes != expected:
                    raise ProgramMismatch(
                        f"pump holds {stored.received_bytes} program bytes; expected {expected}"
                    )
            else:
                yield from simple(request)
        verified = yield from call(verify_request, m.ProgramVerifyResponse)
        if not verify_matches(wire, verified):
            raise ProgramMismatch(
                "the program the pump verified differs from the one sent: "
                f"sent {wire!r}, pump holds {verified.program!r}"
            )
        echo = Program.from_wire(verified.program)
        if confirm is not None and not confirm(echo):
            raise ProgramMismatch("program declined after verification; not committed")
        if not commit:
            _log.info("program verified by the pump (dry run): aborting the transfer")
            yield from simple(m.ProgramAbortRequest())
            return echo
        yield from simple(commit_request(wire))
    except LinkError:
        raise
    except PumpRefused as exc:
        if exc.code in _NO_ABORT_CODES:
            # not allowed to transfer at all: nothing is pending, and an abort would be
            # refused for the same reason
            _log.debug("no PROGRAM_ABORT after %s", exc.code.name)
            raise
        try:
            yield from simple(m.ProgramAbortRequest())
        except PumpError as abort_exc:
            _log.warning("PROGRAM_ABORT after a failed transfer failed too: %s", abort_exc)
        raise
    except PumpError:
        try:
            yield from simple(m.ProgramAbortRequest())
        except PumpError as abort_exc:
            _log.warning("PROGRAM_ABORT after a failed transfer failed too: %s", abort_exc)
        raise
    _log.info("program committed: %s", echo.mode)
    return echo


def bolus(kind: m.BolusKind) -> Operation[BolusResult]:
    """BOLUS of any kind."""
    body = yield from call(m.BolusRequest(kind), m.BolusResponse)
    return BolusResult.from_wire(body)


def clinician_bolus(dose_mcg: float, duration_min: int, then_resume: bool) -> m.ClinicianBolus:
    """The wire record of a clinician bolus."""
    return m.ClinicianBolus(ng_from_mcg(dose_mcg), duration_min, then_resume)


def bridge_bolus(
    volume_ml: float | None = None, old_concentration_mcg_per_ml: float | None = None
) -> Operation[BolusResult]:
    """A bridge bolus pushing the old drug out (``None``: the pump's own values)."""
    kind = m.BridgeBolus(optional_nl(volume_ml), optional_ng(old_concentration_mcg_per_ml))
    return (yield from bolus(kind))


def revise_catheter(
    length_cm: float, volume_ul_per_cm: float = TYPICAL_CATHETER_VOLUME_UL_PER_CM
) -> Operation[float]:
    """CATHETER_REVISION: a new (empty) catheter was implanted; returns the volume (mL) the
    pump now allows a priming bolus to push."""
    request = m.CatheterRevisionRequest(mm_from_cm(length_cm), nl_from_ul(volume_ul_per_cm))
    body = yield from call(request, m.CatheterRevisionResponse)
    return ml_from_nl(body.unprimed_nl)


def optional_nl(volume_ml: float | None) -> int | None:
    """mL to nL, ``None`` (the pump computes the volume) kept."""
    return None if volume_ml is None else nl_from_ml(volume_ml)


def optional_ng(mcg: float | None) -> int | None:
    """mcg (or mcg/mL) to ng, ``None`` kept."""
    return None if mcg is None else ng_from_mcg(mcg)


def refill(
    volume_ml: float,
    drug: str,
    concentration_mcg_per_ml: float,
    aspirated_ml: float | None = None,
    bridge: bool = True,
) -> Operation[RefillResult]:
    """REFILL: the reservoir now holds ``volume_ml`` of ``drug``."""
    request = m.RefillRequest(
        volume_nl=nl_from_ml(volume_ml),
        concentration_ng_per_ml=ng_from_mcg(concentration_mcg_per_ml),
        aspirated_nl=optional_nl(aspirated_ml),
        bridge_bolus=bridge,
        drug_name=drug,
    )
    body = yield from call(request, m.RefillResponse)
    return RefillResult.from_wire(body)
