"""The planner by example: one test per rule and per named setting."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as cst
from concord_reconciler.mailboxes.domain.settings import default_org_settings
from concord_reconciler.mirror.domain.planner import (
    ActionKind,
    ConflictPolicy,
    MergePlan,
    SyncPolicy,
    plan,
)
from concord_reconciler.mirror.domain.sync import (
    Change,
    Link,
    LinkState,
    Resolution,
    Side,
    Snapshot,
    TombstoneReason,
    Value,
    WriteOp,
    content_hash,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
EVENT = res.OBJECT_KIND_CALENDAR_ITEM
BASE: dict[str, Value] = {"subject": "Kick-off", "location": "Room 1", "attendees": ("a@x.io",)}


def snap(fields: dict[str, Value], version: str = "v2", at: int = 0, **kw: object) -> Snapshot:
    return Snapshot(fields=fields, version=version, server_time=NOW + timedelta(minutes=at), **kw)  # type: ignore[arg-type]


def link(base: dict[str, Value] | None = None, **kw: object) -> Link:
    fields = BASE if base is None else base
    values: dict[str, object] = {
        "link_id": "L1",
        "mailbox_id": "mb",
        "kind": EVENT,
        "mail_id": "m1",
        "crm_id": "c1",
        "mail_version": "v1",
        "crm_version": "v1",
        "mail_hash": content_hash(fields),
        "crm_hash": content_hash(fields),
        "base": fields,
    }
    values.update(kw)
    return Link(**values)  # type: ignore[arg-type]


def mail(native: str, snapshot: Snapshot | None) -> Change:
    return Change(Side.MAIL, native, snapshot)


def crm(native: str, snapshot: Snapshot | None) -> Change:
    return Change(Side.CRM, native, snapshot)


def run(
    mail_changes: list[Change],
    crm_changes: list[Change],
    links: list[Link] | None = None,
    **policy: object,
) -> MergePlan:
    kind = policy.pop("kind", EVENT)
    return plan(
        "mb",
        mail_changes,
        crm_changes,
        links if links is not None else [link()],
        SyncPolicy(kind=kind, **policy),  # type: ignore[arg-type]
        NOW,
    )


def edited(**changes: Value) -> dict[str, Value]:
    return {**BASE, **changes}


def only(result: MergePlan) -> tuple[ActionKind, list[tuple[Side, WriteOp, dict[str, Value]]]]:
    assert len(result.actions) == 1, result.actions
    action = result.actions[0]
    return action.kind, [(w.side, w.op, dict(w.fields)) for w in action.writes]


# -- change detection and merge --------------------------------------------------------------


def test_a_version_bump_with_the_same_content_is_no_change() -> None:
    result = run([mail("m1", snap(BASE, "v9"))], [crm("c1", snap(BASE, "v7", at=5))])
    kind, writes = only(result)
    assert (kind, writes) == (ActionKind.REFRESH, [])
    assert result.actions[0].link.mail_version == "v9"
    assert result.actions[0].link.crm_version == "v7"


def test_nothing_listed_plans_nothing() -> None:
    assert run([], []).actions == ()


def test_different_fields_changed_on_each_side_merge_without_conflict() -> None:
    result = run(
        [mail("m1", snap(edited(subject="New")))], [crm("c1", snap(edited(location="Room 2")))]
    )
    kind, writes = only(result)
    assert kind is ActionKind.UPDATE
    assert writes == [
        (Side.MAIL, WriteOp.UPDATE, {"location": "Room 2"}),
        (Side.CRM, WriteOp.UPDATE, {"subject": "New"}),
    ]
    assert result.conflicts == 0
    assert result.actions[0].link.base == edited(subject="New", location="Room 2")


def test_a_removed_field_is_written_as_none() -> None:
    fields = dict(BASE)
    del fields["location"]
    _kind, writes = only(run([mail("m1", snap(fields))], []))
    assert writes == [(Side.CRM, WriteOp.UPDATE, {"location": None})]


def test_the_same_change_on_both_sides_is_no_conflict_and_no_write() -> None:
    result = run([mail("m1", snap(edited(subject="X")))], [crm("c1", snap(edited(subject="X")))])
    kind, writes = only(result)
    assert (kind, writes, result.conflicts) == (ActionKind.UPDATE, [], 0)


@pytest.mark.parametrize(
    ("policy", "mail_at", "crm_at", "kept", "lost", "winner"),
    [
        (ConflictPolicy.MAIL_WINS, 0, 5, "M", "C", Side.MAIL),
        (ConflictPolicy.CRM_WINS, 5, 0, "C", "M", Side.CRM),
        (ConflictPolicy.NEWEST_WINS, 5, 0, "M", "C", Side.MAIL),
        (ConflictPolicy.NEWEST_WINS, 0, 5, "C", "M", Side.CRM),
    ],
)
def test_a_true_conflict_follows_the_policy_and_keeps_the_losing_value(
    policy: ConflictPolicy, mail_at: int, crm_at: int, kept: str, lost: str, winner: Side
) -> None:
    result = run(
        [mail("m1", snap(edited(subject="M"), at=mail_at))],
        [crm("c1", snap(edited(subject="C"), at=crm_at))],
        conflict=policy,
    )
    action = result.actions[0]
    assert result.conflicts == 1
    assert action.link.base["subject"] == kept
    conflict = action.link.conflicts[-1]
    assert (conflict.field, conflict.winner) == ("subject", winner)
    assert lost in (conflict.mail_value, conflict.crm_value)
    loser = Side.CRM if winner is Side.MAIL else Side.MAIL
    assert [(w.side, dict(w.fields)) for w in action.writes] == [(loser, {"subject": kept})]


def test_a_manual_conflict_is_held_with_both_sides_and_nothing_written() -> None:
    result = run(
        [mail("m1", snap(edited(subject="M", location="R9")))],
        [crm("c1", snap(edited(subject="C")))],
        conflict=ConflictPolicy.MANUAL,
    )
    kind, writes = only(result)
    assert (kind, writes) == (ActionKind.HOLD, [])
    held = result.actions[0].link
    assert held.state is LinkState.CONFLICT
    assert held.held_mail == edited(subject="M", location="R9")
    assert held.held_crm == edited(subject="C")
    assert held.conflicts[-1].winner is None
    # Held, it stays held: a quiet session plans nothing, a new edit re-holds it and records
    # the same conflict once.
    assert run([], [], [held], conflict=ConflictPolicy.MANUAL).actions == ()
    again = run(
        [mail("m1", snap(edited(subject="M", location="R10"), "v3"))],
        [],
        [held],
        conflict=ConflictPolicy.MANUAL,
    )
    assert only(again) == (ActionKind.HOLD, [])
    assert again.actions[0].link.conflicts == held.conflicts


def _held(**crm_edits: Value) -> Link:
    result = run(
        [mail("m1", snap(edited(subject="M", location="R9")))],
        [crm("c1", snap(edited(subject="C", **crm_edits)))],
        conflict=ConflictPolicy.MANUAL,
    )
    return result.actions[0].link


def test_a_resolved_conflict_is_written_at_the_next_session_without_a_change() -> None:
    held = replace(_held(), resolution=Resolution(take=Side.MAIL))
    result = run([], [], [held], conflict=ConflictPolicy.MANUAL)
    kind, writes = only(result)
    assert (kind, writes) == (
        ActionKind.UPDATE,
        [(Side.CRM, WriteOp.UPDATE, {"location": "R9", "subject": "M"})],
    )
    after = result.actions[0].link
    assert after.state is LinkState.ACTIVE
    assert (after.held_mail, after.held_crm, after.resolution) == (None, None, None)
    assert after.base == edited(subject="M", location="R9")
    # The losing value stays on record, now with its winner; nothing is held any more.
    assert [(c.field, c.mail_value, c.crm_value, c.winner) for c in after.conflicts] == [
        ("subject", "M", "C", Side.MAIL)
    ]
    assert run([], [], [after], conflict=ConflictPolicy.MANUAL).actions == ()


def test_a_resolution_per_field_writes_each_choice_to_its_losing_side() -> None:
    held = _held(location="R0")
    choice = Resolution(take=Side.MAIL, fields={"location": Side.CRM})
    result = run([], [], [replace(held, resolution=choice)], conflict=ConflictPolicy.MANUAL)
    _kind, writes = only(result)
    assert writes == [
        (Side.MAIL, WriteOp.UPDATE, {"location": "R0"}),
        (Side.CRM, WriteOp.UPDATE, {"subject": "M"}),
    ]
    assert result.actions[0].link.base == edited(subject="M", location="R0")


def test_a_choice_applies_to_a_side_that_moved_again_but_an_uncovered_conflict_holds() -> None:
    held = replace(_held(), resolution=Resolution(fields={"subject": Side.CRM}))
    later = run(
        [],
        [crm("c1", snap(edited(subject="C2"), "v3"))],
        [held],
        conflict=ConflictPolicy.MANUAL,
    )
    _kind, writes = only(later)
    assert writes == [
        (Side.MAIL, WriteOp.UPDATE, {"subject": "C2"}),
        (Side.CRM, WriteOp.UPDATE, {"location": "R9"}),
    ]
    fresh = run(
        [],
        [crm("c1", snap(edited(subject="C", location="R0"), "v3"))],
        [held],
        conflict=ConflictPolicy.MANUAL,
    )
    assert only(fresh) == (ActionKind.HOLD, [])
    again = fresh.actions[0].link
    assert again.resolution == held.resolution
    assert {c.field for c in again.conflicts if c.winner is None} == {"subject", "location"}


@given(
    st.fixed_dictionaries(
        {"subject": st.sampled_from(list(Side)), "location": st.sampled_from(list(Side))}
    ),
    st.sampled_from([*Side, None]),
)
@settings(max_examples=40, deadline=None)
def test_after_any_resolution_both_sides_converge_and_no_value_is_lost(
    fields: dict[str, Side], take: Side | None
) -> None:
    held = _held(location="R0")
    result = run(
        [],
        [],
        [replace(held, resolution=Resolution(take=take, fields=fields))],
        conflict=ConflictPolicy.MANUAL,
    )
    action = result.actions[0]
    after = action.link
    sides = {Side.MAIL: dict(held.held_mail or {}), Side.CRM: dict(held.held_crm or {})}
    for write in action.writes:
        sides[write.side].update(write.fields)
    assert sides[Side.MAIL] == sides[Side.CRM] == after.base
    for name, side in fields.items():
        assert after.base[name] == (sides[side][name])
        record = next(c for c in after.conflicts if c.field == name)
        assert record.winner is side
        assert {record.mail_value, record.crm_value} == {
            held.held_mail[name] if held.held_mail else None,
            held.held_crm[name] if held.held_crm else None,
        }
    assert after.state is LinkState.ACTIVE


def test_the_mailbox_owns_attendees_a_crm_edit_is_reverted() -> None:
    _kind, writes = only(run([], [crm("c1", snap(edited(attendees=("z@x.io",))))]))
    assert writes == [(Side.CRM, WriteOp.UPDATE, {"attendees": ("a@x.io",)})]
    _kind, writes = only(
        run(
            [mail("m1", snap(edited(attendees=("b@x.io",)), at=0))],
            [crm("c1", snap(edited(attendees=("z@x.io",)), at=9))],
        )
    )
    assert writes == [(Side.CRM, WriteOp.UPDATE, {"attendees": ("b@x.io",)})]


# -- deletes ---------------------------------------------------------------------------------


def test_a_mail_delete_deletes_the_record_by_default() -> None:
    result = run([mail("m1", None)], [])
    kind, writes = only(result)
    assert (kind, writes) == (ActionKind.DELETE, [(Side.CRM, WriteOp.DELETE, {})])
    assert result.actions[0].link.state is LinkState.TOMBSTONE


def test_a_mail_cancel_marks_the_record_when_the_org_asks() -> None:
    result = run([mail("m1", snap(BASE, cancelled=True))], [], mark_instead_of_delete=True)
    kind, writes = only(result)
    assert (kind, writes) == (ActionKind.MARK, [(Side.CRM, WriteOp.MARK, {"cancelled": True})])
    assert result.actions[0].link.tombstone is TombstoneReason.MARKED


def test_a_crm_delete_unshares_the_item_unless_the_org_asks_to_delete() -> None:
    assert only(run([], [crm("c1", None)]))[1] == [(Side.MAIL, WriteOp.UNSHARE, {})]
    assert only(run([], [crm("c1", None)], delete_mail_item=True))[1] == [
        (Side.MAIL, WriteOp.DELETE, {})
    ]


@pytest.mark.parametrize("deleted", [Side.MAIL, Side.CRM])
def test_modify_beats_delete_symmetrically(deleted: Side) -> None:
    modified = snap(edited(subject="kept"))
    changes = {
        deleted: Change(deleted, "x", None),
        deleted.other: Change(deleted.other, "y", modified),
    }
    changes[Side.MAIL] = mail("m1", changes[Side.MAIL].snapshot)
    changes[Side.CRM] = crm("c1", changes[Side.CRM].snapshot)
    result = run([changes[Side.MAIL]], [changes[Side.CRM]])
    kind, writes = only(result)
    assert (kind, writes) == (
        ActionKind.CREATE,
        [(deleted, WriteOp.CREATE, edited(subject="kept"))],
    )
    after = result.actions[0].link
    assert after.state is LinkState.ACTIVE
    assert after.native(deleted) is None


def test_a_tombstone_ignores_replayed_upserts_and_deletes() -> None:
    dead = link(state=LinkState.TOMBSTONE, tombstone=TombstoneReason.DELETED)
    result = run([mail("m1", None)], [crm("c1", snap(edited(subject="late")))], [dead])
    assert result.actions == ()


def test_deleted_on_both_sides_only_tombstones() -> None:
    kind, writes = only(run([mail("m1", None)], [crm("c1", None)]))
    assert (kind, writes) == (ActionKind.REFRESH, [])


# -- one-way ---------------------------------------------------------------------------------


def test_mail_to_crm_reverts_a_crm_edit_and_never_writes_the_mailbox() -> None:
    one_way: dict[str, Any] = {"direction": res.SYNC_DIRECTION_MAIL_TO_CRM}
    kind, writes = only(run([], [crm("c1", snap(edited(subject="crm")))], **one_way))
    assert writes == [(Side.CRM, WriteOp.UPDATE, {"subject": "Kick-off"})]
    assert run([], [crm("c9", snap({"subject": "new"}))], [], **one_way).actions == ()
    kind, writes = only(run([], [crm("c1", None)], **one_way))
    assert (kind, writes) == (ActionKind.REFRESH, [])


def test_crm_to_mail_ignores_new_mail_items() -> None:
    one_way = {"direction": res.SYNC_DIRECTION_CRM_TO_MAIL}
    result = run([mail("m9", snap({"subject": "new"}))], [], [], **one_way)
    assert (result.actions, result.skipped) == ((), 1)
    _kind, writes = only(run([], [crm("c9", snap({"subject": "new"}))], [], **one_way))
    assert writes == [(Side.MAIL, WriteOp.CREATE, {"subject": "new"})]


# -- windows and private items ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("start_days", "created"), [(-40, False), (-10, True), (100, True), (400, False)]
)
def test_events_are_created_only_inside_the_window(start_days: int, created: bool) -> None:
    start = NOW + timedelta(days=start_days)
    item = snap({"subject": "s"}, start=start, end=start + timedelta(hours=1))
    result = run([mail("m9", item)], [], [])
    assert bool(result.actions) is created


@pytest.mark.parametrize(("completed_days_ago", "created"), [(None, True), (5, True), (60, False)])
def test_open_tasks_and_recently_closed_ones_are_created(
    completed_days_ago: int | None, created: bool
) -> None:
    done = None if completed_days_ago is None else NOW - timedelta(days=completed_days_ago)
    item = snap({"subject": "call"}, completed=done)
    result = run([mail("m9", item)], [], [], kind=res.OBJECT_KIND_TASK)
    assert bool(result.actions) is created


def test_private_items_are_skipped_unless_enabled() -> None:
    private = snap({"subject": "doctor"}, is_private=True)
    assert run([mail("m9", private)], [], []).actions == ()
    assert only(run([mail("m9", private)], [], [], sync_private=True))[0] is ActionKind.CREATE


def test_an_item_turned_private_leaves_salesforce_and_returns_when_public() -> None:
    result = run([mail("m1", snap(BASE, "v2", is_private=True))], [])
    kind, writes = only(result)
    assert (kind, writes) == (ActionKind.DELETE, [(Side.CRM, WriteOp.DELETE, {})])
    removed = result.actions[0].link
    assert (removed.tombstone, removed.crm_id, removed.mail_id) == (
        TombstoneReason.PRIVATE,
        None,
        "m1",
    )
    back = run([mail("m1", snap(BASE, "v3"))], [], [removed])
    kind, writes = only(back)
    assert writes == [(Side.CRM, WriteOp.CREATE, BASE)]
    assert back.actions[0].link.state is LinkState.ACTIVE


# -- first-sync matching ---------------------------------------------------------------------


def test_events_match_by_ical_uid_and_contacts_by_email_before_any_create() -> None:
    result = run(
        [
            mail("m1", snap({"subject": "A"}, match_keys=("uid:1",))),
            mail("m2", snap({"name": "Ann"}, match_keys=("email:ann@x.io",))),
            mail("m3", snap({"subject": "only mail"})),
        ],
        [
            crm("c1", snap({"subject": "A"}, match_keys=("uid:1",))),
            crm("c2", snap({"name": "Ann B."}, at=5, match_keys=("email:ann@x.io",))),
            crm("c3", snap({"subject": "only crm"})),
        ],
        [],
    )
    kinds = sorted(
        (a.kind.value, a.link.mail_id or "", a.link.crm_id or "") for a in result.actions
    )
    assert kinds == [
        ("create", "", "c3"),
        ("create", "m3", ""),
        ("link", "m1", "c1"),
        ("link", "m2", "c2"),
    ]
    ann = next(a for a in result.actions if a.link.mail_id == "m2")
    assert [(w.side, dict(w.fields)) for w in ann.writes] == [(Side.MAIL, {"name": "Ann B."})]


def test_a_record_carrying_the_link_id_a_create_would_use_is_linked_not_duplicated() -> None:
    first = run([mail("m9", snap({"subject": "s"}))], [], [])
    link_id = first.actions[0].link.link_id
    again = run(
        [mail("m9", snap({"subject": "s"}))],
        [crm("c9", snap({"subject": "s"}, link_id=link_id))],
        [],
    )
    kind, writes = only(again)
    assert (kind, writes, again.actions[0].link.link_id) == (ActionKind.LINK, [], link_id)


def test_an_item_whose_derived_link_id_a_link_holds_for_another_item_gets_one_of_its_own() -> None:
    # A recurring task first synced from the mailbox: its link id was derived from its id.
    task = res.OBJECT_KIND_TASK
    first = run([mail("m1", snap({"subject": "report"}))], [], [], kind=task)
    holder = first.actions[0].link
    # Concord completed the occurrence: UpdateItem answered the one-off Exchange split off,
    # and the link followed it; the task, moved on, is listed again with no link naming it.
    holder = holder.on(Side.MAIL, native_id="one-off", version="v5", hash=holder.mail_hash)
    holder = holder.on(Side.CRM, native_id="c1", version="v5", hash=holder.crm_hash)
    moved_on = mail("m1", snap({"subject": "report", "due_date": "2026-06-08"}))
    result = run([moved_on], [], [holder], kind=task)
    kind, writes = only(result)
    assert (kind, writes[0][:2]) == (ActionKind.CREATE, (Side.CRM, WriteOp.CREATE))
    new_id = result.actions[0].link.link_id
    assert new_id != holder.link_id  # an upsert under it would overwrite the link's record
    # Deterministic, so a create replayed after a lost answer carries the same id, and the
    # record that answer left is linked, not created again.
    assert run([moved_on], [], [holder], kind=task).actions[0].link.link_id == new_id
    landed = crm("c2", snap({"subject": "report", "due_date": "2026-06-08"}, link_id=new_id))
    again = run([moved_on], [landed], [holder], kind=task)
    kind, writes = only(again)
    assert (kind, writes, again.actions[0].link.link_id) == (ActionKind.LINK, [], new_id)


def test_replayed_and_permuted_changes_collapse_to_the_latest() -> None:
    changes = [
        mail("m1", snap(edited(subject="old"), "v2")),
        mail("m1", snap(edited(subject="new"), "v3")),
    ]
    assert only(run(changes, []))[1] == [(Side.CRM, WriteOp.UPDATE, {"subject": "new"})]
    twice = run(changes + changes, [])
    assert only(twice)[1] == [(Side.CRM, WriteOp.UPDATE, {"subject": "new"})]


# -- the mass-delete guard -------------------------------------------------------------------


def _links(count: int) -> list[Link]:
    return [link(link_id=f"L{n}", mail_id=f"m{n}", crm_id=f"c{n}") for n in range(count)]


@pytest.mark.parametrize(
    ("links", "deleted", "guarded"),
    [(30, 20, True), (20, 19, False), (40, 20, False), (40, 21, True), (100, 100, True)],
)
def test_the_delete_guard_stops_the_pair(links: int, deleted: int, guarded: bool) -> None:
    result = run([mail(f"m{n}", None) for n in range(deleted)], [], _links(links))
    assert result.guarded is guarded
    assert bool(result.actions) is not guarded


def test_policy_from_settings_reads_every_named_setting() -> None:
    org = default_org_settings("acme")
    org.conflict_policy = cst.CONFLICT_POLICY_MANUAL
    org.mail_delete_action = cst.MAIL_DELETE_ACTION_MARK_RECORD
    org.crm_delete_action = cst.CRM_DELETE_ACTION_DELETE_ITEM
    org.private_item_policy = cst.PRIVATE_ITEM_POLICY_SYNC
    org.delete_guard_ratio = 0.25
    sharing = cst.ObjectSharing(kind=EVENT, direction=res.SYNC_DIRECTION_CRM_TO_MAIL)
    policy = SyncPolicy.from_settings(EVENT, org, sharing)
    assert policy.conflict is ConflictPolicy.MANUAL
    assert policy.mark_instead_of_delete
    assert policy.delete_mail_item
    assert policy.sync_private
    assert (policy.guard_ratio, policy.guard_min_items) == (0.25, 20)
    assert policy.past_window == timedelta(days=30)
    assert policy.future_window == timedelta(days=365)
    assert not policy.flows(Side.MAIL)
    assert policy.flows(Side.CRM)


# -- properties ------------------------------------------------------------------------------

_values = st.sampled_from(["a", "b", "c"])
_fields: st.SearchStrategy[dict[str, Value]] = st.dictionaries(
    st.sampled_from(["subject", "location"]), _values, min_size=1
)


@st.composite
def _session(draw: st.DrawFn) -> tuple[list[Link], list[Change], list[Change]]:
    count = draw(st.integers(0, 8))
    links = [
        link(base=draw(_fields), link_id=f"L{n}", mail_id=f"m{n}", crm_id=f"c{n}")
        for n in range(count)
    ]
    changes: dict[Side, list[Change]] = {Side.MAIL: [], Side.CRM: []}
    for side in Side:
        natives = [f"{side.value[0]}{n}" for n in range(count + 3)]
        for native in draw(st.lists(st.sampled_from(natives), unique=True, max_size=6)):
            deleted = draw(st.booleans()) and native[1:].isdigit() and int(native[1:]) < count
            snapshot = None if deleted else snap(draw(_fields), at=draw(st.integers(0, 9)))
            changes[side].append(Change(side, native, snapshot))
    return links, changes[Side.MAIL], changes[Side.CRM]


@settings(max_examples=200, deadline=None, database=None)
@given(session=_session(), data=st.data())
def test_replayed_and_permuted_notifications_plan_the_same(
    session: tuple[list[Link], list[Change], list[Change]], data: st.DataObject
) -> None:
    links, mail_changes, crm_changes = session
    policy = SyncPolicy(kind=res.OBJECT_KIND_CONTACT)
    expected = plan("mb", mail_changes, crm_changes, links, policy, NOW)
    replayed_mail = data.draw(st.permutations(mail_changes + mail_changes))
    replayed_crm = data.draw(st.permutations(crm_changes + crm_changes))
    shuffled_links = data.draw(st.permutations(links))
    again = plan("mb", replayed_mail, replayed_crm, shuffled_links, policy, NOW)
    key = lambda a: a.link.link_id  # noqa: E731
    assert sorted(again.actions, key=key) == sorted(expected.actions, key=key)
