"""The sync-side contract: every `SyncSide` — in memory, and over the peers' gRPC APIs against
the Exchange and Salesforce emulators — keeps the same promises to the engine.

One scenario per implementation (the gRPC sides share one stack of real processes): a create
is found by its link id and listed after the cursor, a replayed create finds the first item, an
update checked against a stale version is refused, a delete is listed as a removal and is
harmless twice.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Mapping

import pytest

from concord.common.v1 import resources_pb2 as res
from concord_reconciler.mirror.adapters.crm_side import CrmSyncSide
from concord_reconciler.mirror.adapters.mail_side import MailSyncSide
from concord_reconciler.mirror.adapters.memory import MemorySide
from concord_reconciler.mirror.adapters.peers import PeerChannels
from concord_reconciler.mirror.adapters.sync_sides import SessionMapping
from concord_reconciler.mirror.domain.ports import SyncSide
from concord_reconciler.mirror.domain.sync import Side, Snapshot, Value, Write, WriteOp
from concord_rpc.identity import IdentitySigner, acting_as
from concord_testing import TEST_IDENTITY_KEY

from .test_sync_connectors import (  # noqa: F401 (fixtures)
    DEMO_ADMIN,
    ORG,
    Stack,
    exchange,
    salesforce,
    stack,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

CONTACT = res.OBJECT_KIND_CONTACT


def _contact(tag: str) -> dict[str, Value]:
    """A contact in the common field space (Salesforce's, as mapping writes it)."""
    return {"FirstName": "Ann", "LastName": f"Lee {tag}", "Email": f"ann.{tag}@acme.example"}


async def _holds(
    side: SyncSide, fields_of: Callable[[str], Mapping[str, Value]], edited: str
) -> None:
    """The contract, in one scenario over `side`."""
    start = await side.list_changes(CONTACT, "")
    assert not start.full_resync_required
    cursor = start.next_cursor
    tag = uuid.uuid4().hex[:8]
    link_id = str(uuid.uuid4())
    wanted = fields_of(tag)

    # A create is written once per link id: a replay finds the first item.
    (created,) = await side.apply(
        CONTACT, [Write(side.side, WriteOp.CREATE, link_id, fields=wanted)]
    )
    assert created.ok, created
    assert created.native_id
    (again,) = await side.apply(CONTACT, [Write(side.side, WriteOp.CREATE, link_id, fields=wanted)])
    assert again.ok
    assert again.native_id == created.native_id
    assert again.already_applied

    # Found by its link id and fetched by its native id, with the fields written.
    found = await side.find(CONTACT, [link_id, str(uuid.uuid4())])
    assert list(found) == [link_id]
    ((native, snapshot),) = found[link_id]
    assert native == created.native_id
    assert {k: snapshot.fields.get(k) for k in wanted} == dict(wanted)
    fetched = await side.fetch(CONTACT, [native])
    assert list(fetched) == [native]
    version = fetched[native].version
    assert version

    # Listed after the cursor, with its link id.
    listed = await _changes_after(side, cursor)
    assert native in listed
    snapshot_listed = listed[native]
    assert snapshot_listed is not None
    assert snapshot_listed.link_id == link_id

    # An update against the version read goes through; one against a stale version does not.
    update = Write(side.side, WriteOp.UPDATE, link_id, native, version, {edited: "Edited"})
    (updated,) = await side.apply(CONTACT, [update])
    assert updated.ok, updated
    (stale,) = await side.apply(CONTACT, [update])
    assert not stale.ok
    assert stale.reason == "VERSION_MISMATCH"
    assert stale.retryable
    assert (await side.fetch(CONTACT, [native]))[native].fields.get(edited) == "Edited"

    # A delete is listed as a removal; deleting again is harmless.
    cursor = (await side.list_changes(CONTACT, cursor)).next_cursor or cursor
    (deleted,) = await side.apply(CONTACT, [Write(side.side, WriteOp.DELETE, link_id, native)])
    assert deleted.ok
    assert await side.fetch(CONTACT, [native]) == {}
    after_delete = await _changes_after(side, cursor)
    assert native in after_delete
    assert after_delete[native] is None
    (twice,) = await side.apply(CONTACT, [Write(side.side, WriteOp.DELETE, link_id, native)])
    assert twice.ok


async def _changes_after(side: SyncSide, cursor: str) -> dict[str, Snapshot | None]:
    """Every change listed after `cursor`, all pages, by native id (None: removed)."""
    changes: dict[str, Snapshot | None] = {}
    while True:
        page = await side.list_changes(CONTACT, cursor)
        assert not page.full_resync_required
        changes.update({c.native_id: c.snapshot for c in page.changes})
        cursor = page.next_cursor
        if not page.has_more:
            return changes


@pytest.mark.parametrize("which", [Side.MAIL, Side.CRM])
async def test_the_memory_side_holds_the_contract(which: Side) -> None:
    clock = itertools.count(1)
    await _holds(MemorySide(which, lambda: next(clock)), _contact, "LastName")


async def test_the_grpc_sides_hold_the_contract_over_the_emulators(
    stack: Stack,  # noqa: F811 (the fixture)
) -> None:
    mailbox_id, _ = await stack.add_mailbox()
    channels = PeerChannels.open(
        mail_addr=stack.peers["mail-connector"],
        crm_addr=stack.peers["crm-connector"],
        mapping_addr=stack.peers["mapping"],
        linker_addr=stack.peers["linker"],
        timeout=30.0,
        signer=IdentitySigner(TEST_IDENTITY_KEY),
    )
    try:
        with acting_as(DEMO_ADMIN):
            mapping = SessionMapping(channels.mapping, ORG, stack.crm_user_id)
            mail = MailSyncSide(channels.mail, mapping, f"mailboxes/{mailbox_id}")
            crm = CrmSyncSide(channels.crm, mapping, channels.linker, ORG, stack.crm_user_id)
            await _holds(mail, _contact, "LastName")
            await _holds(crm, _contact, "LastName")
    finally:
        await channels.close()
