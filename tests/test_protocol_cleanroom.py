"""A programmer written from docs/protocol.md alone (standard library only, no `protocol`
imports on its side) must work against the pump, and must accept the document's own examples.

This is the check that the specification is implementable: if the code and the prose disagree
on a byte, this programmer fails.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
from dataclasses import dataclass, field

import pytest

# Used for the pump side and the document path only; the programmer below uses none of them.
from itpump.protocol import messages as m
from itpump.protocol.auth import seeded_nonce_source
from itpump.protocol.codes import ResultCode
from itpump.protocol.connection import PumpConnection, PumpIdentity
from itpump.tools.gen_protocol_docs import DOC_PATH

# ---------------------------------------------------------------------------------------------
# Clean-room programmer: sections 3, 4, 6, 7 and 8 of the specification.


def crc16(data: bytes) -> int:
    """The bitwise reference of section 3."""
    crc = 0xFFFF
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def frame(body: bytes) -> bytes:
    raw = body + crc16(body).to_bytes(2, "big")
    out = bytearray(b"\x7e")
    for b in raw:
        if b in (0x7E, 0x7D):
            out += bytes([0x7D, b ^ 0x20])
        else:
            out.append(b)
    out.append(0x7E)
    return bytes(out)


def deframe(stream: bytes) -> list[bytes]:
    bodies = []
    for candidate in stream.split(b"\x7e"):
        if not candidate:
            continue
        raw = bytearray()
        escaped = False
        for b in candidate:
            if escaped:
                raw.append(b ^ 0x20)
                escaped = False
            elif b == 0x7D:
                escaped = True
            else:
                raw.append(b)
        if len(raw) >= 3 and crc16(bytes(raw)) == 0:
            bodies.append(bytes(raw[:-2]))
    return bodies


@dataclass
class CleanRoomProgrammer:
    key: bytes
    seq: int = 100
    session_id: int = 0
    session_key: bytes = b""
    counter: int = 0
    serial: str = ""
    log: list[str] = field(default_factory=list)

    def request(self, msg_type: int, payload: bytes = b"") -> bytes:
        self.seq = (self.seq + 1) % 65536
        mac = bool(self.session_key) and msg_type not in (0x01, 0x02, 0x03)
        sid = self.session_id if msg_type != 0x01 else 0
        header = struct.pack(">BBBHI", 1, msg_type, 1 if mac else 0, self.seq, sid)
        body = header + payload
        if mac:
            self.counter += 1
            body += self.counter.to_bytes(4, "big")
            body += hmac.new(self.session_key, body, hashlib.sha256).digest()[:8]
        return frame(body)

    def response(self, stream: bytes, msg_type: int) -> tuple[int, bytes]:
        (body,) = deframe(stream)
        version, rtype, flags, seq, sid = struct.unpack(">BBBHI", body[:9])
        assert (version, rtype, seq) == (1, msg_type | 0x80, self.seq)
        assert sid == (0 if msg_type == 0x01 else self.session_id)
        payload = body[9:]
        if flags & 1:
            signed, mac = body[:-8], body[-8:]
            assert hmac.new(self.session_key, signed, hashlib.sha256).digest()[:8] == mac
            assert int.from_bytes(signed[-4:], "big") == self.counter
            payload = body[9:-12]
        result, detail_len = payload[0], payload[1]
        return result, payload[2 + detail_len :]


# ---------------------------------------------------------------------------------------------
# The pump under test: the only place where the implementation is used.

KEY = hashlib.sha256(b"clean room pump key").digest()


def _pump_io(pump: PumpConnection, data: bytes) -> bytes:
    def firmware(request: m.Request) -> m.Response:
        if isinstance(request, m.SetClockRequest):
            return m.SetClockResponse(1_000_000_000)
        return m.Refusal.make(ResultCode.NOT_SUPPORTED, "not in this test")

    return pump.respond(data, firmware)


def test_clean_room_programmer_session() -> None:
    pump = PumpConnection(
        PumpIdentity("CR-1", "clean-room", "9.9", m.Capability.NONE, 10),
        KEY,
        seeded_nonce_source(5),
    )
    prog = CleanRoomProgrammer(KEY)

    # IDENTIFY: payload = list8 of versions
    result, body = prog.response(_pump_io(pump, prog.request(0x01, b"\x01\x01")), 0x01)
    assert result == 0
    assert body[0] == 1  # selected_version
    n_versions = body[9]
    serial_at = 10 + n_versions
    prog.serial = body[serial_at + 1 : serial_at + 1 + body[serial_at]].decode()
    assert prog.serial == "CR-1"

    # AUTH_BEGIN: role u8, Np[16]
    np_ = bytes(range(16))
    result, body = prog.response(_pump_io(pump, prog.request(0x02, b"\x01" + np_)), 0x02)
    assert result == 0
    session_id, nc = struct.unpack(">I", body[:4])[0], body[4:20]
    serial = prog.serial.encode()
    transcript = b"\x01" + session_id.to_bytes(4, "big") + np_ + nc + bytes([len(serial)]) + serial

    # The programmer holds the clinician's key, not the pump's: K_role = HMAC(K, label | role).
    clinician_key = hmac.new(KEY, b"itpump/v1/role-key" + b"\x01", hashlib.sha256).digest()

    def h(label: bytes) -> bytes:
        return hmac.new(clinician_key, label + transcript, hashlib.sha256).digest()

    # AUTH_PROOF: header session id = S
    prog.session_id = session_id
    proof = h(b"itpump/v1/programmer-proof")
    result, body = prog.response(_pump_io(pump, prog.request(0x03, proof)), 0x03)
    assert result == 0
    assert body[:32] == h(b"itpump/v1/pump-proof")
    prog.session_key = h(b"itpump/v1/session-key")

    # SET_CLOCK, authenticated both ways
    result, body = prog.response(
        _pump_io(pump, prog.request(0x20, struct.pack(">I", 1_767_261_600))), 0x20
    )
    assert result == 0
    assert struct.unpack(">I", body) == (1_000_000_000,)

    # A replay of the same bytes after another request is refused with REPLAYED (0x07).
    replay = prog.request(0x20, struct.pack(">I", 1_767_261_600))
    prog.response(_pump_io(pump, replay), 0x20)
    prog.response(_pump_io(pump, prog.request(0x10)), 0x10)
    (raw,) = deframe(_pump_io(pump, replay))
    assert raw[1] == 0x20 | 0x80
    assert raw[9] == 0x07

    # END_SESSION
    result, _ = prog.response(_pump_io(pump, prog.request(0x04)), 0x04)
    assert result == 0
    assert pump.session_id is None


# ---------------------------------------------------------------------------------------------
# The examples in the document verify with the clean-room code.


def _example_frames(doc: str) -> list[bytes]:
    frames = []
    for block in re.findall(r"```text\n(.*?)```", doc, re.DOTALL):
        lines = block.splitlines()
        wire: list[str] = []
        for i, line in enumerate(lines):
            if line.startswith("wire"):
                wire.append(line[8:])
                for follow in lines[i + 1 :]:
                    if not follow.startswith("        "):
                        break
                    wire.append(follow[8:])
        if wire:
            frames.append(bytes.fromhex(" ".join(wire)))
    return frames


def test_document_examples_verify() -> None:
    doc = DOC_PATH.read_text(encoding="utf-8")
    frames = _example_frames(doc)
    assert len(frames) >= 20
    match = re.search(r"K_sess  ((?:[0-9a-f]{2} ){31}[0-9a-f]{2})", doc)
    assert match, "the examples state the session key"
    session_key = bytes.fromhex(match.group(1))
    macs = 0
    for wire in frames:
        (body,) = deframe(wire)
        if body[2] & 1:
            signed, mac = body[:-8], body[-8:]
            assert hmac.new(session_key, signed, hashlib.sha256).digest()[:8] == mac
            macs += 1
    assert macs >= 10


@pytest.mark.parametrize("data", [b"123456789"])
def test_crc_reference_matches_check_value(data: bytes) -> None:
    assert crc16(data) == 0x29B1
