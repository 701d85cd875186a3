"""Therapy program transfer: split, verify and commit in one step.

A program travels as the bytes of an encoded :class:`~protocol.messages.TherapyProgram`:

1. PROGRAM_BEGIN announces the length and the SHA-256 digest of those bytes;
2. PROGRAM_DATA chunks carry them in order;
3. PROGRAM_VERIFY asks the pump to check length and digest, decode the program and validate
   it against its limits; the answer echoes the digest and the decoded program so the
   clinician can compare old and new settings before anything changes;
4. PROGRAM_COMMIT (carrying the digest again) makes exactly the verified program take effect.

Until the commit nothing changes: a partial, unverified or aborted transfer is discarded.

Programmer side: :func:`transfer_requests` and :func:`verify_matches`. Pump side:
:class:`ProgramReceiver`, which the firmware's command handler owns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from enum import Enum, auto

from itpump.protocol.codes import ResultCode
from itpump.protocol.messages import (
    MAX_PROGRAM_BYTES,
    MAX_PROGRAM_CHUNK,
    Ack,
    ProgramAbortRequest,
    ProgramBeginRequest,
    ProgramCommitRequest,
    ProgramDataRequest,
    ProgramDataResponse,
    ProgramVerifyRequest,
    ProgramVerifyResponse,
    Refusal,
    Request,
    Response,
    TherapyProgram,
)
from itpump.protocol.wire import WireError

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "TRANSFER_REQUESTS",
    "ProgramApply",
    "ProgramCheck",
    "ProgramReceiver",
    "ReceiverState",
    "commit_request",
    "program_digest",
    "transfer_requests",
    "verify_matches",
]

#: Chunk size used by default: small enough that a chunk frame takes ~0.15 s at 19 200 baud,
#: so a corrupted chunk costs little to resend.
DEFAULT_CHUNK_BYTES = 256


def program_digest(encoded: bytes) -> bytes:
    """SHA-256 of an encoded program."""
    return hashlib.sha256(encoded).digest()


def transfer_requests(
    program: TherapyProgram, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> list[Request]:
    """PROGRAM_BEGIN, the PROGRAM_DATA chunks and PROGRAM_VERIFY, to send in this order."""
    if not 1 <= chunk_bytes <= MAX_PROGRAM_CHUNK:
        raise ValueError(f"chunk_bytes must be 1..{MAX_PROGRAM_CHUNK}")
    encoded = program.encode()
    requests: list[Request] = [ProgramBeginRequest(len(encoded), program_digest(encoded))]
    for offset in range(0, len(encoded), chunk_bytes):
        requests.append(ProgramDataRequest(offset, encoded[offset : offset + chunk_bytes]))
    requests.append(ProgramVerifyRequest())
    return requests


def verify_matches(program: TherapyProgram, response: ProgramVerifyResponse) -> bool:
    """Whether the pump holds exactly ``program`` (digest and decoded echo both agree)."""
    encoded = program.encode()
    return (
        response.length_bytes == len(encoded)
        and response.digest == program_digest(encoded)
        and response.program == program
    )


def commit_request(program: TherapyProgram) -> ProgramCommitRequest:
    """The PROGRAM_COMMIT for a verified ``program``."""
    return ProgramCommitRequest(program_digest(program.encode()))


#: The requests :meth:`ProgramReceiver.handle` answers.
TRANSFER_REQUESTS = (
    ProgramBeginRequest,
    ProgramDataRequest,
    ProgramVerifyRequest,
    ProgramCommitRequest,
    ProgramAbortRequest,
)
#: The firmware's validation of an assembled program at PROGRAM_VERIFY (and again before a
#: commit, if it wants): a :class:`Refusal` (or any exception) refuses it, ``None`` accepts.
ProgramCheck = Callable[[TherapyProgram], Refusal | None]
#: Makes a committed program take effect; its answer (``None``: ACK) goes to the programmer.
ProgramApply = Callable[[TherapyProgram], Response | None]


class ReceiverState(Enum):
    """Where a transfer stands on the pump."""

    IDLE = auto()
    RECEIVING = auto()
    VERIFIED = auto()


class ProgramReceiver:
    """Pump side of a program transfer; nothing here changes therapy.

    The firmware command handler calls, per request:

    * PROGRAM_BEGIN -> :meth:`begin`; PROGRAM_DATA -> :meth:`data`;
    * PROGRAM_VERIFY -> :meth:`assemble`, validates the program against the pump's limits,
      then answers with :meth:`mark_verified` (or calls :meth:`reject` and refuses);
    * PROGRAM_COMMIT -> :meth:`commit` returns the verified program to apply atomically;
    * PROGRAM_ABORT -> :meth:`abort`; also call it when the session ends.

    Every refusal discards the transfer except an out-of-order chunk (the programmer may
    resend the right one) and a COMMIT with the wrong digest (the verified program stays).
    """

    def __init__(self, max_program_bytes: int = MAX_PROGRAM_BYTES) -> None:
        self.max_program_bytes = max_program_bytes
        self._abort()

    def _abort(self) -> None:
        self.state = ReceiverState.IDLE
        self._length = 0
        self._digest = b""
        self._buffer = bytearray()
        self._verified: TherapyProgram | None = None

    @property
    def received_bytes(self) -> int:
        """Bytes received so far in the current transfer."""
        return len(self._buffer)

    def begin(self, request: ProgramBeginRequest) -> Ack | Refusal:
        """Start a transfer, discarding any previous one."""
        self._abort()
        if request.length_bytes > self.max_program_bytes:
            return Refusal.make(
                ResultCode.OUT_OF_RANGE,
                f"length_bytes={request.length_bytes} outside 1..{self.max_program_bytes}",
            )
        self.state = ReceiverState.RECEIVING
        self._length = request.length_bytes
        self._digest = request.digest
        return Ack()

    def data(self, request: ProgramDataRequest) -> ProgramDataResponse | Refusal:
        """Store the next chunk (chunks must arrive in order)."""
        if self.state is not ReceiverState.RECEIVING:
            return Refusal.make(ResultCode.NO_PENDING_PROGRAM, "PROGRAM_BEGIN first")
        if request.offset != len(self._buffer):
            return Refusal.make(
                ResultCode.PROGRAM_CHUNK_OUT_OF_ORDER,
                f"offset={request.offset}; expected {len(self._buffer)}",
            )
        end = request.offset + len(request.chunk)
        if end > self._length:
            length = self._length  # read before _abort() resets it: the detail must name it
            self._abort()
            return Refusal.make(
                ResultCode.OUT_OF_RANGE,
                f"chunk ends at {end}, beyond length_bytes={length}",
            )
        self._buffer += request.chunk
        return ProgramDataResponse(len(self._buffer))

    def assemble(self) -> TherapyProgram | Refusal:
        """Check the complete transfer and decode it (PROGRAM_VERIFY, before validation)."""
        if self.state is ReceiverState.IDLE:
            return Refusal.make(ResultCode.NO_PENDING_PROGRAM, "PROGRAM_BEGIN first")
        if len(self._buffer) != self._length:
            received = len(self._buffer)
            self._abort()
            return Refusal.make(
                ResultCode.PROGRAM_VERIFY_FAILED,
                f"received {received} of length_bytes={self._length}",
            )
        if program_digest(bytes(self._buffer)) != self._digest:
            self._abort()
            return Refusal.make(ResultCode.PROGRAM_VERIFY_FAILED, "digest mismatch")
        try:
            return TherapyProgram.decode(bytes(self._buffer))
        except WireError as exc:
            self._abort()
            return Refusal.make(ResultCode.PROGRAM_VERIFY_FAILED, f"program: {exc}")

    def mark_verified(self, program: TherapyProgram) -> ProgramVerifyResponse:
        """Record that the firmware accepted ``program``; the answer to PROGRAM_VERIFY."""
        if self.state is ReceiverState.IDLE:
            raise RuntimeError("no transfer to verify")
        self.state = ReceiverState.VERIFIED
        self._verified = program
        return ProgramVerifyResponse(self._length, self._digest, program)

    def reject(self) -> None:
        """The firmware refused the assembled program: discard the transfer."""
        self._abort()

    def commit(self, request: ProgramCommitRequest) -> TherapyProgram | Refusal:
        """The verified program to apply now (the transfer is then cleared)."""
        program = self._verified
        if self.state is not ReceiverState.VERIFIED or program is None:
            return Refusal.make(ResultCode.NO_PENDING_PROGRAM, "no verified program")
        if request.digest != self._digest:
            return Refusal.make(
                ResultCode.PROGRAM_VERIFY_FAILED, "digest differs from the verified program"
            )
        self._abort()
        return program

    def abort(self) -> Ack:
        """Discard any transfer (PROGRAM_ABORT, or the session ended)."""
        self._abort()
        return Ack()

    def handle(
        self,
        request: Request,
        check: ProgramCheck | None = None,
        apply: ProgramApply | None = None,
    ) -> Response:
        """The answer to one program-transfer request (one of :data:`TRANSFER_REQUESTS`).

        ``check`` validates the assembled program at PROGRAM_VERIFY: a returned
        :class:`Refusal` or a raised exception discards the transfer (the exception goes on
        to the caller, e.g. a firmware refusal). ``apply`` makes the program take effect at
        PROGRAM_COMMIT; it runs only with the verified program and after the transfer is
        cleared, so a commit cannot apply twice. Without ``apply`` the commit only clears.
        """
        if isinstance(request, ProgramBeginRequest):
            return self.begin(request)
        if isinstance(request, ProgramDataRequest):
            return self.data(request)
        if isinstance(request, ProgramVerifyRequest):
            program = self.assemble()
            if isinstance(program, Refusal):
                return program
            try:
                refusal = None if check is None else check(program)
            except BaseException:
                self.reject()
                raise
            if refusal is not None:
                self.reject()
                return refusal
            return self.mark_verified(program)
        if isinstance(request, ProgramCommitRequest):
            committed = self.commit(request)
            if isinstance(committed, Refusal):
                return committed
            answer = None if apply is None else apply(committed)
            return Ack() if answer is None else answer
        if isinstance(request, ProgramAbortRequest):
            return self.abort()
        raise TypeError(f"{type(request).__name__} is not a program-transfer request")
