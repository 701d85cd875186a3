"""The round-trip benchmark harness (benchmarks/latency.py) and its pymodbus peer: correctness
on tiny runs only (no timing assertions)."""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest
from pymodbus.framer.rtu import FramerRTU
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
)

from benchmarks import peer_modbus
from benchmarks.latency import (
    AsyncRequest,
    Case,
    FdClient,
    Figures,
    Row,
    RunResult,
    markdown_table,
    measure_async,
    measure_threads,
    percentiles_us,
    run_suite,
    summarize,
)

GUARD_S = 30.0


# --------------------------------------------------------------------------- figures


def test_percentiles_on_known_data() -> None:
    # 1..100 µs: numpy's linear interpolation gives p50 = 50.5 and p99 = 99.01.
    latencies_ns = np.arange(1, 101, dtype=np.int64) * 1000
    p50, p99 = percentiles_us(latencies_ns)
    assert p50 == pytest.approx(50.5)
    assert p99 == pytest.approx(99.01)
    assert percentiles_us([7000], q=(0.0, 50.0, 100.0)) == (7.0, 7.0, 7.0)
    # Order does not matter.
    assert percentiles_us(list(reversed(latencies_ns.tolist()))) == (p50, p99)


def test_percentiles_refuse_empty_data() -> None:
    with pytest.raises(ValueError, match="no latencies"):
        percentiles_us([])


def test_run_result_figures() -> None:
    run = RunResult(
        targets=2, latencies_ns=np.full(4000, 250_000, dtype=np.int64), wall_ns=2_000_000_000
    )
    assert run.requests == 4000
    assert run.rps == pytest.approx(2000.0)
    assert run.percentiles_us() == (250.0, 250.0)


def test_summarize_takes_the_median_of_each_figure() -> None:
    def run(lat_us: int, wall_s: float) -> RunResult:
        return RunResult(
            targets=1,
            latencies_ns=np.full(10, lat_us * 1000, dtype=np.int64),
            wall_ns=int(wall_s * 1e9),
        )

    figures = summarize([run(300, 1.0), run(100, 0.5), run(200, 4.0)])
    assert figures == Figures(
        targets=1, requests=10, repeats=3, p50_us=200.0, p99_us=200.0, rps=10.0
    )


def test_markdown_table_ratios_against_the_baseline() -> None:
    rows = [
        Row("base", Figures(1, 100, 3, p50_us=200.0, p99_us=400.0, rps=5000.0)),
        Row("ours", Figures(1, 100, 3, p50_us=100.0, p99_us=600.0, rps=10000.0)),
        Row("ours", Figures(100, 1000, 3, p50_us=1.0, p99_us=2.0, rps=3.0)),
    ]
    lines = markdown_table(rows, baseline="base").splitlines()
    assert lines[0].startswith("| peer | targets |")
    assert lines[2].endswith("| 1.00 | 1.00 | 1.00 |")
    assert lines[3] == "| ours | 1 | 100 | 100.0 | 600.0 | 10,000 | 0.50 | 1.50 | 2.00 |"
    assert lines[4].endswith("| 3 |  |  |  |")  # no baseline row for 100 targets
    assert "/ base" not in markdown_table(rows)


# --------------------------------------------------------------------------- measuring


async def test_measure_async_counts_and_excludes_warmup() -> None:
    calls = [0, 0]

    def make(i: int) -> AsyncRequest:
        async def request() -> None:
            calls[i] += 1
            await asyncio.sleep(0)

        return request

    run = await measure_async([make(0), make(1)], count=7, warmup=3)
    assert calls == [10, 10]
    assert run.targets == 2
    assert run.requests == 14
    assert run.wall_ns > 0
    assert (run.latencies_ns > 0).all()


async def test_measure_checks_the_request_kind() -> None:
    def blocking() -> None:
        return None

    async def non_blocking() -> None:
        return None

    with pytest.raises(ExceptionGroup) as group:
        await measure_async([blocking], count=1, warmup=1)  # type: ignore[list-item]
    assert group.group_contains(TypeError)
    with pytest.raises(TypeError, match="not a blocking request"):
        await measure_threads([non_blocking], count=1, warmup=1)
    with pytest.raises(ValueError, match="warmup"):
        await measure_async([non_blocking], count=1, warmup=0)


async def test_measure_async_propagates_a_failing_request() -> None:
    async def broken() -> None:
        raise ConnectionError("down")

    async def fine() -> None:
        await asyncio.sleep(0)

    with pytest.raises(ExceptionGroup) as group:
        await measure_async([fine, broken], count=2, warmup=1)
    assert group.group_contains(ConnectionError)


async def test_fd_client_with_a_completion_predicate() -> None:
    pair = peer_modbus.PtyPair.open()
    responder = peer_modbus.CannedResponder(pair.slave)
    client = FdClient(pair.master)
    try:
        async with asyncio.timeout(GUARD_S):
            response = await client.request(
                peer_modbus.REQUEST, lambda buf: len(buf) >= 3 + buf[2] + 2 if buf[2:] else False
            )
    finally:
        client.close()
        responder.close()
        pair.close()
    assert response == peer_modbus.EXPECTED


# --------------------------------------------------------------------------- pymodbus peer


def test_frames_match_pymodbus_framer() -> None:
    framer = FramerRTU(DecodePDU(False))
    request = ReadHoldingRegistersRequest(address=0, count=10, dev_id=1)
    assert framer.buildFrame(request) == peer_modbus.REQUEST
    assert peer_modbus.REQUEST.hex() == "01030000000ac5cd"
    response = ReadHoldingRegistersResponse(registers=peer_modbus.HOLDING_REGISTERS[:10], dev_id=1)
    assert framer.buildFrame(response) == peer_modbus.EXPECTED
    assert len(peer_modbus.EXPECTED) == 5 + 2 * 10


def test_crc_and_response_parsing() -> None:
    assert peer_modbus.crc16_modbus(b"123456789") == 0x4B37  # CRC-16/MODBUS check value
    assert peer_modbus.parse_read_holding_response(peer_modbus.EXPECTED) == [
        0x1000 + i for i in range(10)
    ]
    corrupted = bytearray(peer_modbus.EXPECTED)
    corrupted[5] ^= 0x01
    with pytest.raises(ValueError, match="CRC"):
        peer_modbus.parse_read_holding_response(bytes(corrupted))


async def test_modbus_targets_read_ten_registers() -> None:
    targets, cleanup = await peer_modbus.modbus_targets(2)
    try:
        async with asyncio.timeout(GUARD_S):
            for target in targets:
                response = await target()
                assert isinstance(response, bytes)
                assert (
                    peer_modbus.parse_read_holding_response(response)
                    == (peer_modbus.HOLDING_REGISTERS[:10])
                )
            run = await measure_async(targets, count=5, warmup=2)
    finally:
        await cleanup()
        await cleanup()  # idempotent
    assert run.requests == 10
    assert run.targets == 2


async def test_modbus_blocking_targets_in_threads() -> None:
    targets, cleanup = await peer_modbus.modbus_blocking_targets(2)
    try:
        run = await measure_threads(targets, count=5, warmup=2, timeout_s=GUARD_S)
    finally:
        await cleanup()
    assert run.requests == 10


async def test_cleanup_closes_every_descriptor() -> None:
    before = set(os.listdir("/proc/self/fd"))
    targets, cleanup = await peer_modbus.modbus_targets(3)
    assert len(targets) == 3
    await cleanup()
    floor, floor_cleanup = await peer_modbus.floor_targets("slave")(2)
    await floor[0]()
    await floor_cleanup()
    assert set(os.listdir("/proc/self/fd")) <= before


async def test_run_suite_with_pymodbus_and_floors() -> None:
    peers = {
        peer_modbus.PEER_NAME: peer_modbus.modbus_targets,
        "floor master": peer_modbus.floor_targets("master"),
        "floor slave": peer_modbus.floor_targets("slave"),
    }
    async with asyncio.timeout(GUARD_S):
        rows = await run_suite(peers, [Case(1, 5, 1), Case(3, 4, 1)], repeats=2)
    assert [(row.peer, row.figures.targets, row.figures.requests) for row in rows] == [
        (peer_modbus.PEER_NAME, 1, 5),
        ("floor master", 1, 5),
        ("floor slave", 1, 5),
        (peer_modbus.PEER_NAME, 3, 12),
        ("floor master", 3, 12),
        ("floor slave", 3, 12),
    ]
    assert all(row.figures.repeats == 2 for row in rows)
    table = markdown_table(rows, baseline=peer_modbus.PEER_NAME)
    assert table.count("| 1.00 | 1.00 | 1.00 |") == 2


def test_main_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    peer_modbus.main(
        ["--repeat", "1", "--targets", "1", "2", "--requests", "4", "--min-per-target", "2"]
    )
    out = capsys.readouterr().out
    assert "| pymodbus RTU | 1 | 4 |" in out
    assert "| pymodbus RTU | 2 | 4 |" in out
