"""Replay the programmer side of a captured session against a pump; report changed answers.

A regression test for firmware and protocol changes: record a session once (`itpump serve
--capture`), then play the same requests against a pump in the same state and compare the
decoded answers field by field.

The session cannot be replayed byte for byte: the handshake binds fresh nonces, so the
session id, session key, MACs and counters differ. The replay therefore

* re-sends IDENTIFY as recorded, re-authenticates (AUTH_BEGIN with a fresh nonce and the
  recorded role, AUTH_PROOF computed with the pump key) and sends every other request's
  *decoded contents* in the new session, through :class:`programmer.PumpClient` (which
  numbers, signs and retransmits them);
* skips retransmissions (a request byte-identical to the previous one) and requests that
  were never answered in the capture;
* compares each answer with the recorded one after removing the fields in
  :data:`DEFAULT_IGNORED_FIELDS` (nonce- and clock-dependent) plus any the caller adds.
  Header fields (sequence number, session id, counter, MAC) and the CRC are never compared:
  they are not part of the decoded message.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from itpump.emulator.capture import CaptureError, CaptureReader, Direction
from itpump.emulator.conversation import (
    ConversationEvent,
    EventKind,
    decode_records,
    flatten_message,
)
from itpump.programmer.client import PumpClient
from itpump.programmer.errors import PumpError, PumpRefused, PumpTimeout
from itpump.programmer.operations import KeySource, resolve_key
from itpump.protocol.codes import ResultCode
from itpump.protocol.messages import (
    AuthBeginRequest,
    AuthProofRequest,
    Refusal,
    Request,
    Response,
)

__all__ = [
    "DEFAULT_IGNORED_FIELDS",
    "Exchange",
    "FieldDifference",
    "ReplayInputError",
    "ReplayReport",
    "StepResult",
    "compare_answers",
    "load_exchanges",
    "replay_capture",
]

log = logging.getLogger(__name__)

#: Fields (``Record.field``) that differ between two runs of the same session by design:
#: nonces, session ids and proofs come from the handshake's fresh randomness; clock values
#: and projections are instants on the pump's clock, which moves between recording and
#: replay.
DEFAULT_IGNORED_FIELDS: frozenset[str] = frozenset(
    {
        "AuthBeginResponse.session_id",
        "AuthBeginResponse.pump_nonce",
        "AuthProofResponse.pump_proof",
        "InterrogateResponse.time_s",
        "InterrogateResponse.projected_low_reservoir_s",
        "InterrogateResponse.projected_eri_s",
        "RefillResponse.projected_low_reservoir_s",
        "SetClockResponse.previous_time_s",
        "Alarm.raised_at_s",
        "LogEntry.time_s",
    }
)


class ReplayInputError(ValueError):
    """The capture cannot be replayed (unreadable, no such pump, several pumps, no requests)."""


class ReplayKeyError(PumpError):
    """The replay could not authenticate: the key given is not the pump's."""


def check_ignored_fields(names: Sequence[str]) -> None:
    """`ValueError` naming any `Record.field` that no response record has."""
    known: dict[str, set[str]] = {}
    for cls in _response_classes():
        known[cls.__name__] = {f.name for f in dataclasses.fields(cls)}
    for name in names:
        record, _, field_name = name.partition(".")
        if record not in known or field_name not in known[record]:
            hint = ", ".join(sorted(known)) if record not in known else ", ".join(
                sorted(known[record])
            )
            raise ValueError(
                f"--ignore {name!r}: expected Record.field; "
                + (f"records: {hint}" if record not in known else f"fields of {record}: {hint}")
            )


def _response_classes() -> list[type]:
    import itpump.protocol.messages as messages

    return [
        obj
        for obj in vars(messages).values()
        if isinstance(obj, type)
        and dataclasses.is_dataclass(obj)
        and (issubclass(obj, messages.ResponseBody) or obj is messages.Refusal)
    ]


@dataclass(frozen=True, slots=True)
class Exchange:
    """A recorded request and the answer the pump gave (``None``: never answered)."""

    request: Request
    response: Response | None
    sim_time_h: float


@dataclass(frozen=True, slots=True)
class FieldDifference:
    """One field whose value changed (``None`` for a field present on one side only)."""

    path: str
    recorded: object
    replayed: object


@dataclass(slots=True)
class StepResult:
    """The outcome of one replayed exchange."""

    index: int
    name: str
    differences: list[FieldDifference] = field(default_factory=list)
    skipped: str | None = None  # why the request was not replayed


@dataclass(slots=True)
class ReplayReport:
    """Everything a replay found."""

    serial: str
    steps: list[StepResult] = field(default_factory=list)

    @property
    def differences(self) -> int:
        """Number of exchanges whose answer differs."""
        return sum(1 for step in self.steps if step.differences)

    @property
    def ok(self) -> bool:
        """Whether every replayed answer matched."""
        return self.differences == 0


def _request_name(request: Request) -> str:
    return request.TYPE.name


def load_exchanges(path: str | Path, serial: str | None = None) -> tuple[str, list[Exchange]]:
    """The pump serial and the request/answer pairs of one pump of a capture.

    ``serial`` picks the pump when the capture holds several. Answers are matched to
    requests by sequence number, type and session id, as a programmer does.
    """
    try:
        with CaptureReader(path) as reader:
            events = list(decode_records(reader))
            interfaces = reader.interfaces
    except CaptureError as exc:
        raise ReplayInputError(str(exc)) from None
    with_requests = sorted(
        {e.serial for e in events if e.direction is Direction.TO_PUMP and e.message is not None}
    )
    if serial is None:
        if len(with_requests) > 1:
            raise ReplayInputError(
                f"{path}: the capture holds several pumps ({', '.join(with_requests)}): "
                "choose one with --serial"
            )
        if not with_requests:
            raise ReplayInputError(f"{path}: no programmer request in the capture")
        serial = with_requests[0]
    elif serial not in {i.serial for i in interfaces}:
        known = ", ".join(i.serial for i in interfaces) or "none"
        raise ReplayInputError(f"{path}: no pump {serial!r} in the capture (pumps: {known})")
    return serial, _pair([e for e in events if e.serial == serial])


def _pair(events: Iterable[ConversationEvent]) -> list[Exchange]:
    exchanges: list[Exchange] = []
    answers: list[Response | None] = []
    # (seq, type, session_id) of the request still waiting, and its index.
    waiting: dict[tuple[int, int, int], int] = {}
    last_body = b""
    for event in events:
        if event.kind is not EventKind.FRAME or event.header is None or event.message is None:
            continue
        header = event.header
        if event.direction is Direction.TO_PUMP:
            assert isinstance(event.message, Request)
            if event.body == last_body:
                continue  # a retransmission: the same request again
            last_body = event.body
            waiting[(header.seq, header.msg_type, header.session_id)] = len(exchanges)
            exchanges.append(Exchange(event.message, None, event.sim_time_h))
            answers.append(None)
        else:
            key = (header.seq, header.msg_type & 0x7F, header.session_id)
            index = waiting.pop(key, None)
            if index is not None:
                answers[index] = event.message  # type: ignore[assignment]
    return [Exchange(x.request, a, x.sim_time_h) for x, a in zip(exchanges, answers, strict=True)]


def compare_answers(
    recorded: Response, replayed: Response, ignored: frozenset[str] = DEFAULT_IGNORED_FIELDS
) -> list[FieldDifference]:
    """The fields whose values differ, after removing the ``ignored`` ones."""
    old = flatten_message(recorded)
    new = flatten_message(replayed)
    differences = []
    for path in sorted(old.keys() | new.keys(), key=lambda p: (p not in old, p)):
        qual = (old.get(path) or new[path])[0]
        if qual in ignored:
            continue
        before = old[path][1] if path in old else None
        after = new[path][1] if path in new else None
        if before != after or (path in old) != (path in new):
            differences.append(FieldDifference(path, before, after))
    return differences


def replay_capture(
    exchanges: Sequence[Exchange],
    client: PumpClient,
    key: KeySource | None,
    *,
    serial: str,
    ignored: frozenset[str] = DEFAULT_IGNORED_FIELDS,
) -> ReplayReport:
    """Play ``exchanges`` through ``client`` and compare every answer with the recorded one."""
    report = ReplayReport(serial)
    for index, exchange in enumerate(exchanges):
        name = _request_name(exchange.request)
        step = StepResult(index, name)
        report.steps.append(step)
        if exchange.response is None:
            step.skipped = "never answered in the capture"
            continue
        try:
            request = _fresh(exchange.request, client, key)
        except PumpError as exc:
            step.skipped = f"cannot be replayed: {exc}"
            step.differences.append(FieldDifference("request", "replayable", str(exc)))
            continue
        try:
            answer: Response = client.request(request)
        except PumpRefused as exc:
            answer = Refusal.make(exc.code, exc.detail)
        except PumpTimeout as exc:
            step.differences.append(FieldDifference("answer", "answered", f"no answer ({exc})"))
            continue
        if (
            isinstance(exchange.request, AuthProofRequest)
            and isinstance(answer, Refusal)
            and answer.result is ResultCode.AUTH_FAILED
            and not isinstance(exchange.response, Refusal)
        ):
            # Not a difference in the pump: the replay has the wrong key, and every later
            # answer would only say NOT_AUTHENTICATED.
            raise ReplayKeyError(
                f"the pump refused the replay's proof (AUTH_FAILED): wrong key for {serial}?"
            )
        step.differences = compare_answers(exchange.response, answer, ignored)
        if step.differences:
            log.info("%s: %d fields differ", name, len(step.differences))
    return report


def _fresh(request: Request, client: PumpClient, key: KeySource | None) -> Request:
    """The request to send now: handshake messages are rebuilt for the new session."""
    conn = client.connection
    if isinstance(request, AuthBeginRequest):
        return conn.auth_begin(request.role)
    if isinstance(request, AuthProofRequest):
        pump = conn.pump
        if pump is None:
            raise PumpError("AUTH_PROOF before IDENTIFY: the proof needs the pump serial")
        try:
            return conn.auth_proof(resolve_key(key, pump.serial))
        except Exception as exc:  # LocalProtocolError: the AUTH_BEGIN before it was refused
            raise PumpError(str(exc)) from exc
    return request
