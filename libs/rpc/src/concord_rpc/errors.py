"""The domain error base every service's exception tree derives from.

A service declares what went wrong in its own words, in `domain/`::

    class MailboxNotFound(NotFound):
        reason = "MAILBOX_NOT_FOUND"

    raise MailboxNotFound("mailbox demo does not exist", metadata={"mailbox": "demo"})

and :class:`concord_rpc.ErrorInterceptor` turns it into a `google.rpc.Status` with an
`ErrorInfo(reason, domain="<service>.concord.dev", metadata)`. Whether an error is retryable is
decided here, where it is raised, not guessed by callers. The message is sent to the client as
is, so it must not carry secrets or message content.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import ClassVar

__all__ = [
    "STATUS_NAMES",
    "Aborted",
    "AlreadyExists",
    "DomainError",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
]

# google.rpc.Code, by name: what `DomainError.code` may be.
STATUS_NAMES = frozenset(
    {
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    }
)

# google.rpc.ErrorInfo: "should match /[A-Z][A-Z0-9_]+[A-Z0-9]/, at most 63 characters".
_REASON = re.compile(r"[A-Z][A-Z0-9_]{1,61}[A-Z0-9]")


class DomainError(Exception):
    """An expected failure with a gRPC status code and a machine-readable reason."""

    # The gRPC status by its canonical name (google.rpc.Code); the interceptor maps it to
    # grpc.StatusCode, so an error class says what went wrong without depending on gRPC.
    code: ClassVar[str] = "INTERNAL"
    reason: ClassVar[str] = "INTERNAL"
    retryable: ClassVar[bool] = False
    # Sent as RetryInfo (and as gRPC retry pushback) when not None.
    default_retry_after: ClassVar[float | None] = None

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # Checked when the class is defined, so a bad reason fails at import, not in production.
        if not _REASON.fullmatch(cls.reason):
            raise TypeError(f"{cls.__name__}.reason must be UPPER_SNAKE_CASE, got {cls.reason!r}")
        if cls.code not in STATUS_NAMES:
            raise TypeError(f"{cls.__name__}.code must be a gRPC status name, got {cls.code!r}")

    def __init__(
        self,
        message: str,
        *,
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        field_violations: Sequence[tuple[str, str]] = (),
        precondition_violations: Sequence[tuple[str, str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})
        self.retry_after = retry_after if retry_after is not None else self.default_retry_after
        #: (field path, description) pairs, sent as google.rpc.BadRequest.
        self.field_violations: list[tuple[str, str]] = list(field_violations)
        #: (type, subject, description) triples, sent as google.rpc.PreconditionFailure.
        self.precondition_violations: list[tuple[str, str, str]] = list(precondition_violations)


class InvalidArgument(DomainError):
    code = "INVALID_ARGUMENT"
    reason = "INVALID_ARGUMENT"


class NotFound(DomainError):
    code = "NOT_FOUND"
    reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    code = "ALREADY_EXISTS"
    reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    code = "FAILED_PRECONDITION"
    reason = "FAILED_PRECONDITION"


class Aborted(DomainError):
    """A concurrency conflict (stale etag, lost lease): retry the whole read-modify-write.

    Retryable by the caller, not by the channel: resending the same request would conflict again.
    """

    code = "ABORTED"
    reason = "ABORTED"
    retryable = True


class Unavailable(DomainError):
    code = "UNAVAILABLE"
    reason = "UNAVAILABLE"
    retryable = True
    default_retry_after = 1.0


class ResourceExhausted(DomainError):
    code = "RESOURCE_EXHAUSTED"
    reason = "RESOURCE_EXHAUSTED"
    retryable = True
    default_retry_after = 1.0


class Unauthenticated(DomainError):
    code = "UNAUTHENTICATED"
    reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    code = "PERMISSION_DENIED"
    reason = "PERMISSION_DENIED"


class Unimplemented(DomainError):
    """A part of the skeleton that an issue will fill; the message points at the issue."""

    code = "UNIMPLEMENTED"
    reason = "NOT_IMPLEMENTED_YET"

    def __init__(self, what: str, issue: int) -> None:
        super().__init__(
            f"{what} is not implemented yet (issue #{issue})", metadata={"issue": str(issue)}
        )
        self.issue = issue
