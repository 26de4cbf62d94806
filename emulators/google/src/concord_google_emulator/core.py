"""What every API of the emulator shares: errors in Google's JSON shape, the call context, ids,
timestamps and the change sequence that versions every resource (etags, sync tokens, history)."""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ApiError",
    "Call",
    "Sequence",
    "decode_token",
    "encode_token",
    "merge_patch",
    "new_id",
    "rfc3339",
]

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    410: "FAILED_PRECONDITION",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


class ApiError(Exception):
    """An error response: `reason` goes to `error.errors[0].reason`, which clients branch on."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        domain: str = "global",
        status: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.domain = domain
        self.status = status or _STATUS_NAMES.get(code, "UNKNOWN")
        self.details = details or []
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "errors": [{"message": self.message, "domain": self.domain, "reason": self.reason}],
            "status": self.status,
        }
        if self.details:
            error["details"] = self.details
        return {"error": error}


def not_found(what: str = "Not Found") -> ApiError:
    return ApiError(404, "notFound", what)


def bad_request(message: str, reason: str = "invalid") -> ApiError:
    return ApiError(400, reason, message)


@dataclass
class Call:
    """One API call: who makes it, its path and query parameters, its body and headers."""

    user: str
    method_id: str
    params: dict[str, Any]
    body: Any
    headers: Mapping[str, str]
    base_url: str
    # Work to do once the state lock is released (e.g. watch notifications).
    after: list[Callable[[], None]] = field(default_factory=list)
    # A refuse_contact fault: the position of the batch write's contact to refuse.
    refuse_contact: int | None = None

    def if_match(self) -> str | None:
        return self.headers.get("if-match")


class Sequence:
    """A process-wide counter: every write takes the next number, so "changed since N" is a
    comparison, and etags and history ids are strictly increasing."""

    def __init__(self, start: int | None = None) -> None:
        # Counted from the boot time in milliseconds: ids handed out by an earlier run of the
        # emulator are older than anything this run has, as a restarted server's would be.
        start = int(time.time() * 1000) if start is None else start
        # Sync tokens carry it: a token from another run is stale here.
        self.boot = secrets.token_hex(4)
        self._next = itertools.count(start)
        self._lock = threading.Lock()
        self.current = start - 1

    def take(self) -> int:
        with self._lock:
            self.current = next(self._next)
            return self.current


def new_id(length: int = 26) -> str:
    """A base32hex identifier (a-v, 0-9), the alphabet Calendar allows for event ids."""
    alphabet = "0123456789abcdefghijklmnopqrstuv"
    return "".join(secrets.choice(alphabet) for _ in range(length))


def rfc3339(when: dt.datetime | None = None) -> str:
    value = (when or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_rfc3339(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no offset")
    return value


def encode_token(**values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, sort_keys=True).encode()).decode()


def decode_token(token: str) -> dict[str, Any]:
    """A page or sync token's contents; ValueError when it is not one of ours."""
    try:
        values = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("malformed token") from exc
    if not isinstance(values, dict):
        raise ValueError("malformed token")
    return values


def merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Patch semantics of Google's APIs: objects merge field by field, arrays and scalars are
    replaced, null clears."""
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = merge_patch(merged[key], value)
        else:
            merged[key] = value
    return merged


def page(items: list[Any], token: str | None, size: int) -> tuple[list[Any], str | None]:
    """One page of `items` from an offset page token, and the next token if more remain."""
    offset = 0
    if token:
        try:
            offset = int(decode_token(token)["offset"])
        except (ValueError, KeyError, TypeError):
            raise bad_request("Invalid page token.") from None
    chunk = items[offset : offset + size]
    more = offset + size < len(items)
    return chunk, encode_token(offset=offset + size) if more else None
