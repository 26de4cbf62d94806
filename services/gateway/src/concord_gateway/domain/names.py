"""Resource names the API takes (`mailboxes/{mailbox}`, `orgs/{org}/settings`, ...)."""

from __future__ import annotations

import re

from concord_gateway.domain.errors import InvalidName
from concord_rpc.requests import RESOURCE_ID

__all__ = [
    "check_mailbox_id",
    "mailbox_name",
    "mailbox_of_child",
    "mailbox_of_settings",
    "org_name",
    "org_of_settings",
]

# The reconciler's rule for the {mailbox} segment: lowercase letters, digits and `-`.
_MAILBOX_ID = RESOURCE_ID
# Ids other services mint (sessions, item errors) and org ids (Salesforce's are mixed case).
_ID = r"[A-Za-z0-9][A-Za-z0-9._~-]{0,127}"

_MAILBOX = re.compile(rf"mailboxes/({_MAILBOX_ID})")
_MAILBOX_SETTINGS = re.compile(rf"(mailboxes/{_MAILBOX_ID})/settings")
_ORG = re.compile(rf"orgs/({_ID})")
_ORG_SETTINGS = re.compile(rf"(orgs/{_ID})/settings")


def _invalid(field: str, value: str, expected: str) -> InvalidName:
    shown = value if len(value) <= 80 else value[:77] + "..."
    description = f"must be '{expected}'"
    return InvalidName(
        f"{field} {description}, got {shown!r}",
        metadata={"field": field},
        field_violations=[(field, description)],
    )


def mailbox_name(value: str, field: str) -> str:
    if not _MAILBOX.fullmatch(value):
        raise _invalid(field, value, "mailboxes/{mailbox}")
    return value


def mailbox_of_child(value: str, field: str, collection: str) -> str:
    """`mailboxes/{m}/<collection>/{id}` -> `mailboxes/{m}`."""
    match = re.fullmatch(rf"(mailboxes/{_MAILBOX_ID})/{collection}/{_ID}", value)
    if not match:
        raise _invalid(field, value, f"mailboxes/{{mailbox}}/{collection}/{{id}}")
    return match.group(1)


def mailbox_of_settings(value: str, field: str) -> str:
    match = _MAILBOX_SETTINGS.fullmatch(value)
    if not match:
        raise _invalid(field, value, "mailboxes/{mailbox}/settings")
    return match.group(1)


def org_name(value: str, field: str) -> str:
    if not _ORG.fullmatch(value):
        raise _invalid(field, value, "orgs/{org}")
    return value


def org_of_settings(value: str, field: str) -> str:
    match = _ORG_SETTINGS.fullmatch(value)
    if not match:
        raise _invalid(field, value, "orgs/{org}/settings")
    return match.group(1)


def check_mailbox_id(value: str, field: str) -> str:
    if not re.fullmatch(_MAILBOX_ID, value):
        raise _invalid(field, value, "lowercase letters, digits and '-'")
    return value
