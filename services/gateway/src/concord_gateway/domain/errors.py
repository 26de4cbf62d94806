"""What the gateway refuses, in its own words; concord_rpc maps each to a status + ErrorInfo."""

from __future__ import annotations

from concord_rpc import InvalidArgument, PermissionDenied, Unauthenticated, Unavailable
from concord_rpc.limits import RequestTooLarge

__all__ = [
    "AdminRequired",
    "InvalidName",
    "InvalidRequestId",
    "MailboxAccessDenied",
    "OrgAccessDenied",
    "PeerUnavailable",
    "RequestTooLarge",
    "SettingsAccessDisabled",
    "TokenExpired",
    "TokenInvalid",
    "TokenMissing",
]


class TokenMissing(Unauthenticated):
    reason = "TOKEN_MISSING"


class TokenInvalid(Unauthenticated):
    """Sent to the caller as one fixed sentence whatever the cause; `why` is for our log only.

    Telling a caller which check failed (unknown kid, wrong key, bad claim) would help someone
    forging tokens and does not help anyone holding a good one.
    """

    reason = "TOKEN_INVALID"

    def __init__(self, why: str) -> None:
        super().__init__("the bearer token is invalid")
        self.why = why


class TokenExpired(Unauthenticated):
    reason = "TOKEN_EXPIRED"


class MailboxAccessDenied(PermissionDenied):
    """What a caller sees for a mailbox they may not act on, and for one that does not exist:
    one answer for both, so existence is not revealed."""

    reason = "MAILBOX_ACCESS_DENIED"

    @classmethod
    def named(cls, name: str) -> MailboxAccessDenied:
        mailbox_id = name.removeprefix("mailboxes/")
        return cls(f"you may not act on mailbox '{mailbox_id}'", metadata={"mailbox": name})


class AdminRequired(PermissionDenied):
    reason = "ADMIN_REQUIRED"


class OrgAccessDenied(PermissionDenied):
    reason = "ORG_ACCESS_DENIED"


class SettingsAccessDisabled(PermissionDenied):
    reason = "SETTINGS_ACCESS_DISABLED"


class InvalidName(InvalidArgument):
    reason = "INVALID_RESOURCE_NAME"


class InvalidRequestId(InvalidArgument):
    reason = "INVALID_REQUEST_ID"


class PeerUnavailable(Unavailable):
    # The reason concord_rpc gives a dead peer, so clients handle both alike.
    reason = "DEPENDENCY_UNAVAILABLE"
