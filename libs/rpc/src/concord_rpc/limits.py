"""Size and content limits on everything the public API accepts, checked before any handler runs.

The gateway checks every public request with it before any peer sees it; the reconciler checks
its own requests with the same limits, in depth (what it stores outlives any one caller).

Every string, bytes and repeated field of every request message (and of the messages inside
them) has a limit: the defaults below, or an entry of `_LIMITS` for the fields that need more or
less. The proto comments of `gateway_service.proto` state them. A request past a limit is
INVALID_ARGUMENT with one BadRequest field violation per field, and nothing of it is stored: a
20 MiB suspension reason once made every later status read of the org fail.

Strings never carry NUL or other control characters (tab and line breaks aside): they end up in
SQL text columns, logs and Salesforce fields, where they truncate, corrupt or are refused.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from concord_rpc.errors import InvalidArgument

__all__ = [
    "DEFAULT_BYTES",
    "DEFAULT_ITEMS",
    "DEFAULT_TEXT",
    "Limit",
    "RequestLimits",
    "RequestTooLarge",
    "check_request",
    "limit_of",
]

# Names, ids, tokens, addresses, URLs, reasons: all far below this.
DEFAULT_TEXT = 1_000
DEFAULT_ITEMS = 100
DEFAULT_BYTES = 16 * 1024

# An address is at most 254 characters (RFC 5321 path limit); a domain at most 253.
BLACKLIST_ENTRY = 254
# An org's or a user's blacklist: room for a large company's list of competitors' and
# partners' domains, while every linking call still loads it whole.
BLACKLIST_ITEMS = 5_000
# The body of one email the sidebar asks about (InitialSearch), and its raw MIME.
EMAIL_BODY = 1_000_000
EMAIL_MIME = 10 * 1024 * 1024


class RequestTooLarge(InvalidArgument):
    """A field past the API's limits; each field says which."""

    reason = "REQUEST_LIMIT_VIOLATED"

    def __init__(self, violations: list[tuple[str, str]]) -> None:
        super().__init__(
            "the request is past the API's limits: " + ", ".join(f for f, _ in violations[:5]),
            field_violations=violations,
        )


@dataclass(frozen=True)
class Limit:
    # Characters of a string, bytes of a bytes field, for each element of a repeated one.
    size: int
    # Elements of a repeated field (ignored otherwise).
    items: int = DEFAULT_ITEMS
    # Each element must be a blacklist entry (an address or a domain).
    blacklist_entry: bool = False


_BLACKLIST = Limit(BLACKLIST_ENTRY, BLACKLIST_ITEMS, blacklist_entry=True)
_LIMITS: dict[str, Limit] = {
    "concord.common.v1.MailboxSettings.blacklist": _BLACKLIST,
    "concord.common.v1.OrgSettings.blacklist": _BLACKLIST,
    "concord.common.v1.AutoResolve.free_mail_domains": Limit(253, BLACKLIST_ITEMS),
    "concord.common.v1.OrgSettings.settings_access_disabled_users": Limit(
        DEFAULT_TEXT, BLACKLIST_ITEMS
    ),
    "concord.common.v1.EmailItem.body_text": Limit(EMAIL_BODY),
    "concord.common.v1.EmailItem.body_html": Limit(EMAIL_BODY),
    "concord.common.v1.EmailItem.mime_content": Limit(EMAIL_MIME),
    "concord.common.v1.EmailItem.to": Limit(0, 500),
    "concord.common.v1.EmailItem.cc": Limit(0, 500),
    "concord.common.v1.EmailItem.bcc": Limit(0, 500),
    "concord.common.v1.EmailItem.references": Limit(DEFAULT_TEXT, 500),
}

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"^{_LABEL}(?:\.{_LABEL})+$")
_LOCAL = re.compile(r"^[^\s@]{1,64}$")


def limit_of(field: FieldDescriptor) -> Limit:
    found = _LIMITS.get(field.full_name)
    if found is not None:
        return found
    return Limit(DEFAULT_BYTES if field.type == FieldDescriptor.TYPE_BYTES else DEFAULT_TEXT)


def check_request(request: Message) -> None:
    """Raises RequestTooLarge with a field violation per field past its limit."""
    violations: list[tuple[str, str]] = []
    _check(request, "", violations)
    if violations:
        raise RequestTooLarge(violations)


def _check(message: Message, prefix: str, violations: list[tuple[str, str]]) -> None:
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        limit = limit_of(field)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            kind = field.message_type
            if kind is None or _is_well_known(kind):
                continue
            if field.is_repeated:
                if len(value) > limit.items:
                    violations.append((path, f"at most {limit.items} items"))
                elif not kind.GetOptions().map_entry:
                    for index, element in enumerate(value):
                        _check(element, f"{path}[{index}].", violations)
            else:
                _check(value, f"{path}.", violations)
            continue
        if field.type not in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
            if field.is_repeated and len(value) > limit.items:
                violations.append((path, f"at most {limit.items} items"))
            continue
        if field.is_repeated:
            if len(value) > limit.items:
                violations.append((path, f"at most {limit.items} items"))
                continue
            for index, element in enumerate(value):
                problem = _scalar_problem(field, limit, element)
                if problem:
                    violations.append((f"{path}[{index}]", problem))
        else:
            problem = _scalar_problem(field, limit, value)
            if problem:
                violations.append((path, problem))


def _scalar_problem(field: FieldDescriptor, limit: Limit, value: str | bytes) -> str:
    if isinstance(value, bytes):
        return f"at most {limit.size} bytes" if len(value) > limit.size else ""
    if len(value) > limit.size:
        return f"at most {limit.size} characters"
    if _CONTROL.search(value):
        return "must not contain NUL or other control characters"
    if limit.blacklist_entry and not _is_blacklist_entry(value):
        return "must be an address (ann@example.com) or a domain (example.com)"
    return ""


def _is_blacklist_entry(entry: str) -> bool:
    """An address or a domain, in the forms the linker matches (`@example.com` and
    `*.example.com` name the domain too); never empty, never a bare wildcard."""
    text = entry.strip().lower()
    if "@" in text and not text.startswith("@"):
        local, _, domain = text.rpartition("@")
        return bool(_LOCAL.match(local)) and bool(_DOMAIN.match(domain))
    domain = text.removeprefix("@").removeprefix("*.").rstrip(".")
    return len(domain) <= 253 and bool(_DOMAIN.match(domain))


def _is_well_known(descriptor: Descriptor) -> bool:
    # Timestamps, durations, field masks and Struct values are bounded by their own types or
    # by the message that holds them.
    return descriptor.full_name.startswith("google.protobuf.")


class RequestLimits(grpc.aio.ServerInterceptor):
    """Runs inside concord_rpc's ErrorInterceptor, so a request past a limit is
    INVALID_ARGUMENT with BadRequest field violations (a handler is the only place that can
    fail a call with a status, so the check is the first thing the wrapped handler does)."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        behavior: Callable[..., Any] = handler.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            check_request(request)
            return await behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
