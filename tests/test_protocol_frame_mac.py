"""The session's keyed-once MAC (issue 11) is the frame MAC of the protocol, nothing else."""

from __future__ import annotations

import pickle
import random

from itpump.protocol.auth import MAC_SIZE, FrameMac, compute_mac, verify_mac
from itpump.protocol.header import Header, build_body, parse_body


def test_frame_mac_equals_a_fresh_hmac_for_every_length_and_key() -> None:
    rng = random.Random(11)
    for _ in range(200):
        key = rng.randbytes(rng.choice((16, 32, 64, 65, 100)))  # short and over-block keys
        mac = FrameMac(key)
        for _ in range(3):  # the keyed state is copied, never consumed
            signed = rng.randbytes(rng.randrange(0, 300))
            assert mac.compute(signed) == compute_mac(key, signed)
            assert len(mac.compute(signed)) == MAC_SIZE


def test_frame_mac_verifies_exactly_what_verify_mac_does() -> None:
    key, signed = bytes(range(32)), b"header|payload|counter"
    mac = FrameMac(key)
    good = compute_mac(key, signed)
    assert mac.verify(signed, good)
    assert verify_mac(key, signed, good)
    for i in range(MAC_SIZE):
        bad = bytearray(good)
        bad[i] ^= 0x01
        assert not mac.verify(signed, bytes(bad))
    assert not mac.verify(signed, good[:-1])
    assert not FrameMac(bytes(32)).verify(signed, good)


def test_frame_mac_hides_its_key_and_survives_a_snapshot() -> None:
    key = b"\xa5" * 32
    mac = FrameMac(key)
    assert "a5" not in repr(mac).lower()
    assert repr(key) not in repr(mac)
    copy = pickle.loads(pickle.dumps(mac))
    assert copy.compute(b"frame") == compute_mac(key, b"frame")


def test_a_body_built_with_the_session_mac_is_byte_identical() -> None:
    key = b"k" * 32
    header = Header(1, 0x10, 0, 7, 0x01020304)
    with_key = build_body(header, b"\x01\x02", session_key=key, counter=5)
    with_mac = build_body(header, b"\x01\x02", session_key=FrameMac(key), counter=5)
    assert with_key == with_mac
    packet = parse_body(with_mac)
    assert packet.mac is not None
    assert FrameMac(key).verify(packet.signed, packet.mac)
