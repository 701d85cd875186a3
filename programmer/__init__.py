"""Reference programmer: a client library (blocking and asyncio) for the itpump telemetry
protocol, over any pyserial URL (PTY path, ``socket://``, ``rfc2217://``).

* :class:`PumpClient` (blocking) and :class:`AsyncPumpClient` (asyncio): identify,
  authenticate, interrogate, program, boluses, refill, log, clock, alarms, stop/resume;
* :class:`Program` and its modes (:class:`Continuous`, :class:`Flex`, :class:`PeriodicBolus`,
  :class:`Stopped`): therapy programs in mcg/day, mcg/mL and clock times;
* results in clinical units (:class:`PumpStatus`, :class:`PumpInfo`, ...);
* exceptions: :class:`PumpRefused`, :class:`PumpTimeout`, :class:`AuthenticationError`, ...

The protocol itself (framing, MACs, sequence numbers, retransmission) is the sans-IO
:class:`protocol.connection.ProgrammerConnection`; this package moves bytes and keeps time.
See ``docs/programmer.md``.
"""

from itpump.programmer.aio import AsyncPumpClient
from itpump.programmer.client import PumpClient
from itpump.programmer.errors import (
    AuthenticationError,
    LinkError,
    ProgramMismatch,
    PumpError,
    PumpRefused,
    PumpTimeout,
)
from itpump.programmer.keys import derive_pump_key, derive_role_key, master_key_source, parse_key
from itpump.programmer.models import (
    AlarmInfo,
    BolusResult,
    LogPage,
    LogRecord,
    PumpInfo,
    PumpStatus,
    RefillResult,
    SessionDetails,
    to_data,
)
from itpump.programmer.operations import KeySource
from itpump.programmer.program import (
    Catheter,
    Continuous,
    Flex,
    FlexStep,
    Mode,
    PatientBolusLimits,
    PeriodicBolus,
    Program,
    ProgramError,
    Stopped,
    load_program,
)
from itpump.protocol.codes import AlarmId, ResultCode
from itpump.protocol.messages import Capability, FlexPeriod, Role, TherapyState

__all__ = [
    "AlarmId",
    "AlarmInfo",
    "AsyncPumpClient",
    "AuthenticationError",
    "BolusResult",
    "Capability",
    "Catheter",
    "Continuous",
    "Flex",
    "FlexPeriod",
    "FlexStep",
    "KeySource",
    "LinkError",
    "LogPage",
    "LogRecord",
    "Mode",
    "PatientBolusLimits",
    "PeriodicBolus",
    "Program",
    "ProgramError",
    "ProgramMismatch",
    "PumpClient",
    "PumpError",
    "PumpInfo",
    "PumpRefused",
    "PumpStatus",
    "PumpTimeout",
    "RefillResult",
    "ResultCode",
    "Role",
    "SessionDetails",
    "Stopped",
    "TherapyState",
    "derive_pump_key",
    "derive_role_key",
    "load_program",
    "master_key_source",
    "parse_key",
    "to_data",
]
