"""What can go wrong in the CRM connector, in its own words; concord_rpc maps it to statuses."""

from __future__ import annotations

from concord_rpc import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)

__all__ = [
    "ApiLimitExceeded",
    "ConnectionNotFound",
    "EtagMismatch",
    "InvalidRequest",
    "LoginFailed",
    "SalesforceRejected",
    "SalesforceUnavailable",
]


class InvalidRequest(InvalidArgument):
    """A malformed request; `field_violations` say which fields, as BadRequest."""


class ConnectionNotFound(NotFound):
    reason = "ORG_CONNECTION_NOT_FOUND"

    def __init__(self, org: str) -> None:
        super().__init__(f"org {org} has no connection", metadata={"org": f"orgs/{org}"})


class EtagMismatch(Aborted):
    reason = "ETAG_MISMATCH"

    def __init__(self, org: str) -> None:
        super().__init__(
            f"the connection of org {org} changed since it was read; read it again",
            metadata={"org": f"orgs/{org}"},
        )


class LoginFailed(FailedPrecondition):
    """The org refused the stored credentials; retrying with the same ones will not help."""

    reason = "SALESFORCE_LOGIN_FAILED"

    def __init__(self, org: str, error: str) -> None:
        # `error` is Salesforce's OAuth error code (e.g. `invalid_grant`), never a secret.
        super().__init__(
            f"Salesforce refused the credentials of org {org}: {error}",
            metadata={"org": f"orgs/{org}", "salesforce_error": error},
        )


class SalesforceRejected(InvalidArgument):
    """Salesforce refused the request itself (a malformed query, an unknown field or type)."""

    reason = "SALESFORCE_REJECTED"

    def __init__(self, org: str, code: str, message: str) -> None:
        super().__init__(
            f"{code}: {message}", metadata={"org": f"orgs/{org}", "salesforce_code": code}
        )
        self.salesforce_code = code


class ApiLimitExceeded(ResourceExhausted):
    """The org's daily API allocation (or Concord's share of it) is spent."""

    reason = "SALESFORCE_API_LIMIT"

    def __init__(self, org: str, retry_after: float) -> None:
        super().__init__(
            f"org {org} has no Salesforce API calls left for now",
            metadata={"org": f"orgs/{org}"},
            retry_after=retry_after,
        )


class SalesforceUnavailable(Unavailable):
    """Salesforce answered 5xx, or the connection was lost, after the retries allowed."""

    reason = "SALESFORCE_UNAVAILABLE"

    def __init__(self, org: str, detail: str) -> None:
        super().__init__(
            f"Salesforce of org {org} is unavailable: {detail}", metadata={"org": f"orgs/{org}"}
        )
