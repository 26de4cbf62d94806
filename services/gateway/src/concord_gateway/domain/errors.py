"""What the gateway refuses, in its own words; concord_rpc maps each to a status + ErrorInfo."""

from __future__ import annotations

from concord_rpc import InvalidArgument, NotFound, PermissionDenied, Unauthenticated, Unavailable

__all__ = [
    "AdminRequired",
    "InvalidName",
    "MailboxAccessDenied",
    "MailboxNotFound",
    "OrgAccessDenied",
    "PeerUnavailable",
    "TokenExpired",
    "TokenInvalid",
    "TokenMissing",
]


class TokenMissing(Unauthenticated):
    reason = "TOKEN_MISSING"


class TokenInvalid(Unauthenticated):
    reason = "TOKEN_INVALID"


class TokenExpired(Unauthenticated):
    reason = "TOKEN_EXPIRED"


class MailboxNotFound(NotFound):
    """Also what a caller sees for another org's mailbox, so existence is not revealed."""

    reason = "MAILBOX_NOT_FOUND"

    @classmethod
    def named(cls, name: str) -> MailboxNotFound:
        mailbox_id = name.removeprefix("mailboxes/")
        return cls(f"mailbox '{mailbox_id}' not found", metadata={"mailbox": name})


class MailboxAccessDenied(PermissionDenied):
    reason = "MAILBOX_ACCESS_DENIED"


class AdminRequired(PermissionDenied):
    reason = "ADMIN_REQUIRED"


class OrgAccessDenied(PermissionDenied):
    reason = "ORG_ACCESS_DENIED"


class InvalidName(InvalidArgument):
    reason = "INVALID_RESOURCE_NAME"


class PeerUnavailable(Unavailable):
    # The reason concord_rpc gives a dead peer, so clients handle both alike.
    reason = "DEPENDENCY_UNAVAILABLE"
