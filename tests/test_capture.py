"""Captures: pcapng writing and reading, the farm's tap, decode and replay (library and CLI)."""

from __future__ import annotations

import asyncio
import io
import json
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from itpump.emulator.capture import (
    LINKTYPE_ITPUMP,
    CaptureError,
    CaptureReader,
    CaptureTap,
    CaptureWriter,
    Direction,
    read_capture,
)
from itpump.emulator.conversation import EventKind, decode_records
from itpump.emulator.farm import PortSpec, PumpFarm
from itpump.emulator.faults import Fault
from itpump.emulator.replay import (
    DEFAULT_IGNORED_FIELDS,
    ReplayInputError,
    compare_answers,
    load_exchanges,
)
from itpump.emulator.scenario import load_scenario
from itpump.programmer import PumpClient
from itpump.protocol import messages as m
from itpump.protocol.codes import ResultCode
from itpump.protocol.framing import encode_frame
from itpump.tools.cli import main
from tests.capture_helpers import clinic_frames

pytestmark = pytest.mark.timeout(60)


# --- file format ----------------------------------------------------------------------------


def _write(path: Path, packets: list[tuple[int, Direction, int, float, bytes]]) -> None:
    with path.open("wb") as f:
        writer = CaptureWriter(f)
        writer.add_interface("PUMP-A", "socket://127.0.0.1:7000")
        writer.add_interface("PUMP-B", "/tmp/ttyPUMP1")
        for packet in packets:
            writer.add_packet(*packet)


def test_records_round_trip_with_interfaces_directions_and_both_times(tmp_path: Path) -> None:
    path = tmp_path / "c.pcapng"
    packets = [
        (0, Direction.TO_PUMP, 1_767_225_600_123_456_789, 24.5, b"\x7eabc\x7e"),
        (1, Direction.FROM_PUMP, 1_767_225_600_223_456_789, 24.75, b"\x7e\x00\x7e"),
        (0, Direction.FROM_PUMP, 1_767_225_601_000_000_000, 1e6, b"\x01" * 1001),
    ]
    _write(path, packets)
    interfaces, records = read_capture(path)
    assert [(i.serial, i.url, i.linktype) for i in interfaces] == [
        ("PUMP-A", "socket://127.0.0.1:7000", LINKTYPE_ITPUMP),
        ("PUMP-B", "/tmp/ttyPUMP1", LINKTYPE_ITPUMP),
    ]
    assert [
        (r.interface_id, r.direction, r.wall_time_ns, r.sim_time_h, r.data) for r in records
    ] == packets
    assert [r.serial for r in records] == ["PUMP-A", "PUMP-B", "PUMP-A"]


def test_blocks_follow_pcapng(tmp_path: Path) -> None:
    path = tmp_path / "c.pcapng"
    _write(path, [(1, Direction.FROM_PUMP, 5, 0.0, b"xyz")])
    data = path.read_bytes()
    offset, types = 0, []
    while offset < len(data):
        block_type, total = struct.unpack_from("<II", data, offset)
        assert total % 4 == 0
        assert struct.unpack_from("<I", data, offset + total - 4)[0] == total
        types.append(block_type)
        offset += total
    assert types == [0x0A0D0D0A, 1, 1, 6]
    assert data[8:12] == b"\x4d\x3c\x2b\x1a"  # byte-order magic, little-endian
    # The EPB's packet: pseudo-header (version 1, direction 1, length 12, sim time) + data.
    epb = data.index(struct.pack("<I", 6), 28)
    packet = data[epb + 28 : epb + 28 + 15]
    assert packet == struct.pack(">BBHd", 1, 1, 12, 0.0) + b"xyz"


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda d: b"", "not a pcapng file"),
        (lambda d: b"\xd4\xc3\xb2\xa1" + d[4:], "not a pcapng file"),  # classic pcap magic
        (lambda d: d[:-3], "truncated file"),
        (lambda d: d[:-30] + d[-30:-4] + b"\x00\x00\x00\x00", "corrupt block"),
    ],
)
def test_bad_files_give_one_clear_error(
    tmp_path: Path, mangle: Callable[[bytes], bytes], message: str
) -> None:
    path = tmp_path / "c.pcapng"
    _write(path, [(0, Direction.TO_PUMP, 1, 0.0, b"\x7e\x7e")])
    path.write_bytes(mangle(path.read_bytes()))
    with pytest.raises(CaptureError, match=message):
        read_capture(path)


def test_wrong_link_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.pcapng"
    _write(path, [])
    data = bytearray(path.read_bytes())
    idb = data.index(struct.pack("<II", 1, 0)[:4], 28)
    data[idb + 8 : idb + 10] = struct.pack("<H", 1)  # LINKTYPE_ETHERNET
    path.write_bytes(bytes(data))
    with pytest.raises(CaptureError, match="link type 1, not 147"):
        read_capture(path)


def test_tap_writes_whole_blocks_as_it_goes_and_names_every_pump(tmp_path: Path) -> None:
    sim_h = [2.0]
    clock_ns = iter(range(1000, 100_000, 1000))
    tap = CaptureTap(lambda: sim_h[0], lambda i: f"url-{i}", wall_clock_ns=lambda: next(clock_ns))
    handlers = [tap.wrap(tap.add_pump(s), lambda data: data[::-1]) for s in ("A", "B")]
    path = tmp_path / "t.pcapng"
    assert handlers[0](b"ab") == b"ba"  # not capturing yet: nothing recorded
    tap.start(path)
    assert handlers[1](b"xy") == b"yx"
    # Readable while still open: every block is already in the file (a killed process
    # leaves the same).
    interfaces, records = read_capture(path)
    assert [(i.serial, i.url) for i in interfaces] == [("A", "url-0"), ("B", "url-1")]
    assert [(r.serial, r.direction, r.data, r.sim_time_h) for r in records] == [
        ("B", Direction.TO_PUMP, b"xy", 2.0),
        ("B", Direction.FROM_PUMP, b"yx", 2.0),
    ]
    assert records[0].wall_time_ns < records[1].wall_time_ns
    assert tap.stop() == path
    assert tap.stop() is None
    assert handlers[0](b"cd") == b"dc"  # stopped: still answers, records nothing
    assert len(read_capture(path)[1]) == 2


def test_decode_reassembles_split_frames_and_reports_drops() -> None:
    frame = encode_frame(b"\x01\x01\x00\x00\x07\x00\x00\x00\x00\x01\x01")
    bad = bytearray(frame)
    bad[3] ^= 0xFF
    from itpump.emulator.capture import CaptureRecord

    chunks = [b"zz" + frame[:4], frame[4:] + bytes(bad)]
    records = [CaptureRecord(0, "P", Direction.TO_PUMP, i, 0.5, c) for i, c in enumerate(chunks)]
    events = list(decode_records(records))
    assert [(e.kind, e.name) for e in events] == [
        (EventKind.GARBAGE, "garbage"),
        (EventKind.FRAME, "IDENTIFY request"),
        (EventKind.BAD_FRAME, "bad CRC"),
    ]
    assert events[0].garbage_bytes == 2
    assert events[1].message == m.IdentifyRequest((1,))
    assert events[1].wall_time_ns == 1  # stamped with the record that completed it


def test_compare_ignores_nonce_fields_and_reports_the_rest() -> None:
    old = m.AuthBeginResponse(7, b"\x01" * 16)
    assert compare_answers(old, m.AuthBeginResponse(9, b"\x02" * 16)) == []
    refused = m.Refusal.make(ResultCode.INVALID_STATE, "stopped")
    diffs = compare_answers(m.BolusResponse(50, 100, 0), refused)
    assert [(d.path, d.recorded, d.replayed) for d in diffs] == [
        ("cancelled", 0, None),
        ("dose_ng", 50, None),
        ("result", "OK", "INVALID_STATE"),
        ("volume_nl", 100, None),
        ("detail", None, "stopped"),
    ]
    assert "Alarm.raised_at_s" in DEFAULT_IGNORED_FIELDS


# --- served pumps: capture, decode, replay -------------------------------------------------


async def _served(path: Path | None) -> PumpFarm:
    farm = PumpFarm(
        load_scenario("clinic-ready"),
        port=PortSpec("tcp"),
        speed=0.0,  # stepped: simulated time stands still, both pumps stay in the same state
        turnaround=False,
        warmup_h=24.0,
        capture=path,
    )
    await farm.start()
    return farm


@pytest.fixture
async def recorded(tmp_path: Path) -> Path:
    """A clinic visit (identify, authenticate, status, bolus, end) captured from a served pump."""
    path = tmp_path / "visit.pcapng"
    farm = await _served(path)
    try:
        served = farm.pumps[0]

        def visit() -> None:
            with PumpClient(served.url, key=served.key) as client:
                client.connect()
                client.interrogate()
                client.bolus_clinician(0.05, 10)
                client.end_session()

        await asyncio.to_thread(visit)
    finally:
        await farm.close()  # finishes the capture
    return path


async def test_capture_holds_the_whole_visit(recorded: Path) -> None:
    interfaces, records = read_capture(recorded)
    assert [i.serial for i in interfaces] == ["PP20-000001"]
    assert interfaces[0].url.startswith("socket://127.0.0.1:")
    assert {r.sim_time_h for r in records} == {24.0}
    names = [e.name for e in decode_records(records)]
    assert names == [
        f"{n} {d}"
        for n in ("IDENTIFY", "AUTH_BEGIN", "AUTH_PROOF", "INTERROGATE", "BOLUS", "END_SESSION")
        for d in ("request", "response")
    ]


async def _replay_cli(path: Path, farm: PumpFarm, *extra: str) -> int:
    served = farm.pumps[0]
    argv = ["replay", str(path), "--against", served.url, "--key", served.key.hex(), *extra]
    return await asyncio.to_thread(main, argv)


async def test_replay_against_a_pump_in_the_same_state_finds_no_difference(
    recorded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    farm = await _served(None)
    try:
        status = await _replay_cli(recorded, farm)
    finally:
        await farm.close()
    out = capsys.readouterr().out
    assert status == 0, out
    assert "6 exchanges replayed, no differences" in out


async def test_replay_reports_what_a_changed_pump_answers_differently(
    recorded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    farm = await _served(None)
    farm.pumps[0].pump.inject(Fault.make("memory_error"))
    farm.runtime.advance_by(0.5)  # the firmware notices the fault
    try:
        status = await _replay_cli(recorded, farm, "--json")
    finally:
        await farm.close()
    steps = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 1
    by_name = {s["request"]: s for s in steps}
    assert by_name["IDENTIFY"]["match"]
    assert by_name["AUTH_PROOF"]["match"]
    bolus = {d["field"]: d for d in by_name["BOLUS"]["differences"]}
    assert bolus["result"]["recorded"] == "OK"
    assert bolus["result"]["replayed"] != "OK"
    status_fields = {d["field"] for d in by_name["INTERROGATE"]["differences"]}
    assert "alarms.count" in status_fields


async def test_replay_with_the_wrong_key_is_bad_input_not_a_difference(
    recorded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    farm = await _served(None)
    served = farm.pumps[0]
    argv = ["replay", str(recorded), "--against", served.url, "--master-key", "not-the-key"]
    try:
        status = await asyncio.to_thread(main, argv)
    finally:
        await farm.close()
    assert status == 2
    assert "wrong key" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--against", "socket://127.0.0.1:1", "--key", "00" * 32], "cannot open"),
        (["--against", "x", "--key", "00" * 32, "--ignore", "Nope.field"], "Record.field"),
        (
            ["--against", "x", "--key", "00" * 32, "--ignore", "InterrogateResponse.nope"],
            "fields of InterrogateResponse",
        ),
    ],
)
def test_replay_bad_input_is_one_line_and_exit_2(
    recorded: Path, extra: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(recorded), *extra]) == 2
    err = capsys.readouterr().err
    assert words in err
    assert "Traceback" not in err


def test_load_exchanges_pairs_requests_and_answers(recorded: Path) -> None:
    serial, exchanges = load_exchanges(recorded)
    assert serial == "PP20-000001"
    assert [type(x.request).__name__ for x in exchanges] == [
        "IdentifyRequest",
        "AuthBeginRequest",
        "AuthProofRequest",
        "InterrogateRequest",
        "BolusRequest",
        "EndSessionRequest",
    ]
    assert all(x.response is not None for x in exchanges)
    with pytest.raises(ReplayInputError, match="no pump 'X'"):
        load_exchanges(recorded, "X")


# --- decode CLI and bad input ---------------------------------------------------------------


def test_decode_prints_the_conversation(recorded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", str(recorded)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 12
    assert "sim 24.000000 h  PP20-000001  programmer->pump  IDENTIFY request" in lines[0]
    assert "BolusResponse(dose_ng=50" in lines[9]
    assert main(["decode", "--json", str(recorded)]) == 0
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert objects[7]["name"] == "INTERROGATE response"
    assert objects[7]["message"]["program"]["drug_name"] == "baclofen"
    assert objects[6]["direction"] == "to_pump"
    assert objects[6]["counter"] == 1


def test_decode_shows_bad_frames(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frames = clinic_frames()
    path = tmp_path / "bad.pcapng"
    broken = bytearray(frames[6][1])
    broken[12] ^= 1
    with path.open("wb") as f:
        writer = CaptureWriter(f)
        writer.add_interface("P", "null://")
        writer.add_packet(0, Direction.TO_PUMP, 0, 1.0, bytes(broken))
        writer.add_packet(0, Direction.FROM_PUMP, 0, 1.0, b"noise")
    assert main(["decode", str(path)]) == 0
    out = capsys.readouterr().out
    assert "programmer->pump  dropped frame: bad CRC" in out
    assert "pump->programmer  garbage: 5 bytes outside any frame" in out


@pytest.mark.parametrize("command", ["decode", "replay"])
@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "No such file"), (b"hello world, not a capture", "not a pcapng file")],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    content: bytes | None,
    message: str,
) -> None:
    path = tmp_path / "x.pcapng"
    if content is not None:
        path.write_bytes(content)
    argv = [command, str(path)] + (
        ["--against", "null://", "--key", "00" * 16] if command == "replay" else []
    )
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert message in err
    assert "Traceback" not in err


def test_dissector_path_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "--dissector-path"]) == 0
    assert Path(capsys.readouterr().out.strip()).name == "itpump.lua"


def test_capture_writer_refuses_undeclared_interface() -> None:
    writer = CaptureWriter(io.BytesIO())
    with pytest.raises(ValueError, match="not been added"):
        writer.add_packet(0, Direction.TO_PUMP, 0, 0.0, b"x")
    reader_cls = CaptureReader  # imported for the type; the reader is exercised above
    assert reader_cls is not None
