"""The telemetry head slips off in the middle of a program transfer.

Whatever the moment, the pump must run either the old program or the new one, never a mix,
and the programmer, once the head is back, must be able to tell which by interrogating.
The head is lifted by a port wrapper at an exact point of the transfer, seen in the frames
the programmer writes, so each case is deterministic.

On a PTY (`port="pty"`): the software under test opens a serial device path, as it would a
real programming head.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import serial

from itpump.emulator.rig import RigPump
from itpump.programmer import Flex, PumpClient, PumpTimeout
from itpump.protocol.framing import Deframer
from itpump.protocol.messages import MessageType

HEADER_TYPE_OFFSET = 1  # frame body: version, msg_type, ... (docs/protocol.md)


class HeadSlipsOff:
    """A pyserial port that lifts the pump's telemetry head at the `occurrence`-th frame of
    type `msg_type` the programmer writes: before the frame goes out, or, with
    `after_reply`, once the pump has answered it (the answer is lost with the link)."""

    def __init__(
        self,
        port: serial.SerialBase,
        pump: RigPump,
        msg_type: MessageType,
        *,
        occurrence: int = 1,
        after_reply: bool = False,
    ) -> None:
        self._port = port
        self._pump = pump
        self._msg_type = msg_type
        self._occurrence = occurrence
        self._after_reply = after_reply
        self._outgoing = Deframer()
        self._seen = 0
        self.lifted = False

    def write(self, data: bytes) -> int:
        self._outgoing.receive_data(data)
        hit = False
        while (body := self._outgoing.next_frame()) is not None:
            if body[HEADER_TYPE_OFFSET] == self._msg_type:
                self._seen += 1
                hit = hit or self._seen == self._occurrence
        if hit and not self.lifted and not self._after_reply:
            self._lift()
        written = int(self._port.write(data))
        if hit and not self.lifted:
            self._swallow_one_reply()
            self._lift()
        return written

    def _lift(self) -> None:
        self._pump.lift_head()
        self.lifted = True

    def _swallow_one_reply(self) -> None:
        incoming = Deframer()
        while incoming.next_frame() is None:  # the pump answers within its turnaround
            incoming.receive_data(self._port.read(max(1, self._port.in_waiting)))

    # Everything else the client uses goes to the real port.
    @property
    def timeout(self) -> float | None:
        return float(self._port.timeout)

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        self._port.timeout = value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._port, name)


# (frame type, which one, lifted after the pump answered it, program the pump must end with)
CASES = {
    "during data": (MessageType.PROGRAM_DATA, 2, False, "old"),
    "before verify": (MessageType.PROGRAM_VERIFY, 1, False, "old"),
    "before commit": (MessageType.PROGRAM_COMMIT, 1, False, "old"),
    "commit answer lost": (MessageType.PROGRAM_COMMIT, 1, True, "new"),
}


@pytest.mark.itpump(port="pty")
@pytest.mark.parametrize("case", list(CASES))
def test_pump_keeps_old_or_new_program_never_a_mix(itpump_pump: RigPump, case: str) -> None:
    msg_type, occurrence, after_reply, expected = CASES[case]
    with PumpClient(itpump_pump.url, key=itpump_pump.key) as programmer:
        programmer.connect()
        old = programmer.interrogate().program
    new = dataclasses.replace(
        old,
        mode=Flex.parse("00:00=180,07:00=260,13:00=220,20:00=200", "daily"),
        max_daily_dose_mcg=450.0,
    )
    assert new != old

    # Short timeouts: once the head is off nothing will come back, so give up quickly.
    port = HeadSlipsOff(
        serial.serial_for_url(itpump_pump.url),
        itpump_pump,
        msg_type,
        occurrence=occurrence,
        after_reply=after_reply,
    )
    with PumpClient(port, key=itpump_pump.key, timeout_s=0.1, max_attempts=3) as programmer:
        programmer.connect()
        with pytest.raises(PumpTimeout):
            programmer.program(new, chunk_bytes=16)  # several DATA frames
        assert port.lifted
        itpump_pump.place_head()

        programmer.connect()  # the pump ended the session when the head came off
        on_reconnect = programmer.interrogate().program

    assert on_reconnect in (old, new), "the pump runs a mix of the old and new program"
    assert on_reconnect == (new if expected == "new" else old)
    # The pump's firmware agrees with what the programmer read back.
    running = itpump_pump.reported().program
    assert running.max_daily_dose_mcg == on_reconnect.max_daily_dose_mcg
    assert len(getattr(running.mode, "steps", ())) == (4 if expected == "new" else 0)
