"""Planning writes as few Salesforce calls as possible, and reading their outcomes (no I/O).

A batch becomes sObject Collections calls (at most 200 records, one kind of write and one
object type each), and those calls are packed five at a time into one Composite request, which
Salesforce counts as a single API call: 1,000 records for one call is the floor.
"""

from __future__ import annotations

import email.utils
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from concord_crm_connector.domain.model import (
    LINK_FIELD,
    RecordError,
    RecordWrite,
    WriteOperation,
    WriteOutcome,
    WriteStatus,
)

__all__ = [
    "COLLECTION_SIZE",
    "COMPOSITE_COLLECTIONS",
    "CallKind",
    "CollectionCall",
    "backoff_seconds",
    "call_kind",
    "classify",
    "error_outcome",
    "if_unmodified_since",
    "invalid_write",
    "outcome_of",
    "pack_composites",
    "plan_collections",
    "record_body",
    "rest_errors",
]

COLLECTION_SIZE = 200
COMPOSITE_COLLECTIONS = 5
# A Composite request holds at most 25 subrequests: one guarded update each.
GUARDED_PER_CALL = 25

# A "guarded_update" carries the version it was planned against. Collections cannot make an
# update conditional, so it goes as an sObject Rows PATCH with If-Unmodified-Since inside a
# Composite request: 25 per call instead of 1,000, the price of never overwriting an edit made
# in Salesforce while the write is in flight (the version check alone is a separate call that
# leaves that window open).
CallKind = Literal["upsert", "create", "update", "guarded_update", "delete"]

# Transient by Salesforce's own account: the same request can succeed later.
_RETRYABLE = frozenset(
    {
        "UNABLE_TO_LOCK_ROW",
        "SERVER_UNAVAILABLE",
        "UNKNOWN_EXCEPTION",
        "REQUEST_RUNNING_TOO_LONG",
        "QUERY_TIMEOUT",
        "CONCURRENT_REQUESTS_LIMIT_EXCEEDED",
        "REQUEST_LIMIT_EXCEEDED",
        "PROCESSING_HALTED",
    }
)
_NOT_FOUND = frozenset({"NOT_FOUND", "ENTITY_IS_DELETED"})
_ROLLED_BACK = frozenset({"ALL_OR_NONE_OPERATION_ROLLED_BACK"})
# The content itself is wrong; sending it again changes nothing.
_INVALID = frozenset(
    {
        "STRING_TOO_LONG",
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        "INVALID_FIELD",
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        "MALFORMED_ID",
        "REQUIRED_FIELD_MISSING",
        "FIELD_INTEGRITY_EXCEPTION",
        "INVALID_CROSS_REFERENCE_KEY",
        "INVALID_TYPE",
        "INVALID_TYPE_ON_FIELD_IN_RECORD",
        "INVALID_EMAIL_ADDRESS",
        "NUMBER_OUTSIDE_VALID_RANGE",
        "JSON_PARSER_ERROR",
        "MISSING_ARGUMENT",
        "DUPLICATE_VALUE",
        "DUPLICATES_DETECTED",
        "FIELD_CUSTOM_VALIDATION_EXCEPTION",
        "INVALID_ID_FIELD",
        "INVALID_DATE_FORMAT",
    }
)


def classify(code: str, kind: CallKind | None = None) -> WriteStatus:
    if code in _RETRYABLE:
        return WriteStatus.RETRYABLE
    if code in _ROLLED_BACK:
        return WriteStatus.ROLLED_BACK
    if code in _NOT_FOUND or (kind == "delete" and code == "INVALID_CROSS_REFERENCE_KEY"):
        return WriteStatus.NOT_FOUND
    if code in _INVALID:
        return WriteStatus.INVALID
    return WriteStatus.FAILED


def call_kind(write: RecordWrite) -> CallKind:
    """How a write is sent.

    A create that carries its link id goes as an upsert by that id: after a lost
    acknowledgement its retry finds the record it made instead of making a second one.
    Updates never go as upserts, so an update of a record deleted in Salesforce reports
    NOT_FOUND instead of resurrecting it.
    """
    if write.operation is WriteOperation.UPSERT:
        return "upsert"
    if write.operation is WriteOperation.CREATE:
        return "upsert" if write.link_id else "create"
    if write.operation is WriteOperation.UPDATE:
        return "update" if write.expected_system_modstamp is None else "guarded_update"
    return "delete"


def invalid_write(write: RecordWrite) -> WriteOutcome | None:
    """What Salesforce would refuse anyway, answered without spending a call."""
    missing: RecordError | None = None
    if write.operation is WriteOperation.UPSERT and not write.link_id:
        missing = RecordError("MISSING_ARGUMENT", f"{LINK_FIELD} not specified", (LINK_FIELD,))
    elif write.operation in (WriteOperation.UPDATE, WriteOperation.DELETE) and not (
        write.id or write.link_id
    ):
        missing = RecordError("MISSING_ARGUMENT", "Id not specified", ("Id",))
    if missing is None:
        return None
    return WriteOutcome(WriteStatus.INVALID, write.id, write.link_id, errors=(missing,))


@dataclass(frozen=True)
class CollectionCall:
    """One sObject Collections request: one kind, one object type, at most 200 writes."""

    kind: CallKind
    sobject_type: str
    indices: tuple[int, ...]


def plan_collections(
    writes: Sequence[RecordWrite], pending: Iterable[int], size: int = COLLECTION_SIZE
) -> list[CollectionCall]:
    """Groups the pending writes by (kind, type) in order of first appearance.

    Grouping rather than cutting at every change of kind keeps an interleaved batch at the
    floor of calls; results are still reported in input order.
    """
    groups: dict[tuple[CallKind, str], list[int]] = {}
    for index in pending:
        write = writes[index]
        groups.setdefault((call_kind(write), write.sobject_type), []).append(index)
    calls = []
    for (kind, sobject_type), indices in groups.items():
        step = GUARDED_PER_CALL if kind == "guarded_update" else size
        for start in range(0, len(indices), step):
            calls.append(CollectionCall(kind, sobject_type, tuple(indices[start : start + step])))
    return calls


def pack_composites(
    calls: Sequence[CollectionCall], per_request: int = COMPOSITE_COLLECTIONS
) -> list[list[CollectionCall]]:
    """Collections calls five to a Composite request; a guarded call is a Composite request of
    its own (they do not nest)."""
    guarded = [[call] for call in calls if call.kind == "guarded_update"]
    rest = [call for call in calls if call.kind != "guarded_update"]
    return [list(rest[i : i + per_request]) for i in range(0, len(rest), per_request)] + guarded


def if_unmodified_since(version: datetime) -> str:
    """The HTTP date a guarded update carries: Salesforce compares it with LastModifiedDate to
    the second, so the version's own second passes and any later one refuses the write."""
    return email.utils.format_datetime(version.astimezone(UTC).replace(microsecond=0), usegmt=True)


def record_body(write: RecordWrite, kind: CallKind, record_id: str = "") -> dict[str, Any]:
    """The JSON of one record in a Collections request; cleared fields are sent as null."""
    body: dict[str, Any] = {"attributes": {"type": write.sobject_type}}
    body.update(write.fields)
    for name in write.fields_to_null:
        body[name] = None
    if kind == "upsert" or (kind == "create" and write.link_id):
        body[LINK_FIELD] = write.link_id
    if kind == "update":
        body.pop(LINK_FIELD, None)
        body["Id"] = record_id or write.id
    return body


def outcome_of(write: RecordWrite, kind: CallKind, result: Mapping[str, Any]) -> WriteOutcome:
    """One entry of a Collections answer (`id`, `success`, `created`, `errors`)."""
    record_id = str(result.get("id") or write.id or "")
    if result.get("success"):
        created = bool(result.get("created", kind == "create"))
        return WriteOutcome(WriteStatus.OK, record_id, write.link_id, created=created)
    errors = tuple(_record_error(e) for e in result.get("errors") or ())
    if not errors:
        errors = (RecordError("UNKNOWN_EXCEPTION", "Salesforce gave no reason"),)
    return WriteOutcome(classify(errors[0].code, kind), record_id, write.link_id, errors=errors)


def error_outcome(
    write: RecordWrite, kind: CallKind, errors: Sequence[RecordError]
) -> WriteOutcome:
    status = classify(errors[0].code, kind) if errors else WriteStatus.FAILED
    return WriteOutcome(status, write.id, write.link_id, errors=tuple(errors))


def _record_error(error: Mapping[str, Any]) -> RecordError:
    # Collections say `statusCode`; plain REST errors say `errorCode`.
    code = str(error.get("statusCode") or error.get("errorCode") or "UNKNOWN_EXCEPTION")
    return RecordError(code, str(error.get("message", "")), tuple(error.get("fields") or ()))


def rest_errors(body: Any) -> list[RecordError]:
    """A REST error body (`[{errorCode, message, fields}]`) as record errors."""
    if isinstance(body, list):
        return [_record_error(e) for e in body if isinstance(e, Mapping)]
    if isinstance(body, Mapping):
        return [_record_error(body)]
    return [RecordError("UNKNOWN_EXCEPTION", str(body)[:200])]


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Exponential: base, 2·base, 4·base… never above `cap`."""
    return float(min(cap, base * (2**attempt)))
