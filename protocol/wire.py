"""Declarative binary codec for message payloads.

Each message is a frozen dataclass whose fields are declared with a wire spec (``u8``,
``u32``, ``string`` ...). The spec holds the field's type on the wire, its unit, its allowed
range and its documentation, so that one declaration drives

* validation at construction (a message object is always encodable),
* encoding and decoding with :mod:`struct` (runs of fixed-size fields are packed by one
  precompiled :class:`struct.Struct`; validator, encoder and decoder are Python functions
  generated per class from its specs, see "Compiled codecs" below),
* the field tables of ``docs/protocol.md`` (see :mod:`protocol.docgen`).

Everything is big-endian. Decoding is strict: a short payload, trailing bytes, a value out of
range, an unknown enum value, a boolean other than 0/1 or invalid UTF-8 raise
:class:`WireError`, which the session layer answers with ``ResultCode.MALFORMED``.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable, Sequence
from enum import IntEnum, IntFlag
from typing import Any, ClassVar, Self, TypeVar, dataclass_transform

__all__ = [
    "BoolSpec",
    "BytesSpec",
    "EnumSpec",
    "FlagSpec",
    "IntSpec",
    "ListSpec",
    "OptionalSpec",
    "Spec",
    "StringSpec",
    "StructSpec",
    "TailBytesSpec",
    "UnionSpec",
    "WireError",
    "WireStruct",
    "boolean",
    "enum8",
    "fixed_bytes",
    "flags32",
    "i32",
    "list_of",
    "nested",
    "optional",
    "spec_of",
    "string",
    "tail_bytes",
    "u8",
    "u16",
    "u32",
    "union",
    "wire_struct",
]


class WireError(ValueError):
    """A payload or a field value violates its wire specification."""


_INT_FORMATS = {
    (1, False): "B",
    (2, False): "H",
    (4, False): "I",
    (8, False): "Q",
    (1, True): "b",
    (4, True): "i",
    (8, True): "q",
}


class Spec:
    """How one field is laid out on the wire; subclasses implement one wire type each."""

    doc: str = ""
    unit: str = ""

    @property
    def struct_format(self) -> str | None:
        """struct format of a fixed-size field that can join a packed run, else ``None``."""
        return None

    def validate(self, value: object, name: str) -> None:
        """Raise :class:`WireError` unless ``value`` is acceptable for this field."""
        raise NotImplementedError

    def from_raw(self, raw: Any) -> Any:
        """Convert a value unpacked by :mod:`struct` into the field's Python value."""
        return raw

    def to_raw(self, value: Any) -> Any:
        """Convert the field's Python value into what :mod:`struct` packs."""
        return value

    def encode(self, value: Any, out: bytearray) -> None:
        """Append the encoding of ``value`` (used for variable-size fields)."""
        assert self.struct_format is not None
        out += struct.pack(">" + self.struct_format, self.to_raw(value))

    def decode(self, buf: bytes, offset: int) -> tuple[Any, int]:
        """Decode one value at ``offset``; returns the value and the offset after it."""
        assert self.struct_format is not None
        size = struct.calcsize(">" + self.struct_format)
        (raw,) = struct.unpack_from(">" + self.struct_format, buf, offset)
        return self.from_raw(raw), offset + size

    @property
    def fixed_size(self) -> int | None:
        """Encoded size in bytes, or ``None`` when it depends on the value."""
        if self.struct_format is None:
            return None
        return struct.calcsize(">" + self.struct_format)

    @property
    def max_size(self) -> int:
        """Largest possible encoded size in bytes."""
        size = self.fixed_size
        assert size is not None
        return size

    def type_text(self) -> str:
        """Wire type as written in the specification, e.g. ``u16`` or ``str8 (<= 32 bytes)``."""
        raise NotImplementedError

    def range_text(self) -> str:
        """Allowed values as written in the specification."""
        return ""


def _is_int(value: object) -> bool:
    # bool is an int subclass; a True where a count is expected is a bug, not a 1.
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class IntSpec(Spec):
    """Unsigned (or, for event-log arguments, signed) big-endian integer."""

    size: int
    doc: str = ""
    unit: str = ""
    lo: int | None = None
    hi: int | None = None
    signed: bool = False
    #: meaning of special values for the documentation, e.g. ``((0, "now"),)``
    special: tuple[tuple[int, str], ...] = ()
    #: raw value that stands for ``None`` in Python (an absent date, "all alarms" ...)
    none_value: int | None = None
    #: what ``None`` means, for the documentation
    none_text: str = "none"

    def __post_init__(self) -> None:
        type_lo, type_hi = self.type_range
        object.__setattr__(self, "lo", type_lo if self.lo is None else self.lo)
        object.__setattr__(self, "hi", type_hi if self.hi is None else self.hi)
        assert type_lo <= self.min <= self.max <= type_hi, self
        assert self.none_value is None or type_lo <= self.none_value <= type_hi, self

    @property
    def min(self) -> int:
        """Smallest allowed value."""
        assert self.lo is not None
        return self.lo

    @property
    def max(self) -> int:
        """Largest allowed value."""
        assert self.hi is not None
        return self.hi

    @property
    def struct_format(self) -> str | None:
        return _INT_FORMATS[(self.size, self.signed)]

    def validate(self, value: object, name: str) -> None:
        if value is None and self.none_value is not None:
            return
        if not _is_int(value):
            raise WireError(f"{name}: expected an integer, got {type(value).__name__}")
        assert isinstance(value, int)
        if not self.min <= value <= self.max or value == self.none_value:
            raise WireError(f"{name}={value} outside {self.range_text()}")

    def from_raw(self, raw: Any) -> Any:
        return None if raw == self.none_value else raw

    def to_raw(self, value: Any) -> Any:
        return self.none_value if value is None else value

    @property
    def type_range(self) -> tuple[int, int]:
        """Smallest and largest value of the integer type (before ``lo``/``hi``)."""
        bits = 8 * self.size
        if self.signed:
            return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        return 0, (1 << bits) - 1

    @property
    def is_full_range(self) -> bool:
        """Whether every value of the integer type is allowed (nothing to document)."""
        full = (self.min, self.max) == self.type_range
        return full and not self.special and self.none_value is None

    def type_text(self) -> str:
        return f"{'i' if self.signed else 'u'}{8 * self.size}"

    def range_text(self) -> str:
        text = f"{self.min}..{self.max}"
        notes = list(self.special)
        if self.none_value is not None:
            notes.append((self.none_value, self.none_text))
        if notes:
            text += "; " + ", ".join(f"{v} = {meaning}" for v, meaning in notes)
        return text


@dataclasses.dataclass(frozen=True)
class BoolSpec(Spec):
    """One byte, 0 (false) or 1 (true); any other value is malformed."""

    doc: str = ""

    @property
    def struct_format(self) -> str | None:
        return "B"

    def validate(self, value: object, name: str) -> None:
        if not isinstance(value, bool):
            raise WireError(f"{name}: expected a bool, got {type(value).__name__}")

    def from_raw(self, raw: Any) -> Any:
        if raw not in (0, 1):
            raise WireError(f"boolean byte {raw} is neither 0 nor 1")
        return raw == 1

    def type_text(self) -> str:
        return "bool (u8)"

    def range_text(self) -> str:
        return "0 = false, 1 = true"


@dataclasses.dataclass(frozen=True)
class EnumSpec(Spec):
    """One byte holding a member of an :class:`~enum.IntEnum`; other values are malformed."""

    enum: type[IntEnum]
    doc: str = ""

    @property
    def struct_format(self) -> str | None:
        return "B"

    def validate(self, value: object, name: str) -> None:
        if not isinstance(value, self.enum):
            raise WireError(f"{name}: expected {self.enum.__name__}, got {value!r}")

    def from_raw(self, raw: Any) -> Any:
        try:
            return self.enum(raw)
        except ValueError:
            raise WireError(f"{raw} is not a {self.enum.__name__} value") from None

    def type_text(self) -> str:
        return f"u8 enum {self.enum.__name__}"

    def range_text(self) -> str:
        return ", ".join(f"{m.value} = {m.name}" for m in self.enum)


@dataclasses.dataclass(frozen=True)
class FlagSpec(Spec):
    """A 32-bit set of :class:`~enum.IntFlag` bits; unknown bits are kept (newer peers)."""

    flags: type[IntFlag]
    doc: str = ""

    @property
    def struct_format(self) -> str | None:
        return "I"

    def validate(self, value: object, name: str) -> None:
        if not isinstance(value, self.flags) or not 0 <= int(value) <= 0xFFFFFFFF:
            raise WireError(f"{name}: expected {self.flags.__name__}, got {value!r}")

    def from_raw(self, raw: Any) -> Any:
        return self.flags(raw)

    def type_text(self) -> str:
        return f"u32 bits {self.flags.__name__}"

    def range_text(self) -> str:
        members = [m for m in self.flags if m.value]
        return ", ".join(f"bit {int(m.value).bit_length() - 1} = {m.name}" for m in members)


@dataclasses.dataclass(frozen=True)
class BytesSpec(Spec):
    """A fixed number of opaque bytes (nonces, digests, proofs)."""

    size: int
    doc: str = ""

    @property
    def struct_format(self) -> str | None:
        return f"{self.size}s"

    def validate(self, value: object, name: str) -> None:
        if not isinstance(value, bytes) or len(value) != self.size:
            raise WireError(f"{name}: expected {self.size} bytes")

    def type_text(self) -> str:
        return f"bytes[{self.size}]"


@dataclasses.dataclass(frozen=True)
class StringSpec(Spec):
    """``str8``: a u8 byte count followed by that many bytes of UTF-8."""

    max_bytes: int
    doc: str = ""
    min_bytes: int = 0

    def validate(self, value: object, name: str) -> None:
        if not isinstance(value, str):
            raise WireError(f"{name}: expected a str, got {type(value).__name__}")
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise WireError(f"{name}: not encodable as UTF-8") from None
        if not self.min_bytes <= size <= self.max_bytes:
            raise WireError(f"{name}: {size} UTF-8 bytes outside {self.range_text()}")

    def encode(self, value: Any, out: bytearray) -> None:
        raw = value.encode("utf-8")
        out.append(len(raw))
        out += raw

    def decode(self, buf: bytes, offset: int) -> tuple[Any, int]:
        size = buf[offset]
        end = offset + 1 + size
        if end > len(buf):
            raise WireError("string runs past the end of the payload")
        return buf[offset + 1 : end].decode("utf-8"), end

    @property
    def max_size(self) -> int:
        return 1 + self.max_bytes

    def type_text(self) -> str:
        return "str8"

    def range_text(self) -> str:
        return f"{self.min_bytes}..{self.max_bytes} bytes UTF-8"


@dataclasses.dataclass(frozen=True)
class TailBytesSpec(Spec):
    """Opaque bytes filling the rest of the payload (must be the last field)."""

    min_bytes: int
    max_bytes: int
    doc: str = ""

    def validate(self, value: object, name: str) -> None:
        if not isinstance(value, bytes) or not self.min_bytes <= len(value) <= self.max_bytes:
            raise WireError(f"{name}: expected {self.range_text()}")

    def encode(self, value: Any, out: bytearray) -> None:
        out += value

    def decode(self, buf: bytes, offset: int) -> tuple[Any, int]:
        return bytes(buf[offset:]), len(buf)

    @property
    def max_size(self) -> int:
        return self.max_bytes

    def type_text(self) -> str:
        return "bytes (rest of payload)"

    def range_text(self) -> str:
        return f"{self.min_bytes}..{self.max_bytes} bytes"


class WireStruct:
    """Base of every message and nested record: validation, encoding and decoding.

    Subclasses are declared with :func:`wire_struct`; :meth:`check` adds rules that involve
    several fields.
    """

    __slots__ = ()
    # Declared so that type checkers accept instances in dataclasses.fields().
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]
    #: tag byte that selects this class inside a :func:`union` field
    TAG: ClassVar[int] = -1

    def __post_init__(self) -> None:
        for name, spec in _field_specs(type(self)):
            spec.validate(getattr(self, name), name)
        self.check()

    def check(self) -> None:
        """Cross-field rules; raise :class:`WireError` when violated."""

    def encode(self) -> bytes:
        """The payload bytes of this record."""
        out = bytearray()
        _encode_into(self, out)
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Decode a complete payload; raises :class:`WireError` if it is not exactly one record."""
        try:
            value, end = _decode_from(cls, data, 0)
        except WireError:
            raise
        except (struct.error, IndexError):
            raise WireError(f"{cls.__name__}: payload too short") from None
        except ValueError as exc:  # UnicodeDecodeError and enum conversions
            raise WireError(f"{cls.__name__}: {exc}") from None
        if end != len(data):
            raise WireError(f"{cls.__name__}: {len(data) - end} unexpected trailing bytes")
        return value


_W = TypeVar("_W", bound=WireStruct)


@dataclasses.dataclass(frozen=True)
class StructSpec(Spec):
    """A nested record, encoded inline."""

    cls: type[WireStruct]
    doc: str = ""

    def validate(self, value: object, name: str) -> None:
        if not isinstance(value, self.cls):
            raise WireError(f"{name}: expected {self.cls.__name__}, got {type(value).__name__}")

    def encode(self, value: Any, out: bytearray) -> None:
        _encode_into(value, out)

    def decode(self, buf: bytes, offset: int) -> tuple[Any, int]:
        return _decode_from(self.cls, buf, offset)

    @property
    def fixed_size(self) -> int | None:
        return struct_fixed_size(self.cls)

    @property
    def max_size(self) -> int:
        return struct_max_size(self.cls)

    def type_text(self) -> str:
        return self.cls.__name__


@dataclasses.dataclass(frozen=True)
class OptionalSpec(Spec):
    """A presence byte (0 absent, 1 present) followed, when present, by a nested record."""

    cls: type[WireStruct]
    doc: str = ""

    def validate(self, value: object, name: str) -> None:
        if value is not None and not isinstance(value, self.cls):
            raise WireError(f"{name}: expected {self.cls.__name__} or None")

    def encode(self, value: Any, out: bytearray) -> None:
        if value is None:
            out.append(0)
        else:
            out.append(1)
            _encode_into(value, out)

    def decode(self, buf: bytes, offset: int) -> tuple[Any, int]:
        present = buf[offset]
        if present == 0:
            return None, offset + 1
        if present != 1:
            raise WireError(f"presence byte {present} is neither 0 nor 1")
        return _decode_from(self.cls, buf, offset + 1)

    @property
    def max_size(self) -> int:
        return 1 + struct_max_size(self.cls)

    def type_text(self) -> str:
        return f"u8 present + {self.cls.__name__}"

    def range_text(self) -> str:
        return f"0 = absent (nothing follows), 1 = a {self.cls.__name__} follows"


@dataclasses.dataclass(frozen=True)
class ListSpec(Spec):
    """A u8 item count followed by the items."""

    item: Spec
    max_items: int
    doc: str = ""
    min_items: int = 0

    def validate(self, value: object, name: str) -> None:
        if not isinstance(value, tuple):
            raise WireError(f"{name}: expected a tuple, got {type(value).__name__}")
        if not self.min_items <= len(value) <= self.max_items:
            raise WireError(f"{name}: {len(value)} items outside {self.range_text()}")
        for i, item in enumerate(value):
            self.item.validate(item, f"{name}[{i}]")

    def encode(self, value: Any, out: bytearray) -> None:
        out.append(len(value))
        for item in value:
            self.item.encode(item, out)

    def decode(self, buf: bytes, offset: int) -> tuple[Any, int]:
        count = buf[offset]
        offset += 1
        items = []
        for _ in range(count):
            item, offset = self.item.decode(buf, offset)
            items.append(item)
        return tuple(items), offset

    @property
    def max_size(self) -> int:
        return 1 + self.max_items * self.item.max_size

    def type_text(self) -> str:
        return f"list8 of {self.item.type_text()}"

    def range_text(self) -> str:
        text = f"{self.min_items}..{self.max_items} items"
        if isinstance(self.item, StructSpec) or (
            isinstance(self.item, IntSpec) and self.item.is_full_range
        ):
            return text
        inner = self.item.range_text()
        return f"{text}; each {inner}" if inner else text


@dataclasses.dataclass(frozen=True)
class UnionSpec(Spec):
    """A u8 tag selecting one of several records, followed by that record."""

    members: tuple[type[WireStruct], ...]
    doc: str = ""

    def __post_init__(self) -> None:
        tags = [m.TAG for m in self.members]
        assert len(set(tags)) == len(tags), self
        assert min(tags) >= 0, self

    def validate(self, value: object, name: str) -> None:
        if not isinstance(value, self.members):
            names = " | ".join(m.__name__ for m in self.members)
            raise WireError(f"{name}: expected {names}, got {type(value).__name__}")

    def encode(self, value: Any, out: bytearray) -> None:
        out.append(value.TAG)
        _encode_into(value, out)

    def decode(self, buf: bytes, offset: int) -> tuple[Any, int]:
        tag = buf[offset]
        for member in self.members:
            if tag == member.TAG:
                return _decode_from(member, buf, offset + 1)
        raise WireError(f"unknown tag {tag}")

    @property
    def max_size(self) -> int:
        return 1 + max(struct_max_size(m) for m in self.members)

    def type_text(self) -> str:
        return "u8 tag + " + " | ".join(m.__name__ for m in self.members)

    def range_text(self) -> str:
        return ", ".join(f"{m.TAG} = {m.__name__}" for m in self.members)


# ---------------------------------------------------------------------------------------------
# Field declaration helpers. Each returns a dataclasses.field carrying its Spec; they are
# declared as field specifiers of `wire_struct` so that type checkers see required arguments.

_MISSING: Any = dataclasses.MISSING


def _field(spec: Spec, default: Any) -> Any:
    return dataclasses.field(default=default, metadata={"wire": spec})


def _uint(
    size: int,
    doc: str,
    unit: str,
    lo: int | None,
    hi: int | None,
    special: tuple[tuple[int, str], ...],
    none_value: int | None,
    none_text: str,
    default: Any,
) -> Any:
    spec = IntSpec(
        size, doc, unit, lo, hi, special=special, none_value=none_value, none_text=none_text
    )
    return _field(spec, default)


def u8(
    doc: str,
    *,
    unit: str = "",
    lo: int | None = None,
    hi: int | None = None,
    special: tuple[tuple[int, str], ...] = (),
    none_value: int | None = None,
    none_text: str = "none",
    default: Any = _MISSING,
) -> Any:
    """An unsigned 8-bit integer field (``None`` allowed when ``none_value`` is set)."""
    return _uint(1, doc, unit, lo, hi, special, none_value, none_text, default)


def u16(
    doc: str,
    *,
    unit: str = "",
    lo: int | None = None,
    hi: int | None = None,
    special: tuple[tuple[int, str], ...] = (),
    none_value: int | None = None,
    none_text: str = "none",
    default: Any = _MISSING,
) -> Any:
    """An unsigned 16-bit integer field (``None`` allowed when ``none_value`` is set)."""
    return _uint(2, doc, unit, lo, hi, special, none_value, none_text, default)


def u32(
    doc: str,
    *,
    unit: str = "",
    lo: int | None = None,
    hi: int | None = None,
    special: tuple[tuple[int, str], ...] = (),
    none_value: int | None = None,
    none_text: str = "none",
    default: Any = _MISSING,
) -> Any:
    """An unsigned 32-bit integer field (``None`` allowed when ``none_value`` is set)."""
    return _uint(4, doc, unit, lo, hi, special, none_value, none_text, default)


def i32(doc: str, *, unit: str = "", default: Any = _MISSING) -> Any:
    """A signed 32-bit integer field (two's complement)."""
    return _field(IntSpec(4, doc, unit, signed=True), default)


def optional(cls: type[WireStruct], doc: str, *, default: Any = _MISSING) -> Any:
    """A record that may be absent (``None``), preceded by a presence byte."""
    return _field(OptionalSpec(cls, doc), default)


def boolean(doc: str, *, default: Any = _MISSING) -> Any:
    """A boolean stored in one byte."""
    return _field(BoolSpec(doc), default)


def enum8(enum: type[IntEnum], doc: str, *, default: Any = _MISSING) -> Any:
    """An enumeration stored in one byte."""
    return _field(EnumSpec(enum, doc), default)


def flags32(flags: type[IntFlag], doc: str, *, default: Any = _MISSING) -> Any:
    """A set of flag bits stored in 32 bits."""
    return _field(FlagSpec(flags, doc), default)


def fixed_bytes(doc: str, *, size: int, default: Any = _MISSING) -> Any:
    """A fixed-length byte string."""
    return _field(BytesSpec(size, doc), default)


def tail_bytes(doc: str, *, min_bytes: int, max_bytes: int, default: Any = _MISSING) -> Any:
    """Bytes filling the rest of the payload; only as the last field."""
    return _field(TailBytesSpec(min_bytes, max_bytes, doc), default)


def string(doc: str, *, max_bytes: int, min_bytes: int = 0, default: Any = _MISSING) -> Any:
    """A length-prefixed UTF-8 string."""
    return _field(StringSpec(max_bytes, doc, min_bytes), default)


def list_of(
    item: Spec | type[WireStruct],
    doc: str,
    *,
    max_items: int,
    min_items: int = 0,
    default: Any = _MISSING,
) -> Any:
    """A count-prefixed list of scalars or records (a tuple in Python)."""
    item_spec = item if isinstance(item, Spec) else StructSpec(item)
    return _field(ListSpec(item_spec, max_items, doc, min_items), default)


def nested(cls: type[WireStruct], doc: str, *, default: Any = _MISSING) -> Any:
    """A record embedded inline."""
    return _field(StructSpec(cls, doc), default)


def union(members: tuple[type[WireStruct], ...], doc: str, *, default: Any = _MISSING) -> Any:
    """One of several records, selected by a tag byte."""
    return _field(UnionSpec(members, doc), default)


@dataclass_transform(
    frozen_default=True,
    field_specifiers=(
        u8,
        u16,
        u32,
        i32,
        optional,
        boolean,
        enum8,
        flags32,
        fixed_bytes,
        tail_bytes,
        string,
        list_of,
        nested,
        union,
        dataclasses.field,
    ),
)
def wire_struct(cls: type[_W]) -> type[_W]:
    """Class decorator: a frozen, slotted dataclass whose fields are wire fields."""
    made = dataclasses.dataclass(frozen=True, slots=True)(cls)
    # The dataclass __init__ calls __post_init__: the validator compiled for this class.
    made.__post_init__ = _compile_validator(made)  # type: ignore[method-assign]
    return made


# ---------------------------------------------------------------------------------------------
# Compiled codecs
#
# Every record class gets three functions generated from its field specs on first use: the
# validator (its ``__post_init__``), the encoder and the decoder. Generic code that loops over
# the specs and dispatches per field cost ~1 µs per field (an INTERROGATE response has 38,
# validated when built and again when decoded); the generated code tests each field inline.
# Validation is unchanged: the inline test only accepts values the spec's ``validate`` accepts
# (exact types, ranges as literals), and anything else goes to ``validate``, which accepts it
# or raises its usual error.


_FIELD_SPECS: dict[type, tuple[tuple[str, Spec], ...]] = {}


def _field_specs(cls: type) -> tuple[tuple[str, Spec], ...]:
    """(name, spec) of every field, computed once per class."""
    specs = _FIELD_SPECS.get(cls)
    if specs is None:
        specs = tuple((f.name, spec_of(f)) for f in dataclasses.fields(cls))
        _FIELD_SPECS[cls] = specs
    return specs


def spec_of(field: dataclasses.Field[Any]) -> Spec:
    """The wire spec attached to a dataclass field."""
    spec = field.metadata.get("wire")
    if not isinstance(spec, Spec):
        raise TypeError(f"field {field.name} has no wire spec")
    return spec


def _fast_check(spec: Spec, v: str, ns: dict[str, Any], key: str) -> str | None:
    """A Python expression, true only for values ``spec.validate`` accepts (a sufficient,
    cheap test), or ``None`` when every value must go to ``validate``."""
    if isinstance(spec, IntSpec):
        test = f"{v}.__class__ is int and {spec.min} <= {v} <= {spec.max}"
        if spec.none_value is not None:
            test = f"{v} is None or ({test} and {v} != {spec.none_value})"
        return test
    if isinstance(spec, BoolSpec):
        return f"{v} is True or {v} is False"
    if isinstance(spec, EnumSpec):
        ns[key] = spec.enum
        return f"{v}.__class__ is {key}"
    if isinstance(spec, FlagSpec):
        ns[key] = spec.flags
        return f"{v}.__class__ is {key} and 0 <= {v} <= 4294967295"
    if isinstance(spec, BytesSpec):
        return f"{v}.__class__ is bytes and len({v}) == {spec.size}"
    if isinstance(spec, TailBytesSpec):
        return f"{v}.__class__ is bytes and {spec.min_bytes} <= len({v}) <= {spec.max_bytes}"
    if isinstance(spec, StringSpec):
        # ASCII: the UTF-8 size is the length.
        return (
            f"{v}.__class__ is str and {v}.isascii() "
            f"and {spec.min_bytes} <= len({v}) <= {spec.max_bytes}"
        )
    if isinstance(spec, StructSpec):
        # A record is validated when it is built and frozen after.
        ns[key] = spec.cls
        return f"{v}.__class__ is {key}"
    if isinstance(spec, OptionalSpec):
        ns[key] = spec.cls
        return f"{v} is None or {v}.__class__ is {key}"
    if isinstance(spec, UnionSpec):
        ns[key] = frozenset(spec.members)
        return f"{v}.__class__ in {key}"
    if isinstance(spec, ListSpec):
        item = _fast_check(spec.item, "x", ns, key + "i")
        if item is None:
            return None
        return (
            f"{v}.__class__ is tuple and {spec.min_items} <= len({v}) <= {spec.max_items} "
            f"and all({item} for x in {v})"
        )
    return None


def _define(name: str, lines: list[str], ns: dict[str, Any], qualname: str) -> Any:
    # The source is generated above from the field specs alone (names, literals).
    exec("\n".join(lines), ns)
    fn = ns[name]
    fn.__qualname__ = qualname
    return fn


def _compile_validator(cls: type[WireStruct]) -> Any:
    ns: dict[str, Any] = {}
    lines = ["def __post_init__(self):"]
    for i, (name, spec) in enumerate(_field_specs(cls)):
        ns[f"_s{i}"] = spec
        lines.append(f"    v = self.{name}")
        test = _fast_check(spec, "v", ns, f"_t{i}")
        if test is None:
            lines.append(f"    _s{i}.validate(v, {name!r})")
        else:
            lines += [f"    if not ({test}):", f"        _s{i}.validate(v, {name!r})"]
    if cls.check is not WireStruct.check:
        lines.append("    self.check()")
    lines.append("    return None")
    return _define("__post_init__", lines, ns, f"{cls.__qualname__}.__post_init__")


_Encoder = Callable[[Any, bytearray], None]
_Decoder = Callable[[bytes, int], tuple[Any, int]]
_ENCODERS: dict[type, _Encoder] = {}
_DECODERS: dict[type, _Decoder] = {}


def _encoder(cls: type[WireStruct]) -> _Encoder:
    enc = _ENCODERS.get(cls)
    if enc is None:
        enc = _ENCODERS[cls] = _compile_encoder(cls)
    return enc


def _decoder(cls: type[WireStruct]) -> _Decoder:
    dec = _DECODERS.get(cls)
    if dec is None:
        dec = _DECODERS[cls] = _compile_decoder(cls)
    return dec


def _runs(cls: type[WireStruct]) -> list[list[tuple[int, str, Spec]]]:
    """The fields in wire order, grouped: consecutive fixed-size fields (one struct format)
    form a run; any other field is a group of its own."""
    groups: list[list[tuple[int, str, Spec]]] = []
    run: list[tuple[int, str, Spec]] = []
    fields = _field_specs(cls)
    for i, (name, spec) in enumerate(fields):
        if isinstance(spec, TailBytesSpec) and i != len(fields) - 1:
            raise TypeError(f"{cls.__name__}.{name}: tail bytes must be the last field")
        if spec.struct_format is not None and not isinstance(spec, StructSpec):
            run.append((i, name, spec))
            continue
        if run:
            groups.append(run)
            run = []
        groups.append([(i, name, spec)])
    if run:
        groups.append(run)
    return groups


def _is_run(group: list[tuple[int, str, Spec]]) -> bool:
    spec = group[0][2]
    return spec.struct_format is not None and not isinstance(spec, StructSpec)


def _compile_encoder(cls: type[WireStruct]) -> _Encoder:
    ns: dict[str, Any] = {}
    lines = ["def _encode(o, out):"]
    for g, group in enumerate(_runs(cls)):
        if _is_run(group):
            ns[f"_pack{g}"] = struct.Struct(
                ">" + "".join(spec.struct_format or "" for _, _, spec in group)
            ).pack
            args = []
            for i, name, spec in group:
                if isinstance(spec, IntSpec) and spec.none_value is not None:
                    args.append(f"({spec.none_value} if o.{name} is None else o.{name})")
                elif _hook(spec, "to_raw") is not None and not isinstance(spec, IntSpec):
                    ns[f"_s{i}"] = spec
                    args.append(f"_s{i}.to_raw(o.{name})")
                else:
                    args.append(f"o.{name}")
            lines.append(f"    out += _pack{g}({', '.join(args)})")
            continue
        ((i, name, spec),) = group
        ns[f"_s{i}"] = spec
        if isinstance(spec, StructSpec):
            ns[f"_e{i}"] = _encoder(spec.cls)
            lines.append(f"    _e{i}(o.{name}, out)")
        elif isinstance(spec, ListSpec) and isinstance(spec.item, StructSpec):
            ns[f"_e{i}"] = _encoder(spec.item.cls)
            lines += [
                f"    v = o.{name}",
                "    out.append(len(v))",
                "    for x in v:",
                f"        _e{i}(x, out)",
            ]
        else:
            lines.append(f"    _s{i}.encode(o.{name}, out)")
    lines.append("    return None")
    encoder: _Encoder = _define("_encode", lines, ns, f"{cls.__qualname__}._encode")
    return encoder


def _compile_decoder(cls: type[WireStruct]) -> _Decoder:
    ns: dict[str, Any] = {"_cls": cls}
    lines = ["def _decode(buf, offset):"]
    names: list[str] = []
    for g, group in enumerate(_runs(cls)):
        if _is_run(group):
            packer = struct.Struct(">" + "".join(spec.struct_format or "" for _, _, spec in group))
            ns[f"_unpack{g}"] = packer.unpack_from
            targets = [f"v{i}" for i, _, _ in group]
            names += targets
            lines.append(f"    ({', '.join(targets)},) = _unpack{g}(buf, offset)")
            lines.append(f"    offset += {packer.size}")
            for i, _, spec in group:
                v = f"v{i}"
                ns[f"_s{i}"] = spec
                if isinstance(spec, IntSpec):
                    if spec.none_value is not None:
                        lines.append(f"    if {v} == {spec.none_value}: {v} = None")
                elif isinstance(spec, EnumSpec):
                    # Members by value (no Enum.__call__); an unknown value goes to from_raw,
                    # which raises the usual error.
                    ns[f"_m{i}"] = dict(spec.enum._value2member_map_)
                    lines += [
                        f"    m = _m{i}.get({v})",
                        f"    {v} = _s{i}.from_raw({v}) if m is None else m",
                    ]
                elif isinstance(spec, BoolSpec):
                    lines.append(
                        f"    {v} = True if {v} == 1 else False if {v} == 0 "
                        f"else _s{i}.from_raw({v})"
                    )
                elif _hook(spec, "from_raw") is not None:
                    lines.append(f"    {v} = _s{i}.from_raw({v})")
            continue
        ((i, _, spec),) = group
        v = f"v{i}"
        names.append(v)
        ns[f"_s{i}"] = spec
        if isinstance(spec, StructSpec):
            ns[f"_d{i}"] = _decoder(spec.cls)
            lines.append(f"    {v}, offset = _d{i}(buf, offset)")
        elif isinstance(spec, ListSpec) and isinstance(spec.item, StructSpec):
            ns[f"_d{i}"] = _decoder(spec.item.cls)
            lines += [
                "    n = buf[offset]",
                "    offset += 1",
                "    items = []",
                "    for _ in range(n):",
                f"        x, offset = _d{i}(buf, offset)",
                "        items.append(x)",
                f"    {v} = tuple(items)",
            ]
        else:
            lines.append(f"    {v}, offset = _s{i}.decode(buf, offset)")
    # Built through the class: its validator range-checks what was decoded.
    lines.append(f"    return _cls({', '.join(names)}), offset")
    decoder: _Decoder = _define("_decode", lines, ns, f"{cls.__qualname__}._decode")
    return decoder


def _hook(spec: Spec, method: str) -> Callable[[Any], Any] | None:
    """``spec``'s ``from_raw`` or ``to_raw``, or ``None`` where it is the identity of Spec."""
    if getattr(type(spec), method) is getattr(Spec, method):
        return None
    hook: Callable[[Any], Any] = getattr(spec, method)
    return hook


def _encode_into(obj: WireStruct, out: bytearray) -> None:
    _encoder(type(obj))(obj, out)


def _decode_from(cls: type[_W], buf: bytes, offset: int) -> tuple[_W, int]:
    value, end = _decoder(cls)(buf, offset)
    return value, end


def struct_fixed_size(cls: type[WireStruct]) -> int | None:
    """Encoded size of a record when every field has a fixed size, else ``None``."""
    total = 0
    for _, spec in _field_specs(cls):
        size = spec.fixed_size
        if size is None:
            return None
        total += size
    return total


def struct_max_size(cls: type[WireStruct]) -> int:
    """Largest possible encoded size of a record."""
    return sum(spec.max_size for _, spec in _field_specs(cls))


def struct_fields(cls: type[WireStruct]) -> Sequence[tuple[str, Spec]]:
    """The ``(name, spec)`` pairs of a record in wire order."""
    return _field_specs(cls)
