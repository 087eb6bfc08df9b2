"""The one closed set of errors a command can end with, and their protocol codes.

Every failure a handler reports is one of these classes; the gateway maps them onto the
result's `code` in one place (`G8Error.code`), and the client maps codes back to the same
classes (`error_for_code`). Codes are the protocol's HTTP-like builtin codes.
"""

from __future__ import annotations

from typing import ClassVar


class G8Error(Exception):
    """Base of every error a command reports to its caller."""

    code: ClassVar[int] = 500
    name: ClassVar[str] = "internal"

    def __init__(self, message: str, *, critical: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.critical = critical

    def __reduce__(self):  # keep the message when pickled across the actor plane
        return (type(self), (self.message,), {"critical": self.critical, **self.__dict__})


class InvalidArgument(G8Error):
    """A field of the request is missing, of the wrong type, or out of range (400)."""

    code = 400
    name = "invalid_argument"

    def __init__(self, message: str, *, field: str = "", critical: str = "") -> None:
        super().__init__(message, critical=critical)
        self.field = field

    def __reduce__(self):
        return (type(self), (self.message,), {"field": self.field, "critical": self.critical})


class NotFound(G8Error):
    """The job, process, actor, path or device named does not exist (404)."""

    code = 404
    name = "not_found"


class FailedPrecondition(G8Error):
    """The target is in a state that forbids the operation: protected, busy, exists (412)."""

    code = 412
    name = "failed_precondition"


class AlreadyExists(FailedPrecondition):
    """Something with that name or id is already there (412, as the protocol has no 409)."""

    name = "already_exists"


class Internal(G8Error):
    """A bug or an unexpected failure inside g8os (500); `critical` holds the traceback summary."""

    code = 500
    name = "internal"


class Unavailable(G8Error):
    """The owner of the command is down or restarting; retry later (503)."""

    code = 503
    name = "unavailable"


ERRORS: tuple[type[G8Error], ...] = (
    InvalidArgument, NotFound, FailedPrecondition, AlreadyExists, Internal, Unavailable,
)

_BY_CODE: dict[int, type[G8Error]] = {
    400: InvalidArgument, 404: NotFound, 412: FailedPrecondition, 500: Internal, 503: Unavailable,
}


def error_for_code(code: int) -> type[G8Error]:
    """The error class for a result code (unknown codes are Internal)."""
    return _BY_CODE.get(code, Internal)
