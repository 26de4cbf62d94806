"""What can go wrong in the mail connector, in its own words; concord_rpc maps it to statuses."""

from __future__ import annotations

from concord_rpc import Aborted, DomainError, InvalidArgument, NotFound, Unimplemented

__all__ = ["AccountNotFound", "EtagMismatch", "InvalidRequest", "ProviderNotImplemented"]


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
