"""The link store as one session uses it (`SessionLinks`, issue #18): the pairs' first reads of
a mailbox in one go, no write of a cursor that did not move, and nothing read kept past a write
that may have changed it (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event

from concord.common.v1 import resources_pb2 as res
from concord_reconciler.kernel.kinds import Kind
from concord_reconciler.mailboxes.domain.model import MailboxRecord
from concord_reconciler.mirror.adapters.links import SqlLinkStore
from concord_reconciler.mirror.adapters.session_links import SessionLinks
from concord_reconciler.mirror.domain.ports import Intent
from concord_reconciler.mirror.domain.sync import Link, Side
from concord_reconciler.sessions.adapters.store import SqlStore
from concord_store import create_engine, migrate

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

KINDS = (res.OBJECT_KIND_CALENDAR_ITEM, res.OBJECT_KIND_TASK, res.OBJECT_KIND_CONTACT)


@pytest.fixture
async def links(store_url: str) -> AsyncIterator[SqlLinkStore]:
    engine = create_engine(store_url)
    await migrate(engine, "concord_reconciler.migrations")
    await SqlStore(engine).insert_mailbox(
        MailboxRecord(
            mailbox_id="demo",
            org_id="acme",
            owner_user_id="u1",
            crm_user_id="005000000000001AAA",
            address="demo@example.com",
            provider=res.MAIL_PROVIDER_GRAPH,
        )
    )
    yield SqlLinkStore(engine)
    await engine.dispose()


@contextmanager
def statements(links: SqlLinkStore) -> Iterator[list[str]]:
    """The SQL statements run on the store's engine meanwhile (their first words)."""
    seen: list[str] = []

    def count(*args: object) -> None:
        seen.append(" ".join(str(args[2]).split()[:3]))

    event.listen(links.engine.sync_engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(links.engine.sync_engine, "before_cursor_execute", count)


def _link(link_id: str, kind: Kind, n: int) -> Link:
    return Link(
        link_id=link_id,
        mailbox_id="demo",
        kind=kind,
        mail_id=f"m-{n}",
        crm_id=f"c-{n}",
        mail_version="1",
        crm_version="1",
        mail_hash="a" * 64,
        crm_hash="b" * 64,
        base={"Subject": f"item {n}"},
    )


async def _pair_reads(store: SessionLinks, kind: Kind) -> tuple[object, ...]:
    """What a pair reads before it lists (`executor.sync_pair`), in its order."""
    return (
        await store.pending_intents("demo", kind),
        sorted(link.link_id for link in await store.load_links("demo", kind)),
        await store.load_cursors("demo", kind),
        await store.released("demo", kind),
    )


async def _seed(links: SqlLinkStore) -> None:
    for n, kind in enumerate(KINDS):
        await links.commit(
            "demo",
            kind,
            [_link(f"link-{kind}", kind, n)],
            [],
            cursors={Side.MAIL: f"mail-{kind}", Side.CRM: f"crm-{kind}"},
        )


async def test_a_sessions_pairs_read_the_mailbox_once_and_see_what_the_store_holds(
    links: SqlLinkStore,
) -> None:
    await _seed(links)
    session = SessionLinks(links)
    with statements(links) as seen:
        read = [await _pair_reads(session, kind) for kind in KINDS]
    # Four statements for the three pairs (journal, links, cursors, released), not twelve.
    assert len(seen) == 4, seen
    assert read == [await _pair_reads(SessionLinks(links), kind) for kind in KINDS]
    assert read[1] == (
        [],
        [f"link-{res.OBJECT_KIND_TASK}"],
        {Side.MAIL: f"mail-{res.OBJECT_KIND_TASK}", Side.CRM: f"crm-{res.OBJECT_KIND_TASK}"},
        set(),
    )
    # A second round of a pair reads the database again.
    with statements(links) as seen:
        await _pair_reads(session, KINDS[0])
    assert len(seen) == 4, seen


async def test_a_quiet_pair_writes_no_cursor_that_did_not_move(links: SqlLinkStore) -> None:
    await _seed(links)
    session = SessionLinks(links)
    kind = KINDS[0]
    cursors = await session.load_cursors("demo", kind)
    with statements(links) as seen:
        # Both sides answered the cursors they were given: nothing to write, no transaction.
        await session.commit("demo", kind, [], [], cursors=dict(cursors))
        await session.flush()
    assert seen == []
    with statements(links) as seen:
        # One side moved: held back until the session's flush, then that cursor alone.
        await session.commit("demo", kind, [], [], cursors={**cursors, Side.CRM: "crm-2"})
    assert seen == []
    # The session sees the cursor where it moved it.
    assert await session.load_cursors("demo", kind) == {**cursors, Side.CRM: "crm-2"}
    with statements(links) as seen:
        await session.flush()
    assert seen == ["INSERT INTO sync_cursors"], seen
    assert await links.load_cursors("demo", kind) == {Side.MAIL: f"mail-{kind}", Side.CRM: "crm-2"}
    with statements(links) as seen:
        # ... and once written, it is the stored one: moving back is a write again, and a
        # cursor moved and moved back before the flush is no write at all.
        await session.commit("demo", kind, [], [], cursors={**cursors, Side.CRM: "crm-3"})
        await session.commit("demo", kind, [], [], cursors={**cursors, Side.CRM: "crm-2"})
        await session.flush()
        assert seen == []
        await session.commit("demo", kind, [], [], cursors=dict(cursors))
        await session.flush()
    assert len(seen) == 1, seen
    assert await links.load_cursors("demo", kind) == cursors


async def test_the_cursors_held_back_are_written_in_one_statement_at_the_flush(
    links: SqlLinkStore,
) -> None:
    """A session's pairs that list nothing to write, its walk past its own writes and its
    email pages each move cursors: one transaction for them all, not one each."""
    await _seed(links)
    session = SessionLinks(links)
    for kind in KINDS:
        await _pair_reads(session, kind)
    with statements(links) as seen:
        for n, kind in enumerate(KINDS):
            await session.commit("demo", kind, [], [], cursors={Side.MAIL: f"moved-{n}"})
    assert seen == []
    # Until the flush the store holds the cursors as they were: a session that ends before it
    # lists those changes again next time.
    assert await SessionLinks(links).load_cursors("demo", KINDS[0]) == {
        Side.MAIL: f"mail-{KINDS[0]}",
        Side.CRM: f"crm-{KINDS[0]}",
    }
    with statements(links) as seen:
        await session.flush()
        await session.flush()  # nothing left to write
    assert seen == ["INSERT INTO sync_cursors"], seen
    assert [(await links.load_cursors("demo", kind))[Side.MAIL] for kind in KINDS] == [
        "moved-0",
        "moved-1",
        "moved-2",
    ]


async def test_a_commit_with_links_writes_its_cursors_at_once(links: SqlLinkStore) -> None:
    await _seed(links)
    session = SessionLinks(links)
    kind = KINDS[0]
    await _pair_reads(session, kind)
    await session.commit("demo", kind, [], [], cursors={Side.CRM: "held"})
    # The pair goes on and commits links with its cursors: written now, the held one with
    # them (it is the same side's, moved on).
    await session.commit("demo", kind, [_link("made", kind, 5)], [], cursors={Side.CRM: "last"})
    assert await links.load_cursors("demo", kind) == {Side.MAIL: f"mail-{kind}", Side.CRM: "last"}
    with statements(links) as seen:
        await session.flush()
    assert seen == []


async def test_a_cursor_the_session_never_read_is_written(links: SqlLinkStore) -> None:
    await _seed(links)
    kind = KINDS[0]
    session = SessionLinks(links)
    stored = await links.load_cursors("demo", kind)
    with statements(links) as seen:
        await session.commit("demo", kind, [], [], cursors=stored)
    assert len(seen) == 1, seen


async def test_what_a_session_wrote_is_read_again_not_taken_from_its_first_read(
    links: SqlLinkStore,
) -> None:
    await _seed(links)
    session = SessionLinks(links)
    first, second = KINDS[0], KINDS[1]
    await _pair_reads(session, first)
    # The first pair commits a link: a link id says nothing of its kind, so every kind's
    # links are read from the database from now on.
    await session.commit("demo", first, [_link("new", second, 9)], [])
    assert sorted(link.link_id for link in await session.load_links("demo", second)) == [
        f"link-{second}",
        "new",
    ]
    # A journalled intent is pending for the next pair's recovery.
    third = KINDS[2]
    intent = Intent("journalled", third, _link("journalled", third, 7), ())
    await session.journal("demo", [intent])
    assert [i.link_id for i in await session.pending_intents("demo", third)] == ["journalled"]


async def test_a_pair_that_wrote_leaves_the_other_kinds_first_read_standing(
    links: SqlLinkStore,
) -> None:
    """A change session: the pair of the change commits its links, and the pairs after it are
    still served by the session's first read."""
    await _seed(links)
    session = SessionLinks(links)
    first, second = KINDS[0], KINDS[1]
    await _pair_reads(session, first)
    await session.journal("demo", [Intent("made", first, _link("made", first, 5), ())])
    await session.commit("demo", first, [_link("made", first, 5)], ["made"])
    with statements(links) as seen:
        read = await _pair_reads(session, second)
    assert seen == []
    assert read == await _pair_reads(SessionLinks(links), second)


async def test_a_link_id_another_kind_held_makes_that_kind_read_again(
    links: SqlLinkStore,
) -> None:
    """An item may carry a link id of another kind: the commit moves that link to its new
    kind, and the other kind's first read no longer says what the store holds."""
    await _seed(links)
    session = SessionLinks(links)
    first, second = KINDS[0], KINDS[1]
    await _pair_reads(session, first)
    await session.commit("demo", first, [_link(f"link-{second}", first, 1)], [])
    assert [link.link_id for link in await session.load_links("demo", second)] == []


async def test_a_journal_is_one_statement_and_replaces_a_leftover_intent(
    links: SqlLinkStore,
) -> None:
    kind = KINDS[0]
    await links.journal("demo", [Intent("left", kind, _link("left", kind, 1), ())])
    again = [
        Intent("left", kind, _link("left", kind, 2), ()),
        Intent("other", kind, _link("other", kind, 3), ()),
    ]
    with statements(links) as seen:
        await links.journal("demo", again)
    assert seen == ["INSERT INTO write_journal"], seen
    pending = await links.pending_intents("demo", kind)
    assert sorted((i.link_id, i.link_after.mail_id) for i in pending) == [
        ("left", "m-2"),
        ("other", "m-3"),
    ]
