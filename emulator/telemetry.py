"""A pump's telemetry endpoint: the byte handler a transport serves.

Bytes from the programmer go into the sans-IO `PumpConnection`; requests that pass the
protocol checks are answered by the firmware's `CommandHandler` at the current simulated time;
the reply bytes go back to the transport. A pump with a dead battery is silent.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from itpump.emulator.pump import EmulatedPump, PumpSilentError
from itpump.firmware_stubs.command_handler import CommandHandler, identity_of
from itpump.protocol.auth import NonceSource
from itpump.protocol.connection import (
    AutoReply,
    PumpConnection,
    RequestReceived,
    ResentResponse,
    SessionEnded,
    SessionStarted,
)
from itpump.protocol.state import LocalProtocolError

log = logging.getLogger(__name__)



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
        allow = (
            pump.profile.telemetry.allow_unauthenticated
            if allow_unauthenticated is None
            else allow_unauthenticated
        )
        self.connection = PumpConnection(
            identity_of(pump.firmware),
            key,
            os.urandom if nonce_source is None else nonce_source,
            allow_unauthenticated=allow,
        )
        self.handler = CommandHandler(
            pump.firmware, refill=self._refill, revise_catheter=self._revise_catheter
        )
        self._baud = pump.profile.telemetry.baud
        self.requests_answered = 0

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
        """Feed received bytes; returns the reply bytes (possibly empty)."""
        pump = self.pump
        if pump.hardware.dead:
            return b""
        now = self._clock()
        conn = self.connection
        conn.expire_idle_session(now)
        conn.receive_data(data, now)
        out: list[bytes] = []
        while (event := conn.next_event()) is not None:
            if isinstance(event, AutoReply | ResentResponse):
                out.append(event.data)
            elif isinstance(event, SessionStarted | SessionEnded):
                self.handler.session_changed()
            elif isinstance(event, RequestReceived):
                frame = self._answer(event)
                if frame is None:
                    return b""  # the battery ran out while answering: nothing goes out
                out.append(frame)
                self.requests_answered += 1
        reply = b"".join(out)
        # Radio time costs battery: 10 bits per byte at the link's baud rate.
        pump.hardware.add_telemetry_time(10.0 * (len(data) + len(reply)) / self._baud)
        return reply

    def _answer(self, event: RequestReceived) -> bytes | None:
        """The reply frame to one accepted request (``None``: the pump lost power doing it).

        The request never stays pending: any unexpected exception (a firmware bug, a value
        the wire cannot carry) is logged and answered INTERNAL_ERROR, so the pump keeps
        answering later requests instead of going deaf with its request machine stuck.
        """
        conn = self.connection
        name = type(event.request).__name__
        try:
            response = self.pump.call(self.handler.handle, event.request)
        except PumpSilentError:
            # The battery ran out during the command: a dead pump sends nothing; answering
            # only returns the request machine to idle.
            conn.send_internal_error("no power")
            return None
        except Exception as exc:
            log.exception("pump %s: %s failed; answering INTERNAL_ERROR", self.pump.serial, name)
            return conn.send_internal_error(f"{name} failed: {type(exc).__name__}: {exc}")
        try:
            return conn.send(response)
        except LocalProtocolError as exc:
            # The handler answered with the wrong message type: a bug, not the peer's fault.
            log.exception(
                "pump %s: bad answer to %s; answering INTERNAL_ERROR", self.pump.serial, name
            )
            return conn.send_internal_error(f"{name} failed: {exc}")

    def link_closed(self) -> None:
        """The telemetry head was lifted or the client went away: the session ends."""
        self.connection.link_lost()
        self.handler.session_changed()
