"""Exceptions raised by the programmer client.

Every exception derives from :class:`PumpError`, so a caller that only wants "did it work"
catches one class. The others tell *why*:

* :class:`PumpRefused` - the pump answered and said no (result code and detail);
* :class:`AuthenticationError` - no key, the pump rejected our proof, or the pump's own proof
  was wrong (whoever answered does not know the key);
* :class:`LinkError` - the port could not be opened, read or written;
* :class:`PumpTimeout` - no valid answer after every retransmission (a :class:`LinkError`);
* :class:`ProgramMismatch` - the pump's echo of a program transfer differs from what was sent.
"""

from __future__ import annotations

from itpump.protocol.codes import ResultCode
from itpump.protocol.messages import MessageType, Request

__all__ = [
    "AuthenticationError",
    "LinkError",
    "ProgramMismatch",
    "PumpError",
    "PumpRefused",
    "PumpTimeout",
]


def _request_name(request: Request | None) -> str:
    return "request" if request is None else MessageType(request.TYPE).name


class PumpError(Exception):
    """Base class of every error reported by the programmer client."""


class PumpRefused(PumpError):
    """The pump refused a request: nothing changed on the pump.

    ``code`` is the result code (a :class:`~protocol.codes.ResultCode`), ``detail`` the pump's
    short text naming the field and the allowed range, ``request`` the refused request.
    """

    def __init__(self, code: ResultCode, detail: str, request: Request | None = None) -> None:
        self.code = code
        self.detail = detail
        self.request = request
        text = f"{_request_name(request)} refused: {code.name} (0x{int(code):02X})"
        super().__init__(f"{text}: {detail}" if detail else text)


class AuthenticationError(PumpError):
    """The session could not be authenticated.

    ``code`` is the pump's result code when the pump refused (e.g. ``AUTH_FAILED``), ``None``
    when the problem was found on our side (no key for this serial, wrong pump proof).
    """

    def __init__(self, message: str, code: ResultCode | None = None) -> None:
        self.code = code
        super().__init__(message)


class LinkError(PumpError):
    """The serial link failed: the port could not be opened, read or written."""


class PumpTimeout(LinkError):
    """No valid answer after every attempt.

    For a request that changes state the outcome is unknown: interrogate the pump (or read
    its log) before trying again.
    """

    def __init__(self, request: Request, attempts: int, waited_s: float) -> None:
        self.request = request
        self.attempts = attempts
        self.waited_s = waited_s
        super().__init__(
            f"{_request_name(request)}: no answer from the pump after {attempts} attempt(s) "
            f"in {waited_s:.1f} s"
        )


class ProgramMismatch(PumpError):
    """The pump's PROGRAM_VERIFY echo differs from the program sent; it was not committed."""
