"""Without termios (Windows), the transports and the farm still import, TCP still serves, and
asking for a PTY gives one clear error.

Each check runs in a fresh interpreter where ``termios`` and ``tty`` cannot be imported
(``sys.modules[name] = None`` makes an import raise ImportError). pyserial is imported first:
on Windows it has its own backend, here its POSIX backend needs termios, and it is not what
is being tested.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUARD_S = 60.0

PRELUDE = """
import serial, serial.rfc2217, serial.urlhandler.protocol_socket  # importable, as on Windows
import sys
sys.modules["termios"] = None  # from here on, "import termios" raises ImportError
sys.modules["tty"] = None
"""


def _run(body: str) -> subprocess.CompletedProcess[str]:
    code = PRELUDE + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "", "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=GUARD_S,
        check=False,
    )


def test_transports_and_farm_import_and_tcp_serves_without_termios() -> None:
    result = _run(
        """
        import asyncio
        import itpump.emulator.farm
        from itpump.emulator.transports import PTY_AVAILABLE, TcpTransport

        assert not PTY_AVAILABLE

        async def main() -> None:
            async with TcpTransport(lambda data: data.upper(), port=0) as transport:
                reader, writer = await asyncio.open_connection("127.0.0.1", transport.port)
                writer.write(b"ping")
                await writer.drain()
                print(await asyncio.wait_for(reader.readexactly(4), 30))
                writer.close()
                await writer.wait_closed()

        asyncio.run(main())
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "b'PING'"


def test_asking_for_a_pty_without_termios_is_a_clear_error() -> None:
    result = _run(
        """
        from itpump.emulator.transports import PtyTransport, PtyUnavailableError, make_raw

        for attempt in (lambda: PtyTransport(lambda data: data), lambda: make_raw(0)):
            try:
                attempt()
            except PtyUnavailableError as exc:
                print(exc)
            else:
                raise AssertionError("no error")
        """
    )
    assert result.returncode == 0, result.stderr
    message = "PTY ports need a POSIX system; use --port tcp:PORT or rfc2217:PORT"
    assert result.stdout.splitlines() == [message, message]


@pytest.mark.parametrize("argv", [["serve"], ["serve", "--port", "pty"]])
def test_serve_with_a_pty_port_without_termios_exits_2_with_the_hint(argv: list[str]) -> None:
    result = _run(
        f"""
        from itpump.tools.cli import main
        raise SystemExit(main({argv!r}))
        """
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "itpump serve: error: --port pty: PTY ports need a POSIX system; "
        "use --port tcp:PORT or rfc2217:PORT"
    ]
