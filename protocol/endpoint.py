"""The core both ends of the link share: frames in, one handler per frame body, events out.

:class:`~protocol.pump_connection.PumpConnection` and
:class:`~protocol.programmer_connection.ProgrammerConnection` are built on :class:`_Endpoint`
(deframer, statistics, event queue, request state machine); the session record and the
sequence-window scope are shared too. Nothing here is public API beyond :class:`LinkStats`:
users import from :mod:`protocol.connection` or :mod:`protocol`.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass, field, fields
from typing import Generic, TypeVar

from itpump.protocol.auth import FrameMac
from itpump.protocol.codes import ResultCode
from itpump.protocol.framing import Deframer, FramingStats
from itpump.protocol.messages import (
    Role,
)
from itpump.protocol.state import (
    REQUEST_TRANSITIONS,
    RequestState,
    StateMachine,
)

__all__ = ["LinkStats"]

_log = logging.getLogger(__name__)


@dataclass
class LinkStats:
    """Counters of one connection, for diagnostics (framing counters included)."""

    framing: FramingStats
    frames_in: int = 0  # frame bodies that passed the CRC
    frames_out: int = 0
    dropped: int = 0  # CRC-valid bodies ignored: too short, wrong direction, stale, bad MAC
    duplicates: int = 0  # pump: retransmissions answered from the cache
    retransmissions: int = 0  # programmer: frames sent again
    timeouts: int = 0  # programmer: requests given up
    internal_errors: int = 0  # pump: requests answered INTERNAL_ERROR (see the log)
    refusals: Counter[ResultCode] = field(default_factory=Counter)  # protocol-level

    def as_dict(self) -> dict[str, object]:
        """The counters as plain data (for logs and JSON output)."""
        out: dict[str, object] = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("framing", "refusals")
        }
        out["framing"] = self.framing.as_dict()
        out["refusals"] = {code.name: n for code, n in self.refusals.items()}
        return out


@dataclass(slots=True)
class _Scope:
    """Sequence window and retransmission cache of one scope: the link, or one session.

    Keeping them per scope means that frames outside a session (IDENTIFY, AUTH_BEGIN from
    anyone in range) can neither shift a session's window nor evict its cached answer.
    """

    last_seq: int | None = None  # None: the next sequence number is accepted as it is
    last_body: bytes | None = None
    last_response: bytes | None = None


@dataclass(slots=True)
class _Session:
    session_id: int
    role: Role
    key: bytes = field(repr=False)
    counter: int = 0  # pump: last accepted; programmer: last used
    scope: _Scope = field(default_factory=_Scope)
    last_active_s: float | None = None  # pump: time of the last accepted request, if known
    # The session key keyed once: every frame of the session is MACed with it.
    mac: FrameMac = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.mac = FrameMac(self.key)


_E = TypeVar("_E")


class _Endpoint(Generic[_E]):
    """What both ends share: frames in, ``_handle`` each body, events out (a queue)."""

    #: what a dropped frame is, for the debug log
    _DROPPED = "frame"

    def __init__(self, request_machine: str, max_body_size: int) -> None:
        self._deframer = Deframer(max_body_size)
        self.stats = LinkStats(self._deframer.stats)
        self._events: deque[_E] = deque()
        self._request = StateMachine(request_machine, RequestState.IDLE, REQUEST_TRANSITIONS)

    def _handle(self, body: bytes) -> None:
        raise NotImplementedError

    def _next_queued(self) -> _E | None:
        """The next event, handling buffered frames until one is queued; ``None``: none."""
        while not self._events:
            body = self._deframer.next_frame()
            if body is None:
                return None
            self.stats.frames_in += 1
            self._handle(body)
        return self._events.popleft()

    def _drop(self, why: str) -> None:
        self.stats.dropped += 1
        _log.debug("dropping %s: %s", self._DROPPED, why)
