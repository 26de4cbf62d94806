"""What a quiet session costs the reconciler's database (issue #18: a replica's CPU goes mostly
to its sessions' SQL): the statements the consumer runs for a session with nothing to do,
counted (not timed) with a SQLAlchemy event listener."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import pytest
from google.protobuf import duration_pb2
from sqlalchemy import event
from sqlalchemy.engine.default import CACHE_HIT
from sqlalchemy.ext.asyncio import AsyncEngine

from concord.common.v1 import resources_pb2 as res
from concord.reconciler.v1 import reconciler_service_pb2 as api
from concord.reconciler.v1 import resources_pb2 as rres
from concord_reconciler.mirror.adapters.links import SqlLinkStore
from concord_reconciler.mirror.domain.sync import Side

from .conftest import Reconciler

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


async def _session(reconciler: Reconciler) -> None:
    requested = await reconciler.stub.RequestSession(
        api.RequestSessionRequest(mailbox="mailboxes/demo", trigger=res.SESSION_TRIGGER_FORCE)
    )
    timeout = duration_pb2.Duration()
    timeout.FromMilliseconds(5000)
    waited = await reconciler.stub.WaitSession(
        api.WaitSessionRequest(name=requested.session.name, timeout=timeout)
    )
    assert waited.session.state == rres.SESSION_STATE_COMPLETED
    # The consumer acknowledges after the outcome is announced: let it finish.
    await asyncio.sleep(0.2)


async def _started(reconciler: Reconciler) -> None:
    """The demo mailbox with the consumer running and its first session done: every pair has
    listed in full and kept its cursors."""
    await reconciler.add_mailbox()
    await reconciler.start_consumer()
    await _session(reconciler)


@dataclass(frozen=True)
class Ran:
    statement: str
    compiled: bool  # built anew, not found in SQLAlchemy's compiled cache

    @property
    def head(self) -> str:
        return " ".join(self.statement.split()[:3])


async def consumer_statements(engine: AsyncEngine, session: Awaitable[object]) -> list[Ran]:
    """The statements `session` (a session requested and waited for) runs in the consumer's
    own tasks: not the API answering RequestSession or WaitSession."""
    ran: list[Ran] = []

    def record(conn: Any, cursor: Any, statement: str, params: Any, context: Any, *_: Any) -> None:
        task = asyncio.current_task()
        if task is not None and task.get_name().startswith("session-consumer"):
            ran.append(Ran(statement, context.cache_hit is not CACHE_HIT))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        await session
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    return ran


async def _consumer_statements(reconciler: Reconciler) -> list[Ran]:
    return await consumer_statements(reconciler.store.engine, _session(reconciler))


async def test_a_quiet_session_runs_few_statements_and_writes_only_its_record(
    reconciler: Reconciler,
) -> None:
    await _started(reconciler)
    seen = [ran.head for ran in await _consumer_statements(reconciler)]
    reads = [s for s in seen if s.startswith("SELECT")]
    writes = [s for s in seen if not s.startswith("SELECT")]
    # The session (read before its lease), its mailbox with both settings rows, and the three
    # pairs' journal, links, cursors and released sides read once for all (it was 27 in all:
    # the session and mailbox read twice, settings one by one, 4 reads and 2 cursor writes a
    # pair).
    assert len(reads) == 6, seen
    # Its record (RUNNING, then COMPLETED) and the end of a back-off, if any; no cursor that
    # did not move.
    assert writes == ["UPDATE sessions SET", "UPDATE sessions SET", "UPDATE mailboxes SET"], seen


async def test_a_session_whose_cursors_move_runs_only_statements_compiled_before(
    reconciler: Reconciler,
) -> None:
    await _started(reconciler)
    # Every pair's mail cursor moves: each commits it, as a session after a change does.
    reconciler.mail.state_token = "t2"
    await _session(reconciler)  # every statement such a session runs is compiled once here
    reconciler.mail.state_token = "t3"
    ran = await _consumer_statements(reconciler)
    assert "INSERT INTO sync_cursors" in [r.head for r in ran], ran
    # A statement built anew with its rows in it (an upsert's VALUES) has no cache key: it is
    # compiled again every time it runs, the reconciler's CPU spent for nothing.
    assert [r.statement for r in ran if r.compiled] == []


async def test_a_session_whose_cursors_move_writes_them_all_in_one_statement(
    reconciler: Reconciler,
) -> None:
    await _started(reconciler)
    # Every pair's mail cursor moves, as after a change in the mailbox.
    reconciler.mail.state_token = "t2"
    seen = [ran.head for ran in await _consumer_statements(reconciler)]
    # The three pairs' cursors in one statement of one transaction, not one transaction each.
    assert [s for s in seen if not s.startswith("SELECT")] == [
        "UPDATE sessions SET",
        "INSERT INTO sync_cursors",
        "UPDATE sessions SET",
        "UPDATE mailboxes SET",
    ], seen
    links = SqlLinkStore(reconciler.store.engine)
    for kind in (res.OBJECT_KIND_CALENDAR_ITEM, res.OBJECT_KIND_TASK, res.OBJECT_KIND_CONTACT):
        assert (await links.load_cursors("demo", kind))[Side.MAIL] == "t2"
