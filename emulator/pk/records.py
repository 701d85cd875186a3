"""NONMEM-style dose/observation records: read them (strictly validated) and write them.

Format (one header row, then one row per record; comma separated; '#' starts a comment line):

    ID    subject identifier; a subject's records must be contiguous
    TIME  h since the start (>= 0), non-decreasing within a subject
    AMT   mcg (dose records: > 0; observation records: 0 or '.')
    RATE  mcg/h; 0 = bolus, > 0 = zero-order infusion of AMT lasting AMT/RATE h
    EVID  1 = dose, 0 = observation (a row of predicted concentrations)
    CMT   dose compartment: 1 = intrathecal (CSF at the catheter tip),
          2 = subcutaneous/tissue depot (catheter leak, pump-pocket fill);
          ignored on observation records (0, 1, 2 or '.')
    WT    optional, kg, constant within a subject ('.' or empty: 70 kg)

Limits (a file beyond them is refused, naming the line and column, before any computation):
at most MAX_FILE_BYTES bytes and MAX_RECORDS records; TIME and infusion ends at most MAX_TIME_H
(100 years); AMT at most MAX_AMOUNT_MCG (1 g); RATE at most MAX_RATE_MCG_PER_H; WT from
MIN_WEIGHT_KG to MAX_WEIGHT_KG.

Other columns (MDV, DV, ...) are allowed and ignored. Overlapping infusions add up. An
observation at the same TIME as a dose sees that dose when the dose record comes first, and not
when the observation record comes first (NONMEM's reading of record order).
"""

from __future__ import annotations

import csv
import io
import math
import os
import stat
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from itpump.emulator.pk.schedule import InputSchedule
from itpump.emulator.pk.system import ROUTE_CSF, ROUTE_TISSUE

REQUIRED_COLUMNS: tuple[str, ...] = ("ID", "TIME", "AMT", "RATE", "EVID", "CMT")
WEIGHT_COLUMN = "WT"
CMT_INTRATHECAL = 1
CMT_TISSUE = 2
_ROUTE_OF_CMT = {CMT_INTRATHECAL: ROUTE_CSF, CMT_TISSUE: ROUTE_TISSUE}
MISSING = "."

# Input limits (documented in the module docstring, `itpump pk --help` and docs/pk.md). They
# keep a hostile or mistaken file from costing gigabytes of memory (the size is checked before
# reading) or producing NaN/inf predictions that exit 0.
#: Largest dose file read: 64 MiB (about a million records with room for extra columns).
MAX_FILE_BYTES = 64 * 1024 * 1024
#: Most records (rows after the header) in a file.
MAX_RECORDS = 1_000_000
#: Largest TIME (and infusion end), h: 100 years.
MAX_TIME_H = 876_600.0
#: Largest dose, mcg (1 g: orders of magnitude above any intrathecal dose).
MAX_AMOUNT_MCG = 1e6
#: Largest infusion rate, mcg/h.
MAX_RATE_MCG_PER_H = 1e6
#: Body weight range, kg.
MIN_WEIGHT_KG = 0.5
MAX_WEIGHT_KG = 500.0


class DoseFileError(ValueError):
    """A malformed dose file; names the file, line and column."""

    def __init__(self, source: str, line: int, column: str | None, message: str) -> None:
        self.source = source
        self.line = line
        self.column = column
        self.message = message
        where = f"line {line}" + (f", column {column}" if column else "")
        super().__init__(f"{source}: {where}: {message}")


@dataclass(frozen=True)
class Observation:
    """An output request: TIME as written in the file, and whether it precedes a dose."""

    time_h: float
    time_text: str
    pre_dose: bool
    line: int


@dataclass
class SubjectRecords:
    """One subject's doses and observation times."""

    subject_id: str
    weight_kg: float | None = None
    infusions: list[tuple[float, float, float, int]] = field(default_factory=list)
    boluses: list[tuple[float, float, int]] = field(default_factory=list)
    observations: list[Observation] = field(default_factory=list)

    def schedule(self) -> InputSchedule:
        """The subject's dosing as solver input, starting drug-free at 0 h."""
        return InputSchedule.from_infusions(self.infusions, self.boluses, start_h=0.0)

    @property
    def last_time_h(self) -> float:
        """The latest dose or observation time."""
        times = [0.0]
        times += [end for _start, end, _rate, _route in self.infusions]
        times += [time for time, _amount, _route in self.boluses]
        times += [obs.time_h for obs in self.observations]
        return max(times)


def _number(source: str, line: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DoseFileError(source, line, column, f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise DoseFileError(source, line, column, f"{text!r} is not a finite number")
    return value


def _integer(source: str, line: int, column: str, text: str, allowed: Iterable[int]) -> int:
    value = _number(source, line, column, text)
    allowed_set = sorted(allowed)
    if value != int(value) or int(value) not in allowed_set:
        choices = ", ".join(str(a) for a in allowed_set)
        raise DoseFileError(source, line, column, f"{text!r} must be one of {choices}")
    return int(value)


def parse_dose_records(text: str, source: str = "<input>") -> list[SubjectRecords]:
    """Parse and fully validate a dose file's text; raises DoseFileError on the first fault."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    records = 0
    header: list[str] | None = None
    header_line = 0
    subjects: list[SubjectRecords] = []
    seen_ids: set[str] = set()
    # Per current subject: (time, is_dose) of records in file order, for pre-dose flags.
    last_time: float | None = None
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            # e.g. a field over the csv module's 128 KiB limit, or a NUL byte
            raise DoseFileError(source, reader.line_num, None, f"not valid CSV: {exc}") from None
        line = reader.line_num
        if not row or all(cell.strip() == "" for cell in row) or row[0].lstrip().startswith("#"):
            continue
        cells = [cell.strip() for cell in row]
        if header is None:
            header = [cell.upper() for cell in cells]
            header_line = line
            duplicates = sorted({name for name in header if header.count(name) > 1})
            if duplicates:
                raise DoseFileError(source, line, duplicates[0], "column appears twice")
            for name in REQUIRED_COLUMNS:
                if name not in header:
                    raise DoseFileError(
                        source,
                        line,
                        name,
                        "required column missing (need " + ",".join(REQUIRED_COLUMNS) + ")",
                    )
            continue
        records += 1
        if records > MAX_RECORDS:
            raise DoseFileError(
                source, line, None, f"more than {MAX_RECORDS} records (the limit per file)"
            )
        if len(cells) != len(header):
            raise DoseFileError(
                source, line, None, f"{len(cells)} fields, but the header has {len(header)}"
            )
        record = dict(zip(header, cells, strict=True))

        subject_id = record["ID"]
        if subject_id in ("", MISSING):
            raise DoseFileError(source, line, "ID", "missing subject identifier")
        if not subjects or subjects[-1].subject_id != subject_id:
            if subject_id in seen_ids:
                raise DoseFileError(
                    source, line, "ID", f"records of subject {subject_id} are not contiguous"
                )
            seen_ids.add(subject_id)
            subjects.append(SubjectRecords(subject_id))
            last_time = None
        subject = subjects[-1]

        time_h = _number(source, line, "TIME", record["TIME"])
        if time_h < 0.0:
            raise DoseFileError(source, line, "TIME", "must be >= 0")
        if time_h > MAX_TIME_H:
            raise DoseFileError(
                source, line, "TIME", f"{time_h:g} h outside the allowed range 0..{MAX_TIME_H:g} h"
            )
        if last_time is not None and time_h < last_time:
            raise DoseFileError(
                source, line, "TIME", f"{time_h} h is earlier than the previous record"
            )
        last_time = time_h

        if WEIGHT_COLUMN in record and record[WEIGHT_COLUMN] not in ("", MISSING):
            weight = _number(source, line, WEIGHT_COLUMN, record[WEIGHT_COLUMN])
            if not MIN_WEIGHT_KG <= weight <= MAX_WEIGHT_KG:
                raise DoseFileError(
                    source,
                    line,
                    WEIGHT_COLUMN,
                    f"must be > 0 kg, within the allowed range {MIN_WEIGHT_KG:g}.."
                    f"{MAX_WEIGHT_KG:g} kg (got {weight:g})",
                )
            if subject.weight_kg is not None and weight != subject.weight_kg:
                raise DoseFileError(
                    source, line, WEIGHT_COLUMN, "must be constant within a subject"
                )
            subject.weight_kg = weight

        evid = _integer(source, line, "EVID", record["EVID"], (0, 1))
        amt_text, rate_text, cmt_text = record["AMT"], record["RATE"], record["CMT"]
        if evid == 0:
            for column, value in (("AMT", amt_text), ("RATE", rate_text)):
                if value not in ("", MISSING) and _number(source, line, column, value) != 0.0:
                    raise DoseFileError(
                        source, line, column, "must be 0 or '.' on an observation record"
                    )
            if cmt_text not in ("", MISSING):
                _integer(source, line, "CMT", cmt_text, (0, 1, 2))
            subject.observations.append(
                Observation(time_h, record["TIME"], pre_dose=False, line=line)
            )
            continue

        amount = _number(source, line, "AMT", amt_text)
        if amount <= 0.0:
            raise DoseFileError(source, line, "AMT", "a dose record needs AMT > 0 (mcg)")
        if amount > MAX_AMOUNT_MCG:
            raise DoseFileError(
                source,
                line,
                "AMT",
                f"{amount:g} mcg outside the allowed range 0 < AMT <= {MAX_AMOUNT_MCG:g} mcg",
            )
        rate = _number(source, line, "RATE", rate_text)
        if rate > MAX_RATE_MCG_PER_H:
            raise DoseFileError(
                source,
                line,
                "RATE",
                f"{rate:g} mcg/h outside the allowed range 0..{MAX_RATE_MCG_PER_H:g} mcg/h",
            )
        if rate < 0.0:
            raise DoseFileError(
                source, line, "RATE", "modelled rates/durations (RATE -1/-2) are not supported"
            )
        cmt = _integer(source, line, "CMT", cmt_text, (CMT_INTRATHECAL, CMT_TISSUE))
        route = _ROUTE_OF_CMT[cmt]
        if rate == 0.0:
            subject.boluses.append((time_h, amount, route))
        else:
            end_h = time_h + amount / rate
            if not math.isfinite(end_h) or end_h == time_h:
                raise DoseFileError(
                    source, line, "RATE", "infusion duration AMT/RATE is not usable"
                )
            if end_h > MAX_TIME_H:
                raise DoseFileError(
                    source,
                    line,
                    "RATE",
                    f"the infusion ends at {end_h:g} h (TIME + AMT/RATE), beyond the allowed "
                    f"{MAX_TIME_H:g} h",
                )
            subject.infusions.append((time_h, end_h, rate, route))
        # An observation recorded just before, at this same time, is a pre-dose observation.
        observations = subject.observations
        index = len(observations) - 1
        while index >= 0 and observations[index].time_h == time_h:
            observation = observations[index]
            observations[index] = Observation(
                observation.time_h, observation.time_text, True, observation.line
            )
            index -= 1

    if header is None:
        raise DoseFileError(source, 1, None, "empty file: no header row")
    if not any(subject.observations for subject in subjects):
        raise DoseFileError(
            source, header_line, "EVID", "no observation records (EVID 0): nothing to predict"
        )
    return subjects


def read_dose_file(path: str | os.PathLike[str]) -> list[SubjectRecords]:
    """Read and validate a dose file (see the module docstring for the format)."""
    source = os.fspath(path)
    file_path = Path(path)
    # The size is checked before reading (and the read is capped, for pipes and devices): a
    # gigabyte file would otherwise cost several gigabytes of memory before the first error.
    if file_path.is_file() and file_path.stat().st_size > MAX_FILE_BYTES:
        raise DoseFileError(
            source,
            1,
            None,
            f"{file_path.stat().st_size} bytes, more than the {MAX_FILE_BYTES} bytes "
            f"({MAX_FILE_BYTES // 2**20} MiB) a dose file may have",
        )
    with file_path.open("rb") as stream:
        raw = stream.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise DoseFileError(
            source, 1, None, f"more than the {MAX_FILE_BYTES} bytes a dose file may have"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DoseFileError(source, 1, None, f"not UTF-8 text ({exc.reason})") from None
    return parse_dose_records(text, source)


def output_target(path: str | os.PathLike[str]) -> tuple[Path, bool]:
    """The file a write to `path` lands in (symlinks followed, so a link stays a link) and
    whether it must be written in place: an existing device or FIFO is not a file to rename
    over (`--out /dev/full` as root would otherwise replace the device node)."""
    target = Path(os.path.realpath(path))
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        return target, False
    return target, not stat.S_ISREG(mode)


def write_text_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it into place, so a
    reader never sees a half-written file and a failure leaves nothing behind. A symlink is
    followed (the link is kept); a device or FIFO is written directly, never replaced."""
    target, in_place = output_target(path)
    if in_place:
        with open(target, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        return
    handle, temporary = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or Path(".")
    )
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        _chmod_like_new_file(temporary)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def move_into_place(staged: Path, path: str | os.PathLike[str]) -> None:
    """Rename `staged` onto `path` as `write_text_atomically` would: symlinks followed, a
    device or FIFO written to (then `staged` removed) instead of replaced."""
    target, in_place = output_target(path)
    if in_place:
        with open(staged, "rb") as source, open(target, "wb") as sink:
            while chunk := source.read(1 << 16):
                sink.write(chunk)
        staged.unlink()
        return
    os.replace(staged, target)


def format_csv(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """CSV text with '\\n' line ends."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def _array(name: str, values: ArrayLike | None, length: int | None = None) -> np.ndarray:
    array = np.zeros(0) if values is None else np.atleast_1d(np.asarray(values, float))
    if array.ndim != 1 or (length is not None and array.shape[0] != length):
        raise ValueError(
            f"{name} must be one-dimensional" + (f" of length {length}" if length else "")
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    return array


DOSE_RECORD_COLUMNS: tuple[str, ...] = (*REQUIRED_COLUMNS, "MDV", "DV")


def format_dose_records(
    seg_start_h: ArrayLike,
    seg_end_h: ArrayLike,
    seg_csf_rate_mcg_per_h: ArrayLike,
    seg_tissue_rate_mcg_per_h: ArrayLike | None = None,
    *,
    bolus_t_h: ArrayLike | None = None,
    bolus_csf_mcg: ArrayLike | None = None,
    bolus_tissue_mcg: ArrayLike | None = None,
    obs_times_h: ArrayLike | None = None,
    subject_id: int | str = 1,
    weight_kg: float | None = None,
) -> tuple[str, int]:
    """The CSV text of `write_dose_records` and its number of records."""
    starts = _array("seg_start_h", seg_start_h)
    n_seg = starts.shape[0]
    ends = _array("seg_end_h", seg_end_h, n_seg)
    csf_rates = _array("seg_csf_rate_mcg_per_h", seg_csf_rate_mcg_per_h, n_seg)
    tissue_rates = (
        np.zeros(n_seg)
        if seg_tissue_rate_mcg_per_h is None
        else _array("seg_tissue_rate_mcg_per_h", seg_tissue_rate_mcg_per_h, n_seg)
    )
    bolus_times = _array("bolus_t_h", bolus_t_h)
    n_bolus = bolus_times.shape[0]
    bolus_csf = (
        np.zeros(n_bolus)
        if bolus_csf_mcg is None
        else _array("bolus_csf_mcg", bolus_csf_mcg, n_bolus)
    )
    bolus_tissue = (
        np.zeros(n_bolus)
        if bolus_tissue_mcg is None
        else _array("bolus_tissue_mcg", bolus_tissue_mcg, n_bolus)
    )
    obs_times = _array("obs_times_h", obs_times_h)
    if np.any(starts < 0.0) or np.any(bolus_times < 0.0) or np.any(obs_times < 0.0):
        raise ValueError("record times must be >= 0 h")
    if np.any(ends < starts):
        raise ValueError("seg_end_h must not be before seg_start_h")
    if np.any(csf_rates < 0.0) or np.any(tissue_rates < 0.0):
        raise ValueError("rates must be >= 0")
    if np.any(bolus_csf < 0.0) or np.any(bolus_tissue < 0.0):
        raise ValueError("bolus amounts must be >= 0")
    if weight_kg is not None and not (math.isfinite(weight_kg) and weight_kg > 0.0):
        raise ValueError("weight_kg must be finite and > 0")

    # (time, kind: 0 dose / 1 observation, sequence, fields); doses first at equal times so
    # that observations are post-dose.
    entries: list[tuple[float, int, int, list[str]]] = []
    for number in range(n_seg):
        duration = float(ends[number] - starts[number])
        for cmt, rate in ((CMT_INTRATHECAL, csf_rates[number]), (CMT_TISSUE, tissue_rates[number])):
            if rate > 0.0 and duration > 0.0:
                amount = float(rate) * duration
                fields = [
                    repr(float(starts[number])),
                    repr(amount),
                    repr(float(rate)),
                    "1",
                    str(cmt),
                    "1",
                    MISSING,
                ]
                entries.append((float(starts[number]), 0, len(entries), fields))
    for number in range(n_bolus):
        for cmt, amount in (
            (CMT_INTRATHECAL, bolus_csf[number]),
            (CMT_TISSUE, bolus_tissue[number]),
        ):
            if amount > 0.0:
                fields = [
                    repr(float(bolus_times[number])),
                    repr(float(amount)),
                    "0",
                    "1",
                    str(cmt),
                    "1",
                    MISSING,
                ]
                entries.append((float(bolus_times[number]), 0, len(entries), fields))
    for time in obs_times:
        fields = [repr(float(time)), "0", "0", "0", str(CMT_INTRATHECAL), "0", MISSING]
        entries.append((float(time), 1, len(entries), fields))
    entries.sort(key=lambda entry: entry[:3])

    columns = list(DOSE_RECORD_COLUMNS)
    if weight_kg is not None:
        columns.append(WEIGHT_COLUMN)
    rows = []
    for _time, _kind, _sequence, fields in entries:
        row = [str(subject_id), *fields]
        if weight_kg is not None:
            row.append(repr(float(weight_kg)))
        rows.append(row)
    return format_csv(columns, rows), len(rows)


def write_dose_records(
    path: str | os.PathLike[str],
    seg_start_h: ArrayLike,
    seg_end_h: ArrayLike,
    seg_csf_rate_mcg_per_h: ArrayLike,
    seg_tissue_rate_mcg_per_h: ArrayLike | None = None,
    *,
    bolus_t_h: ArrayLike | None = None,
    bolus_csf_mcg: ArrayLike | None = None,
    bolus_tissue_mcg: ArrayLike | None = None,
    obs_times_h: ArrayLike | None = None,
    subject_id: int | str = 1,
    weight_kg: float | None = None,
) -> int:
    """Write a run's delivered-mass history as NONMEM-style records; returns the record count.

    Each segment [seg_start_h, seg_end_h) with a non-zero rate becomes a zero-order infusion
    record (AMT = rate x duration, RATE = rate) in CMT 1 (CSF rate) and/or CMT 2 (tissue
    rate); gaps between segments deliver nothing. Boluses become RATE 0 records; each
    `obs_times_h` becomes an EVID 0 row (AMT/RATE 0, CMT 1). Columns: ID,TIME,AMT,RATE,EVID,
    CMT,MDV,DV (DV '.') and WT when `weight_kg` is given. Records are sorted by TIME, doses
    before observations at equal times. Numbers are written with round-trip precision.
    The file is written atomically (temporary file + rename).
    """
    text, count = format_dose_records(
        seg_start_h,
        seg_end_h,
        seg_csf_rate_mcg_per_h,
        seg_tissue_rate_mcg_per_h,
        bolus_t_h=bolus_t_h,
        bolus_csf_mcg=bolus_csf_mcg,
        bolus_tissue_mcg=bolus_tissue_mcg,
        obs_times_h=obs_times_h,
        subject_id=subject_id,
        weight_kg=weight_kg,
    )
    write_text_atomically(path, text)
    return count


def _chmod_like_new_file(path: str) -> None:
    # mkstemp creates 0600; an output file should get the usual mode for the user's umask.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
