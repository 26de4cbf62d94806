"""Conflicts held under the manual policy, listed and resolved over gRPC (no consumer)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from concord.common.v1 import resources_pb2 as res
from concord.reconciler.v1 import reconciler_service_pb2 as api
from concord_reconciler.mirror.adapters.links import SqlLinkStore
from concord_reconciler.mirror.domain.sync import (
    FieldConflict,
    Link,
    LinkState,
    Resolution,
    Side,
    Value,
    content_hash,
)
from concord_rpc import from_rpc_error

from .conftest import Reconciler
from .test_api import _status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

EVENT = res.OBJECT_KIND_CALENDAR_ITEM
BASE: dict[str, Value] = {"Subject": "Kick-off", "Location": "Room 1"}


def _held(n: int, mailbox_id: str = "demo") -> Link:
    mail_fields = {**BASE, "Subject": f"M{n}", "Location": ("a", 1)}
    crm_fields = {**BASE, "Subject": f"C{n}", "Location": None}
    return Link(
        link_id=f"00000000-0000-4000-8000-{n:012d}",
        mailbox_id=mailbox_id,
        kind=EVENT,
        mail_id=f"AAMk{n}",
        crm_id=f"00U00000000000{n}",
        mail_hash=content_hash(mail_fields),
        crm_hash=content_hash(crm_fields),
        base=BASE,
        state=LinkState.CONFLICT,
        held_mail=mail_fields,
        held_crm=crm_fields,
        conflicts=(
            FieldConflict("Subject", "old", "older", Side.CRM),
            FieldConflict("Location", ("a", 1), None, None),
            FieldConflict("Subject", f"M{n}", f"C{n}", None),
        ),
    )


async def _seed(reconciler: Reconciler, *held: Link) -> SqlLinkStore:
    links = SqlLinkStore(reconciler.store.engine)
    await links.commit("demo", EVENT, list(held), [])
    return links


async def test_held_conflicts_are_listed_in_pages_with_both_values(
    reconciler: Reconciler,
) -> None:
    await reconciler.add_mailbox()
    active = Link(link_id="00000000-0000-4000-8000-999999999999", mailbox_id="demo", kind=EVENT)
    await _seed(reconciler, _held(1), _held(2), _held(3), active)
    first = await reconciler.stub.ListConflicts(
        api.ListConflictsRequest(parent="mailboxes/demo", page_size=2)
    )
    assert [c.name for c in first.conflicts] == [
        f"mailboxes/demo/conflicts/{_held(n).link_id}" for n in (1, 2)
    ]
    shown = first.conflicts[0]
    assert (shown.kind, shown.mail_ref.native_id, shown.crm_record_id) == (
        EVENT,
        "AAMk1",
        "00U000000000001",
    )
    assert [(f.field, f.mail_value, f.crm_value) for f in shown.fields] == [
        ("Location", _value(["a", 1]), _value(None)),
        ("Subject", _value("M1"), _value("C1")),
    ]
    assert not shown.resolution_pending
    rest = await reconciler.stub.ListConflicts(
        api.ListConflictsRequest(parent="mailboxes/demo", page_token=first.next_page_token)
    )
    assert [c.mail_ref.native_id for c in rest.conflicts] == ["AAMk3"]
    assert not rest.next_page_token
    missing = await _status(
        reconciler.stub.ListConflicts(api.ListConflictsRequest(parent="mailboxes/nobody"))
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND


def _value(plain: Any) -> struct_pb2.Value:
    holder = struct_pb2.Struct()
    holder.update({"v": plain})
    return holder.fields["v"]


async def test_a_resolution_is_checked_recorded_once_and_asks_for_a_session(
    reconciler: Reconciler,
) -> None:
    await reconciler.add_mailbox()
    held = _held(1)
    links = await _seed(reconciler, held)
    name = f"mailboxes/demo/conflicts/{held.link_id}"

    partial = await _status(
        reconciler.stub.ResolveConflict(
            api.ResolveConflictRequest(
                name=name, fields=[api.ConflictChoice(field="Subject", take=res.SYNC_SIDE_MAIL)]
            )
        )
    )
    assert partial.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Location" in (partial.details() or "")
    unknown = await _status(
        reconciler.stub.ResolveConflict(
            api.ResolveConflictRequest(
                name=name,
                take=res.SYNC_SIDE_MAIL,
                fields=[api.ConflictChoice(field="Body", take=res.SYNC_SIDE_CRM)],
            )
        )
    )
    assert unknown.code() == grpc.StatusCode.INVALID_ARGUMENT
    no_side = await _status(
        reconciler.stub.ResolveConflict(
            api.ResolveConflictRequest(
                name=name, take=res.SYNC_SIDE_MAIL, fields=[api.ConflictChoice(field="Subject")]
            )
        )
    )
    assert no_side.code() == grpc.StatusCode.INVALID_ARGUMENT
    for other in (f"mailboxes/other/conflicts/{held.link_id}", "mailboxes/demo/conflicts/x"):
        gone = await _status(
            reconciler.stub.ResolveConflict(
                api.ResolveConflictRequest(name=other, take=res.SYNC_SIDE_MAIL)
            )
        )
        assert gone.code() == grpc.StatusCode.NOT_FOUND
        assert from_rpc_error(gone).reason == "CONFLICT_NOT_FOUND"
    assert (await links.get_link(held.link_id)) == held

    request = api.ResolveConflictRequest(
        name=name,
        take=res.SYNC_SIDE_MAIL,
        fields=[api.ConflictChoice(field="Location", take=res.SYNC_SIDE_CRM)],
        request_id="choice-1",
    )
    resolved = await reconciler.stub.ResolveConflict(request)
    assert resolved.conflict.resolution_pending
    assert resolved.session.trigger == res.SESSION_TRIGGER_RETRY
    stored = await links.get_link(held.link_id)
    assert stored is not None
    assert stored.resolution == Resolution(take=Side.MAIL, fields={"Location": Side.CRM})
    assert await reconciler.stub.ResolveConflict(request) == resolved
    listed = await reconciler.stub.ListConflicts(api.ListConflictsRequest(parent="mailboxes/demo"))
    assert [c.resolution_pending for c in listed.conflicts] == [True]


async def test_a_session_keeps_a_choice_made_while_it_ran_and_clears_it_once_applied(
    reconciler: Reconciler,
) -> None:
    await reconciler.add_mailbox()
    held = _held(1)
    links = await _seed(reconciler, held)
    choice = Resolution(take=Side.CRM)
    assert await links.resolve(held.link_id, choice)
    # The session loaded the link before the choice and holds it again with a new version.
    await links.commit("demo", EVENT, [replace(held, mail_version="v9")], [])
    stored = await links.get_link(held.link_id)
    assert stored is not None
    assert (stored.mail_version, stored.resolution) == ("v9", choice)
    await links.commit("demo", EVENT, [replace(held, state=LinkState.ACTIVE)], [])
    settled = await links.get_link(held.link_id)
    assert settled is not None
    assert settled.resolution is None
    assert not await links.resolve(held.link_id, choice)
