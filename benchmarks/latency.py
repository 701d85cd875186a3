"""Round-trip latency harness: p50/p99 latency and requests/s over serial ports, in one process.

Generic and peer-agnostic. A *target* is a request function that performs one full round trip
(write a request, read the whole response) on its own serial port. A *peer* (pymodbus RTU,
our pump, ...) is a factory that starts ``k`` servers and returns ``k`` targets plus a
cleanup coroutine. The harness measures, for a list of targets:

- per-request latency with :func:`time.perf_counter_ns` around each call;
- p50 and p99 over all measured requests (:func:`numpy.percentile`, linear interpolation);
- aggregate requests/s: measured requests divided by the wall time from the moment every
  target has finished its warm-up to the moment the last target finished;

warm-up requests excluded; the whole measurement is repeated and the *median of each figure
over the repeats* is reported (:func:`summarize`).

Client model (the choice, and why)
----------------------------------
Default (``clients="async"``): one asyncio task per target, each a closed loop with one request
outstanding per port (as a programmer talks to a pump), in the same event loop as the servers.
The client is :class:`FdClient`: non-blocking ``os.write`` / ``os.read`` on the tty descriptor
with a permanently registered ``loop.add_reader`` callback, which is what pyserial-asyncio and
pymodbus' own serial transport do. The descriptor comes from pyserial ``serial_for_url`` on the
PTY slave path (:func:`open_serial`) when the server holds the master, or is the master itself
when the server (pymodbus) opens the slave path; the I/O code is identical either way.

Why not blocking reads in threads: with the servers in an asyncio loop in the same process,
client threads add GIL hand-offs between each client thread and the loop thread, which land on
whichever peer needs more Python work per request, for reasons unrelated to the server.
Measured on the 2-core machine of BENCHMARKS.md against the pymodbus peer (median of 5): with
threads, 1-target p50 moved between 184 and 248 µs from run to run and 100 targets gave about
6,800 requests/s with p99 29-35 ms; with one loop, 173-175 µs and about 11,000 requests/s
with p99 about 18 ms. :func:`measure_threads` and :class:`BlockingFdClient` are kept so the
choice can be re-checked (``clients="threads"``).

Consequences worth stating with any figure: everything runs on one core (one thread), so
with 100 targets the latency includes queueing behind the other 99 clients and servers in the
same loop; requests/s is then the capacity of one Python thread running both sides.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import select
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, cast

import numpy as np
import numpy.typing as npt
import serial

AsyncRequest: TypeAlias = Callable[[], Awaitable[object]]
"""One full round trip on one port, as a coroutine function (``clients="async"``)."""

BlockingRequest: TypeAlias = Callable[[], object]
"""One full round trip on one port, blocking (``clients="threads"``)."""

Request: TypeAlias = Callable[[], Any]
"""Either kind; which one a peer returns must match the ``clients`` mode of the run."""

Cleanup: TypeAlias = Callable[[], Awaitable[None]]
"""Stops the servers and closes the ports a :data:`TargetFactory` opened. Idempotent."""

TargetFactory: TypeAlias = Callable[[int], Awaitable[tuple[Sequence[Request], Cleanup]]]
"""``await factory(k)`` starts ``k`` servers, each on its own port, in the running loop, and
returns one request function per server and the cleanup."""

Completion: TypeAlias = int | Callable[[bytes | bytearray], bool]
"""When a response is complete: its exact length, or a predicate on the bytes so far."""

ClientMode: TypeAlias = Literal["async", "threads"]

DEFAULT_TIMEOUT_S = 300.0
"""Upper bound on one measurement (warm-up included): a stuck peer fails, it does not hang."""

BLOCKING_READ_TIMEOUT_S = 10.0
"""Per-request bound of :class:`BlockingFdClient` (threads cannot be cancelled)."""

_READ_SIZE = 65536


# --------------------------------------------------------------------------- figures


def percentiles_us(
    latencies_ns: Sequence[int] | npt.NDArray[np.int64], q: Sequence[float] = (50.0, 99.0)
) -> tuple[float, ...]:
    """The ``q`` percentiles (numpy linear interpolation) of nanosecond latencies, in µs."""
    data = np.asarray(latencies_ns, dtype=np.float64)
    if data.size == 0:
        raise ValueError("no latencies")
    values = np.percentile(data, list(q))
    return tuple(float(v) / 1000.0 for v in np.atleast_1d(values))


@dataclass(frozen=True, slots=True)
class RunResult:
    """One measurement: every measured request's latency and the wall time of the phase."""

    targets: int
    latencies_ns: npt.NDArray[np.int64]
    wall_ns: int

    @property
    def requests(self) -> int:
        """Measured requests over all targets (warm-up excluded)."""
        return int(self.latencies_ns.size)

    @property
    def rps(self) -> float:
        """Aggregate requests per second."""
        return self.requests / (self.wall_ns / 1e9)

    def percentiles_us(self) -> tuple[float, float]:
        """(p50, p99) in microseconds."""
        p50, p99 = percentiles_us(self.latencies_ns)
        return p50, p99


@dataclass(frozen=True, slots=True)
class Figures:
    """Median over repeats of p50, p99 (µs) and requests/s, for one peer and target count."""

    targets: int
    requests: int
    repeats: int
    p50_us: float
    p99_us: float
    rps: float


def summarize(runs: Sequence[RunResult]) -> Figures:
    """Median of each figure over the repeats (each figure separately)."""
    if not runs:
        raise ValueError("no runs")
    p50s, p99s = zip(*(run.percentiles_us() for run in runs), strict=True)
    return Figures(
        targets=runs[0].targets,
        requests=runs[0].requests,
        repeats=len(runs),
        p50_us=statistics.median(p50s),
        p99_us=statistics.median(p99s),
        rps=statistics.median(run.rps for run in runs),
    )


# --------------------------------------------------------------------------- measuring


async def measure_async(
    requests: Sequence[AsyncRequest],
    *,
    count: int,
    warmup: int,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> RunResult:
    """Run every target concurrently, one asyncio task each, in the running loop.

    Each task does ``warmup`` requests, waits until all tasks have warmed up, then does
    ``count`` timed requests back to back. One target is the sequential case. The first
    failing request cancels the others and propagates; so does exceeding ``timeout_s``.
    """
    _check_counts(requests, count, warmup)
    n = len(requests)
    warmed = 0
    start_ns = 0
    go = asyncio.Event()

    async def worker(request: AsyncRequest) -> tuple[list[int], int]:
        nonlocal warmed, start_ns
        first = request()
        if not inspect.isawaitable(first):
            raise TypeError(f"{request!r} is not an async request function")
        await first
        for _ in range(warmup - 1):
            await request()
        warmed += 1
        if warmed == n:
            start_ns = time.perf_counter_ns()
            go.set()
        else:
            await go.wait()
        clock = time.perf_counter_ns
        latencies: list[int] = []
        append = latencies.append
        for _ in range(count):
            t0 = clock()
            await request()
            append(clock() - t0)
        return latencies, clock()

    gc.collect()
    async with asyncio.timeout(timeout_s), asyncio.TaskGroup() as group:
        tasks = [group.create_task(worker(request)) for request in requests]
    results = [task.result() for task in tasks]
    return _result(n, results, start_ns)


async def measure_threads(
    requests: Sequence[BlockingRequest],
    *,
    count: int,
    warmup: int,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> RunResult:
    """Like :func:`measure_async`, with one OS thread per target running blocking requests.

    The running loop stays free meanwhile, so servers in it keep answering. Threads cannot be
    cancelled: a blocking request must bound its own waits (see :class:`BlockingFdClient`).
    """
    _check_counts(requests, count, warmup)
    n = len(requests)
    start: list[int] = []
    barrier = threading.Barrier(n, action=lambda: start.append(time.perf_counter_ns()),
                                timeout=timeout_s)

    def worker(request: BlockingRequest) -> tuple[list[int], int]:
        try:
            first = request()
            if inspect.isawaitable(first):
                if inspect.iscoroutine(first):
                    first.close()
                raise TypeError(f"{request!r} is not a blocking request function")
            for _ in range(warmup - 1):
                request()
            barrier.wait()
        except BaseException:
            barrier.abort()
            raise
        clock = time.perf_counter_ns
        latencies: list[int] = []
        append = latencies.append
        for _ in range(count):
            t0 = clock()
            request()
            append(clock() - t0)
        return latencies, clock()

    gc.collect()
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="bench-client") as pool:
        futures = [loop.run_in_executor(pool, worker, request) for request in requests]
        async with asyncio.timeout(timeout_s):
            results = await asyncio.gather(*futures)
    return _result(n, list(results), start[0])


def _check_counts(requests: Sequence[object], count: int, warmup: int) -> None:
    if not requests:
        raise ValueError("no targets")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if warmup < 1:
        # The first call of each target is not timed: it checks the request kind.
        raise ValueError(f"warmup must be >= 1, got {warmup}")


def _result(n: int, results: Sequence[tuple[list[int], int]], start_ns: int) -> RunResult:
    latencies = np.fromiter(
        (lat for per_target, _ in results for lat in per_target), dtype=np.int64
    )
    end_ns = max(end for _, end in results)
    return RunResult(targets=n, latencies_ns=latencies, wall_ns=end_ns - start_ns)


async def measure(
    requests: Sequence[Request],
    *,
    count: int,
    warmup: int,
    clients: ClientMode = "async",
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> RunResult:
    """:func:`measure_async` or :func:`measure_threads`, by ``clients``."""
    if clients == "async":
        return await measure_async(
            cast(Sequence[AsyncRequest], requests), count=count, warmup=warmup,
            timeout_s=timeout_s,
        )
    return await measure_threads(requests, count=count, warmup=warmup, timeout_s=timeout_s)


async def repeat(
    requests: Sequence[Request],
    *,
    count: int,
    warmup: int,
    repeats: int,
    clients: ClientMode = "async",
) -> Figures:
    """Measure ``repeats`` times on the same targets (warm-up each time); medians."""
    runs = [
        await measure(requests, count=count, warmup=warmup, clients=clients)
        for _ in range(repeats)
    ]
    return summarize(runs)


# --------------------------------------------------------------------------- suites


@dataclass(frozen=True, slots=True)
class Case:
    """``targets`` ports served in one process, ``count`` timed requests per target."""

    targets: int
    count: int
    warmup: int


DEFAULT_CASES = (Case(targets=1, count=2000, warmup=200), Case(targets=100, count=100, warmup=10))
"""1 target x 2000 requests (sequential), 100 targets x 100 requests (concurrent)."""


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the report."""

    peer: str
    figures: Figures


async def run_suite(
    peers: Mapping[str, TargetFactory],
    cases: Sequence[Case] = DEFAULT_CASES,
    *,
    repeats: int = 5,
    clients: ClientMode = "async",
) -> list[Row]:
    """Measure every peer in every case, in the same run, and return one row per pair.

    Per case, every peer's ``k`` servers are started together (idle ones cost nothing: the
    loop only wakes for ready descriptors), then the repeats are interleaved, rotating the
    order of the peers each repeat, so slow drift of the machine hits all peers alike. Medians
    over the repeats. Cleanups run even if a measurement fails.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(peers)
    rows: list[Row] = []
    for case in cases:
        started: dict[str, tuple[Sequence[Request], Cleanup]] = {}
        try:
            for name in names:
                started[name] = await peers[name](case.targets)
                if len(started[name][0]) != case.targets:
                    raise RuntimeError(
                        f"{name}: asked for {case.targets} targets, got {len(started[name][0])}"
                    )
            runs: dict[str, list[RunResult]] = {name: [] for name in names}
            for r in range(repeats):
                shift = r % len(names)
                for name in names[shift:] + names[:shift]:
                    runs[name].append(
                        await measure(started[name][0], count=case.count, warmup=case.warmup,
                                      clients=clients)
                    )
            rows.extend(Row(name, summarize(runs[name])) for name in names)
        finally:
            for _, cleanup in started.values():
                await cleanup()
    return rows


def markdown_table(rows: Sequence[Row], *, baseline: str | None = None) -> str:
    """A Markdown table; with ``baseline``, ratio columns against that peer's row of the same
    target count (latency ratios: lower is better; requests/s ratio: higher is better)."""
    base = {row.figures.targets: row.figures for row in rows if row.peer == baseline}
    header = ["peer", "targets", "requests/repeat", "p50 (µs)", "p99 (µs)", "requests/s"]
    if baseline is not None:
        header += [f"p50 / {baseline}", f"p99 / {baseline}", f"req/s / {baseline}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        f = row.figures
        cells = [row.peer, str(f.targets), str(f.requests), f"{f.p50_us:.1f}", f"{f.p99_us:.1f}",
                 f"{f.rps:,.0f}"]
        if baseline is not None:
            b = base.get(f.targets)
            if b is None:
                cells += ["", "", ""]
            else:
                cells += [f"{f.p50_us / b.p50_us:.2f}", f"{f.p99_us / b.p99_us:.2f}",
                          f"{f.rps / b.rps:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- clients


def open_serial(url: str) -> serial.Serial:
    """Open a port as a programmer would: pyserial ``serial_for_url``, non-blocking.

    Pass ``port.fileno()`` to :class:`FdClient` (a PTY path or a tty device; not
    ``socket://``/``rfc2217://``, whose ``fileno`` is not the byte stream).
    """
    port = serial.serial_for_url(url, baudrate=115200, timeout=0, write_timeout=0)
    port.reset_input_buffer()
    return port


class FdClient:
    """Request/response on a tty descriptor from asyncio (pyserial-asyncio style).

    The descriptor is made non-blocking and stays registered with ``loop.add_reader`` for the
    client's life (no per-request ``epoll_ctl``). One request outstanding at a time. Bytes
    that arrive while no request waits are counted in :attr:`unexpected_bytes` and dropped.
    The client does not own the descriptor: :meth:`close` unregisters it, and does not close it.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self._loop = asyncio.get_running_loop()
        self._buf = bytearray()
        self._need = 0
        self._predicate: Callable[[bytes | bytearray], bool] | None = None
        self._waiter: asyncio.Future[bytes] | None = None
        self.unexpected_bytes = 0
        self._closed = False
        self._loop.add_reader(fd, self._on_readable)

    async def request(self, frame: bytes, complete: Completion) -> bytes:
        """Write ``frame``; return the response once ``complete`` says it is whole."""
        if self._closed:
            raise RuntimeError("FdClient closed")
        if self._waiter is not None:
            raise RuntimeError("one request at a time")
        if isinstance(complete, int):
            self._need, self._predicate = complete, None
        else:
            self._need, self._predicate = 0, complete
        self._buf.clear()
        waiter: asyncio.Future[bytes] = self._loop.create_future()
        self._waiter = waiter
        try:
            await self._write_all(frame)
            return await waiter
        finally:
            self._waiter = None

    async def _write_all(self, frame: bytes) -> None:
        view = memoryview(frame)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                n = 0
            view = view[n:]
            if view:
                ready = self._loop.create_future()
                self._loop.add_writer(self.fd, ready.set_result, None)
                try:
                    await ready
                finally:
                    self._loop.remove_writer(self.fd)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(exc)
            return
        if not data:
            self._fail(ConnectionError(f"fd {self.fd}: end of file"))
            return
        waiter = self._waiter
        if waiter is None or waiter.done():
            self.unexpected_bytes += len(data)
            return
        buf = self._buf
        buf += data
        predicate = self._predicate
        if (predicate(buf) if predicate is not None else len(buf) >= self._need):
            waiter.set_result(bytes(buf))

    def _fail(self, exc: BaseException) -> None:
        self.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    def close(self) -> None:
        """Stop watching the descriptor (idempotent)."""
        if not self._closed:
            self._closed = True
            self._loop.remove_reader(self.fd)


class BlockingFdClient:
    """The blocking twin of :class:`FdClient`, for one thread per target.

    ``select`` then ``os.read``, as pyserial's POSIX ``read`` does, bounded by ``timeout_s``
    per request. Never use it on a descriptor an :class:`FdClient` also watches.
    """

    def __init__(self, fd: int, *, timeout_s: float = BLOCKING_READ_TIMEOUT_S) -> None:
        self.fd = fd
        self.timeout_s = timeout_s
        os.set_blocking(fd, False)

    def request(self, frame: bytes, complete: Completion) -> bytes:
        """Write ``frame``; block until ``complete`` says the response is whole."""
        deadline = time.monotonic() + self.timeout_s
        view = memoryview(frame)
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                select.select([], [self.fd], [], self._left(deadline))
        buf = bytearray()
        while not (complete(buf) if not isinstance(complete, int) else len(buf) >= complete):
            ready, _, _ = select.select([self.fd], [], [], self._left(deadline))
            if ready:
                try:
                    data = os.read(self.fd, _READ_SIZE)
                except BlockingIOError:
                    continue
                if not data:
                    raise ConnectionError(f"fd {self.fd}: end of file")
                buf += data
        return bytes(buf)

    def _left(self, deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"fd {self.fd}: no complete response within {self.timeout_s} s")
        return left


def checked_request(
    client: FdClient, frame: bytes, expected: bytes
) -> AsyncRequest:
    """An :data:`AsyncRequest` that sends ``frame`` and requires exactly ``expected`` back."""
    size = len(expected)

    async def request() -> bytes:
        response = await client.request(frame, size)
        if response != expected:
            raise AssertionError(f"unexpected response {response.hex()} to {frame.hex()}")
        return response

    return request


def checked_blocking_request(
    client: BlockingFdClient, frame: bytes, expected: bytes
) -> BlockingRequest:
    """The :data:`BlockingRequest` twin of :func:`checked_request`."""
    size = len(expected)

    def request() -> bytes:
        response = client.request(frame, size)
        if response != expected:
            raise AssertionError(f"unexpected response {response.hex()} to {frame.hex()}")
        return response

    return request
