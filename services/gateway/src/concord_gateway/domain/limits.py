"""The public API's size and content limits: concord_rpc.limits, shared with the reconciler,
which checks what reaches it with the same limits (defence in depth)."""

from __future__ import annotations

from concord_rpc.limits import (
    BLACKLIST_ENTRY,
    BLACKLIST_ITEMS,
    DEFAULT_BYTES,
    DEFAULT_ITEMS,
    DEFAULT_TEXT,
    EMAIL_BODY,
    EMAIL_MIME,
    Limit,
    check_request,
    limit_of,
)

__all__ = [
    "BLACKLIST_ENTRY",
    "BLACKLIST_ITEMS",
    "DEFAULT_BYTES",
    "DEFAULT_ITEMS",
    "DEFAULT_TEXT",
    "EMAIL_BODY",
    "EMAIL_MIME",
    "Limit",
    "check_request",
    "limit_of",
]
