"""Program transfer: verified, then committed in one step; a partial program never applies."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from itpump.protocol import messages as m
from itpump.protocol.codes import ResultCode
from itpump.protocol.transfer import (
    ProgramReceiver,
    ReceiverState,
    commit_request,
    program_digest,
    transfer_requests,
    verify_matches,
)

FLEX = m.TherapyProgram(
    max_daily_dose_ng=800_000,
    concentration_ng_per_ml=500_000,
    catheter_length_mm=1100,
    catheter_volume_nl_per_cm=2600,
    patient_bolus=m.PatientBolusSettings(25_000, 10, 120, 4),
    mode=m.FlexMode(
        m.FlexPeriod.DAILY,
        tuple(m.FlexStep(60 * h, 300_000 + 10_000 * h) for h in range(0, 24, 2)),
    ),
    drug_name="baclofen",
    patient_id="P-0001",
)


class Handler:
    """What the firmware command handler does with a ProgramReceiver."""

    def __init__(self, accept: bool = True) -> None:
        self.receiver = ProgramReceiver()
        self.accept = accept
        self.applied: list[m.TherapyProgram] = []

    def handle(self, request: m.Request) -> m.Response:
        return self.receiver.handle(request, self._check, self.applied.append)

    def _check(self, _program: m.TherapyProgram) -> m.Refusal | None:
        if self.accept:
            return None
        # the firmware's own validation refuses
        return m.Refusal.make(ResultCode.TOO_MANY_STEPS, "steps: 12 of 10 allowed")


def test_full_transfer_commits_exactly_the_verified_program() -> None:
    handler = Handler()
    requests = transfer_requests(FLEX, chunk_bytes=32)
    assert isinstance(requests[0], m.ProgramBeginRequest)
    assert sum(isinstance(r, m.ProgramDataRequest) for r in requests) > 1
    responses = [handler.handle(r) for r in requests]
    assert not any(isinstance(r, m.Refusal) for r in responses)
    verify = responses[-1]
    assert isinstance(verify, m.ProgramVerifyResponse)
    assert verify_matches(FLEX, verify)
    assert handler.applied == []  # verified is not yet in effect
    assert handler.handle(commit_request(FLEX)) == m.Ack()
    assert handler.applied == [FLEX]
    assert handler.receiver.state is ReceiverState.IDLE


@settings(max_examples=30, deadline=None)
@given(st.integers(1, m.MAX_PROGRAM_CHUNK))
def test_any_chunk_size(chunk: int) -> None:
    handler = Handler()
    for request in transfer_requests(FLEX, chunk):
        handler.handle(request)
    handler.handle(commit_request(FLEX))
    assert handler.applied == [FLEX]


def test_partial_transfer_never_takes_effect() -> None:
    handler = Handler()
    requests = transfer_requests(FLEX, chunk_bytes=32)
    for request in requests[:-3]:  # the last chunks are lost
        handler.handle(request)
    verify = handler.handle(m.ProgramVerifyRequest())
    assert isinstance(verify, m.Refusal)
    assert verify.result is ResultCode.PROGRAM_VERIFY_FAILED
    commit = handler.handle(commit_request(FLEX))
    assert isinstance(commit, m.Refusal)
    assert commit.result is ResultCode.NO_PENDING_PROGRAM
    assert handler.applied == []


def test_commit_without_verify_is_refused() -> None:
    handler = Handler()
    for request in transfer_requests(FLEX)[:-1]:  # everything but VERIFY
        handler.handle(request)
    commit = handler.handle(commit_request(FLEX))
    assert isinstance(commit, m.Refusal)
    assert commit.result is ResultCode.NO_PENDING_PROGRAM
    assert handler.applied == []


def test_corrupted_chunk_fails_the_digest() -> None:
    handler = Handler()
    requests = transfer_requests(FLEX, chunk_bytes=64)
    data = requests[1]
    assert isinstance(data, m.ProgramDataRequest)
    requests[1] = m.ProgramDataRequest(data.offset, bytes([data.chunk[0] ^ 1]) + data.chunk[1:])
    responses = [handler.handle(r) for r in requests]
    assert isinstance(responses[-1], m.Refusal)
    assert responses[-1].result is ResultCode.PROGRAM_VERIFY_FAILED
    assert "digest" in responses[-1].detail


def test_bytes_that_are_no_program_fail_verification() -> None:
    handler = Handler()
    junk = b"\xff" * 40
    handler.handle(m.ProgramBeginRequest(len(junk), program_digest(junk)))
    handler.handle(m.ProgramDataRequest(0, junk))
    verify = handler.handle(m.ProgramVerifyRequest())
    assert isinstance(verify, m.Refusal)
    assert verify.result is ResultCode.PROGRAM_VERIFY_FAILED


def test_out_of_order_chunk_can_be_resent() -> None:
    handler = Handler()
    requests = transfer_requests(FLEX, chunk_bytes=32)
    handler.handle(requests[0])
    skipped = handler.handle(requests[2])
    assert isinstance(skipped, m.Refusal)
    # Its own code: SEQUENCE_ERROR's recovery (IDENTIFY, then the same frame) would be refused
    # again; this one says which offset to send.
    assert skipped.result is ResultCode.PROGRAM_CHUNK_OUT_OF_ORDER
    assert skipped.detail == "offset=32; expected 0"
    for request in requests[1:]:
        assert not isinstance(handler.handle(request), m.Refusal)
    handler.handle(commit_request(FLEX))
    assert handler.applied == [FLEX]


def test_chunk_beyond_announced_length_is_refused() -> None:
    handler = Handler()
    handler.handle(m.ProgramBeginRequest(4, bytes(32)))
    response = handler.handle(m.ProgramDataRequest(0, b"12345"))
    assert isinstance(response, m.Refusal)
    assert response.result is ResultCode.OUT_OF_RANGE
    # The announced length, not the 0 left after the transfer is discarded.
    assert response.detail == "chunk ends at 5, beyond length_bytes=4"


def test_chunk_past_the_end_of_a_real_program_names_its_length() -> None:
    handler = Handler()
    encoded = FLEX.encode()
    handler.handle(m.ProgramBeginRequest(len(encoded), program_digest(encoded)))
    response = handler.handle(m.ProgramDataRequest(0, encoded + b"x"))
    assert isinstance(response, m.Refusal)
    size = len(encoded)
    assert response.detail == f"chunk ends at {size + 1}, beyond length_bytes={size}"
    # and the transfer is gone
    again = handler.handle(m.ProgramDataRequest(0, encoded))
    assert isinstance(again, m.Refusal)
    assert again.result is ResultCode.NO_PENDING_PROGRAM


def test_data_without_begin_and_oversized_begin() -> None:
    handler = Handler()
    response = handler.handle(m.ProgramDataRequest(0, b"x"))
    assert isinstance(response, m.Refusal)
    assert response.result is ResultCode.NO_PENDING_PROGRAM
    response = handler.handle(m.ProgramBeginRequest(m.MAX_PROGRAM_BYTES + 1, bytes(32)))
    assert isinstance(response, m.Refusal)
    assert response.result is ResultCode.OUT_OF_RANGE


def test_firmware_refusal_discards_the_transfer() -> None:
    handler = Handler(accept=False)
    responses = [handler.handle(r) for r in transfer_requests(FLEX)]
    assert isinstance(responses[-1], m.Refusal)
    assert responses[-1].result is ResultCode.TOO_MANY_STEPS
    commit = handler.handle(commit_request(FLEX))
    assert isinstance(commit, m.Refusal)
    assert handler.applied == []


def test_commit_with_another_digest_keeps_the_verified_program() -> None:
    handler = Handler()
    for request in transfer_requests(FLEX):
        handler.handle(request)
    wrong = handler.handle(m.ProgramCommitRequest(bytes(32)))
    assert isinstance(wrong, m.Refusal)
    assert wrong.result is ResultCode.PROGRAM_VERIFY_FAILED
    assert handler.handle(commit_request(FLEX)) == m.Ack()
    assert handler.applied == [FLEX]


def test_abort_and_new_begin_discard_the_pending_program() -> None:
    handler = Handler()
    for request in transfer_requests(FLEX):
        handler.handle(request)
    handler.handle(m.ProgramAbortRequest())
    assert isinstance(handler.handle(commit_request(FLEX)), m.Refusal)
    for request in transfer_requests(FLEX):
        handler.handle(request)
    handler.handle(transfer_requests(FLEX)[0])  # BEGIN again
    assert isinstance(handler.handle(commit_request(FLEX)), m.Refusal)
    assert handler.applied == []


def test_verify_matches_detects_a_different_echo() -> None:
    handler = Handler()
    verify = [handler.handle(r) for r in transfer_requests(FLEX)][-1]
    assert isinstance(verify, m.ProgramVerifyResponse)
    other = dataclasses.replace(FLEX, patient_id="P-0002")
    assert not verify_matches(other, verify)


def test_chunk_size_limits() -> None:
    with pytest.raises(ValueError, match="chunk_bytes"):
        transfer_requests(FLEX, chunk_bytes=m.MAX_PROGRAM_CHUNK + 1)
