"""SOQL and SOSL text, change cursors and the delete-log gap rule (no I/O).

Values never reach a query unescaped: strings are quoted with Salesforce's escapes, and field
and object names must be API names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from concord_crm_connector.domain.errors import InvalidRequest
from concord_crm_connector.domain.model import FIELD_NAME, SOBJECT_TYPE, FieldFilter, SearchTarget

__all__ = [
    "CHECKED_REFRESH",
    "DELETE_LOG_DAYS",
    "DELETE_LOG_WINDOW",
    "EMPTY_LISTING",
    "MAX_PAGE",
    "PAGE_BYTES",
    "ChangeCursor",
    "change_query",
    "decode_cursor",
    "delete_log_gap",
    "delete_log_window",
    "encode_cursor",
    "filter_query",
    "format_datetime",
    "listed_cursor",
    "owner_rows",
    "parse_datetime",
    "rows_within",
    "search_query",
    "soql_literal",
]

# A query page holds at most 2,000 records; a bigger page would need a second call.
MAX_PAGE = 2000
# A listing page carries records of at most about this much text: gRPC clients accept 4 MiB
# by default, and 2,000 records with long text fields (32,000 characters each on Event) are
# many times that. The rest comes in the next page, from the cursor of the last one sent.
PAGE_BYTES = 3 * 1024 * 1024
# getDeleted answers for 15 days; a cursor older than that may have missed hard deletes.
DELETE_LOG_DAYS = 15
# A listing that returns no record answers the cursor it was given, `checked` time and all, so
# the reconciler has no cursor to write for a quiet session (issue #18), until that time is
# this old: then it moves, so that it stays well inside the delete log's days.
CHECKED_REFRESH = timedelta(days=1)
# getDeleted is asked for `earliestDateAvailable` alone (the deletes themselves are listed by
# queryAll), so its window reaches back no further than this: a `checked` time kept for a day
# would otherwise fetch a day of the org's deletes of the object at every listing.
DELETE_LOG_WINDOW = timedelta(hours=1)
_VERSION = "v1"


@dataclass(frozen=True)
class ChangeCursor:
    """Where a listing stopped.

    `modstamp` and `record_id` are the last record listed (Ids break ties within a
    millisecond); `checked` is when the delete log was last seen complete, so a purge of the
    recycle bin after it shows as a gap even when no record changed since.
    """

    modstamp: datetime
    record_id: str
    checked: datetime


# Where a listing of an object with no records starts again.
EMPTY_LISTING = ChangeCursor(
    datetime(2000, 1, 1, tzinfo=UTC), "000000000000000", datetime(2000, 1, 1, tzinfo=UTC)
)


def encode_cursor(cursor: ChangeCursor) -> str:
    return "|".join(
        (
            _VERSION,
            format_datetime(cursor.modstamp),
            cursor.record_id,
            format_datetime(cursor.checked),
        )
    )


def decode_cursor(token: str) -> ChangeCursor | None:
    """None for an empty token (a full listing); InvalidRequest for one we never issued."""
    if not token:
        return None
    parts = token.split("|")
    try:
        if (
            len(parts) != 4
            or parts[0] != _VERSION
            or not re.fullmatch(r"[A-Za-z0-9]{15,18}", parts[2])
        ):
            raise ValueError(token)
        return ChangeCursor(parse_datetime(parts[1]), parts[2], parse_datetime(parts[3]))
    except ValueError:
        raise InvalidRequest(
            "cursor token was not issued by this connector",
            field_violations=[("cursor.token", "not a crm-connector cursor")],
        ) from None


def format_datetime(value: datetime) -> str:
    """SOQL's datetime literal form, in UTC with milliseconds."""
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_datetime(text: str) -> datetime:
    """Salesforce's `2026-01-02T03:04:05.000+0000` (and `Z`, `+00:00`)."""
    cleaned = text.strip()
    if cleaned.endswith("Z"):
        cleaned = cleaned[:-1] + "+00:00"
    elif len(cleaned) > 5 and cleaned[-5] in "+-" and cleaned[-3] != ":":
        cleaned = cleaned[:-2] + ":" + cleaned[-2:]
    value = datetime.fromisoformat(cleaned)
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


def delete_log_gap(
    cursor: ChangeCursor, earliest_available: datetime | None, now: datetime
) -> bool:
    """True when deletes after the cursor may be gone from the recycle bin unseen.

    Deleted records leave queryAll when the recycle bin is emptied; getDeleted's
    `earliestDateAvailable` says from when on its log is complete. A cursor before that (or
    before the log's 15 days) cannot prove nothing was deleted, so the caller must list in
    full and reconcile rather than infer.
    """
    if cursor.checked < now - timedelta(days=DELETE_LOG_DAYS) + timedelta(minutes=1):
        return True
    # Salesforce gives the log's start to the minute, rounded down: deletes purged within
    # that minute may predate it, so the whole minute counts as not covered.
    return earliest_available is not None and cursor.checked < earliest_available + timedelta(
        minutes=1
    )


def listed_cursor(
    after: ChangeCursor | None, last_record: tuple[datetime, str] | None, now: datetime
) -> ChangeCursor:
    """The cursor a listing at `now` answers: at `last_record` (its SystemModstamp and Id),
    checked `now`, when it returned records; else `after` unchanged while its `checked` time
    is younger than CHECKED_REFRESH.

    Keeping the older `checked` time finds no gap that moving it would not: a purge between it
    and this listing's `now` would have made this listing answer a gap instead (the rule
    compares `checked` with the latest purge). Only a Salesforce whose `earliestDateAvailable`
    lagged its purges could see one more gap, which costs a full listing, never a lost delete.
    """
    if last_record is not None:
        return ChangeCursor(last_record[0], last_record[1], now)
    if after is None:
        return replace(EMPTY_LISTING, checked=now)
    if now - after.checked >= CHECKED_REFRESH:
        return replace(after, checked=now)
    return after


def delete_log_window(after: ChangeCursor, now: datetime) -> tuple[datetime, datetime]:
    """The getDeleted window a listing from `after` at `now` asks for its
    `earliestDateAvailable`: from `checked`, at most DELETE_LOG_WINDOW back."""
    return max(after.checked, now - DELETE_LOG_WINDOW), now


def soql_literal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(int(value)) if float(value).is_integer() else repr(value)
    text = str(value)
    for raw, escaped in (("\\", "\\\\"), ("'", "\\'"), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
        text = text.replace(raw, escaped)
    return f"'{text}'"


def _names(fields: Sequence[str], field: str) -> list[str]:
    bad = [f for f in fields if not FIELD_NAME.fullmatch(f)]
    if bad:
        raise InvalidRequest(
            "field names must be Salesforce API names",
            field_violations=[(field, f"not an API name: {name[:80]}") for name in bad],
        )
    return list(dict.fromkeys(fields))


def change_query(
    sobject_type: str,
    fields: Sequence[str],
    after: ChangeCursor | None,
    limit: int,
    owner_id: str = "",
) -> str:
    """Changed records in (SystemModstamp, Id) order, strictly after the cursor; with
    `owner_id`, only that user's.

    Run through queryAll so deleted records come back with IsDeleted = true in the same call.
    """
    wanted = [f for f in _names(fields, "fields") if f not in ("Id", "SystemModstamp", "IsDeleted")]
    select = ", ".join(["Id", "SystemModstamp", "IsDeleted", *wanted])
    conditions = []
    if after is not None:
        stamp = format_datetime(after.modstamp)
        conditions.append(
            f"(SystemModstamp > {stamp} OR "
            f"(SystemModstamp = {stamp} AND Id > {soql_literal(after.record_id)}))"
        )
    if owner_id:
        conditions.append(f"OwnerId = {soql_literal(owner_id)}")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return f"SELECT {select} FROM {sobject_type}{where} ORDER BY SystemModstamp, Id LIMIT {limit}"


def owner_rows(
    listed: Sequence[Mapping[str, Any]], owned: Sequence[Mapping[str, Any]], owner_id: str
) -> list[tuple[Mapping[str, Any], Mapping[str, Any] | None]]:
    """Each row of an org's listing beside the row to report for it.

    An owner's listing reads every changed record thin (`listed`: Id, SystemModstamp,
    IsDeleted, OwnerId), because a record handed to someone else must be reported as leaving
    the scope, and reads the owner's own records in full (`owned`). Someone else's records
    and deleted ones are reported from their thin row; the owner's from the full one. None
    where the owner's record changed between the two reads: its new SystemModstamp lies past
    this page, so the next page reports it.
    """
    full = {str(row.get("Id")): row for row in owned}
    paired: list[tuple[Mapping[str, Any], Mapping[str, Any] | None]] = []
    for row in listed:
        foreign = str(row.get("OwnerId") or "")[:15] != owner_id[:15]
        if row.get("IsDeleted") or foreign:
            paired.append((row, row))
        else:
            paired.append((row, full.get(str(row.get("Id")))))
    return paired


def filter_query(
    sobject_type: str,
    fields: Sequence[str],
    filters: Sequence[FieldFilter],
    order_by: str = "",
    limit: int = 0,
    offset: int = 0,
) -> str:
    if not SOBJECT_TYPE.fullmatch(sobject_type):
        raise InvalidRequest("bad sobject_type", field_violations=[("sobject_type", "bad name")])
    names = _names(["Id", *fields], "fields")
    conditions = []
    for item in filters:
        _names([item.field], "filters.field")
        values = ", ".join(soql_literal(v) for v in item.values)
        conditions.append(f"{item.field} IN ({values})")
    text = f"SELECT {', '.join(names)} FROM {sobject_type}"
    if conditions:
        text += " WHERE " + " AND ".join(conditions)
    if order_by:
        if not re.fullmatch(
            r"[A-Za-z0-9_.]+( (ASC|DESC))?( NULLS (FIRST|LAST))?"
            r"(, ?[A-Za-z0-9_.]+( (ASC|DESC))?( NULLS (FIRST|LAST))?)*",
            order_by,
            re.IGNORECASE,
        ):
            raise InvalidRequest(
                "order_by must be fields with ASC/DESC", field_violations=[("order_by", "bad")]
            )
        text += f" ORDER BY {order_by}"
    if limit:
        text += f" LIMIT {limit}"
    if offset:
        text += f" OFFSET {offset}"
    return text


# SOSL reserves these; a term carrying them must have them escaped.
_SOSL_RESERVED = re.compile(r"([?&|!{}\[\]()^~*:\\\"'+-])")


def search_query(term: str, scope: str, targets: Sequence[SearchTarget]) -> str:
    """`FIND {term} IN <scope> FIELDS RETURNING Contact(Id, Email LIMIT 10), …`."""
    escaped = _SOSL_RESERVED.sub(r"\\\1", term)
    returning = []
    for target in targets:
        names = _names(["Id", *target.fields], "targets.fields")
        inner = ", ".join(names)
        if target.limit:
            inner += f" LIMIT {target.limit}"
        returning.append(f"{target.sobject_type}({inner})")
    return f"FIND {{{escaped}}} IN {scope} FIELDS RETURNING {', '.join(returning)}"


def rows_within(rows: Sequence[Mapping[str, Any]], budget: int = PAGE_BYTES) -> int:
    """How many of `rows`, from the first, fit in `budget` bytes of JSON; at least one, so a
    listing always moves on (no single record comes near the budget)."""
    # Most pages are far below the budget: one encoding of the whole page says so.
    if len(json.dumps(rows, default=str, ensure_ascii=False).encode()) <= budget:
        return len(rows)
    used = 0
    for count, row in enumerate(rows):
        used += len(json.dumps(row, default=str, ensure_ascii=False).encode())
        if used > budget and count > 0:
            return count
    return len(rows)
