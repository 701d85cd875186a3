"""`itpump ctl` against the fake pump over TCP: output (human and --json) and exit statuses."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from itpump.protocol import messages as m
from itpump.protocol.state import AuthBackoff
from itpump.tools import ctl as ctl_module
from itpump.tools.cli import main
from tests.test_programmer_fakepump import KEY_HEX, PATIENT_KEY_HEX, SERIAL, FakePump, served

GUARD_S = 10.0


@pytest.fixture(autouse=True)
def _no_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ITPUMP_KEY", raising=False)
    monkeypatch.delenv("ITPUMP_MASTER_KEY", raising=False)


async def ctl(*argv: str) -> int:
    """Run `itpump ctl ...` in a thread (the pump is served on this loop)."""
    return await asyncio.wait_for(asyncio.to_thread(main, ["ctl", *argv]), GUARD_S)


def out_json(capsys: pytest.CaptureFixture[str]) -> Any:
    return json.loads(capsys.readouterr().out)


async def test_status_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    pump = FakePump()
    async with served(pump) as url:
        assert await ctl(url, "--key", KEY_HEX, "status") == 0
    out = capsys.readouterr().out
    assert f"Pump       {SERIAL}  fake-20  firmware 0.9.0" in out
    assert "Drug       baclofen  2000 mcg/mL" in out
    assert "Reservoir  3.25 mL of 20.00 mL (estimated); low alarm at 2.00 mL, reached" in out
    assert "2026-01-07 10:00 UTC" in out
    assert "Program    continuous 400 mcg/day" in out
    assert "Pt bolus   25 mcg over 10 min, lockout 180 min, max 4/day; 1 in the last 24 h" in out
    assert "Battery    87.0 %; replacement (ERI) projected 2028-12-31 10:00 UTC" in out
    assert "1 LOW_RESERVOIR  non-critical  since 2026-01-01 09:00 UTC  NOT acknowledged" in out
    assert pump.count(m.EndSessionRequest) == 1


async def test_status_json_with_options_after_the_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pump = FakePump()
    async with served(pump) as url:
        assert await ctl(url, "interrogate", "--key", KEY_HEX, "--json") == 0
    data = out_json(capsys)
    assert data["pump"]["serial"] == SERIAL
    status = data["status"]
    assert status["reservoir_ml"] == 3.25
    assert status["therapy_state"] == "RUNNING"
    assert status["time"] == "2026-01-01T10:00:00+00:00"
    assert status["program"]["mode"] == "continuous"
    assert status["program"]["dose_mcg_per_day"] == 400.0
    assert status["alarms"][0]["name"] == "LOW_RESERVOIR"


async def test_identify_needs_no_key(capsys: pytest.CaptureFixture[str]) -> None:
    pump = FakePump()
    async with served(pump) as url:
        assert await ctl(url, "identify") == 0
        assert "FLEX, PATIENT_BOLUS, CLINICIAN_BOLUS" in capsys.readouterr().out
        assert await ctl(url, "--json", "identify") == 0
        assert out_json(capsys)["auth_required"] is True
    assert pump.count(m.AuthBeginRequest) == 0


async def test_refusal_prints_code_and_detail_and_exits_3(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pump = FakePump()
    async with served(pump) as url:
        assert await ctl(url, "--key", KEY_HEX, "bolus", "clinician", "900", "30") == 3
        err = capsys.readouterr().err
        assert "refused: DAILY_DOSE_EXCEEDED (0x22): dose_mcg=900" in err
        assert "max_daily_dose_mcg is 600" in err
        assert await ctl(url, "--key", KEY_HEX, "--json", "bolus", "clinician", "900", "30") == 3
        error = out_json(capsys)["error"]
        assert (error["type"], error["code"], error["request"]) == (
            "refused",
            "DAILY_DOSE_EXCEEDED",
            "BOLUS",
        )
        assert "max_daily_dose_mcg" in error["detail"]


async def test_wrong_key_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    async with served(FakePump()) as url:
        assert await ctl(url, "--key", "00" * 32, "status") == 3
    assert "authentication failed" in capsys.readouterr().err


async def test_silent_pump_exits_4(capsys: pytest.CaptureFixture[str]) -> None:
    pump = FakePump()
    pump.silent = True
    async with served(pump) as url:
        assert await ctl(url, "--timeout", "0.05", "--attempts", "2", "identify") == 4
    assert "no answer from the pump after 2 attempt(s)" in capsys.readouterr().err


async def test_unopenable_port_exits_4(capsys: pytest.CaptureFixture[str]) -> None:
    assert await ctl("/nonexistent/ttyPUMP9", "identify") == 4
    assert "cannot open /nonexistent/ttyPUMP9" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--key", "abc", "status"], "key: expected hexadecimal"),
        (["program", "--flex", "07:00=100"], "--flex: the first step must start at 00:00"),
        (["program", "--patient-id", ""], "--patient-id must not be empty"),
        (["program", "--patient-id=", "--dry-run"], "--patient-id must not be empty"),
        (["program", "--patient-id", "P" * 33], "--patient-id: 33 UTF-8 bytes outside 0..32"),
        (
            ["program", "--continuous", "1e9"],
            "--continuous: 1e+09 mcg/day outside 0..1e+06 mcg/day (wire limit)",
        ),
        (["program", "--max-daily", "1e12"], "--max-daily: 1e+12 mcg outside 0..1e+06 mcg"),
        (
            ["program", "--concentration", "2e6"],
            "--concentration: 2e+06 mcg/mL outside 0..1e+06 mcg/mL",
        ),
        (["program", "--flex", "00:00=2e6"], "--flex: step 00:00 2e+06 mcg/day outside"),
        (
            ["program", "--flex", "00:00=100,07:00=1,06:00=2"],
            "--flex: 06:00 must be after the step before (07:00)",
        ),
        (["program", "--periodic", "200,2e6,30,360"], "--periodic: BOLUS_MCG 2e+06 mcg outside"),
        (["program", "--periodic", "200,50,30,20"], "DURATION_MIN 30 min is longer than"),
        (
            ["program", "--patient-bolus", "25,10,180,300"],
            "--patient-bolus: MAX_PER_DAY 300 outside 1..255",
        ),
        (["program", "--catheter", "-5,2.6"], "--catheter: length -5 cm outside 0.1..6553.5 cm"),
        (["program", "--catheter=-5,2.6"], "--catheter: length -5 cm outside 0.1..6553.5 cm"),
        (["program", "--catheter", "110,-2.6"], "--catheter: volume -2.6 uL/cm outside"),
        (["program", "--catheter", "0,2.6"], "--catheter: length 0 cm outside"),
        (["program", "--periodic", "-1,2,3,4"], "--periodic: BASAL -1 mcg/day outside"),
        (["program", "--drug", ""], "--drug must not be empty"),
        (["bolus", "clinician", "1e9", "30"], "bolus clinician: DOSE_MCG 1e+09 mcg outside"),
        (["bolus", "clinician", "5", "2000"], "DURATION_MIN 2000 min outside 1..1440 min"),
        (["bolus", "prime", "--volume", "2000"], "--volume: 2000 mL outside 1e-06..1000 mL"),
        (["bolus", "bridge", "--old-concentration", "2e9"], "--old-concentration: 2e+09"),
        (["refill", "1e9", "--drug", "b", "--concentration", "2000"], "refill: VOLUME_ML 1e+09"),
        (["refill", "10", "--drug", "b", "--concentration", "2e9"], "--concentration: 2e+09"),
        (["alarms", "threshold", "1e9"], "alarms threshold: 1e+09 mL outside 0..1000 mL"),
        (["program", "--patient-bolus", "1,2"], "DOSE_MCG,DURATION_MIN"),
        (["program", "--file", "/nonexistent.toml"], "nonexistent.toml"),
        (["clock", "set", "yesterday"], "ISO 8601"),
        (
            ["clock", "set", "1969-12-31T00:00Z"],
            "the protocol carries 1970-01-01 00:00:01 to 2106-02-07 06:28:15 UTC",
        ),
        (
            ["refill", "10", "--drug", "d" * 33, "--concentration", "2000"],
            "--drug: 33 UTF-8 bytes outside 1..32 (wire limit)",
        ),
        (["program", "--periodic", "200,50,30,x"], "periodic interval 'x': not a whole number"),
        (["bolus", "clinician", "5", "1e9"], "bolus clinician: DURATION_MIN 1e+09 min outside"),
        (["program", "--flex", "-5"], "--flex: flex step '-5': expected START=MCG_PER_DAY"),
        (
            ["program", "--periodic", "100,50,30.5,360"],
            "--periodic: periodic bolus duration '30.5': not a whole number",
        ),
        (
            ["program", "--periodic", "100,50,30,7"],
            "--periodic: DURATION_MIN 30 min is longer than the interval between boluses (7 min)",
        ),
        (["program", "--catheter", "110"], "--catheter: catheter '110': expected"),
        (["program", "--patient-bolus", "1,2"], "--patient-bolus: "),
        (["program", "--drug", "d" * 33], "--drug: 33 UTF-8 bytes outside 1..32 (wire limit)"),
        (
            ["program", "--continuous", "5", "--flex-period", "weekly"],
            "--flex-period goes with --flex",
        ),
        (["alarms", "ack", "FIRE"], "LOW_RESERVOIR"),
        (["alarms", "threshold"], "volume in mL"),
    ],
)
async def test_usage_errors_exit_2_before_the_port_is_opened(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # the port does not exist: reaching it would exit 4, not 2
    assert await ctl("/nonexistent/ttyPUMP9", *argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["program", "--continuous", "nan"], "argument --continuous: 'nan' is not a number"),
        (["program", "--max-daily", "nan"], "argument --max-daily: 'nan' is not a number"),
        (["refill", "nan", "--drug", "b", "--concentration", "1"], "'nan' is not a number"),
    ],
)
def test_nan_is_not_a_number_rather_than_out_of_range(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["ctl", "/nonexistent/ttyPUMP9", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "must be" not in err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["program"], "drug concentration in mcg/mL"),
        (["refill"], "concentration of the drug filled, in mcg/mL"),
        (["bolus", "clinician"], "minutes to deliver the dose over"),
        (["bolus", "clinician"], "bolus dose in mcg"),
        (["clock"], "the pump clock beside the host clock"),
        (["alarms"], "silence one or all (they stay active until resolved)"),
    ],
)
def test_help_explains_every_value(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["ctl", "/dev/null", *argv, "--help"])
    assert words in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("argv", [["--continuous", "1e9"], ["--catheter", "-5,2.6"]])
async def test_program_range_errors_name_no_wire_units(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert await ctl("/nonexistent/ttyPUMP9", "program", *argv) == 2
    err = capsys.readouterr().err
    for wire_unit in ("_ng", "_nl", "_mm", " ng", " nL"):
        assert wire_unit not in err
    assert "expected one argument" not in err


@pytest.mark.parametrize(
    ("max_daily", "tables", "message"),
    [
        ("1e12", "", "max_daily_dose_mcg: 1e+12 mcg outside 0..1e+06 mcg (wire limit)"),
        (
            "600",
            "[catheter]\nlength_cm = -5\nvolume_ul_per_cm = 2.6\n",
            "catheter.length_cm: -5 cm outside 0.1..6553.5 cm (wire limit)",
        ),
        (
            "600",
            "[patient_bolus]\ndose_mcg = 2e9\nduration_min = 10\nlockout_min = 0\n"
            "max_per_day = 1\n",
            "patient_bolus.dose_mcg: 2e+09 mcg outside 0.001..1e+06 mcg (wire limit)",
        ),
    ],
)
async def test_program_file_range_errors_name_the_file_keys_in_its_units(
    max_daily: str,
    tables: str,
    message: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Any,
) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        f'drug = "baclofen"\nconcentration_mcg_per_ml = 2000\nmax_daily_dose_mcg = {max_daily}\n'
        'mode = "continuous"\ndose_mcg_per_day = 300\n' + tables
    )
    assert await ctl("/nonexistent/ttyPUMP9", "program", "--file", str(path)) == 2
    assert f"{path}: {message}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("tcp:7000", "socket://127.0.0.1:7000"),
        ("rfc2217:7001", "rfc2217://127.0.0.1:7001"),
    ],
)
async def test_serve_port_syntax_gets_a_url_hint(
    url: str, hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await ctl(url, "status") == 4
    err = capsys.readouterr().err
    assert f"cannot open {url}" in err
    assert f"use {hint}" in err


async def test_other_unopenable_ports_get_no_hint(capsys: pytest.CaptureFixture[str]) -> None:
    assert await ctl("/nonexistent/tcp:7000", "status") == 4
    assert "socket://" not in capsys.readouterr().err


async def test_program_table_shows_only_changes_the_pump_makes(
    capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    # no patient_id and no catheter in the file: the pump keeps both
    path = tmp_path / "p.toml"
    path.write_text(
        'drug = "baclofen"\nconcentration_mcg_per_ml = 2000\nmax_daily_dose_mcg = 600\n'
        'mode = "continuous"\ndose_mcg_per_day = 300\n'
    )
    pump = FakePump()
    pump.keep_unset = True
    async with served(pump) as url:
        assert await ctl(url, "--key", KEY_HEX, "program", "--file", str(path)) == 0
        out = capsys.readouterr().out
        assert "Program verified and committed:" in out
        rows = {line.split("  ")[0]: line for line in out.splitlines()}
        assert rows["patient id"].split()[2:] == ["P-0001", "P-0001"]
        assert rows["catheter"].endswith("= 286 uL")
        assert not rows["catheter"].endswith("*")
        assert rows["mode"].endswith("continuous 300 mcg/day  *")
        assert pump.program.patient_id == "P-0001"
        assert pump.program.catheter_length_mm == 1100

        assert await ctl(url, "--key", KEY_HEX, "--json", "program", "--file", str(path)) == 0
        data = out_json(capsys)
        assert data["program"]["patient_id"] == "P-0001"
        assert data["program"]["catheter"] == {"length_cm": 110.0, "volume_ul_per_cm": 2.6}

        argv = ["program", "--patient-id", "P-0002", "--catheter", "95,2.6"]
        assert await ctl(url, "--key", KEY_HEX, *argv) == 0
        out = capsys.readouterr().out
        assert "P-0001" in out
        assert "P-0002  *" in out
        assert "95 cm x 2.6 uL/cm = 247 uL  *" in out
    assert pump.program.patient_id == "P-0002"
    assert pump.program.catheter_length_mm == 950


async def test_program_as_patient_is_refused_without_an_abort(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    pump = FakePump()
    async with served(pump) as url:
        argv = ["--role", "patient", "program", "--continuous", "300"]
        assert await ctl(url, "--key", PATIENT_KEY_HEX, *argv) == 3
    assert "ROLE_FORBIDDEN" in capsys.readouterr().err
    assert pump.count(m.ProgramAbortRequest) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_missing_key_is_a_usage_error_unless_the_pump_allows_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    strict, lax = FakePump(), FakePump(allow_unauthenticated=True)
    async with served(strict) as strict_url, served(lax) as lax_url:
        assert await ctl(strict_url, "status") == 2
        assert "requires authentication" in capsys.readouterr().err
        assert await ctl(lax_url, "stop") == 0
        assert await ctl(lax_url, "--no-auth", "resume") == 0
        monkeypatch.setenv("ITPUMP_KEY", KEY_HEX)
        assert await ctl(strict_url, "stop") == 0
    assert lax.count(m.AuthBeginRequest) == 0
    assert strict.state is m.TherapyState.STOPPED


async def test_program_from_flags_shows_before_and_after(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pump = FakePump()
    async with served(pump) as url:
        argv = [url, "--key", KEY_HEX, "program", "--flex", "00:00=180,07:00=260"]
        assert await ctl(*argv, "--max-daily", "500", "--patient-bolus", "off") == 0
    out = capsys.readouterr().out
    assert "Program verified and committed:" in out
    assert "continuous 400 mcg/day" in out
    assert "flex (daily) 00:00 180, 07:00 260 mcg/day  *" in out
    program = pump.program
    async with served(pump) as url:
        assert await ctl(url, "--key", KEY_HEX, "status") == 0
    assert "Program    flex (daily) 00:00 180, 07:00 260 mcg/day (mean 236.667 mcg/day)" in (
        capsys.readouterr().out
    )
    assert program.max_daily_dose_ng == 500_000
    assert program.patient_bolus is None
    assert isinstance(program.mode, m.FlexMode)
    assert program.drug_name == "baclofen"  # kept from the pump's current program


async def test_program_dry_run_from_file_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        'drug = "baclofen"\nconcentration_mcg_per_ml = 2000\nmax_daily_dose_mcg = 550\n'
        'mode = "periodic_bolus"\ndose_mcg_per_day = 200\n'
        'periodic = { dose_mcg = 50, duration_min = 30, interval = "6h" }\n'
    )
    pump = FakePump()
    async with served(pump) as url:
        argv = [url, "--key", KEY_HEX, "--json", "program", "--file", str(path), "--dry-run"]
        assert await ctl(*argv) == 0
    data = out_json(capsys)
    assert data["committed"] is False
    assert data["program"]["mode"] == "periodic_bolus"
    assert data["program"]["periodic"]["interval"] == "360m"
    assert data["before"]["mode"] == "continuous"
    assert pump.count(m.ProgramAbortRequest) == 1
    assert pump.count(m.ProgramCommitRequest) == 0


async def test_other_commands(capsys: pytest.CaptureFixture[str]) -> None:
    pump = FakePump()
    async with served(pump) as url:
        key = ["--key", KEY_HEX]
        assert await ctl(url, *key, "log", "--limit", "5") == 0
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 5
        assert lines[0].startswith("#39")
        # the fake pump's entry 39 is a REFILL with arguments (2.6, -1.5): named, with units
        assert lines[0].endswith("REFILL                 volume=2.6 mL concentration=-1.5 mcg/mL")

        assert await ctl(url, *key, "--json", "log") == 0
        records = out_json(capsys)
        assert len(records) == 40
        assert records[0]["event"] == "REFILL"
        assert records[0]["args"] == [2.6, -1.5]
        assert records[0]["labelled_args"] == {"volume": 2.6, "concentration": -1.5}
        assert records[0]["arg_units"] == {"volume": "mL", "concentration": "mcg/mL"}

        assert await ctl(url, *key, "clock", "set", "2026-03-01T08:00:00") == 0
        assert "set to 2026-03-01 08:00:00 UTC (was 2026-01-01 10:00:00 UTC)" in (
            capsys.readouterr().out
        )
        assert await ctl(url, *key, "clock") == 0
        assert "Pump clock 2026-03-01 08:00:00 UTC" in capsys.readouterr().out

        assert await ctl(url, *key, "alarms") == 0
        assert "LOW_RESERVOIR" in capsys.readouterr().out
        assert await ctl(url, *key, "alarms", "ack", "low_reservoir") == 0
        assert "Acknowledged 1 alarm(s)" in capsys.readouterr().out
        assert await ctl(url, *key, "alarms", "threshold", "2.5") == 0
        assert pump.low_threshold_nl == 2_500_000

        argv = ["refill", "18", "--drug", "baclofen", "--concentration", "1000"]
        assert await ctl(url, *key, *argv, "--aspirated", "1.8") == 0
        out = capsys.readouterr().out
        assert "Reservoir  18.00 mL (estimated)" in out
        assert "Bridge     0.286 mL bolus started" in out

        assert await ctl(url, *key, "bolus", "prime", "--volume", "0.2") == 0
        assert "Priming bolus started: 0.200 mL" in capsys.readouterr().out
        assert await ctl(url, *key, "bolus", "bridge") == 0
        assert "Bridge bolus started: 0.286 mL (572 mcg)" in capsys.readouterr().out
        assert await ctl(url, *key, "--json", "bolus", "cancel") == 0
        assert out_json(capsys)["cancelled"] == 1
        patient = ("--key", PATIENT_KEY_HEX, "--role", "patient")
        assert await ctl(url, *patient, "bolus", "patient") == 0
        assert "Patient bolus started: 25 mcg" in capsys.readouterr().out
        assert await ctl(url, *patient, "stop") == 3
        assert "ROLE_FORBIDDEN" in capsys.readouterr().err
        assert await ctl(url, *key, "stop") == 0
        assert await ctl(url, *key, "resume") == 0
    assert pump.clock_s == 1_772_352_000
    assert pump.state is m.TherapyState.RUNNING


def test_clock_differences_in_words() -> None:
    from itpump.tools.ctl import _duration

    assert [_duration(x) for x in (2.4, -250, 7500, 28_339_167)] == [
        "2 s",
        "4 min 10 s",
        "2 h 5 min",
        "327 d 23 h",
    ]


class _BackoffOnce(AuthBackoff):
    """A pump whose clinician role is in backoff for the first AUTH_BEGIN only."""

    def __init__(self, wait_s: float) -> None:
        super().__init__()
        self._first_wait_s: float | None = wait_s

    def wait_s(self, role: int, now_s: float | None) -> float:
        wait_s, self._first_wait_s = self._first_wait_s, None
        return 0.0 if wait_s is None or role != m.Role.CLINICIAN else wait_s


async def test_ctl_waits_out_an_auth_backoff_once_and_says_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    waited: list[float] = []
    monkeypatch.setattr(ctl_module, "_sleep", waited.append)
    pump = FakePump()
    pump.connection.auth_backoff = _BackoffOnce(7.0)
    async with served(pump) as url:
        assert await ctl(url, "--key", KEY_HEX, "status") == 0
    assert waited == [7.0]
    err = capsys.readouterr().err
    assert "refuses CLINICIAN handshakes for 7 s" in err
    assert "waiting" in err
    assert pump.count(m.AuthBeginRequest) == 2


async def test_ctl_waits_at_most_a_minute_and_only_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    waited: list[float] = []
    monkeypatch.setattr(ctl_module, "_sleep", waited.append)

    class _Always(AuthBackoff):
        def wait_s(self, role: int, now_s: float | None) -> float:
            return 3600.0  # more than a pump ever says: ctl still waits at most 60 s

    pump = FakePump()
    pump.connection.auth_backoff = _Always()
    async with served(pump) as url:
        assert await ctl(url, "--key", KEY_HEX, "status") == 3
    assert waited == [60.0]
    assert "AUTH_BACKOFF" in capsys.readouterr().err
    assert pump.count(m.AuthBeginRequest) == 2
