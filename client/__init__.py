"""The Python client of a g8os node.

    from g8os.client import Client, NotFound

    client = Client.from_sandbox()
    print(client.ping())
    print(client.system("uname -a").get().stdout)

Errors: `Unreachable` (a ConnectionError) when the node's Redis cannot be reached, `Timeout` (a
TimeoutError; `NotAcknowledged` when core0 never picked the command up), `InvalidArgument` when an
argument is refused before sending, and for a failed result a `ResultError` that is also the
`g8os.messages.errors` class of its code: `except NotFound as exc: exc.result` is the `Return`.
"""

from g8os.client.client import Client, sandbox_file
from g8os.client.transport import (
    Connection,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    JobNotFound,
    JobTimeoutError,
    Message,
    NotAcknowledged,
    NotFoundError,
    ProcessError,
    Response,
    ResultError,
    ResultLevelError,
    Return,
    Timeout,
    UnavailableError,
    UnknownCommandError,
    Unreachable,
    error_for_result,
)
from g8os.messages.errors import (
    AlreadyExists,
    FailedPrecondition,
    G8Error,
    Internal,
    InvalidArgument,
    NotFound,
    Unavailable,
)

__all__ = [
    "Client", "Connection", "Response", "Return", "Message", "sandbox_file", "error_for_result",
    "G8Error", "InvalidArgument", "NotFound", "FailedPrecondition", "AlreadyExists", "Internal",
    "Unavailable",
    "Unreachable", "Timeout", "NotAcknowledged", "JobNotFound",
    "ResultError", "InvalidArgumentError", "NotFoundError", "FailedPreconditionError", "InternalError",
    "UnavailableError", "UnknownCommandError", "ProcessError", "JobTimeoutError", "ResultLevelError",
]
