"""Sans-IO connections for both ends of the telemetry link (the names users import).

The code is split by role: :mod:`protocol.pump_connection` (the pump's end),
:mod:`protocol.programmer_connection` (the programmer's end) and :mod:`protocol.endpoint`
(what they share). This module gathers their public names, so that
``from itpump.protocol.connection import PumpConnection`` keeps working.

Neither class reads a clock, opens a port or starts a thread. Bytes go in with
``receive_data()``, typed events come out of ``next_event()``, and ``send()`` turns a typed
message into the bytes to write. The programmer side also gets the current time from its
caller (``now_s``) to decide when to retransmit.

Pump side, in one call per chunk of received bytes (``firmware`` answers each request)::

    port.write(pump.respond(chunk, firmware, now_s=clock()))

which is this loop (write it yourself only to do something else with the events)::

    pump.receive_data(chunk)
    while (event := pump.next_event()) is not None:
        if isinstance(event, RequestReceived):
            response = firmware_handler(event.request)   # ResponseBody or Refusal
            port.write(pump.send(response))
        elif isinstance(event, (AutoReply, ResentResponse)):
            port.write(event.data)      # answered by the protocol layer itself
        # SessionStarted / SessionEnded: notifications (log them, drop a pending program)

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
