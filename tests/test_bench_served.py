"""The parsing and figures of benchmarks/served.py (no timing assertions)."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks.served import (
    ServedInfo,
    parse_serve_lines,
    parse_stat_cpu_ticks,
    parse_status_kib,
    proc_cpu_s,
    proc_rss_mib,
    quarter_medians,
    shown_command,
    slots_missed,
)


def test_parse_serve_lines_reads_pumps_until_the_control_line() -> None:
    lines = [
        "some warning on stdout\n",
        json.dumps({"serial": "PP20-000001", "model": "peristaltic-20",
                    "url": "socket://127.0.0.1:40101", "path": None, "key": "00ff"}) + "\n",
        "\n",
        json.dumps({"serial": "PP20-000002", "model": "peristaltic-20",
                    "url": "socket://127.0.0.1:40102", "path": None, "key": "0a0b"}) + "\n",
        json.dumps({"control": "http://127.0.0.1:40217"}) + "\n",
        json.dumps({"serial": "late", "url": "x", "key": "00"}) + "\n",
    ]
    pumps, url = parse_serve_lines(lines)
    assert url == "http://127.0.0.1:40217"
    assert pumps == [
        ServedInfo("PP20-000001", "socket://127.0.0.1:40101", b"\x00\xff"),
        ServedInfo("PP20-000002", "socket://127.0.0.1:40102", b"\x0a\x0b"),
    ]


def test_parse_serve_lines_without_control_line() -> None:
    pumps, url = parse_serve_lines(['{"serial": "A", "url": "u", "key": "01"}', "[1, 2]"])
    assert url is None
    assert [p.serial for p in pumps] == ["A"]


def test_stat_parsing_handles_spaces_and_parentheses_in_the_name() -> None:
    # Fields: pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    # utime stime ...
    stat = "4242 (odd ) name) S 1 2 3 4 5 6 7 8 9 10 300 45 0 0 20 0 1 0 99 0 0"
    assert parse_stat_cpu_ticks(stat) == 345


def test_status_parsing() -> None:
    status = "Name:\tpython\nVmHWM:\t  91234 kB\nVmRSS:\t   81920 kB\n"
    assert parse_status_kib(status, "VmRSS") == 81920
    assert parse_status_kib(status, "VmHWM") == 91234
    with pytest.raises(KeyError):
        parse_status_kib(status, "VmSwap")


def test_proc_readers_on_this_process() -> None:
    before = proc_cpu_s(os.getpid())
    sum(i * i for i in range(200_000))  # burn a little CPU
    assert proc_cpu_s(os.getpid()) >= before >= 0.0
    assert 1.0 < proc_rss_mib(os.getpid()) <= proc_rss_mib(os.getpid(), "VmHWM")


def test_quarter_medians() -> None:
    # 9 values: a quarter is 2; the first two are (1, 3), the last two (7, 8).
    series = [1.0, 3.0, 2.0, 50.0, 50.0, 50.0, 9.0, 7.0, 8.0]
    assert quarter_medians(series) == (2.0, 7.5)
    with pytest.raises(ValueError, match="at least 4"):
        quarter_medians([1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    ("now_s", "expected"),
    [
        (10.3, (1, 0)),  # ended inside its own period: next slot, nothing missed
        (11.0, (1, 0)),  # ended exactly when slot 1 is due: slot 1 still runs
        (11.2, (2, 1)),  # ran past slot 1's start: slot 1 skipped
        (13.5, (4, 3)),  # ran past slots 1, 2, 3
    ],
)
def test_slots_missed(now_s: float, expected: tuple[int, int]) -> None:
    assert slots_missed(10.0, 1.0, 0, now_s) == expected


def test_slots_missed_never_goes_back() -> None:
    # A poll that ends before its own due time (clock skew) still moves on by one slot.
    assert slots_missed(10.0, 1.0, 5, 12.0) == (6, 0)


def test_shown_command_quotes() -> None:
    assert shown_command(["--count", "N", "--scenario", "my file.toml"]) == (
        "itpump serve --count N --scenario 'my file.toml'"
    )
