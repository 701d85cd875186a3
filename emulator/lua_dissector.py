"""The Wireshark Lua dissector for itpump captures, and the tables it is generated from.

The dissector (``emulator/wireshark/itpump.lua``, shipped as package data) is hand-written
Lua except for one region between ``BEGIN GENERATED`` and ``END GENERATED``: the message
layouts, enumerations and result codes, rendered here from the protocol's own wire specs
(:mod:`protocol.messages`) so the dissector cannot drift from the encoder. A test fails when
the file is stale; refresh it with ``python -m itpump.emulator.lua_dissector --write``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from enum import IntEnum, IntFlag
from importlib import resources
from pathlib import Path

from itpump.emulator.capture import LINKTYPE_ITPUMP, PSEUDO_HEADER
from itpump.protocol.codes import ResultCode
from itpump.protocol.messages import MESSAGES, MessageType
from itpump.protocol.wire import (
    BoolSpec,
    BytesSpec,
    EnumSpec,
    FlagSpec,
    IntSpec,
    ListSpec,
    OptionalSpec,
    Spec,
    StringSpec,
    StructSpec,
    TailBytesSpec,
    UnionSpec,
    WireStruct,
    struct_fields,
)

__all__ = ["check_dissector", "dissector_path", "generated_tables", "update_dissector"]

_REGION = re.compile(
    r"(-- BEGIN GENERATED: tables[^\n]*\n).*?(-- END GENERATED: tables)", re.DOTALL
)


def dissector_path() -> Path:
    """Where the installed dissector is (copy it into Wireshark's plugin folder)."""
    return Path(str(resources.files("itpump.emulator").joinpath("wireshark", "itpump.lua")))


class _Tables:
    """Collects every record and enumeration reachable from the messages."""

    def __init__(self) -> None:
        self.structs: dict[str, list[str]] = {}
        self.enums: dict[str, type[IntEnum]] = {}
        self.flags: dict[str, type[IntFlag]] = {}

    def struct(self, cls: type[WireStruct]) -> str:
        name = cls.__name__
        if name not in self.structs:
            self.structs[name] = []  # reserve first: records may nest
            self.structs[name] = [
                f'{{ "{field}", {self.spec(spec)} }}' for field, spec in struct_fields(cls)
            ]
        return name

    def spec(self, spec: Spec) -> str:
        if isinstance(spec, IntSpec):
            none = "" if spec.none_value is None else f", none = {spec.none_value}"
            kind = "i" if spec.signed else "u"
            return f'{{ k = "{kind}", n = {spec.size}{none} }}'
        if isinstance(spec, BoolSpec):
            return '{ k = "bool" }'
        if isinstance(spec, EnumSpec):
            self.enums[spec.enum.__name__] = spec.enum
            return f'{{ k = "enum", e = "{spec.enum.__name__}" }}'
        if isinstance(spec, FlagSpec):
            self.flags[spec.flags.__name__] = spec.flags
            return f'{{ k = "flags", e = "{spec.flags.__name__}" }}'
        if isinstance(spec, BytesSpec):
            return f'{{ k = "bytes", n = {spec.size} }}'
        if isinstance(spec, TailBytesSpec):
            return '{ k = "tail" }'
        if isinstance(spec, StringSpec):
            return '{ k = "str" }'
        if isinstance(spec, ListSpec):
            return f'{{ k = "list", item = {self.spec(spec.item)} }}'
        if isinstance(spec, StructSpec):
            return f'{{ k = "struct", s = "{self.struct(spec.cls)}" }}'
        if isinstance(spec, OptionalSpec):
            return f'{{ k = "opt", s = "{self.struct(spec.cls)}" }}'
        if isinstance(spec, UnionSpec):
            members = ", ".join(f'[{m.TAG}] = "{self.struct(m)}"' for m in spec.members)
            return f'{{ k = "union", m = {{ {members} }} }}'
        raise TypeError(f"no Lua rendering for {type(spec).__name__}")


def generated_tables() -> str:
    """The Lua source of the generated region (without its marker lines)."""
    tables = _Tables()
    messages = []
    for code, info in MESSAGES.items():
        request = tables.struct(info.request)
        response = tables.struct(info.response)
        messages.append(
            f'  [0x{int(code):02X}] = {{ name = "{MessageType(code).name}", '
            f'request = "{request}", response = "{response}" }},'
        )
    tables.enums.setdefault("ResultCode", ResultCode)
    lines = [
        f"local LINKTYPE = {LINKTYPE_ITPUMP}",
        f"local PSEUDO_HEADER_SIZE = {PSEUDO_HEADER.size}",
        "local MESSAGES = {",
        *messages,
        "}",
        "local STRUCTS = {",
    ]
    for name, fields in tables.structs.items():
        lines.append(f"  {name} = {{")
        lines += [f"    {field}," for field in fields]
        lines.append("  },")
    lines += ["}", "local ENUMS = {"]
    for name, enum in sorted(tables.enums.items()):
        members = ", ".join(f'[{m.value}] = "{m.name}"' for m in enum)
        lines.append(f"  {name} = {{ {members} }},")
    lines += ["}", "local FLAGS = {"]
    for name, flags in sorted(tables.flags.items()):
        members = ", ".join(f'{{ {m.value}, "{m.name}" }}' for m in flags if m.value)
        lines.append(f"  {name} = {{ {members} }},")
    lines.append("}")
    return "\n".join(lines) + "\n"


def update_dissector(text: str) -> str:
    """``text`` with its generated region replaced by :func:`generated_tables`."""
    new, count = _REGION.subn(lambda m: m.group(1) + generated_tables() + m.group(2), text)
    if count != 1:
        raise ValueError("the dissector has no (or several) generated regions")
    return new


def check_dissector(path: Path | None = None) -> bool:
    """Whether the dissector's generated region is up to date."""
    text = (path or dissector_path()).read_text(encoding="utf-8")
    return update_dissector(text) == text


def main(argv: Sequence[str] | None = None) -> int:
    """``--write``: refresh the dissector in the source tree; default: check it."""
    parser = argparse.ArgumentParser(prog="python -m itpump.emulator.lua_dissector")
    parser.add_argument("--write", action="store_true", help="rewrite the generated region")
    args = parser.parse_args(argv)
    path = Path(__file__).with_name("wireshark") / "itpump.lua"
    if args.write:
        path.write_text(update_dissector(path.read_text(encoding="utf-8")), encoding="utf-8")
        return 0
    if check_dissector(path):
        return 0
    print(f"{path} is stale: run python -m itpump.emulator.lua_dissector --write", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
