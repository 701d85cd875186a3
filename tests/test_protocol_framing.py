"""Framing: CRC variant, byte stuffing, frame codec and the resynchronising deframer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from itpump.protocol.framing import (
    FLAG,
    MAX_BODY_SIZE,
    Deframer,
    FrameError,
    crc16_ccitt_false,
    decode_frame,
    encode_frame,
    stuff,
    unstuff,
)

bodies = st.binary(min_size=1, max_size=MAX_BODY_SIZE)
# Bodies rich in the two special bytes, so stuffing is exercised on every example.
special_bodies = st.lists(
    st.sampled_from([0x7E, 0x7D, 0x5E, 0x5D, 0x00, 0x20]), min_size=1, max_size=64
).map(bytes)


def _feed_all(deframer: Deframer, stream: bytes, cuts: list[int]) -> list[bytes]:
    """Feed ``stream`` cut at ``cuts`` and return every frame body that came out."""
    out: list[bytes] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        deframer.receive_data(stream[start:cut])
        start = cut
        while (body := deframer.next_frame()) is not None:
            out.append(body)
    return out


def test_crc_is_ccitt_false_by_check_value() -> None:
    assert crc16_ccitt_false(b"123456789") == 0x29B1


def test_crc_residue_of_a_frame_is_zero() -> None:
    data = b"any body at all"
    assert crc16_ccitt_false(data + crc16_ccitt_false(data).to_bytes(2, "big")) == 0


def test_known_frame_bytes() -> None:
    # The flag and escape bytes of the body are escaped; CRC is big-endian and also stuffed.
    assert encode_frame(b"\x7e\x7d\x01") == bytes.fromhex("7e7d5e7d5d0161b17e")


@given(special_bodies | bodies)
def test_stuffing_round_trip_and_no_flag_inside(data: bytes) -> None:
    stuffed = stuff(data)
    assert FLAG not in stuffed
    assert unstuff(stuffed) == data


def test_unstuff_accepts_any_escaped_byte() -> None:
    # RFC 1662: a sender may escape more than it must (e.g. control characters).
    assert unstuff(b"\x7d\x31\x7d\x33") == b"\x11\x13"


def test_lone_escape_at_end_is_an_abort() -> None:
    with pytest.raises(FrameError) as info:
        unstuff(b"\x01\x7d")
    assert info.value.reason == "aborted"


@given(special_bodies | bodies)
def test_frame_round_trip(body: bytes) -> None:
    assert decode_frame(encode_frame(body)) == body


def test_encode_rejects_empty_and_oversized_bodies() -> None:
    with pytest.raises(ValueError, match="outside"):
        encode_frame(b"")
    with pytest.raises(ValueError, match="outside"):
        encode_frame(bytes(MAX_BODY_SIZE + 1))
    assert decode_frame(encode_frame(bytes(MAX_BODY_SIZE))) == bytes(MAX_BODY_SIZE)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\x7e\x01\x02\x7e", "runts"),
        (b"\x7e" + stuff(b"hello" + b"\x00\x00") + b"\x7e", "bad_crc"),
        (b"\x7e\x01\x02\x03\x7d\x7e", "aborted"),
    ],
)
def test_decode_frame_errors(frame: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as info:
        decode_frame(frame)
    assert info.value.reason == reason


@settings(max_examples=60)
@given(
    st.lists(special_bodies | st.binary(min_size=1, max_size=80), min_size=1, max_size=8),
    st.lists(st.integers(0, 2000), max_size=20),
)
def test_deframer_any_chunking(frames: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(f) for f in frames)
    deframer = Deframer()
    assert _feed_all(deframer, stream, [c % (len(stream) + 1) for c in cuts]) == frames
    assert deframer.stats.frames_ok == len(frames)
    assert deframer.stats.frames_dropped == 0


@settings(max_examples=60)
@given(
    st.lists(st.binary(min_size=1, max_size=60), min_size=1, max_size=6),
    st.lists(st.binary(max_size=40), min_size=7, max_size=7),
    st.lists(st.integers(0, 2000), max_size=10),
)
def test_deframer_resynchronises_after_garbage(
    frames: list[bytes], garbage: list[bytes], cuts: list[int]
) -> None:
    # Garbage before, between and after frames; it may contain flags and escapes.
    parts = [garbage[0]]
    for i, frame in enumerate(frames):
        parts += [encode_frame(frame), garbage[i + 1]]
    stream = b"".join(parts)
    out = _feed_all(Deframer(), stream, [c % (len(stream) + 1) for c in cuts])
    # Garbage may, once in 65 536 candidates, pass the CRC; every real frame must come out,
    # in order, whatever the garbage did.
    assert [body for body in out if body in frames] == frames


def test_garbage_between_frames_is_counted_not_delivered() -> None:
    deframer = Deframer()
    a, b = encode_frame(b"first"), encode_frame(b"second")
    deframer.receive_data(b"noise" + a + b"\x01\x02\x03\x04\x05\x06" + b)
    assert [deframer.next_frame(), deframer.next_frame(), deframer.next_frame()] == [
        b"first",
        b"second",
        None,
    ]
    assert deframer.stats.bytes_discarded == 5  # before the first flag
    assert deframer.stats.bad_crc == 1  # the bytes isolated between the two frames


def test_truncated_frame_is_dropped_and_next_frame_survives() -> None:
    deframer = Deframer()
    cut = encode_frame(b"a frame cut short by a dropped link")[:-6]
    deframer.receive_data(cut + encode_frame(b"next"))
    assert deframer.next_frame() == b"next"
    assert deframer.next_frame() is None
    assert deframer.stats.bad_crc + deframer.stats.runts == 1


def test_very_short_truncation_counts_as_runt() -> None:
    deframer = Deframer()
    deframer.receive_data(b"\x7e\x41" + encode_frame(b"next"))
    assert deframer.next_frame() == b"next"
    assert deframer.stats.runts == 1


def test_bad_crc_is_dropped() -> None:
    frame = bytearray(encode_frame(b"payload"))
    frame[3] ^= 0x01  # inside the body, not a flag or escape
    deframer = Deframer()
    deframer.receive_data(bytes(frame) + encode_frame(b"ok"))
    assert deframer.next_frame() == b"ok"
    assert deframer.stats.bad_crc == 1


def test_oversized_frame_between_flags_is_dropped() -> None:
    big = bytes(MAX_BODY_SIZE + 1)
    raw = b"\x7e" + stuff(big + crc16_ccitt_false(big).to_bytes(2, "big")) + b"\x7e"
    deframer = Deframer()
    deframer.receive_data(raw + encode_frame(b"ok"))
    assert deframer.next_frame() == b"ok"
    assert deframer.stats.oversized == 1


def test_endless_bytes_without_flag_are_bounded_and_counted_once() -> None:
    deframer = Deframer()
    deframer.receive_data(b"\x7e")
    for _ in range(10):
        deframer.receive_data(b"\x55" * 1000)
    assert deframer.buffered_bytes <= 2 * (MAX_BODY_SIZE + 2)
    assert deframer.stats.oversized == 1
    deframer.receive_data(encode_frame(b"recovered"))
    assert deframer.next_frame() == b"recovered"


def test_aborted_frame_is_dropped() -> None:
    deframer = Deframer()
    deframer.receive_data(b"\x7e\x01\x02\x03\x7d\x7e" + encode_frame(b"ok")[1:])
    assert deframer.next_frame() == b"ok"
    assert deframer.stats.aborted == 1


def test_back_to_back_flags_are_not_errors() -> None:
    deframer = Deframer()
    deframer.receive_data(b"\x7e\x7e\x7e" + encode_frame(b"x") + b"\x7e\x7e")
    assert deframer.next_frame() == b"x"
    assert deframer.stats.frames_dropped == 0


def test_reset_forgets_partial_frame() -> None:
    deframer = Deframer()
    deframer.receive_data(encode_frame(b"partial")[:-3])
    deframer.reset()
    deframer.receive_data(encode_frame(b"whole"))
    assert deframer.next_frame() == b"whole"
    assert deframer.stats.frames_dropped == 0
