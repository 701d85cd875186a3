"""Sans-IO connections for both ends of the telemetry link (the names users import).

The code is split by role: :mod:`protocol.pump_connection` (the pump's end),
:mod:`protocol.programmer_connection` (the programmer's end) and :mod:`protocol.endpoint`
(what they share). This module gathers their public names, so that
``from itpump.protocol.connection import PumpConnection`` keeps working.

Neither class reads a clock, opens a port or starts a thread. Bytes go in with
``receive_data()``, typed events come out of ``next_event()``, and ``send()`` turns a typed
message into the bytes to write. The programmer side also gets the current time from its
caller (``now_s``) to decide when to retransmit.

Pump side, in one call per chunk of received bytes (``firmware`` answers each request; the
loop it stands for is in :mod:`protocol.pump_connection`)::

    port.write(pump.respond(chunk, firmware, now_s=clock()))

Programmer side::

    port.write(prog.send(InterrogateRequest(), now_s=clock()))
    ... prog.receive_data(port.read()); event = prog.next_event()
    ... if clock() >= prog.deadline_s: port.write(prog.poll(clock()))
"""

from itpump.protocol.endpoint import LinkStats
from itpump.protocol.programmer_connection import (
    DEFAULT_BACKOFF,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_TIMEOUT_S,
    ProgrammerConnection,
    ProgrammerEvent,
    PumpAuthenticationFailed,
    RequestTimedOut,
    ResponseReceived,
    SessionInfo,
    recommended_timeout_s,
)
from itpump.protocol.pump_connection import (
    DEFAULT_IDLE_TIMEOUT_S,
    AutoReply,
    PumpConnection,
    PumpEvent,
    PumpFirmware,
    PumpIdentity,
    RequestReceived,
    ResentResponse,
    SessionEnded,
    SessionStarted,
)

__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_IDLE_TIMEOUT_S",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_TIMEOUT_S",
    "AutoReply",
    "LinkStats",
    "ProgrammerConnection",
    "ProgrammerEvent",
    "PumpAuthenticationFailed",
    "PumpConnection",
    "PumpEvent",
    "PumpFirmware",
    "PumpIdentity",
    "RequestReceived",
    "RequestTimedOut",
    "ResentResponse",
    "ResponseReceived",
    "SessionEnded",
    "SessionInfo",
    "SessionStarted",
    "recommended_timeout_s",
]
