"""Event-log codes and argument names: one table (protocol.codes) for firmware, programmer
and docs/protocol.md, and the firmware never logs what the table does not name."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from itpump.emulator.runner import ScenarioRun
from itpump.emulator.scenario import load_scenario, shipped_scenarios
from itpump.programmer.models import LogRecord
from itpump.protocol import messages as m
from itpump.protocol.codes import (
    EVENT_ARGS,
    VOLUME_BOLUS_KINDS,
    EventCode,
    LogBolusKind,
    LogTherapyMode,
    event_args,
)
from itpump.tools.gen_protocol_docs import DOC_PATH

# Every shipped scenario: each tells a different story, so each logs different events.
SCENARIOS = shipped_scenarios()


def test_every_event_code_has_an_argument_table() -> None:
    assert set(EVENT_ARGS) == set(EventCode)
    for code, args in EVENT_ARGS.items():
        names = [a.name for a in args]
        assert len(names) == len(set(names)), code.name
        assert len(args) <= m.MAX_LOG_ARGS, code.name


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_firmware_logs_only_what_the_table_names(name: str) -> None:
    run = ScenarioRun(load_scenario(name))
    run.run()
    entries = run.pump.firmware.log.entries()
    assert entries
    for entry in entries:
        assert len(entry.args) <= len(EVENT_ARGS[entry.code]), entry
        names = [a.name for a in event_args(entry.code, entry.args)]
        assert not [n for n in names if n.startswith("arg")], entry
        if entry.code in (EventCode.BOLUS_STARTED, EventCode.BOLUS_COMPLETED):
            LogBolusKind(int(entry.args[0]))  # a known kind code
        if entry.code is EventCode.PROGRAM_CHANGED:
            LogTherapyMode(int(entry.args[0]))


def test_volume_boluses_are_labelled_with_a_volume() -> None:
    priming = event_args(EventCode.BOLUS_STARTED, (float(LogBolusKind.PRIMING), 0.3, 5.0))
    assert [(a.name, a.unit) for a in priming] == [
        ("kind", ""),
        ("volume", "mL"),
        ("duration", "min"),
    ]
    clinician = event_args(EventCode.BOLUS_STARTED, (float(LogBolusKind.CLINICIAN), 50.0, 30.0))
    assert [a.name for a in clinician] == ["kind", "dose", "duration"]
    assert LogBolusKind.CLINICIAN not in VOLUME_BOLUS_KINDS


def test_missing_trailing_and_unknown_arguments() -> None:
    assert [a.name for a in event_args(EventCode.BOLUS_COMPLETED, (4.0,))] == ["kind"]
    # A newer pump's extra argument, or a code this side does not know, keeps its value.
    assert [a.name for a in event_args(EventCode.ALARM_RAISED, (1.0, 7.0))] == ["alarm", "arg1"]
    assert [a.name for a in event_args(999, (1.0,))] == ["arg0"]


def test_programmer_log_record_labels_its_arguments() -> None:
    entry = m.LogEntry(7, 1_767_261_600, int(EventCode.REFILL), (18_000, 500_000, -1_000, 2_100))
    record = LogRecord.from_wire(entry)
    assert record.args == (18.0, 500.0, -1.0, 2.1)
    assert record.labelled_args == {
        "volume": 18.0,
        "concentration": 500.0,
        "aspirated": -1.0,
        "expected": 2.1,
    }
    assert record.arg_units["concentration"] == "mcg/mL"
    assert record.arg_texts() == [
        "volume=18 mL",
        "concentration=500 mcg/mL",
        "aspirated=-1 mL",
        "expected=2.1 mL",
    ]
    assert record.time == datetime(2026, 1, 1, 10, tzinfo=UTC)


def test_code_arguments_show_their_names() -> None:
    alarm = LogRecord.from_wire(m.LogEntry(1, 0, int(EventCode.ALARM_RAISED), (1000,)))
    assert alarm.arg_texts() == ["alarm=LOW_RESERVOIR"]
    denied = LogRecord.from_wire(
        m.LogEntry(2, 0, int(EventCode.PATIENT_BOLUS_DENIED), (0x24 * 1000,))
    )
    assert denied.arg_texts() == ["refusal=LOCKOUT_ACTIVE"]
    unknown = LogRecord.from_wire(m.LogEntry(3, 0, int(EventCode.ALARM_RAISED), (99_000,)))
    assert unknown.arg_texts() == ["alarm=99"]


def test_the_specification_lists_every_event_with_its_arguments() -> None:
    text = DOC_PATH.read_text(encoding="utf-8")
    section = text[text.index("#### LogEntry") : text.index("#### ClinicianBolus")]
    for code, args in EVENT_ARGS.items():
        prefix = f"| {int(code)} | {code.name} |"
        row = next(line for line in section.splitlines() if line.startswith(prefix))
        for arg in args:
            assert f"`{arg.name}`" in row
            assert arg.unit in row
