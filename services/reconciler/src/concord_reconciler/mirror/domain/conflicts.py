"""Conflicts held for the user (org policy `manual`): their names, what is held, the choice."""

from __future__ import annotations

from collections.abc import Iterable

from concord_reconciler.kernel.errors import InvalidRequest
from concord_reconciler.kernel.names import parse_mailbox_id
from concord_reconciler.mirror.domain.sync import FieldConflict, Link, LinkState, Resolution, Side
from concord_rpc import NotFound

__all__ = [
    "ConflictNotFound",
    "conflict_name",
    "held_fields",
    "parse_conflict_name",
    "resolution_for",
]

_SHAPE = "mailboxes/{mailbox}/conflicts/{conflict}"


class ConflictNotFound(NotFound):
    reason = "CONFLICT_NOT_FOUND"

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} is not a held conflict", metadata={"conflict": name})


def conflict_name(mailbox_id: str, link_id: str) -> str:
    return f"mailboxes/{mailbox_id}/conflicts/{link_id}"


def parse_conflict_name(value: str, field: str = "name") -> tuple[str, str]:
    """`mailboxes/{mailbox}/conflicts/{conflict}` -> (mailbox id, link id)."""
    parts = value.split("/") if value else []
    if len(parts) != 4 or (parts[0], parts[2]) != ("mailboxes", "conflicts") or not parts[3]:
        raise InvalidRequest(field, f"must be {_SHAPE}, got {value!r}" if value else "required")
    return parse_mailbox_id(parts[1], field), parts[3]


def held_fields(link: Link) -> list[FieldConflict]:
    """The fields waiting for the user, each with the values last held, by field name."""
    if link.state is not LinkState.CONFLICT:
        return []
    latest: dict[str, FieldConflict] = {}
    for conflict in link.conflicts:
        if conflict.winner is None:
            latest[conflict.field] = conflict
    return [latest[name] for name in sorted(latest)]


def resolution_for(
    link: Link, take: Side | None, choices: Iterable[tuple[str, Side]]
) -> Resolution:
    """The user's choice, checked against what is held: every held field gets a side."""
    held = {c.field for c in held_fields(link)}
    fields: dict[str, Side] = {}
    for name, side in choices:
        if name not in held:
            raise InvalidRequest("fields", f"{name!r} is not a field in conflict")
        fields[name] = side
    missing = sorted(held - set(fields))
    if take is None and missing:
        raise InvalidRequest("take", f"required: no choice for {', '.join(missing)}")
    return Resolution(take=take, fields=fields)
