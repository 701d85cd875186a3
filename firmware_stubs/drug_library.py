"""The pump's drug library: which drugs the firmware accepts, at what concentrations and daily
doses, and which PK model the emulated patient uses for each.

The data is a TOML file (`firmware_stubs/data/drug_library.toml`, documented there with its
sources); `FirmwareConfig.drug_library` holds the parsed library. Names match
case-insensitively. A refill with a drug the library does not list, or a concentration
outside its range, is refused naming the drug and the range; so is a program whose
`max_daily_dose_mcg` exceeds the drug's limit (checks in `Firmware.refill` / `program`).
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path

from itpump.firmware_stubs.errors import Refusal
from itpump.protocol.codes import ResultCode

DEFAULT_LIBRARY_PATH = Path(__file__).with_name("data") / "drug_library.toml"
#: `DrugEntry.pk_model` of a drug the emulated patient has no PK model for.
NO_PK = "none"
PK_MODELS = ("baclofen", NO_PK)


class DrugLibraryError(ValueError):
    """A library file that does not validate; one line naming the entry and field."""


@dataclass(frozen=True, slots=True)
class DrugEntry:
    """One drug's limits and PK model."""

    name: str
    min_concentration_mcg_per_ml: float
    max_concentration_mcg_per_ml: float
    min_daily_dose_mcg: float
    max_daily_dose_mcg: float
    pk_model: str

    @property
    def has_pk(self) -> bool:
        """Whether the emulated patient models this drug's concentrations."""
        return self.pk_model != NO_PK


@dataclass(frozen=True, slots=True)
class DrugLibrary:
    """The drugs a pump accepts."""

    drugs: tuple[DrugEntry, ...]

    def find(self, name: str) -> DrugEntry | None:
        """The entry for `name` (case-insensitive), or None."""
        key = name.strip().casefold()
        for entry in self.drugs:
            if entry.name.casefold() == key:
                return entry
        return None

    def names(self) -> str:
        """The known names, for messages."""
        return ", ".join(entry.name for entry in self.drugs)

    def require(self, field_name: str, name: str) -> DrugEntry:
        """The entry, or a refusal naming the drugs the library knows."""
        entry = self.find(name)
        if entry is None:
            raise Refusal(
                ResultCode.OUT_OF_RANGE,
                f"{field_name}={name!r} is not in the pump's drug library; known: {self.names()}",
            )
        return entry

    def check_concentration(self, drug: str, concentration_mcg_per_ml: float) -> None:
        """Refuse a drug the library does not list or a concentration outside its range."""
        entry = self.require("drug", drug)
        low, high = entry.min_concentration_mcg_per_ml, entry.max_concentration_mcg_per_ml
        if not low <= concentration_mcg_per_ml <= high:
            raise Refusal(
                ResultCode.OUT_OF_RANGE,
                f"concentration_mcg_per_ml={concentration_mcg_per_ml:g} outside the drug "
                f"library's range for {entry.name}: {low:g}..{high:g} mcg/mL",
            )

    def check_daily_dose(self, drug: str, max_daily_dose_mcg: float) -> None:
        """Refuse a program whose daily maximum exceeds the drug's limit."""
        entry = self.require("drug", drug)
        if not entry.min_daily_dose_mcg <= max_daily_dose_mcg <= entry.max_daily_dose_mcg:
            raise Refusal(
                ResultCode.DAILY_DOSE_EXCEEDED,
                f"max_daily_dose_mcg={max_daily_dose_mcg:g} outside the drug library's "
                f"daily dose range for {entry.name}: {entry.min_daily_dose_mcg:g}.."
                f"{entry.max_daily_dose_mcg:g} mcg/day",
            )


_FIELDS = {
    "name": str,
    "min_concentration_mcg_per_ml": float,
    "max_concentration_mcg_per_ml": float,
    "min_daily_dose_mcg": float,
    "max_daily_dose_mcg": float,
    "pk_model": str,
}


def parse_library(data: dict[str, object], source: str) -> DrugLibrary:
    """Validate a parsed library file."""
    raw = data.get("drug")
    if not isinstance(raw, list) or not raw:
        raise DrugLibraryError(f"{source}: needs at least one [[drug]] table")
    entries: list[DrugEntry] = []
    for i, item in enumerate(raw, start=1):
        where = f"{source}: drug #{i}"
        if not isinstance(item, dict) or set(item) != set(_FIELDS):
            raise DrugLibraryError(f"{where}: needs exactly the fields {', '.join(_FIELDS)}")
        values: dict[str, object] = {}
        for name, kind in _FIELDS.items():
            value = item[name]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            bad_number = isinstance(value, float) and not 0 <= value < 1e9
            if not isinstance(value, kind) or bad_number:
                raise DrugLibraryError(f"{where}: {name} must be a {kind.__name__} >= 0")
            values[name] = value
        entry = DrugEntry(**values)  # type: ignore[arg-type]
        if not entry.name or entry.pk_model not in PK_MODELS:
            raise DrugLibraryError(
                f"{where}: name must not be empty and pk_model one of {', '.join(PK_MODELS)}"
            )
        if not (
            0 < entry.min_concentration_mcg_per_ml <= entry.max_concentration_mcg_per_ml
            and entry.min_daily_dose_mcg <= entry.max_daily_dose_mcg
        ):
            raise DrugLibraryError(f"{where} ({entry.name}): each min must not exceed its max")
        entries.append(entry)
    names = [e.name.casefold() for e in entries]
    if len(set(names)) != len(names):
        raise DrugLibraryError(f"{source}: a drug is listed twice")
    return DrugLibrary(tuple(entries))


@functools.cache
def default_library() -> DrugLibrary:
    """The shipped library (read once)."""
    with DEFAULT_LIBRARY_PATH.open("rb") as handle:
        return parse_library(tomllib.load(handle), str(DEFAULT_LIBRARY_PATH))
