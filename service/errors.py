"""Command errors with MongoDB's numeric codes and code names.

ASP answers stream commands with codes 9 (FailedToParse: a bad pipeline or
argument), 72 (InvalidOptions: bad options) and 125 (CommandFailed: the
processor is missing, exists already, or is in the wrong state); see docs/semantics.md#commands.
"""

from __future__ import annotations

from typing import Any

CODE_NAMES: dict[int, str] = {
    1: "InternalError",
    2: "BadValue",
    9: "FailedToParse",
    11: "UserNotFound",
    13: "Unauthorized",
    14: "TypeMismatch",
    18: "AuthenticationFailed",
    59: "CommandNotFound",
    72: "InvalidOptions",
    125: "CommandFailed",
}

INTERNAL_ERROR = 1
FAILED_TO_PARSE = 9
INVALID_OPTIONS = 72
COMMAND_FAILED = 125
COMMAND_NOT_FOUND = 59
UNAUTHORIZED = 13
AUTHENTICATION_FAILED = 18


class CommandError(Exception):
    """Raised by a handler; the server turns it into ``{ok: 0, errmsg, code, codeName}``."""

    def __init__(self, code: int, errmsg: str) -> None:
        super().__init__(errmsg)
        self.code = code
        self.errmsg = errmsg

    @property
    def code_name(self) -> str:
        return CODE_NAMES.get(self.code, "UnknownError")

    def to_reply(self) -> dict[str, Any]:
        return {"ok": 0.0, "errmsg": self.errmsg, "code": self.code, "codeName": self.code_name}
