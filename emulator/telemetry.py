"""A pump's telemetry endpoint: the byte handler a transport serves.

Bytes from the programmer go into the sans-IO `PumpConnection`; requests that pass the
protocol checks are answered by the firmware's `CommandHandler` at the current simulated time;
the reply bytes go back to the transport. A pump with a dead battery is silent.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable

from itpump.emulator.pump import EmulatedPump
from itpump.firmware_stubs.command_handler import CommandHandler, identity_of
from itpump.protocol.auth import NonceSource, seeded_nonce_source
from itpump.protocol.connection import (
    AutoReply,
    PumpConnection,
    RequestReceived,
    ResentResponse,
    SessionEnded,
    SessionStarted,
)

log = logging.getLogger(__name__)

# Documented default site key for test rigs; per-pump keys are derived from it and the serial.
DEFAULT_MASTER_KEY = b"itpump-test-rig-master-key-0001"


def pump_key(serial: str, master_key: bytes = DEFAULT_MASTER_KEY) -> bytes:
    """Per-pump key: HMAC-SHA256(master key, serial), so a rig knows every pump's key."""
    return hmac.new(master_key, serial.encode("utf-8"), hashlib.sha256).digest()


class TelemetryEndpoint:
    """`ByteHandler` for one emulated pump (call it with received bytes, send what it returns).

    Session idle timeouts run on `link_clock` (real seconds by default): a programmer talks
    in real time even when the pump's world runs at 3600 x.
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
            nonce_source or seeded_nonce_source(int.from_bytes(key[:8], "big")),
            allow_unauthenticated=allow,
        )
        self.handler = CommandHandler(pump.firmware, refill=self._refill)
        self._baud = pump.profile.telemetry.baud
        self.requests_answered = 0

    def _refill(
        self, volume_ml: float, drug: str, conc: float, aspirated_ml: float | None, bridge: bool
    ) -> None:
        # The clinician aspirates everything and fills `volume_ml`; the pump is told what they
        # measured. A pocket-fill fault armed by the rig makes the liquid miss the reservoir.
        self.pump.refill(volume_ml, drug, conc, bridge=bridge, reported_aspirated_ml=aspirated_ml)

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
                response = pump.call(self.handler.handle, event.request)
                out.append(conn.send(response))
                self.requests_answered += 1
        reply = b"".join(out)
        # Radio time costs battery: 10 bits per byte at the link's baud rate.
        pump.hardware.add_telemetry_time(10.0 * (len(data) + len(reply)) / self._baud)
        return reply

    def link_closed(self) -> None:
        """The telemetry head was lifted or the client went away: the session ends."""
        self.connection.link_lost()
        self.handler.session_changed()
