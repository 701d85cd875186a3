"""Authentication primitives: handshake transcript, proofs, session key and frame MACs.

Everything is HMAC-SHA256 from the standard library. The pump holds its device key ``K``;
a programmer holds only the key of the role it may take, ``K_role`` (a patient's device
holds ``K_patient`` and so cannot open a clinician session)::

    K_role    = HMAC-SHA256(K, "itpump/v1/role-key" | role (u8))       1 clinician, 2 patient
    T         = role (u8) | session_id (u32 BE) | Np (16 bytes) | Nc (16 bytes)
                | len(serial) (u8) | serial (UTF-8)
    proof_P   = HMAC-SHA256(K_role, "itpump/v1/programmer-proof" | T)   programmer -> pump
    proof_D   = HMAC-SHA256(K_role, "itpump/v1/pump-proof" | T)         pump -> programmer
    K_session = HMAC-SHA256(K_role, "itpump/v1/session-key" | T)
    MAC       = HMAC-SHA256(K_session, header | payload | counter)[:8]

Binding the role, the session id, both nonces and the serial number into ``T`` means a proof
recorded in one handshake is worthless in any other, and a proof cannot be moved to another
pump. The two proofs and the session key use distinct labels, so none can stand in for another.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Callable

__all__ = [
    "DEFAULT_MASTER_KEY",
    "LABEL_PROGRAMMER_PROOF",
    "LABEL_PUMP_PROOF",
    "LABEL_ROLE_KEY",
    "LABEL_SESSION_KEY",
    "MAC_SIZE",
    "MIN_KEY_SIZE",
    "FrameMac",
    "NonceSource",
    "compute_mac",
    "derive_pump_key",
    "derive_role_key",
    "programmer_proof",
    "pump_proof",
    "role_key",
    "seeded_nonce_source",
    "session_key",
    "transcript",
    "verify_mac",
    "verify_proof",
]

#: A callable returning ``n`` unpredictable bytes, e.g. ``os.urandom`` or
#: ``random.Random(seed).randbytes`` for reproducible tests and simulations.
NonceSource = Callable[[int], bytes]

DEFAULT_MASTER_KEY = b"itpump-test-rig-master-key-0001"
"""The documented test-rig master key: `itpump serve` derives its pumps' keys from it."""


def derive_pump_key(master: bytes, serial: str) -> bytes:
    """The key of pump ``serial`` under a site master key: HMAC-SHA256(master, UTF-8 serial).

    Every pump has its own key, selected by the serial number it reports in IDENTIFY; a rig
    that provisions many pumps derives each from one master key.
    """
    return hmac.new(master, serial.encode("utf-8"), hashlib.sha256).digest()


def role_key(pump_key: bytes, role: int) -> bytes:
    """The key a programmer needs to authenticate as ``role`` (1 clinician, 2 patient).

    HMAC-SHA256(pump key, "itpump/v1/role-key" | role as one byte). The pump derives both
    from its own key; each programmer is given only its role's key, and one role's key
    tells nothing about the other's.
    """
    if not 0 <= role <= 0xFF:
        raise ValueError(f"role={role} outside 0..255")
    return _hmac(pump_key, LABEL_ROLE_KEY, bytes([role]))


def derive_role_key(master: bytes, serial: str, role: int) -> bytes:
    """The ``role`` key of pump ``serial`` under a site master key (see :func:`role_key`)."""
    return role_key(derive_pump_key(master, serial), role)


LABEL_ROLE_KEY = b"itpump/v1/role-key"
LABEL_PROGRAMMER_PROOF = b"itpump/v1/programmer-proof"
LABEL_PUMP_PROOF = b"itpump/v1/pump-proof"
LABEL_SESSION_KEY = b"itpump/v1/session-key"
# 64 bits: an online forger gets one try per frame over a slow link, so 2**64 tries are out of
# reach, while 8 bytes keep small commands small.
MAC_SIZE = 8
MIN_KEY_SIZE = 16


def transcript(
    role: int, session_id: int, programmer_nonce: bytes, pump_nonce: bytes, serial: str
) -> bytes:
    """The handshake transcript ``T`` that both proofs and the session key are bound to."""
    serial_raw = serial.encode("utf-8")
    return (
        bytes([role])
        + session_id.to_bytes(4, "big")
        + programmer_nonce
        + pump_nonce
        + bytes([len(serial_raw)])
        + serial_raw
    )


def _hmac(key: bytes, label: bytes, data: bytes) -> bytes:
    return hmac.new(key, label + data, hashlib.sha256).digest()


def programmer_proof(key: bytes, transcript_bytes: bytes) -> bytes:
    """What the programmer sends in AUTH_PROOF."""
    return _hmac(key, LABEL_PROGRAMMER_PROOF, transcript_bytes)


def pump_proof(key: bytes, transcript_bytes: bytes) -> bytes:
    """What the pump answers in AUTH_PROOF's response."""
    return _hmac(key, LABEL_PUMP_PROOF, transcript_bytes)


def session_key(key: bytes, transcript_bytes: bytes) -> bytes:
    """The 32-byte key that MACs every frame of the session."""
    return _hmac(key, LABEL_SESSION_KEY, transcript_bytes)


def verify_proof(expected: bytes, received: bytes) -> bool:
    """Constant-time comparison of two proofs."""
    return hmac.compare_digest(expected, received)


def compute_mac(key: bytes, signed: bytes) -> bytes:
    """Truncated HMAC-SHA256 of the header, payload and counter of a frame."""
    return hmac.new(key, signed, hashlib.sha256).digest()[:MAC_SIZE]


def verify_mac(key: bytes, signed: bytes, mac: bytes) -> bool:
    """Whether ``mac`` authenticates ``signed`` (constant time)."""
    return hmac.compare_digest(compute_mac(key, signed), mac)


class FrameMac:
    """The frame MACs of one session key: :func:`compute_mac` and :func:`verify_mac`, keyed once.

    HMAC hashes the padded key into its inner and outer states before any data. Every frame
    of a session is MACed under the same key, so those two states are computed once here and
    copied per frame, which saves about a third of each MAC (four per round trip). The
    result is the same bytes as :func:`compute_mac`; verification stays constant time. The
    key never appears in ``repr``; a pickle (state snapshot) rebuilds the states from it.
    """

    __slots__ = ("_key", "_keyed")

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    def compute(self, signed: bytes) -> bytes:
        """Truncated HMAC-SHA256 of ``signed`` (header, payload and counter of a frame)."""
        mac = self._keyed.copy()
        mac.update(signed)
        return mac.digest()[:MAC_SIZE]

    def verify(self, signed: bytes, mac: bytes) -> bool:
        """Whether ``mac`` authenticates ``signed`` (constant time)."""
        return hmac.compare_digest(self.compute(signed), mac)

    def __reduce__(self) -> tuple[type[FrameMac], tuple[bytes]]:
        return (FrameMac, (self._key,))

    def __repr__(self) -> str:
        return "FrameMac(<session key>)"


def seeded_nonce_source(seed: int) -> NonceSource:
    """A reproducible nonce source for tests, examples and seeded simulations.

    Not for real devices: anyone who knows the seed can predict every nonce.
    """
    return random.Random(seed).randbytes
