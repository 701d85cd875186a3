"""A pump's telemetry endpoint: the byte handler a transport serves.

Bytes from the programmer go into the sans-IO `PumpConnection`; requests that pass the
protocol checks are answered by the firmware's `CommandHandler` at the current simulated time;
the reply bytes go back to the transport. A pump with a dead battery is silent.

One telemetry head at a time (docs/safety.md, "Session model"): every client link a
transport opens (`open_head`) gets its own protocol connection, so its frames, its challenge
and its session are its own, and its link closing ends its session only. While one head
holds a live session, every request from any other head is refused SESSION_BUSY and changes
nothing; the pump is free again when that session ends (END_SESSION, idle timeout, or its
link closing). Calling the endpoint directly uses head 0. Failed authentications are counted
for the pump per role, not per link, and after a few AUTH_BEGIN for that role is refused
AUTH_BACKOFF for a while (at most 60 s, on the link clock), so opening another link does not
reset the wait and a patient-key guesser does not delay a clinician. A PTY is one head
shared by every process that opens it (docs/safety.md).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable

from itpump.emulator.pump import EmulatedPump, PumpSilentError
from itpump.firmware_stubs.command_handler import CommandHandler, identity_of
from itpump.protocol import messages as m
from itpump.protocol.auth import NonceSource
from itpump.protocol.connection import PumpConnection, PumpEvent, SessionEnded, SessionStarted
from itpump.protocol.state import AuthBackoff

log = logging.getLogger(__name__)

#: The head a direct call of the endpoint speaks for (tests, rigs calling the handler).
DIRECT_HEAD = 0


class TelemetryHead:
    """One client link's byte handler: what a transport gets from `open_head()`."""

    def __init__(self, endpoint: TelemetryEndpoint, head: int) -> None:
        self._endpoint = endpoint
        self.head = head

    def __call__(self, data: bytes, /) -> bytes:
        """Feed this link's received bytes; the reply bytes."""
        return self._endpoint.feed(self.head, data)

    def link_closed(self) -> None:
        """This client went away (or reopened its port): its session ends, no other."""
        self._endpoint.close_head(self.head)


class TelemetryEndpoint:
    """`ByteHandler` for one emulated pump (call it with received bytes, send what it returns).

    Session idle timeouts run on `link_clock` (real seconds by default): a programmer talks
    in real time even when the pump's world runs at 3600 x.

    Challenge nonces and session ids come from the OS CSPRNG (`os.urandom`) unless
    `nonce_source` is given: a source derived from the key or serial would repeat after every
    restart, so a recorded session could be replayed and the next challenge predicted. Pass
    `seeded_nonce_source(...)` only in a test or simulation that needs reproducible bytes.
    """

    def __init__(
        self,
        pump: EmulatedPump,
        key: bytes,
        *,
        nonce_source: NonceSource | None = None,
        allow_unauthenticated: bool | None = None,
        link_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pump = pump
        self._clock = link_clock
        self._allow = (
            pump.profile.telemetry.allow_unauthenticated
            if allow_unauthenticated is None
            else allow_unauthenticated
        )
        self._key = key
        self._nonces = os.urandom if nonce_source is None else nonce_source
        self._identity = identity_of(pump.firmware)
        # One protocol connection per open head; a transport holds a head per client, so
        # this holds no more than the transports' own per-client state.
        self._heads: dict[int, PumpConnection] = {}
        # The pump's counts of failed authentications (per role), whichever link they came on.
        self.auth_backoff = AuthBackoff()
        self._head_ids = itertools.count(DIRECT_HEAD + 1)
        self.handler = CommandHandler(
            pump.firmware, refill=self._refill, revise_catheter=self._revise_catheter
        )
        self._baud = pump.profile.telemetry.baud
        self.requests_answered = 0

    @property
    def connection(self) -> PumpConnection:
        """The protocol connection of head 0 (the one a direct call speaks for)."""
        return self._head(DIRECT_HEAD)

    def _head(self, head: int) -> PumpConnection:
        conn = self._heads.get(head)
        if conn is None:
            conn = PumpConnection(
                self._identity,
                self._key,
                self._nonces,
                allow_unauthenticated=self._allow,
                auth_backoff=self.auth_backoff,
            )
            self._heads[head] = conn
        return conn

    def holder(self) -> int | None:
        """The head holding a live session, if any (at most one does)."""
        return next((h for h, c in self._heads.items() if c.session_id is not None), None)

    def open_head(self) -> TelemetryHead:
        """A byte handler for one more client link (a transport calls it per client)."""
        return TelemetryHead(self, next(self._head_ids))

    def _refill(
        self, volume_ml: float, drug: str, conc: float, aspirated_ml: float | None, bridge: bool
    ) -> None:
        # REFILL carries the volume in the reservoir after the refill: the emulated clinician
        # aspirates everything, so that is the volume injected; the pump is told what they
        # measured. A pocket-fill fault armed by the rig makes the liquid miss the reservoir.
        self.pump.refill(volume_ml, drug, conc, bridge=bridge, reported_aspirated_ml=aspirated_ml)

    def _revise_catheter(self, length_cm: float, volume_ul_per_cm: float) -> float:
        # The programmer records a revision the surgeon did: the emulator does the surgery too.
        return self.pump.revise_catheter(length_cm, volume_ul_per_cm)

    def __call__(self, data: bytes, /) -> bytes:
        """Feed received bytes (as head 0); returns the reply bytes (possibly empty)."""
        return self.feed(DIRECT_HEAD, data)

    def feed(self, head: int, data: bytes) -> bytes:
        """Feed bytes received on link ``head``; returns the reply bytes (possibly empty)."""
        pump = self.pump
        if pump.hardware.dead:
            return b""
        now = self._clock()
        for conn in self._heads.values():
            conn.expire_idle_session(now)  # a head idle past its timeout holds nothing
        holder = self.holder()
        busy = None
        if holder is not None and holder != head:
            busy = f"another programmer holds a session with pump {pump.serial}"
        reply = self._head(head).respond(
            data,
            self._firmware,
            now_s=now,
            on_event=lambda event: self._on_event(head, event),
            busy=busy,
        )
        # Radio time costs battery: 10 bits per byte at the link's baud rate.
        pump.hardware.add_telemetry_time(10.0 * (len(data) + len(reply)) / self._baud)
        return reply

    def _firmware(self, request: m.Request) -> m.Response | None:
        """The firmware's answer at the current simulated time (``None``: it lost power)."""
        try:
            response = self.pump.call(self.handler.handle, request)
        except PumpSilentError:
            return None  # the battery ran out during the command: a dead pump sends nothing
        finally:
            # The firmware ran (answered, failed, or lost power): the farm persists what it
            # may have changed.
            self.requests_answered += 1
        return response

    def _on_event(self, head: int, event: PumpEvent) -> None:
        if isinstance(event, SessionStarted):
            self.handler.session_changed()
        elif isinstance(event, SessionEnded) and self.holder() in (None, head):
            # A half-done program transfer goes with its session; a head whose idled-out
            # session ends late must not discard the transfer of the head holding one now.
            self.handler.session_changed()

    def close_head(self, head: int) -> None:
        """Link ``head`` closed (client gone, port reopened): its session ends, no other."""
        conn = self._heads.pop(head, None)
        if conn is None:
            return
        had_session = conn.session_id is not None
        conn.link_lost()
        if had_session:
            self.handler.session_changed()

    def link_closed(self) -> None:
        """The telemetry head was lifted off the pump: every link is lost, sessions end."""
        for head in list(self._heads):
            self.close_head(head)
