"""What can go wrong in the mail connector, in its own words; concord_rpc maps it to statuses."""

from __future__ import annotations

from concord_rpc import (
    Aborted,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    Unimplemented,
)

__all__ = [
    "AccountNotFound",
    "CollectionNotFound",
    "EtagMismatch",
    "InvalidRequest",
    "MailboxAccessDenied",
    "MailboxCredentialsRejected",
    "ProviderNotImplemented",
    "ProviderThrottled",
    "ProviderUnavailable",
]


class InvalidRequest(InvalidArgument):
    """A malformed request; `field_violations` say which fields, as BadRequest."""


class AccountNotFound(NotFound):
    reason = "MAILBOX_ACCOUNT_NOT_FOUND"

    def __init__(self, mailbox: str) -> None:
        super().__init__(
            f"mailbox {mailbox} has no account", metadata={"mailbox": f"mailboxes/{mailbox}"}
        )


class EtagMismatch(Aborted):
    reason = "ETAG_MISMATCH"

    def __init__(self, mailbox: str) -> None:
        super().__init__(
            f"the account of mailbox {mailbox} changed since it was read; read it again",
            metadata={"mailbox": f"mailboxes/{mailbox}"},
        )


class ProviderNotImplemented(Unimplemented):
    """The account's mail system has no adapter yet; `issue` is the one that brings it, if any."""

    def __init__(self, provider_label: str, provider: str, issue: int | None) -> None:
        what = f"the {provider_label} provider"
        if issue is not None:
            super().__init__(what, issue=issue)
        else:
            # Unimplemented insists on an issue; these providers have none filed yet.
            DomainError.__init__(self, f"{what} is not implemented yet")
        self.metadata["provider"] = provider


def _mailbox(mailbox: str) -> dict[str, str]:
    return {"mailbox": f"mailboxes/{mailbox}"}


class MailboxCredentialsRejected(FailedPrecondition):
    """The stored credentials no longer work: the reconciler suspends the mailbox until an
    operator replaces them; retrying cannot help, hence a precondition, not UNAUTHENTICATED
    (which would blame the caller's own credentials)."""

    reason = "MAILBOX_CREDENTIALS_REJECTED"

    def __init__(self, mailbox: str) -> None:
        super().__init__(
            f"the mail server rejected the stored credentials of mailbox {mailbox}",
            metadata=_mailbox(mailbox),
        )


class MailboxAccessDenied(FailedPrecondition):
    """The credentials work but may not open this mailbox (no impersonation or delegate right)."""

    reason = "MAILBOX_ACCESS_DENIED"

    def __init__(self, mailbox: str, provider_code: str) -> None:
        super().__init__(
            f"the stored account may not open mailbox {mailbox} ({provider_code})",
            metadata=_mailbox(mailbox) | {"provider_code": provider_code},
        )


class CollectionNotFound(FailedPrecondition):
    """The folder a cursor or write names is gone; the caller re-lists collections."""

    reason = "COLLECTION_NOT_FOUND"

    def __init__(self, mailbox: str, collection: str) -> None:
        super().__init__(
            f"a collection of mailbox {mailbox} no longer exists; list collections again",
            metadata=_mailbox(mailbox) | {"collection": collection},
        )


class ProviderThrottled(ResourceExhausted):
    """The server asked us to back off for longer than the caller's deadline leaves."""

    reason = "PROVIDER_THROTTLED"

    def __init__(self, mailbox: str, retry_after: float) -> None:
        super().__init__(
            f"the mail server of mailbox {mailbox} is throttling; retry after {retry_after:.1f} s",
            metadata=_mailbox(mailbox),
            retry_after=retry_after,
        )


class ProviderUnavailable(Unavailable):
    reason = "PROVIDER_UNAVAILABLE"

    def __init__(self, mailbox: str, what: str) -> None:
        super().__init__(
            f"the mail server of mailbox {mailbox} did not answer ({what})",
            metadata=_mailbox(mailbox),
        )
