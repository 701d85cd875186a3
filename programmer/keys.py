"""Pump keys: parsing them, and deriving per-pump role keys from a site master key.

Every pump has its own key, selected by the serial number it reports in IDENTIFY, and a
programmer holds the key of one role of it: ``K_role = HMAC-SHA256(K, "itpump/v1/role-key" |
role)`` (:func:`protocol.auth.role_key`), so a patient's device cannot authenticate as a
clinician. A test rig that provisions many pumps derives each pump key from one master key:
``K = HMAC-SHA256(master, serial)`` (what ``itpump serve`` does).
"""

from __future__ import annotations

from collections.abc import Callable

from itpump.protocol.auth import MIN_KEY_SIZE, derive_pump_key, derive_role_key
from itpump.protocol.messages import Role

__all__ = ["derive_pump_key", "derive_role_key", "master_key_source", "parse_key"]


def parse_key(text: str) -> bytes:
    """A key written in hex (spaces and colons allowed); at least 16 bytes."""
    cleaned = "".join(text.replace(":", " ").split())
    try:
        key = bytes.fromhex(cleaned)
    except ValueError:
        raise ValueError("key: expected hexadecimal digits") from None
    if len(key) < MIN_KEY_SIZE:
        raise ValueError(f"key: {len(key)} bytes; at least {MIN_KEY_SIZE} are needed")
    return key


def master_key_source(master: bytes, role: Role = Role.CLINICIAN) -> Callable[[str], bytes]:
    """A key source for :class:`~programmer.client.PumpClient` that derives each pump's key
    for ``role`` (authenticate as that role with it)."""

    def key_for(serial: str) -> bytes:
        return derive_role_key(master, serial, role)

    return key_for
