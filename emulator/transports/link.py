"""Link emulation: what the telemetry radio does to bytes, applied in the transport only.

A PTY or a socket moves bytes instantly and perfectly; a telemetry head does not. This module
adds, per link:

- byte pacing at a baud rate (10 bits per byte: start, 8 data, stop), as computed delays;
- a turnaround delay before the pump starts to answer;
- corruption: each byte has one random bit flipped with probability ``corruption_rate``, drawn
  from ``random.Random(seed)`` so a run is reproducible;
- link drop ("telemetry head lifted off"): while dropped, bytes in both directions vanish.

Delays are computed by pure functions (:func:`transmit_time_s`, :func:`pacing_schedule`) and
awaited through an injectable ``sleep`` (``asyncio.sleep`` by default), so tests check the
schedule without measuring wall time.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

log = logging.getLogger(__name__)

BITS_PER_BYTE = 10
"""Start bit + 8 data bits + stop bit (8N1)."""

DEFAULT_PACING_QUANTUM_S = 0.005
"""Paced writes are grouped into chunks of about this duration (one byte at least)."""

SleepFn = Callable[[float], Awaitable[None]]
"""An ``asyncio.sleep``-like coroutine function (seconds)."""


def transmit_time_s(n_bytes: int, baud: float | None) -> float:
    """Time to send ``n_bytes`` at ``baud`` bits per second, 10 bits per byte.

    ``baud=None`` means an unpaced link (0 s).
    """
    if n_bytes < 0:
        raise ValueError(f"n_bytes must be >= 0, got {n_bytes}")
    if baud is None or n_bytes == 0:
        return 0.0
    if baud <= 0:
        raise ValueError(f"baud must be > 0, got {baud}")
    return n_bytes * BITS_PER_BYTE / baud


def default_chunk_bytes(baud: float) -> int:
    """Bytes per paced write: about ``DEFAULT_PACING_QUANTUM_S`` worth, at least one."""
    return max(1, int(baud * DEFAULT_PACING_QUANTUM_S / BITS_PER_BYTE))


def pacing_schedule(n_bytes: int, baud: float | None, chunk_bytes: int) -> list[tuple[int, float]]:
    """Split a paced write into ``(chunk_size, delay_before_s)`` steps.

    Each chunk is delivered after its own transmission time, so the sum of the delays is
    ``transmit_time_s(n_bytes, baud)``. An unpaced link is one chunk with no delay.
    """
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    if n_bytes == 0:
        return []
    if baud is None:
        return [(n_bytes, 0.0)]
    steps: list[tuple[int, float]] = []
    remaining = n_bytes
    while remaining > 0:
        size = min(chunk_bytes, remaining)
        steps.append((size, transmit_time_s(size, baud)))
        remaining -= size
    return steps


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """Static properties of an emulated telemetry link.

    ``baud=None`` disables pacing. ``chunk_bytes=None`` picks :func:`default_chunk_bytes`.
    """

    baud: float | None = None
    turnaround_s: float = 0.0
    corruption_rate: float = 0.0
    seed: int = 0
    drop_rate: float = 0.0
    chunk_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.baud is not None and self.baud <= 0:
            raise ValueError(f"baud must be > 0 or None, got {self.baud}")
        if self.turnaround_s < 0:
            raise ValueError(f"turnaround_s must be >= 0, got {self.turnaround_s}")
        if not 0.0 <= self.corruption_rate <= 1.0:
            raise ValueError(f"corruption_rate must be in [0, 1], got {self.corruption_rate}")
        if not 0.0 <= self.drop_rate <= 1.0:
            raise ValueError(f"drop_rate must be in [0, 1], got {self.drop_rate}")
        if self.chunk_bytes is not None and self.chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be >= 1 or None, got {self.chunk_bytes}")

    @property
    def has_delays(self) -> bool:
        """True when replies must be scheduled (pacing or turnaround), not sent at once."""
        return self.baud is not None or self.turnaround_s > 0

    @property
    def effective_chunk_bytes(self) -> int:
        """Bytes per paced write."""
        if self.chunk_bytes is not None:
            return self.chunk_bytes
        return default_chunk_bytes(self.baud) if self.baud is not None else 1 << 30


class LinkEmulator:
    """The state of one emulated link: RNG for corruption, the drop flag, counters.

    One instance is shared by every connection of a transport (one pump, one telemetry head).
    """

    def __init__(self, config: LinkConfig | None = None, *, sleep: SleepFn = asyncio.sleep) -> None:
        self.config = config if config is not None else LinkConfig()
        self.sleep = sleep
        self._rng = random.Random(self.config.seed)
        self._dropped = False
        self.bytes_dropped = 0
        self.bytes_corrupted = 0

    @property
    def dropped(self) -> bool:
        """True while the telemetry head is lifted off: bytes vanish both ways."""
        return self._dropped

    def drop(self) -> None:
        """Lift the telemetry head off the pump."""
        if not self._dropped:
            log.info("link dropped")
        self._dropped = True

    def restore(self) -> None:
        """Put the telemetry head back on the pump."""
        if self._dropped:
            log.info("link restored")
        self._dropped = False

    @property
    def has_delays(self) -> bool:
        """True when this link paces bytes or delays replies."""
        return self.config.has_delays

    def corrupt(self, data: bytes) -> bytes:
        """Flip one random bit in each byte with probability ``corruption_rate``."""
        p = self.config.corruption_rate
        if p <= 0.0 or not data:
            return data
        out = bytearray(data)
        rng = self._rng
        for i in range(len(out)):
            if rng.random() < p:
                out[i] ^= 1 << rng.randrange(8)
                self.bytes_corrupted += 1
        return bytes(out)

    def set_faults(
        self, *, corruption_rate: float | None = None, drop_rate: float | None = None
    ) -> LinkConfig:
        """Change the corruption and byte-loss probabilities from now on (None: keep)."""
        self.config = replace(  # validated by LinkConfig before anything changes
            self.config,
            corruption_rate=self.config.corruption_rate
            if corruption_rate is None
            else corruption_rate,
            drop_rate=self.config.drop_rate if drop_rate is None else drop_rate,
        )
        return self.config

    def lose(self, data: bytes) -> bytes:
        """Drop each byte with probability ``drop_rate`` (a weak or noisy radio)."""
        p = self.config.drop_rate
        if p <= 0.0 or not data:
            return data
        rng = self._rng
        kept = bytes(b for b in data if rng.random() >= p)
        self.bytes_dropped += len(data) - len(kept)
        return kept

    def inbound(self, data: bytes) -> bytes:
        """Bytes from the programmer as the pump receives them (dropped or corrupted)."""
        if self._dropped:
            self.bytes_dropped += len(data)
            return b""
        return self.corrupt(self.lose(data))

    def outbound(self, data: bytes) -> bytes:
        """Bytes from the pump as the programmer receives them, when sent at once."""
        return self.inbound(data)

    async def receive_delay(self, n_bytes: int) -> None:
        """Wait for ``n_bytes`` to finish arriving at the link's baud rate."""
        delay = transmit_time_s(n_bytes, self.config.baud)
        if delay > 0:
            await self.sleep(delay)

    async def send(self, data: bytes, write: Callable[[bytes], None]) -> None:
        """Send a reply: turnaround delay, then paced chunks (each dropped or corrupted)."""
        if self.config.turnaround_s > 0:
            await self.sleep(self.config.turnaround_s)
        offset = 0
        for size, delay in pacing_schedule(
            len(data), self.config.baud, self.config.effective_chunk_bytes
        ):
            if delay > 0:
                await self.sleep(delay)
            chunk = self.outbound(data[offset : offset + size])
            offset += size
            if chunk:
                write(chunk)
