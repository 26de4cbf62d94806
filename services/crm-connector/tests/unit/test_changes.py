"""Change events into hints: owners and records, Concord's own writes left out, gaps to all."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from concord_crm_connector.changes.model import (
    ChangeEvent,
    hints_for,
    ids_to_look_up,
    is_concord_origin,
)

pytestmark = pytest.mark.unit

ANN, BOB = "005000000000001AAA", "005000000000002AAA"
CONCORD = "com/salesforce/api/rest/62.0;client=concord"
USER = "com/salesforce/api/soap/62.0;client=SfdcInternalAPI/"


def _event(change: str = "UPDATE", *ids: str, origin: str = USER, **kw: object) -> ChangeEvent:
    return ChangeEvent(
        channel="/data/EventChangeEvent",
        replay_id=b"\x01",
        entity=str(kw.pop("entity", "Event")),
        change_type=change,
        record_ids=ids or ("00U000000000001AAA",),
        change_origin=origin,
        **kw,  # type: ignore[arg-type]
    )


def test_concords_own_writes_make_no_hint() -> None:
    assert is_concord_origin(CONCORD)
    assert not is_concord_origin(USER)
    assert not is_concord_origin("client=concordia")
    assert hints_for("acme", [_event(origin=CONCORD)], {}) is None


def test_a_hint_names_the_owners_and_the_records() -> None:
    events = [
        _event("CREATE", "00U1", owner_id=ANN),
        _event("UPDATE", "00U2"),
        _event("DELETE", "00U3"),
    ]
    assert ids_to_look_up(events) == {"Event": ["00U2"]}
    hint = hints_for("acme", events, {"00U2": BOB})
    assert hint is not None
    assert hint.owner_ids == {ANN, BOB}
    assert not hint.everyone
    # The deleted one is routed by its links in the reconciler: no owner needed.
    assert hint.record_ids == ("00U1", "00U2", "00U3")


def test_a_gap_or_an_unreadable_owner_syncs_the_whole_org() -> None:
    gap = hints_for("acme", [_event("GAP_OVERFLOW")], {})
    assert gap is not None
    assert gap.everyone
    assert gap.reason == "GAP_OVERFLOW"
    unknown = hints_for("acme", [_event("UPDATE", "00U9")], {})
    assert unknown is not None
    assert unknown.everyone
    assert unknown.reason == "owner unknown"


def test_changes_only_linking_reads_make_no_hint() -> None:
    assert hints_for("acme", [_event("UPDATE", "001A", entity="Account")], {}) is None


@given(
    st.lists(
        st.tuples(st.sampled_from(["CREATE", "UPDATE", "DELETE", "GAP_UPDATE"]), st.booleans()),
        max_size=20,
    )
)
def test_no_event_of_someone_else_is_ever_dropped(kinds: list[tuple[str, bool]]) -> None:
    """Any batch with a change not made by Concord gives a hint covering it."""
    events = [
        _event(change, f"00U{n}", origin=CONCORD if ours else USER, commit_time=datetime.now(UTC))
        for n, (change, ours) in enumerate(kinds)
    ]
    owners = {f"00U{n}": ANN for n in range(len(kinds))}
    hint = hints_for("acme", events, owners)
    theirs = [e for e in events if e.is_gap or not is_concord_origin(e.change_origin)]
    if not theirs:
        assert hint is None
        return
    assert hint is not None
    for event in theirs:
        assert hint.everyone or set(event.record_ids) <= set(hint.record_ids)
