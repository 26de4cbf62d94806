"""Exit codes: one per kind of failure, so scripts can tell them apart without parsing text.

- 0: done.
- 1: it ran and failed: a session FAILED or was CANCELLED, a service is down (`status`), or an
  error without a code of its own.
- 2: usage: bad arguments, no token.
- 3: UNAUTHENTICATED: no valid token (missing, expired, signed with another key).
- 4: PERMISSION_DENIED: not yours, not your org, not an admin; also what does not exist, which
  the gateway does not tell apart.
- 5: NOT_FOUND: e.g. a session or item error of your own mailbox that is not there.
- 6: refused as asked: INVALID_ARGUMENT, FAILED_PRECONDITION (a locked setting, a suspended
  mailbox), ALREADY_EXISTS, ABORTED (a stale etag).
- 7: unreachable: the gateway or a service behind it is down or too slow (UNAVAILABLE,
  DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED).
- 8: `sync --wait`: the session had not ended when the wait ran out.
- 130: interrupted (Ctrl-C).
"""

from __future__ import annotations

import grpc

__all__ = [
    "EXIT_DENIED",
    "EXIT_FAILED",
    "EXIT_NOT_FOUND",
    "EXIT_REJECTED",
    "EXIT_TIMED_OUT",
    "EXIT_UNAUTHENTICATED",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "CommandFailed",
    "exit_code_of",
]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAUTHENTICATED = 3
EXIT_DENIED = 4
EXIT_NOT_FOUND = 5
EXIT_REJECTED = 6
EXIT_UNAVAILABLE = 7
EXIT_TIMED_OUT = 8

_BY_CODE = {
    grpc.StatusCode.UNAUTHENTICATED: EXIT_UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED: EXIT_DENIED,
    grpc.StatusCode.NOT_FOUND: EXIT_NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT: EXIT_REJECTED,
    grpc.StatusCode.FAILED_PRECONDITION: EXIT_REJECTED,
    grpc.StatusCode.ALREADY_EXISTS: EXIT_REJECTED,
    grpc.StatusCode.ABORTED: EXIT_REJECTED,
    grpc.StatusCode.OUT_OF_RANGE: EXIT_REJECTED,
    grpc.StatusCode.UNAVAILABLE: EXIT_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: EXIT_UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED: EXIT_UNAVAILABLE,
}


def exit_code_of(code: grpc.StatusCode) -> int:
    return _BY_CODE.get(code, EXIT_FAILED)


class CommandFailed(Exception):
    """The command ran and its outcome is a failure: one line, `concord: <message>`."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code
