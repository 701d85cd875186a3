"""Therapy programs in clinical units: the one model of :mod:`protocol.therapy`, for clients.

A clinician thinks in mcg/day, mcg/mL, minutes and clock times; the wire carries nanograms,
nanolitres and minutes from the period start. :class:`Program` is the clinical side::

    program = Program(
        drug="baclofen",
        concentration_mcg_per_ml=2000,
        max_daily_dose_mcg=600,
        mode=Flex.parse("00:00=180,07:00=260,22:00=200"),
        patient_id="P-0001",
        patient_bolus=PatientBolusLimits(dose_mcg=25, duration_min=10, lockout_min=180,
                                         max_per_day=4),
        catheter=Catheter(length_cm=110, volume_ul_per_cm=2.6),
    )
    program.check_wire()                # ProgramError naming the field, in clinical units
    wire = program.to_wire()

:meth:`Program.from_mapping` reads a program document (the format of scenario program
actions, see ``docs/programmer.md``) and :meth:`Program.to_mapping` writes it back, so a
program read from a pump can be saved, edited and sent again; :func:`load_program` reads one
from a file.
"""

from __future__ import annotations

from pathlib import Path

from itpump.programmer.documents import read_document
from itpump.protocol.therapy import (
    Catheter,
    Continuous,
    Flex,
    FlexStep,
    Mode,
    PeriodicBolus,
    Program,
    ProgramError,
    ProgramTable,
    Stopped,
    format_start,
    parse_start,
)
from itpump.protocol.therapy import PatientBolus as PatientBolusLimits

__all__ = [
    "Catheter",
    "Continuous",
    "Flex",
    "FlexStep",
    "Mode",
    "PatientBolusLimits",
    "PeriodicBolus",
    "Program",
    "ProgramError",
    "Stopped",
    "format_start",
    "load_program",
    "parse_start",
    "read_program_table",
]


def load_program(path: str | Path, base: Program | None = None) -> Program:
    """Read a program file: TOML, or JSON if the name ends in ``.json``. Keys the file leaves
    out come from ``base``; :class:`ValueError` names the file and the key."""
    return read_program_table(path).program(base)


def read_program_table(path: str | Path) -> ProgramTable:
    """Read and check a program file (TOML, or JSON if the name ends in ``.json``) without
    completing it, behind the bounds of every user document (size, nesting, UTF-8:
    :mod:`programmer.documents`); :class:`ValueError` names the file and the key."""
    path = Path(path)
    data = read_document(path, "program", ValueError, json_format=path.suffix.lower() == ".json")
    try:
        return ProgramTable.read(data)
    except ProgramError as exc:
        raise ProgramError(f"{path}: {exc.field}", exc.message, exc.code) from None
