"""What can go wrong in the reconciler, in its own words (mapped to gRPC by concord_rpc)."""

from __future__ import annotations

from concord_rpc import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)

__all__ = [
    "EtagMismatch",
    "InvalidRequest",
    "ItemErrorNotFound",
    "MailboxAlreadyExists",
    "MailboxNotFound",
    "MailboxSuspended",
    "PeerError",
    "PeerUnavailable",
    "QueueUnavailable",
    "SessionFailure",
    "SessionNotFound",
    "SettingLocked",
    "SettingsAccessDisabled",
    "TransitionError",
]


class InvalidRequest(InvalidArgument):
    """A malformed request; `field_violations` say which fields and why."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}", field_violations=[(field, description)])


class MailboxNotFound(NotFound):
    reason = "MAILBOX_NOT_FOUND"

    def __init__(self, mailbox: str) -> None:
        super().__init__(f"{mailbox} does not exist", metadata={"mailbox": mailbox})


class MailboxAlreadyExists(AlreadyExists):
    reason = "MAILBOX_ALREADY_EXISTS"

    def __init__(self, mailbox: str) -> None:
        super().__init__(f"{mailbox} already exists", metadata={"mailbox": mailbox})


class MailboxSuspended(FailedPrecondition):
    reason = "MAILBOX_SUSPENDED"

    def __init__(self, mailbox: str, why: str) -> None:
        super().__init__(
            f"{mailbox} is suspended" + (f": {why}" if why else ""),
            metadata={"mailbox": mailbox},
            precondition_violations=[("STATE", mailbox, "the mailbox must be active; resume it")],
        )


class SessionNotFound(NotFound):
    reason = "SESSION_NOT_FOUND"

    def __init__(self, session: str) -> None:
        super().__init__(f"{session} does not exist", metadata={"session": session})


class ItemErrorNotFound(NotFound):
    reason = "ITEM_ERROR_NOT_FOUND"

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} does not exist", metadata={"itemError": name})


class EtagMismatch(Aborted):
    reason = "ETAG_MISMATCH"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"{name} changed since it was read; read it again", metadata={"name": name}
        )


class SettingLocked(FailedPrecondition):
    reason = "SETTING_LOCKED"

    def __init__(self, field: str) -> None:
        super().__init__(
            f"{field} is locked by the org admin",
            metadata={"field": field},
            precondition_violations=[("LOCKED", field, "the org admin locked this setting")],
        )


class SettingsAccessDisabled(FailedPrecondition):
    reason = "SETTINGS_ACCESS_DISABLED"

    def __init__(self, name: str) -> None:
        super().__init__(
            "the org admin turned off the owner's access to these settings",
            metadata={"name": name},
            precondition_violations=[
                ("ACCESS_DISABLED", name, "the org admin turned off access to these settings")
            ],
        )


class QueueUnavailable(Unavailable):
    """The session row is stored but its SessionRequested could not be published; a retry
    (same request_id) publishes it again."""

    reason = "SESSION_QUEUE_UNAVAILABLE"


class PeerUnavailable(Unavailable):
    reason = "DEPENDENCY_UNAVAILABLE"


class TransitionError(Exception):
    """A session state change the state machine forbids (a bug, or a stale writer)."""


class PeerError(Exception):
    """A peer answered a call with an error status; raised by the peer adapters.

    `code` is the gRPC status name (`UNAVAILABLE`), `reason` the peer's ErrorInfo reason if it
    sent one. Plain data, so the domain needs no gRPC to decide what the failure means.
    """

    RETRYABLE_CODES = frozenset(
        {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"}
    )

    def __init__(
        self,
        peer: str,
        method: str,
        code: str,
        message: str,
        reason: str = "",
        retry_after: float | None = None,
    ) -> None:
        self.peer = peer
        self.method = method
        self.code = code
        self.message = message
        self.reason = reason
        # How long the peer (or the mail server or Salesforce behind it) asked us to wait.
        self.retry_after = retry_after
        super().__init__(self.describe())

    @property
    def retryable(self) -> bool:
        return self.code in self.RETRYABLE_CODES

    def describe(self) -> str:
        """E.g. `mail-connector unavailable (ListChanges): connection refused`."""
        status = self.code.lower().replace("_", " ")
        text = self.message if len(self.message) <= 300 else self.message[:297] + "..."
        described = f"{self.peer} {status} ({self.method})" + (f": {text}" if text else "")
        if self.retry_after is not None and "retry after" not in text:
            # A throttled mailbox or a spent API allocation: when trying again can help (once:
            # a peer's message may say so already).
            described += f"; retry after {self.retry_after:g} s"
        return described


class SessionFailure(Exception):
    """Why a session failed: `reason` for people, `code` for machines (SessionFailed.code)."""

    def __init__(
        self, reason: str, code: str, *, retryable: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.retryable = retryable
        # Seconds a throttled peer asked us to wait before the mailbox's next session.
        self.retry_after = retry_after

    @classmethod
    def from_peer(cls, error: PeerError) -> SessionFailure:
        if error.reason:
            code = error.reason
        elif error.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
            code = "DEPENDENCY_UNAVAILABLE"
        else:
            code = "DEPENDENCY_FAILED"
        return cls(error.describe(), code, retryable=error.retryable, retry_after=error.retry_after)
