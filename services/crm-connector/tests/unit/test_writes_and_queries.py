from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from concord_crm_connector.domain.errors import InvalidRequest
from concord_crm_connector.domain.model import (
    FieldFilter,
    RecordWrite,
    SearchTarget,
    WriteOperation,
    WriteStatus,
)
from concord_crm_connector.domain.queries import (
    CHECKED_REFRESH,
    DELETE_LOG_WINDOW,
    EMPTY_LISTING,
    ChangeCursor,
    change_query,
    decode_cursor,
    delete_log_gap,
    delete_log_window,
    encode_cursor,
    filter_query,
    listed_cursor,
    owner_rows,
    search_query,
    soql_literal,
)
from concord_crm_connector.domain.writes import (
    backoff_seconds,
    call_kind,
    classify,
    invalid_write,
    outcome_of,
    pack_composites,
    plan_collections,
    record_body,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)


def write(op: WriteOperation, kind: str = "Event", link: str = "l", **extra: object) -> RecordWrite:
    return RecordWrite(op, kind, link_id=link, **extra)  # type: ignore[arg-type]


def test_1000_upserts_are_five_collections_in_one_composite() -> None:
    writes = [write(WriteOperation.UPSERT, link=str(n)) for n in range(1000)]
    calls = plan_collections(writes, range(1000))
    assert [len(c.indices) for c in calls] == [200] * 5
    assert len(pack_composites(calls)) == 1
    assert len(pack_composites(plan_collections(writes * 2, range(2000)))) == 2


def test_interleaved_kinds_are_grouped_and_keep_their_indices() -> None:
    writes = [
        write(WriteOperation.UPSERT, "Event"),
        write(WriteOperation.UPSERT, "Task"),
        write(WriteOperation.UPSERT, "Event"),
        write(WriteOperation.DELETE, "Event"),
    ]
    calls = plan_collections(writes, range(4))
    assert [(c.kind, c.sobject_type, c.indices) for c in calls] == [
        ("upsert", "Event", (0, 2)),
        ("upsert", "Task", (1,)),
        ("delete", "Event", (3,)),
    ]


def test_creates_with_a_link_go_as_upserts_and_updates_never_do() -> None:
    assert call_kind(write(WriteOperation.CREATE)) == "upsert"
    assert call_kind(write(WriteOperation.CREATE, link="")) == "create"
    assert call_kind(write(WriteOperation.UPDATE)) == "update"
    body = record_body(
        write(WriteOperation.UPDATE, fields={"Subject": "s"}, fields_to_null=("Location",)),
        "update",
        "00U000000000001",
    )
    assert body == {
        "attributes": {"type": "Event"},
        "Subject": "s",
        "Location": None,
        "Id": "00U000000000001",
    }
    upsert = record_body(write(WriteOperation.UPSERT, link="L1"), "upsert")
    assert upsert["Concord_Link_Id__c"] == "L1"


def test_writes_salesforce_would_refuse_are_answered_locally() -> None:
    missing = invalid_write(write(WriteOperation.UPSERT, link=""))
    assert missing is not None
    assert missing.status is WriteStatus.INVALID
    assert invalid_write(write(WriteOperation.UPDATE, link="")) is not None
    assert invalid_write(write(WriteOperation.UPDATE)) is None


@pytest.mark.parametrize(
    ("code", "kind", "status"),
    [
        ("UNABLE_TO_LOCK_ROW", None, WriteStatus.RETRYABLE),
        ("STRING_TOO_LONG", None, WriteStatus.INVALID),
        ("ENTITY_IS_DELETED", None, WriteStatus.NOT_FOUND),
        ("INVALID_CROSS_REFERENCE_KEY", "delete", WriteStatus.NOT_FOUND),
        ("INVALID_CROSS_REFERENCE_KEY", "upsert", WriteStatus.INVALID),
        ("ALL_OR_NONE_OPERATION_ROLLED_BACK", None, WriteStatus.ROLLED_BACK),
        ("SOMETHING_NEW", None, WriteStatus.FAILED),
    ],
)
def test_classification(code: str, kind: str | None, status: WriteStatus) -> None:
    assert classify(code, kind) is status  # type: ignore[arg-type]


def test_outcomes_read_collections_results() -> None:
    w = write(WriteOperation.UPSERT)
    ok = outcome_of(w, "upsert", {"id": "00U1", "success": True, "created": True, "errors": []})
    assert (ok.status, ok.id, ok.created) == (WriteStatus.OK, "00U1", True)
    bad = outcome_of(
        w,
        "upsert",
        {"success": False, "errors": [{"statusCode": "STRING_TOO_LONG", "message": "m"}]},
    )
    assert bad.status is WriteStatus.INVALID
    assert bad.errors[0].code == "STRING_TOO_LONG"


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_seconds(n, 0.5, 3) for n in range(5)] == [0.5, 1, 2, 3, 3]


def test_cursors_round_trip_and_foreign_ones_are_refused() -> None:
    cursor = ChangeCursor(NOW, "00U5e0000000001EAA", NOW + timedelta(seconds=1))
    assert decode_cursor(encode_cursor(cursor)) == cursor
    assert decode_cursor("") is None
    with pytest.raises(InvalidRequest):
        decode_cursor("v1|garbage")


def test_the_delete_log_gap_rule() -> None:
    cursor = ChangeCursor(NOW, "00U5e0000000001", NOW)
    assert not delete_log_gap(cursor, NOW - timedelta(days=14), NOW)
    # Rounded to the minute by Salesforce: a purge in the checked minute counts as a gap.
    assert delete_log_gap(cursor, NOW, NOW + timedelta(seconds=30))
    assert delete_log_gap(cursor, None, NOW + timedelta(days=16))


def test_a_listing_with_no_record_answers_its_cursor_until_the_check_is_old() -> None:
    after = ChangeCursor(NOW, "00U5e0000000001", NOW)
    # Quiet: the cursor as it came, so the reconciler has nothing to write (issue #18).
    assert listed_cursor(after, None, NOW + timedelta(minutes=30)) == after
    later = NOW + CHECKED_REFRESH
    assert listed_cursor(after, None, later) == ChangeCursor(NOW, "00U5e0000000001", later)
    record = (NOW + timedelta(seconds=5), "00U5e0000000002")
    assert listed_cursor(after, record, NOW + timedelta(minutes=1)) == ChangeCursor(
        *record, NOW + timedelta(minutes=1)
    )
    assert listed_cursor(None, None, NOW) == ChangeCursor(
        EMPTY_LISTING.modstamp, EMPTY_LISTING.record_id, NOW
    )


def test_a_cursor_kept_quiet_finds_every_purge_one_moved_each_listing_finds() -> None:
    # Listings every 30 min, none returning a record, and purges between them: the cursor
    # kept (old `checked`) answers a gap exactly where the cursor moved at each listing does.
    kept = moved = ChangeCursor(NOW, "00U5e0000000001", NOW)
    purge = None
    for n in range(1, 40):
        at = NOW + timedelta(minutes=30 * n)
        if n % 7 == 0:
            purge = (at - timedelta(minutes=n % 3 * 10 + 1)).replace(second=0)
        assert delete_log_gap(kept, purge, at) == delete_log_gap(moved, purge, at), n
        if delete_log_gap(moved, purge, at):
            kept = moved = listed_cursor(None, None, at)  # the full listing that follows
            continue
        kept, moved = listed_cursor(kept, None, at), ChangeCursor(NOW, moved.record_id, at)


def test_the_delete_log_is_asked_for_a_short_window() -> None:
    recent = ChangeCursor(NOW, "00U5e0000000001", NOW)
    assert delete_log_window(recent, NOW + timedelta(minutes=5)) == (
        NOW,
        NOW + timedelta(minutes=5),
    )
    later = NOW + CHECKED_REFRESH - timedelta(minutes=1)
    assert delete_log_window(recent, later) == (later - DELETE_LOG_WINDOW, later)


def test_soql_is_escaped_and_ordered_for_cursors() -> None:
    assert soql_literal("O'Brien\\") == "'O\\'Brien\\\\'"
    assert soql_literal(True) == "true"
    assert soql_literal(3.0) == "3"
    text = change_query("Event", ["Subject"], ChangeCursor(NOW, "00U1", NOW), 10)
    assert text == (
        "SELECT Id, SystemModstamp, IsDeleted, Subject FROM Event WHERE "
        "(SystemModstamp > 2026-05-01T12:00:00.000Z OR (SystemModstamp = "
        "2026-05-01T12:00:00.000Z AND Id > '00U1')) ORDER BY SystemModstamp, Id LIMIT 10"
    )
    query = filter_query("Contact", ["Email"], [FieldFilter("Email", ("a@b.c", "x'y"))])
    assert query == "SELECT Id, Email FROM Contact WHERE Email IN ('a@b.c', 'x\\'y')"
    with pytest.raises(InvalidRequest):
        filter_query("Contact", ["Email) FROM User --"], [])
    with pytest.raises(InvalidRequest):
        filter_query("Contact", [], [], order_by="Name; DELETE")


def test_an_owners_change_query_names_the_owner() -> None:
    text = change_query("Event", ["Subject"], None, 5, owner_id="005A")
    assert text == (
        "SELECT Id, SystemModstamp, IsDeleted, Subject FROM Event WHERE OwnerId = '005A' "
        "ORDER BY SystemModstamp, Id LIMIT 5"
    )


def test_an_owners_rows_come_whole_and_others_thin() -> None:
    def thin(record_id: str, owner: str, deleted: bool = False) -> dict[str, object]:
        return {"Id": record_id, "OwnerId": owner, "IsDeleted": deleted}

    me, other = "005A00000000001", "005A00000000002"
    listed = [thin("1", me), thin("2", other), thin("3", me, True), thin("4", me)]
    whole = {"Id": "1", "OwnerId": me, "Subject": "Call"}
    # Record 4 changed between the two reads: the next page reports it. The owner is named
    # by 18 characters, the rows by 15.
    paired = owner_rows(listed, [whole], me + "AAA")
    assert [reported for _, reported in paired] == [whole, listed[1], listed[2], None]
    assert [row for row, _ in paired] == listed


def test_sosl_terms_are_escaped() -> None:
    text = search_query("a-b@x.example", "EMAIL", [SearchTarget("Contact", ("Email",), 5)])
    assert text == "FIND {a\\-b@x.example} IN EMAIL FIELDS RETURNING Contact(Id, Email LIMIT 5)"
