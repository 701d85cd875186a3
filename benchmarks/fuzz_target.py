"""The fuzz target: one input of bytes through the frame decoder and a served pump's whole
command dispatch, with the invariants every input must keep.

`FuzzTarget.one_input(data)` is what a coverage-guided fuzzer calls (atheris, driven by
`python -m benchmarks.fuzz_coverage`) and what the suite's Hypothesis test calls
(tests/test_fuzz_target.py). The first byte picks how the rest reaches the pump, so that a
mutation engine that knows nothing of CRCs and MACs still gets past them:

- RAW: the bytes as they arrive on the link (flags, stuffing, CRC, header, MAC: everything
  checked by the pump), also through a stand-alone `Deframer` in the chunks the input picks;
- FRAMED: the bytes are frame bodies (each preceded by a length byte) that the target frames
  with a correct CRC, so header, version, sequence, session and MAC checks are reached;
- SESSION: the target opens a clinician session with the pump's key, then sends each
  (type byte, length byte, payload) as a correctly MAC'd request of that type, so the
  payload decoders and the firmware's command handlers see arbitrary payloads;
- TAMPERED: inside a session, a correctly MAC'd therapy command whose body the input
  XORs (then re-framed with a correct CRC), which must be refused;
- PROGRAM: the bytes are an encoded therapy program, which the target transfers inside a
  session with the right length and digest (BEGIN, DATA, VERIFY, COMMIT), so the program
  decoder and the firmware's program validation see arbitrary programs. A committed program
  must be exactly the one VERIFY echoed.

Invariants, checked after each input (an `AssertionError` is a finding):
1. nothing raises out of the pump's byte handler;
2. every reply is a sequence of well-formed response frames that decode, and a request the
   target sends through a programmer connection is answered;
3. the pump's reported state (program, therapy state, drug, reservoir estimate, alarms,
   clock, ...) changes only when a correctly authenticated request was acknowledged
   (RAW, FRAMED and TAMPERED inputs hold no key: for them it never changes);
4. bounded: each reply carries at most as many frames as the deframer may queue plus one, a
   `Deframer` holds at most its documented partial frame and queue, and the pump still
   answers a fresh IDENTIFY afterwards (no deaf state).

The pump is a `PumpFarm` pump on the in-memory link, stepped time (nothing moves between
requests) and a fixed link clock (no idle timeouts), so an input does the same thing
whenever it runs: each input starts with the session ended, and from the fresh pump when the
previous input changed it.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterator

from hypothesis import strategies as st

from itpump.emulator.farm import PortSpec, PumpFarm, ServedPump
from itpump.emulator.scenario import load_scenario
from itpump.firmware_stubs.firmware import PumpStatus
from itpump.protocol import messages as m
from itpump.protocol.auth import seeded_nonce_source
from itpump.protocol.connection import ProgrammerConnection, ResponseReceived
from itpump.protocol.examples import EXAMPLE_PROGRAM
from itpump.protocol.framing import FLAG, MAX_BODY_SIZE, Deframer, encode_frame
from itpump.protocol.header import parse_body
from itpump.protocol.transfer import commit_request, program_digest, transfer_requests

MAX_PROGRAM_TRANSFER_BYTES = 2048
"""PROGRAM inputs longer than this are cut (the pump's own limit is far below it)."""

MESSAGE_TYPES = tuple(m.MessageType)
"""Request types in code order; a SESSION input's type byte indexes this (modulo)."""


class Mode(enum.IntEnum):
    """How an input's bytes reach the pump (the first byte, modulo the count)."""

    RAW = 0
    FRAMED = 1
    SESSION = 2
    TAMPERED = 3
    PROGRAM = 4


class _FixedClock:
    """The link's real-time clock, standing still: sessions never idle out mid-input."""

    def __call__(self) -> float:
        return 1000.0


def _raw_request(msg_type: m.MessageType, payload: bytes) -> m.Request:
    """A request of `msg_type` whose payload is `payload` as it stands (it need not decode):
    what a programmer with the key could send."""
    return _RAW_TYPES[msg_type](payload)


class _RawRequest(m.Request):
    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def encode(self) -> bytes:
        return self.payload

    def __repr__(self) -> str:
        return f"{self.TYPE.name}(raw {self.payload.hex()})"


_RAW_TYPES: dict[m.MessageType, type[_RawRequest]] = {
    t: type(f"Raw{t.name.title().replace('_', '')}", (_RawRequest,), {"TYPE": t, "__slots__": ()})
    for t in MESSAGE_TYPES
}


def response_frames(data: bytes) -> list[tuple[int, m.Response]]:
    """Decode every frame of a pump's reply as (request type code, response); fails
    (AssertionError, or the decoder's own error) on anything else."""
    deframer = Deframer()
    deframer.receive_data(data)
    stats = deframer.stats
    assert stats.frames_dropped == 0, (stats, data.hex())
    assert stats.bytes_discarded == 0, (stats, data.hex())
    assert deframer.buffered_bytes == 0, ("reply ends inside a frame", data.hex())
    out: list[tuple[int, m.Response]] = []
    while (body := deframer.next_frame()) is not None:
        packet = parse_body(body)
        header = packet.header
        assert header.is_response, header
        code = header.msg_type & ~m.RESPONSE_BIT
        if code in _KNOWN_CODES:
            out.append((code, m.decode_response(m.MessageType(code), packet.payload)))
        else:
            # A request of a type the pump does not know is refused under its own type.
            out.append((code, m.Refusal.decode(packet.payload)))
    return out


_KNOWN_CODES = frozenset(int(t) for t in MESSAGE_TYPES)


def _pieces(data: bytes) -> Iterator[bytes]:
    """Split `data` into length-prefixed pieces (a length byte, then that many bytes)."""
    i = 0
    while i < len(data):
        n = data[i]
        yield data[i + 1 : i + 1 + n]
        i += 1 + n


class FuzzTarget:
    """One served pump and the invariants; call `one_input` with each fuzzer input."""

    def __init__(self, *, allow_unauthenticated: bool | None = None) -> None:
        """`allow_unauthenticated` as for `PumpFarm` (True only to show that the target
        catches a pump obeying keyless commands)."""
        self.farm = PumpFarm(
            load_scenario("clinic-ready"),
            port=PortSpec("null"),
            speed=0.0,
            clock=_FixedClock(),
            allow_unauthenticated=allow_unauthenticated,
        )
        self.served: ServedPump = self.farm.pumps[0]
        self.fresh = self.served.snapshot()
        self.fresh_status = self._reported()
        self._dirty = False
        self._nonce_seed = 0
        self.inputs = 0
        self.acknowledged_changes = 0
        """SESSION inputs in which an authenticated state-changing request was acknowledged."""

    # ------------------------------------------------------------------ helpers
    def _programmer(self) -> ProgrammerConnection:
        # Seeded programmer nonces: what the programmer sends is a function of the input.
        self._nonce_seed += 1
        return ProgrammerConnection(seeded_nonce_source(self._nonce_seed), key=self.served.key)

    def _feed(self, data: bytes) -> bytes:
        """Bytes to the pump; its reply, checked to be well-formed and bounded."""
        reply = self.served.handler(data)
        assert isinstance(reply, bytes), type(reply)
        answers = response_frames(reply)
        # One answer per request frame, and the pump takes at most a deframer queue of
        # frames per call (plus the one being answered): a flood cannot grow the reply.
        assert len(answers) <= Deframer().max_queued_frames + 1, len(answers)
        return reply

    def _exchange(self, pc: ProgrammerConnection, request: m.Request) -> m.Response:
        pc.receive_data(self._feed(pc.send(request, 0.0)))
        event = pc.next_event()
        assert isinstance(event, ResponseReceived), (request, event)
        return event.response

    def _open_session(self) -> ProgrammerConnection:
        pc = self._handshake()
        if pc is None:
            # A pump may slow down or lock out handshakes after failed proofs (earlier keyless
            # inputs send wrong ones): that is its job, not a finding. From the fresh pump the
            # right key must work.
            self.served.restore(self.fresh)
            pc = self._handshake()
        assert pc is not None, "the pump's key does not open a session on the fresh pump"
        return pc

    def _handshake(self) -> ProgrammerConnection | None:
        """A clinician session with the pump's key, or None if the pump refused one."""
        pc = self._programmer()
        assert isinstance(self._exchange(pc, m.IdentifyRequest()), m.IdentifyResponse)
        begun = self._exchange(pc, pc.auth_begin(m.Role.CLINICIAN))
        if isinstance(begun, m.Refusal):
            return None
        assert isinstance(begun, m.AuthBeginResponse), begun
        proof = self._exchange(pc, pc.auth_proof())
        if isinstance(proof, m.Refusal):
            return None
        assert isinstance(proof, m.AuthProofResponse), proof
        return pc

    def _reported(self) -> PumpStatus:
        # Every telemetry byte draws battery charge (radio time): the gauge moves with any
        # traffic, keyed or not, so it is the one field left out of the comparison.
        return dataclasses.replace(self.served.reported(), battery_remaining_fraction=0.0)

    def _start(self) -> PumpStatus:
        """The pump with its session ended (fresh again if the last input changed it)."""
        served = self.served
        if self._dirty:
            served.restore(self.fresh)  # ends the session too
            self._dirty = False
        else:
            served.lift_head()
            served.place_head()
        return self._reported()

    def _still_answers(self) -> None:
        pc = self._programmer()
        # A flag first, on its own: whatever the input left half-received is closed off, and
        # the pump's answer to it (a half-received frame can be a whole request once closed)
        # is not taken for the answer to this IDENTIFY.
        self._feed(bytes([FLAG]))
        pc.receive_data(self._feed(pc.send(m.IdentifyRequest(), 0.0)))
        event = pc.next_event()
        assert isinstance(event, ResponseReceived), ("deaf after the input", event)
        assert isinstance(event.response, m.IdentifyResponse), event.response

    # ------------------------------------------------------------------ the target
    def one_input(self, data: bytes) -> None:
        """Run one fuzzer input; raises AssertionError when an invariant breaks."""
        if not data:
            return
        self.inputs += 1
        mode = Mode(data[0] % len(Mode))
        rest = data[1:]
        before = self._start()
        acknowledged = False
        if mode is Mode.RAW:
            self._raw(rest)
        elif mode is Mode.FRAMED:
            for body in _pieces(rest):
                if body:
                    self._feed(encode_frame(body))
        elif mode is Mode.SESSION:
            acknowledged = self._session(rest)
        elif mode is Mode.TAMPERED:
            self._tampered(rest)
        else:
            acknowledged = self._program(rest)
        after = self._reported()
        if acknowledged:
            self.acknowledged_changes += 1
        else:
            assert after == before, (mode.name, "state changed without an acknowledged command")
        if after != self.fresh_status:
            self._dirty = True
        self._still_answers()

    def _raw(self, data: bytes) -> None:
        # The pump gets the bytes in one call; two stand-alone deframers get them whole and
        # in the chunks the input marks (a chunk ends after each 0x00 byte): the same frames
        # must come out, within the documented bounds, however the link splits the bytes.
        self._feed(data)
        whole, chunked = Deframer(), Deframer()
        whole.receive_data(data)
        start = 0
        for end in [i + 1 for i, byte in enumerate(data) if byte == 0] + [len(data)]:
            chunked.receive_data(data[start:end])
            start = end
            assert chunked.buffered_bytes <= chunked.max_buffered_bytes
            assert chunked.queued_frames <= chunked.max_queued_frames
        frames = list(iter(whole.next_frame, None))
        assert frames == list(iter(chunked.next_frame, None))
        assert all(len(body) <= MAX_BODY_SIZE for body in frames)

    def _session(self, data: bytes) -> bool:
        """Authenticated requests of the input's types and payloads; whether one that
        changes state was acknowledged."""
        pc = self._open_session()
        acknowledged = False
        i = 0
        while i + 1 < len(data):
            msg_type = MESSAGE_TYPES[data[i] % len(MESSAGE_TYPES)]
            n = data[i + 1]
            payload = data[i + 2 : i + 2 + n]
            i += 2 + n
            if msg_type in (m.MessageType.AUTH_BEGIN, m.MessageType.AUTH_PROOF):
                continue  # the handshake is the target's job: the programmer's state follows it
            response = self._exchange(pc, _raw_request(msg_type, payload))
            if not isinstance(response, m.Refusal) and m.MESSAGES[msg_type].state_changing:
                acknowledged = True
            if msg_type is m.MessageType.END_SESSION and not isinstance(response, m.Refusal):
                pc = self._open_session()
        return acknowledged

    def _program(self, encoded: bytes) -> bool:
        """Transfer `encoded` as a program and commit it; whether the commit was acknowledged."""
        encoded = encoded[:MAX_PROGRAM_TRANSFER_BYTES]
        if not encoded:
            return False
        pc = self._open_session()
        digest = program_digest(encoded)
        begun = self._exchange(pc, m.ProgramBeginRequest(len(encoded), digest))
        if isinstance(begun, m.Refusal):
            return False
        for offset in range(0, len(encoded), 128):
            chunk = encoded[offset : offset + 128]
            if isinstance(self._exchange(pc, m.ProgramDataRequest(offset, chunk)), m.Refusal):
                return False
        verified = self._exchange(pc, m.ProgramVerifyRequest())
        if isinstance(verified, m.Refusal):
            return False
        assert isinstance(verified, m.ProgramVerifyResponse), verified
        assert verified.digest == digest
        committed = self._exchange(pc, m.ProgramCommitRequest(digest))
        if isinstance(committed, m.Refusal):
            return False
        status = self._exchange(pc, m.InterrogateRequest())
        assert isinstance(status, m.InterrogateResponse), status
        assert status.program == verified.program, ("committed != verified", status.program)
        return True

    def _tampered(self, data: bytes) -> None:
        pc = self._open_session()
        target = m.StopTherapyRequest() if len(data) % 2 else m.ResumeTherapyRequest()
        frame = pc.send(target, 0.0)
        body = _body_of(frame)
        mask = data[: len(body)]
        tampered = bytes(b ^ k for b, k in zip(body, mask.ljust(len(body), b"\x00"), strict=True))
        if tampered == body:
            return  # no change: this is the genuine frame, which may act
        for code, answer in response_frames(self._feed(encode_frame(tampered))):
            # A tampered header may turn the frame into a keyless request (IDENTIFY,
            # AUTH_BEGIN), which is answered; a state-changing one must be refused.
            if code in _KNOWN_CODES and m.MESSAGES[m.MessageType(code)].state_changing:
                assert isinstance(answer, m.Refusal), ("a tampered frame was accepted", answer)


def _body_of(frame: bytes) -> bytes:
    deframer = Deframer()
    deframer.receive_data(frame)
    body = deframer.next_frame()
    assert body is not None
    return body


def seed_inputs() -> list[bytes]:
    """A starting corpus: one input of each mode built from valid requests, so a mutation
    engine starts next to the paths that matter instead of searching for them."""
    key_free = ProgrammerConnection(seeded_nonce_source(1))
    identify = key_free.send(m.IdentifyRequest(), 0.0)
    corpus = [bytes([Mode.RAW]) + identify]
    body = _body_of(identify)
    corpus.append(bytes([Mode.FRAMED, len(body)]) + body)
    for requests in _SESSION_SEEDS:
        session = bytearray([Mode.SESSION])
        for request in requests:
            payload = request.encode()
            if len(payload) < 256:
                session += bytes([MESSAGE_TYPES.index(request.TYPE), len(payload)]) + payload
        corpus.append(bytes(session))
    corpus.append(bytes([Mode.TAMPERED, 0, 0, 0, 1]))
    corpus.append(bytes([Mode.TAMPERED, 0, 0, 1]))
    # The docs' example program (2000 mcg/mL: refused, the pump holds 500 mcg/mL of
    # baclofen) and the same at the pump's concentration (committed).
    corpus.append(bytes([Mode.PROGRAM]) + EXAMPLE_PROGRAM.encode())
    matching = dataclasses.replace(EXAMPLE_PROGRAM, concentration_ng_per_ml=500_000)
    corpus.append(bytes([Mode.PROGRAM]) + matching.encode())
    return corpus


_SESSION_SEEDS: tuple[tuple[m.Request, ...], ...] = (
    (
        m.InterrogateRequest(),
        m.ReadLogRequest(0),
        m.AckAlarmRequest(None),
        m.StopTherapyRequest(),
        m.ResumeTherapyRequest(),
        m.EndSessionRequest(),
    ),
    (*transfer_requests(EXAMPLE_PROGRAM, chunk_bytes=32), commit_request(EXAMPLE_PROGRAM)),
    (
        m.SetClockRequest(1_800_000_000),
        m.SetAlarmThresholdsRequest(2_000_000),
        m.BolusRequest(m.ClinicianBolus(dose_ng=50_000, duration_min=30, then_resume=True)),
        m.BolusRequest(m.CancelBolus()),
        m.RefillRequest(
            volume_nl=20_000_000,
            concentration_ng_per_ml=500_000,
            aspirated_nl=None,
            bridge_bolus=False,
            drug_name="baclofen",
        ),
        m.ProgramAbortRequest(),
    ),
)


def fuzz_inputs() -> st.SearchStrategy[bytes]:
    """Hypothesis inputs for the target: random bytes of each mode, and the starting corpus
    with a few bytes overwritten, inserted or cut off."""

    def mutate(seed: bytes, edits: list[tuple[int, int, int]], cut: int) -> bytes:
        data = bytearray(seed)
        for kind, where, value in edits:
            at = where % (len(data) + 1)
            if kind == 0 and at < len(data):
                data[at] = value
            else:
                data.insert(at, value)
        return bytes(data[: max(1, len(data) - cut)])

    edit = st.tuples(st.integers(0, 1), st.integers(0, 1023), st.integers(0, 255))
    mutated = st.builds(
        mutate,
        st.sampled_from(seed_inputs()),
        st.lists(edit, max_size=4),
        st.integers(0, 3),
    )
    random_mode = st.builds(
        lambda mode, rest: bytes([mode]) + rest,
        st.sampled_from(list(Mode)),
        st.binary(max_size=300),
    )
    return st.one_of(mutated, random_mode)
