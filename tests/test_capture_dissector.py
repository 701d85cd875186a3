"""The Wireshark Lua dissector, run under real Lua (lupa) against a stub of Wireshark's API.

tshark is not available in CI, so the dissector's logic is checked here: frames produced by
the project's own encoder and pump go through it, and what it shows must agree field by
field with the Python decoder. Both Lua 5.2 and 5.4 run it (Wireshark has shipped both).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lupa.lua52
import lupa.lua54
import pytest

from itpump.emulator.capture import PSEUDO_HEADER, Direction
from itpump.emulator.conversation import flatten_message
from itpump.emulator.lua_dissector import check_dissector, dissector_path
from itpump.protocol import messages as m
from itpump.protocol.framing import decode_frame, encode_frame
from itpump.protocol.header import Header, build_body, parse_body
from tests.capture_helpers import clinic_frames

STUB = Path(__file__).with_name("wireshark_stub.lua").read_text(encoding="utf-8")
RUNTIMES = {"lua5.2": lupa.lua52.LuaRuntime, "lua5.4": lupa.lua54.LuaRuntime}


class Dissector:
    """The dissector loaded into one Lua runtime with the stub."""

    def __init__(self, runtime: type[Any]) -> None:
        self.lua = runtime(encoding=None)  # Lua strings <-> bytes: frames are binary
        self.lua.globals().be_double = lambda raw: struct.unpack(">d", bytes(raw))[0]
        self.lua.execute(STUB)
        self.module = self.lua.execute(dissector_path().read_bytes())
        self.stub = self.lua.globals().stub
        self.proto = self.stub.registered[b"wtap_encap:45"]

    def dissect(
        self, direction: int, data: bytes, sim_time_h: float = 1.5
    ) -> tuple[str, list[dict[str, Any]]]:
        packet = PSEUDO_HEADER.pack(1, direction, PSEUDO_HEADER.size, sim_time_h) + data
        tree = self.stub.new_tree()
        pinfo = self.stub.new_pinfo()
        consumed = self.proto.dissector(self.stub.new_tvb(packet), pinfo, tree)
        assert consumed == len(packet)
        items = []
        for row in self.stub.flatten(tree).values():
            item = {key.decode(): value for key, value in row.items()}
            for key in ("abbr", "label", "experts"):
                item[key] = item[key].decode()
            items.append(item)
        return pinfo.cols.info.decode(), items


@pytest.fixture(scope="module", params=sorted(RUNTIMES))
def dissector(request: pytest.FixtureRequest) -> Dissector:
    return Dissector(RUNTIMES[request.param])


@pytest.fixture(scope="module")
def frames() -> list[tuple[int, bytes]]:
    return clinic_frames()


def _python_leaves(message: m.Request | m.Response) -> list[tuple[str, object]]:
    leaves = []
    for path, (qual, value) in flatten_message(message).items():
        if path in ("result", "detail") or path.endswith((".count", ".type")):
            continue
        leaves.append((qual.rpartition(".")[2], value))
    return leaves


def _lua_leaves(node: Any) -> Iterator[tuple[str, object]]:
    children = node[b"children"]
    if children is not None:
        if len(children) == 0 and node[b"text"] == b"absent":
            yield node[b"name"].decode(), "absent"
        for child in children.values():
            yield from _lua_leaves(child)
        return
    name = node[b"name"].decode().split("[")[0]
    yield name, (node[b"kind"].decode(), node[b"value"], node[b"text"].decode())


def _same(python: object, lua: object) -> bool:
    if lua == "absent":
        return bool(python is None)
    assert isinstance(lua, tuple)
    kind, value, text = lua
    if python is None:
        return bool(text.endswith("(none)"))
    if isinstance(python, bool):
        return bool(text == str(python).lower())
    if isinstance(python, int):
        return bool(value == python)
    if isinstance(python, list):  # flags
        return bool(text == "|".join(python))
    if kind == "bytes":
        return bool(text == python)  # hex on both sides
    if isinstance(python, str) and kind == "u":  # an enum, by name
        return bool(text == python)
    return bool(value.decode() == python)


def test_the_dissector_decodes_every_field_as_the_python_decoder(
    dissector: Dissector, frames: list[tuple[int, bytes]]
) -> None:
    checked = 0
    for _direction, data in frames:
        body = decode_frame(data)
        packet = parse_body(body)
        if packet.header.is_response:
            message: Any = m.decode_response(
                m.MessageType(packet.header.msg_type & 0x7F), packet.payload
            )
        else:
            message = m.decode_request(packet.header.msg_type, packet.payload)
        decoded = dissector.module.decode_body(body)
        assert decoded[b"error"] is None, decoded[b"error"]
        assert decoded[b"seq"] == packet.header.seq
        assert decoded[b"session_id"] == packet.header.session_id
        assert decoded[b"counter"] == packet.counter
        if isinstance(message, m.Refusal):
            assert decoded[b"result_name"].decode() == message.result.name
            assert decoded[b"detail"].decode() == message.detail
            continue
        lua = list(_lua_leaves(decoded[b"message"]))
        python = _python_leaves(message)
        assert [name for name, _ in lua] == [name for name, _ in python], type(message)
        for (name, lua_value), (_, py_value) in zip(lua, python, strict=True):
            assert _same(py_value, lua_value), (type(message).__name__, name, py_value, lua_value)
            checked += 1
    assert checked > 60  # the interrogate, log and identify answers alone have that many


def test_tree_shows_names_fields_crc_verdict_and_direction(
    dissector: Dissector, frames: list[tuple[int, bytes]]
) -> None:
    status = frames[7][1]  # the INTERROGATE response
    info, items = dissector.dissect(Direction.FROM_PUMP, status, sim_time_h=24.25)
    assert info.startswith("pump->programmer INTERROGATE response seq=")
    by_abbr = {item["abbr"]: item for item in items}
    assert by_abbr["itpump.direction"]["value"] == 1
    assert by_abbr["itpump.sim_time_h"]["value"] == 24.25
    assert by_abbr["itpump.crc_status"]["value"] == b"good"
    assert by_abbr["itpump.message"]["value"] == b"INTERROGATE response"
    assert by_abbr["itpump.msg.therapy_state"]["label"] == " (RUNNING)"
    assert by_abbr["itpump.msg.drug_name"]["value"] == b"baclofen"
    assert by_abbr["itpump.result"]["value"] == 0
    assert len(by_abbr["itpump.mac"]["value"]) == 8


def test_a_corrupted_frame_is_flagged_bad_crc(
    dissector: Dissector, frames: list[tuple[int, bytes]]
) -> None:
    request = bytearray(frames[6][1])  # the INTERROGATE request
    request[12] ^= 0x01  # inside the body: the CRC no longer matches
    info, items = dissector.dissect(Direction.TO_PUMP, bytes(request))
    assert info == "programmer->pump [bad CRC]"
    crc_items = [i for i in items if i["abbr"] == "itpump.crc"]
    assert crc_items[0]["experts"] == "itpump.bad_crc"
    assert {i["abbr"] for i in items}.isdisjoint({"itpump.message", "itpump.seq"})


def test_refusal_is_shown_with_code_and_detail(
    dissector: Dissector, frames: list[tuple[int, bytes]]
) -> None:
    reply = frames[13][1]
    refusal = m.decode_response(m.MessageType.BOLUS, parse_body(decode_frame(reply)).payload)
    assert isinstance(refusal, m.Refusal)
    info, items = dissector.dissect(Direction.FROM_PUMP, reply)
    assert info.endswith(f"BOLUS response seq=7 refused {refusal.result.name}")
    detail = next(i for i in items if i["abbr"] == "itpump.detail")
    assert detail["value"].decode() == refusal.detail
    assert any("itpump.refused" in i["experts"] for i in items)


def test_stuffed_bytes_garbage_and_fragments(dissector: Dissector) -> None:
    # A sequence number of 0x7E7D forces both escapes; the CRC is computed on unstuffed bytes.
    body = build_body(Header(1, m.MessageType.INTERROGATE, 0, 0x7E7D, 0x7D7E7D7E), b"")
    frame = encode_frame(body)
    assert frame.count(0x7D) >= 4
    info, items = dissector.dissect(Direction.TO_PUMP, b"\x01\x02" + frame + frame[:5])
    by_abbr = {item["abbr"]: item for item in items}
    assert by_abbr["itpump.seq"]["value"] == 0x7E7D
    assert by_abbr["itpump.session_id"]["value"] == 0x7D7E7D7E
    assert info == "programmer->pump INTERROGATE request seq=32381 [frame fragment]"
    outside = [i for i in items if i["abbr"] == "itpump.outside"]
    assert [o["value"] for o in outside] == [b"\x01\x02", frame[:5]]


def test_crc_matches_the_protocol_check_value(dissector: Dissector) -> None:
    assert dissector.module.crc16(b"123456789") == 0x29B1
    assert dissector.module.unstuff(b"\x7d\x5e\x7d\x5d\x41") == b"\x7e\x7d\x41"


def test_every_field_abbreviation_is_unique_and_registered(dissector: Dissector) -> None:
    abbrs = [a.decode() for a in dissector.stub.fields]
    assert "itpump.msg.reservoir_volume_nl" in abbrs
    assert len(abbrs) == len(set(abbrs))


def test_dissector_tables_match_the_protocol() -> None:
    # Stale tables would mis-decode after a message change: refresh with
    # `python -m itpump.emulator.lua_dissector --write`.
    assert check_dissector()


def test_dissector_is_package_data() -> None:
    text = Path(__file__).parents[1].joinpath("pyproject.toml").read_text(encoding="utf-8")
    assert '"wireshark/*.lua"' in text
    assert dissector_path().is_file()
