"""Salesforce's error shapes: a REST error list, and the per-record form used by Collections."""

from __future__ import annotations

from typing import Any


class SalesforceError(Exception):
    """One Salesforce error: `errorCode`, `message`, the fields it names and its HTTP status."""

    def __init__(
        self, code: str, message: str, fields: list[str] | None = None, status: int = 400
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.fields = fields
        self.status = status

    def rest_body(self) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"message": self.message, "errorCode": self.code}
        if self.fields is not None:
            body["fields"] = self.fields
        return [body]

    def record_error(self) -> dict[str, Any]:
        """The entry in a Collections result's `errors` (it says statusCode, not errorCode)."""
        return {"statusCode": self.code, "message": self.message, "fields": self.fields or []}


def not_found() -> SalesforceError:
    return SalesforceError("NOT_FOUND", "The requested resource does not exist", status=404)


def invalid_session() -> SalesforceError:
    return SalesforceError("INVALID_SESSION_ID", "Session expired or invalid", status=401)


def malformed_query(message: str) -> SalesforceError:
    return SalesforceError("MALFORMED_QUERY", message)


def request_limit_exceeded() -> SalesforceError:
    return SalesforceError("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.", status=403)
