"""What can go wrong in the CRM connector, in its own words; concord_rpc maps it to statuses."""

from __future__ import annotations

from concord_rpc import Aborted, InvalidArgument, NotFound

__all__ = ["ConnectionNotFound", "EtagMismatch", "InvalidRequest"]


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
