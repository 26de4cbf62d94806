"""Resource names (`mailboxes/{mailbox}`, `.../sessions/{session}`, `orgs/{org}`) and ids.

Ids end up as NATS subject tokens and KV keys, so what is accepted here is also safe there.
"""

from __future__ import annotations

import re
import uuid

from concord_reconciler.kernel.errors import InvalidRequest

__all__ = [
    "item_error_name",
    "mailbox_name",
    "new_mailbox_id",
    "new_session_id",
    "org_name",
    "parse_item_error_name",
    "parse_mailbox_id",
    "parse_mailbox_name",
    "parse_mailbox_settings_name",
    "parse_org_name",
    "parse_org_settings_name",
    "parse_session_name",
    "session_name",
]

# CreateMailboxRequest.mailbox_id: "Lowercase letters, digits and `-`".
_MAILBOX_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# Session and item-error ids are UUIDs we generate; orgs come from elsewhere, so are looser.
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ORG_ID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?")


def new_mailbox_id() -> str:
    return str(uuid.uuid4())


def new_session_id() -> str:
    return str(uuid.uuid4())


def mailbox_name(mailbox_id: str) -> str:
    return f"mailboxes/{mailbox_id}"


def session_name(mailbox_id: str, session_id: str) -> str:
    return f"mailboxes/{mailbox_id}/sessions/{session_id}"


def item_error_name(mailbox_id: str, item_error_id: str) -> str:
    return f"mailboxes/{mailbox_id}/itemErrors/{item_error_id}"


def org_name(org_id: str) -> str:
    return f"orgs/{org_id}"


def _segments(value: str, field: str, shape: str, count: int) -> list[str]:
    if not value:
        raise InvalidRequest(field, f"required, as {shape}")
    parts = value.split("/")
    if len(parts) != count:
        raise InvalidRequest(field, f"must be {shape}, got {value!r}")
    return parts


def parse_mailbox_id(value: str, field: str = "mailbox_id") -> str:
    if not _MAILBOX_ID.fullmatch(value):
        raise InvalidRequest(
            field, "must be 1-63 lowercase letters, digits and '-', not starting or ending in '-'"
        )
    return value


def parse_mailbox_name(value: str, field: str = "name") -> str:
    """`mailboxes/{mailbox}` -> the mailbox id."""
    collection, mailbox = _segments(value, field, "mailboxes/{mailbox}", 2)
    if collection != "mailboxes":
        raise InvalidRequest(field, f"must be mailboxes/{{mailbox}}, got {value!r}")
    return parse_mailbox_id(mailbox, field)


def parse_session_name(value: str, field: str = "name") -> tuple[str, str]:
    """`mailboxes/{mailbox}/sessions/{session}` -> (mailbox id, session id)."""
    shape = "mailboxes/{mailbox}/sessions/{session}"
    mailboxes, mailbox, sessions, session = _segments(value, field, shape, 4)
    if (mailboxes, sessions) != ("mailboxes", "sessions") or not _UUID.fullmatch(session):
        raise InvalidRequest(field, f"must be {shape}, got {value!r}")
    return parse_mailbox_id(mailbox, field), session


def parse_item_error_name(value: str, field: str = "name") -> tuple[str, str]:
    shape = "mailboxes/{mailbox}/itemErrors/{item_error}"
    mailboxes, mailbox, collection, item = _segments(value, field, shape, 4)
    if (mailboxes, collection) != ("mailboxes", "itemErrors") or not _UUID.fullmatch(item):
        raise InvalidRequest(field, f"must be {shape}, got {value!r}")
    return parse_mailbox_id(mailbox, field), item


def parse_mailbox_settings_name(value: str, field: str = "name") -> str:
    shape = "mailboxes/{mailbox}/settings"
    mailboxes, mailbox, settings = _segments(value, field, shape, 3)
    if (mailboxes, settings) != ("mailboxes", "settings"):
        raise InvalidRequest(field, f"must be {shape}, got {value!r}")
    return parse_mailbox_id(mailbox, field)


def parse_org_name(value: str, field: str = "org") -> str:
    collection, org = _segments(value, field, "orgs/{org}", 2)
    if collection != "orgs" or not _ORG_ID.fullmatch(org):
        raise InvalidRequest(
            field, f"must be orgs/{{org}} (letters, digits, '_', '-'), got {value!r}"
        )
    return org


def parse_org_settings_name(value: str, field: str = "name") -> str:
    shape = "orgs/{org}/settings"
    orgs, org, settings = _segments(value, field, shape, 3)
    if (orgs, settings) != ("orgs", "settings") or not _ORG_ID.fullmatch(org):
        raise InvalidRequest(field, f"must be {shape}, got {value!r}")
    return org
