"""Pump keys: parsing them, and deriving per-pump keys from a site master key.

Every pump has its own key, selected by the serial number it reports in IDENTIFY. A test rig
that provisions many pumps derives each key from one master key:
``HMAC-SHA256(master, serial)`` (the emulator's convention, ``emulator.telemetry.pump_key``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from itpump.protocol.auth import MIN_KEY_SIZE

__all__ = ["derive_pump_key", "master_key_source", "parse_key"]


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


def derive_pump_key(master: bytes, serial: str) -> bytes:
    """The key of pump ``serial`` under a master key: HMAC-SHA256(master, serial)."""
    return hmac.new(master, serial.encode("utf-8"), hashlib.sha256).digest()


def master_key_source(master: bytes) -> Callable[[str], bytes]:
    """A key source for :class:`~programmer.client.PumpClient` that derives each pump's key."""

    def key_for(serial: str) -> bytes:
        return derive_pump_key(master, serial)

    return key_for
