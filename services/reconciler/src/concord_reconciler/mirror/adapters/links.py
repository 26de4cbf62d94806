"""The link store on SQL: links, cursors and the write journal, committed together."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Executable, Table, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from concord_reconciler.kernel.clock import utcnow
from concord_reconciler.kernel.kinds import Kind
from concord_reconciler.kernel.schema import item_errors, links, sync_cursors, write_journal
from concord_reconciler.kernel.sql import from_us, to_us
from concord_reconciler.mirror.domain.ports import Intent, ItemFailure, NativeIdTaken
from concord_reconciler.mirror.domain.sync import (
    FieldConflict,
    Link,
    LinkState,
    Resolution,
    Side,
    TombstoneReason,
    Value,
    Write,
    WriteOp,
    freeze,
)

__all__ = [
    "MailboxRows",
    "SqlLinkStore",
    "intent_from_json",
    "intent_to_json",
    "link_from_row",
    "link_to_row",
]

_SIDE_NUMBER = {Side.MAIL: 1, Side.CRM: 2}  # concord.common.v1.SyncSide
# Ids per IN list: far below SQLite's and PostgreSQL's limits on bound parameters.
_IN_CHUNK = 500


def _fields_to_json(fields: Mapping[str, Value] | None) -> dict[str, Any] | None:
    if fields is None:
        return None
    return {k: _plain(v) for k, v in fields.items()}


def _plain(value: Value) -> Any:
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


def _fields_from_json(data: Mapping[str, Any] | None) -> dict[str, Value] | None:
    if data is None:
        return None
    return {k: freeze(v) for k, v in data.items()}


def _resolution_to_json(resolution: Resolution | None) -> dict[str, Any] | None:
    if resolution is None:
        return None
    return {
        "take": resolution.take.value if resolution.take is not None else None,
        "fields": {name: side.value for name, side in resolution.fields.items()},
    }


def _resolution_from_json(data: Mapping[str, Any] | None) -> Resolution | None:
    if data is None:
        return None
    take = data.get("take")
    return Resolution(
        take=Side(take) if take else None,
        fields={name: Side(side) for name, side in data.get("fields", {}).items()},
    )


def _us(value: datetime | None) -> int | None:
    return to_us(value) if value is not None else None


def link_to_row(link: Link) -> dict[str, Any]:
    return {
        "link_id": link.link_id,
        "mailbox_id": link.mailbox_id,
        "kind": link.kind,
        "mail_id": link.mail_id,
        "crm_id": link.crm_id,
        "mail_version": link.mail_version,
        "crm_version": link.crm_version,
        "mail_hash": link.mail_hash,
        "crm_hash": link.crm_hash,
        "base": _fields_to_json(link.base),
        "state": link.state.value,
        "tombstone": link.tombstone.value,
        "conflicts": [
            {
                "field": c.field,
                "mail": _plain(c.mail_value),
                "crm": _plain(c.crm_value),
                "winner": c.winner.value if c.winner is not None else None,
            }
            for c in link.conflicts
        ],
        "held_mail": _fields_to_json(link.held_mail),
        "held_crm": _fields_to_json(link.held_crm),
        "resolution": _resolution_to_json(link.resolution),
        "series_link_id": link.series_link_id,
        "original_start_us": _us(link.original_start),
    }


def link_from_row(row: Mapping[str, Any] | RowMapping) -> Link:
    return Link(
        link_id=row["link_id"],
        mailbox_id=row["mailbox_id"],
        kind=row["kind"],
        mail_id=row["mail_id"],
        crm_id=row["crm_id"],
        mail_version=row["mail_version"],
        crm_version=row["crm_version"],
        mail_hash=row["mail_hash"],
        crm_hash=row["crm_hash"],
        base=_fields_from_json(row["base"]) or {},
        state=LinkState(row["state"]),
        tombstone=TombstoneReason(row["tombstone"]),
        conflicts=tuple(
            FieldConflict(
                c["field"],
                freeze(c["mail"]),
                freeze(c["crm"]),
                Side(c["winner"]) if c["winner"] else None,
            )
            for c in row["conflicts"]
        ),
        held_mail=_fields_from_json(row["held_mail"]),
        held_crm=_fields_from_json(row["held_crm"]),
        resolution=_resolution_from_json(row["resolution"]),
        series_link_id=row["series_link_id"],
        original_start=(
            from_us(row["original_start_us"]) if row["original_start_us"] is not None else None
        ),
    )


def intent_to_json(intent: Intent) -> dict[str, Any]:
    return {
        "link": link_to_row(intent.link_after),
        "writes": [
            {
                "side": w.side.value,
                "op": w.op.value,
                "link_id": w.link_id,
                "native_id": w.native_id,
                "expected_version": w.expected_version,
                "fields": _fields_to_json(w.fields),
                **({"relink": True} if w.relink else {}),
            }
            for w in intent.writes
        ],
    }


def intent_from_json(kind: Kind, data: Mapping[str, Any]) -> Intent:
    link = link_from_row(data["link"])
    writes = tuple(
        Write(
            side=Side(w["side"]),
            op=WriteOp(w["op"]),
            link_id=w["link_id"],
            native_id=w["native_id"],
            expected_version=w["expected_version"],
            fields=_fields_from_json(w["fields"]) or {},
            relink=bool(w.get("relink", False)),
        )
        for w in data["writes"]
    )
    return Intent(link.link_id, kind, link, writes)


class SqlLinkStore:
    """Implements the domain's LinkStore on the reconciler's database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def mailbox_rows(self, mailbox_id: str) -> MailboxRows:
        """What the pairs of a session read first, for every kind of the mailbox at once: its
        journal, links, cursors and released sides, on one connection."""
        rows = MailboxRows()
        async with self.engine.connect() as conn:
            journal = await conn.execute(
                select(write_journal.c.kind, write_journal.c.intent)
                .where(write_journal.c.mailbox_id == mailbox_id)
                .order_by(write_journal.c.create_time_us, write_journal.c.link_id)
            )
            for kind, data in journal.all():
                rows.intents.setdefault(kind, []).append(intent_from_json(kind, data))
            found = await conn.execute(select(links).where(links.c.mailbox_id == mailbox_id))
            for row in found.mappings().all():
                rows.links.setdefault(row["kind"], []).append(link_from_row(row))
            cursors = await conn.execute(
                select(sync_cursors.c.kind, sync_cursors.c.side, sync_cursors.c.token).where(
                    sync_cursors.c.mailbox_id == mailbox_id, sync_cursors.c.collection == ""
                )
            )
            for kind, side, token in cursors.all():
                rows.cursors.setdefault(kind, {})[Side(side)] = token
            released = await conn.execute(
                select(item_errors.c.kind, item_errors.c.side)
                .where(item_errors.c.mailbox_id == mailbox_id, item_errors.c.quarantined.is_(False))
                .distinct()
            )
            sides = {number: side for side, number in _SIDE_NUMBER.items()}
            for kind, number in released.all():
                if number in sides:
                    rows.released.setdefault(kind, set()).add(sides[number])
        return rows

    async def load_links(self, mailbox_id: str, kind: Kind) -> list[Link]:
        query = select(links).where(links.c.mailbox_id == mailbox_id, links.c.kind == kind)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [link_from_row(row) for row in rows]

    async def get_link(self, link_id: str) -> Link | None:
        async with self.engine.connect() as conn:
            row = (
                (await conn.execute(select(links).where(links.c.link_id == link_id)))
                .mappings()
                .first()
            )
        return link_from_row(row) if row is not None else None

    async def list_conflicts(self, mailbox_id: str, after: str, limit: int) -> list[Link]:
        """The mailbox's held links, by link id after `after`."""
        query = (
            select(links)
            .where(
                links.c.mailbox_id == mailbox_id,
                links.c.state == LinkState.CONFLICT.value,
                links.c.link_id > after,
            )
            .order_by(links.c.link_id)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [link_from_row(row) for row in rows]

    async def resolve(self, link_id: str, resolution: Resolution) -> bool:
        """Records the user's choice on a link still held; False if it is no longer held."""
        query = (
            update(links)
            .where(links.c.link_id == link_id, links.c.state == LinkState.CONFLICT.value)
            .values(resolution=_resolution_to_json(resolution), update_time_us=to_us(utcnow()))
        )
        async with self.engine.begin() as conn:
            return bool((await conn.execute(query)).rowcount)

    async def load_cursors(self, mailbox_id: str, kind: Kind) -> dict[Side, str]:
        query = select(sync_cursors.c.side, sync_cursors.c.token).where(
            sync_cursors.c.mailbox_id == mailbox_id,
            sync_cursors.c.kind == kind,
            sync_cursors.c.collection == "",
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {Side(side): token for side, token in rows}

    async def released(self, mailbox_id: str, kind: Kind) -> set[Side]:
        # Only the engine records item errors of the mirrored kinds, always quarantined; one
        # that is not was released by RetryItem.
        query = select(item_errors.c.side).where(
            item_errors.c.mailbox_id == mailbox_id,
            item_errors.c.kind == kind,
            item_errors.c.quarantined.is_(False),
        )
        async with self.engine.connect() as conn:
            sides = set((await conn.execute(query)).scalars().all())
        return {side for side, number in _SIDE_NUMBER.items() if number in sides}

    async def journal(self, mailbox_id: str, intents: Sequence[Intent]) -> None:
        if not intents:
            return
        now = to_us(utcnow())
        rows = {
            i.link_id: {
                "link_id": i.link_id,
                "mailbox_id": mailbox_id,
                "kind": i.kind,
                "intent": intent_to_json(i),
                "create_time_us": now,
            }
            for i in intents
        }
        async with self.engine.begin() as conn:
            # A leftover intent of the same link (an earlier crash already recovered from)
            # is replaced, never duplicated: one upsert, not a delete and an insert.
            await conn.execute(_upsert(conn.dialect.name, "write_journal"), list(rows.values()))

    async def pending_intents(self, mailbox_id: str, kind: Kind) -> list[Intent]:
        query = (
            select(write_journal.c.kind, write_journal.c.intent)
            .where(write_journal.c.mailbox_id == mailbox_id, write_journal.c.kind == kind)
            .order_by(write_journal.c.create_time_us, write_journal.c.link_id)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [intent_from_json(k, data) for k, data in rows]

    async def commit(
        self,
        mailbox_id: str,
        kind: Kind,
        links: Sequence[Link],
        resolved: Sequence[str],
        cursors: dict[Side, str] | None = None,
        failures: Sequence[ItemFailure] = (),
        retried: Sequence[Side] = (),
    ) -> None:
        now = to_us(utcnow())
        try:
            await self._commit(mailbox_id, kind, links, resolved, cursors, failures, retried, now)
        except IntegrityError as error:
            raise NativeIdTaken(f"{mailbox_id}: a native id would belong to two links") from error

    async def _commit(
        self,
        mailbox_id: str,
        kind: Kind,
        links: Sequence[Link],
        resolved: Sequence[str],
        cursors: dict[Side, str] | None,
        failures: Sequence[ItemFailure],
        retried: Sequence[Side],
        now: int,
    ) -> None:
        async with self.engine.begin() as conn:
            if retried:
                # Read again by a full listing: synced now, unless failing again just below
                # (which counts one more attempt and quarantines it again).
                again = [f.native_id for f in failures if f.side in retried]
                await conn.execute(
                    delete(item_errors).where(
                        item_errors.c.mailbox_id == mailbox_id,
                        item_errors.c.kind == kind,
                        item_errors.c.side.in_([_SIDE_NUMBER[s] for s in retried]),
                        item_errors.c.quarantined.is_(False),
                        item_errors.c.native_id.not_in(again),
                    )
                )
            await self._upsert_links(conn, links, now)
            if resolved:
                await conn.execute(
                    delete(write_journal).where(write_journal.c.link_id.in_(list(resolved)))
                )
            if cursors:
                await self._set_cursors(conn, mailbox_id, kind, cursors, now)
            for failure in failures:
                await self._record_failure(conn, mailbox_id, failure, now)

    @staticmethod
    async def _upsert_links(conn: AsyncConnection, batch: Sequence[Link], now: int) -> None:
        """The links of one commit in a few statements whatever their number (a first sync
        commits a hundred at a time): one look-up, one clearing, one insert and one update
        (two when held links are among them), each over the whole chunk."""
        # The last state of a link given twice is the one kept, as if written in order.
        latest = {link.link_id: link for link in batch}
        if not latest:
            return
        ids = list(latest)
        existing: set[str] = set()
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            found = await conn.execute(select(links.c.link_id).where(links.c.link_id.in_(chunk)))
            existing.update(found.scalars().all())
        old = [link_id for link_id in ids if link_id in existing]
        # A native id moves between links only when one link gives it up in this very batch
        # (a recreated item); clearing first keeps the unique indexes satisfied mid-batch.
        for start in range(0, len(old), _IN_CHUNK):
            await conn.execute(
                update(links)
                .where(links.c.link_id.in_(old[start : start + _IN_CHUNK]))
                .values(mail_id=None, crm_id=None)
            )
        inserted: list[dict[str, Any]] = []
        updated: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
        for link_id, link in latest.items():
            row = {**link_to_row(link), "update_time_us": now}
            if link_id not in existing:
                inserted.append(row)
                continue
            held = link.state is LinkState.CONFLICT
            if held:
                # A held link's choice is the user's (ResolveConflict), possibly made while
                # this session ran; a session clears it only by taking the link out of
                # CONFLICT.
                del row["resolution"]
            row["existing_link_id"] = row.pop("link_id")
            updated[held].append(row)
        if inserted:
            await conn.execute(insert(links), inserted)
        for rows in updated.values():
            if rows:
                # Executed once per chunk with one set of values per link (executemany).
                await conn.execute(
                    update(links).where(links.c.link_id == bindparam("existing_link_id")), rows
                )

    async def move_cursors(
        self, mailbox_id: str, cursors: Mapping[Kind, Mapping[Side, str]]
    ) -> None:
        """Several kinds' cursors in one transaction and one statement."""
        rows = [
            row
            for kind, sides in cursors.items()
            for row in _cursor_rows(mailbox_id, kind, sides, to_us(utcnow()))
        ]
        if not rows:
            return
        async with self.engine.begin() as conn:
            await conn.execute(_upsert(conn.dialect.name, "sync_cursors"), rows)

    async def flush(self) -> None:
        """Nothing is held back here: every commit is written when made."""

    @staticmethod
    async def _set_cursors(
        conn: AsyncConnection, mailbox_id: str, kind: Kind, cursors: Mapping[Side, str], now: int
    ) -> None:
        """Every side's cursor of one commit in one statement (an upsert), not one look-up
        and one write per side."""
        await conn.execute(
            _upsert(conn.dialect.name, "sync_cursors"),
            _cursor_rows(mailbox_id, kind, cursors, now),
        )

    @staticmethod
    async def _record_failure(
        conn: AsyncConnection, mailbox_id: str, failure: ItemFailure, now: int
    ) -> None:
        message = failure.message or f"the other side refused the write: {failure.reason}"
        # One row per item: a repeated failure counts an attempt instead of adding a row.
        where = (
            (item_errors.c.mailbox_id == mailbox_id)
            & (item_errors.c.kind == failure.kind)
            & (item_errors.c.native_id == failure.native_id)
            & (item_errors.c.side == _SIDE_NUMBER[failure.side])
        )
        result = await conn.execute(
            update(item_errors)
            .where(where)
            .values(
                reason=failure.reason,
                message=message,
                version=failure.version,
                link_id=failure.link_id,
                last_seen_time_us=now,
                attempts=item_errors.c.attempts + 1,
                quarantined=True,
            )
        )
        if result.rowcount == 0:
            await conn.execute(
                insert(item_errors).values(
                    item_error_id=str(uuid.uuid4()),
                    mailbox_id=mailbox_id,
                    kind=failure.kind,
                    native_id=failure.native_id,
                    version=failure.version,
                    link_id=failure.link_id,
                    collection="",
                    crm_record_id="",
                    side=_SIDE_NUMBER[failure.side],
                    reason=failure.reason,
                    message=message,
                    first_seen_time_us=now,
                    last_seen_time_us=now,
                    attempts=1,
                    quarantined=True,
                )
            )


def _cursor_rows(
    mailbox_id: str, kind: Kind, cursors: Mapping[Side, str], now: int
) -> list[dict[str, Any]]:
    return [
        {
            "mailbox_id": mailbox_id,
            "kind": kind,
            "side": side.value,
            "collection": "",
            "token": token,
            "update_time_us": now,
        }
        for side, token in cursors.items()
    ]


# What each upsert replaces of a row already there, by its table's unique key.
_UPSERTS: dict[str, tuple[Table, tuple[str, ...], tuple[str, ...]]] = {
    "write_journal": (
        write_journal,
        ("link_id",),
        ("mailbox_id", "kind", "intent", "create_time_us"),
    ),
    "sync_cursors": (
        sync_cursors,
        ("mailbox_id", "kind", "side", "collection"),
        ("token", "update_time_us"),
    ),
}


@functools.cache
def _upsert(dialect_name: str, table_name: str) -> Executable:
    """The table's upsert as one statement, built once per dialect and executed with a list of
    rows: SQLAlchemy then compiles it once (a statement with its rows inlined as VALUES is a
    new statement each time, compiled again every commit)."""
    table, key, replaced = _UPSERTS[table_name]
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    statement = dialect.insert(table)
    upsert: Executable = statement.on_conflict_do_update(
        index_elements=[table.c[name] for name in key],
        set_={name: statement.excluded[name] for name in replaced},
    )
    return upsert


@dataclass
class MailboxRows:
    """A mailbox's journal, links, cursors and released sides, by kind (`mailbox_rows`)."""

    intents: dict[Kind, list[Intent]] = field(default_factory=dict)
    links: dict[Kind, list[Link]] = field(default_factory=dict)
    cursors: dict[Kind, dict[Side, str]] = field(default_factory=dict)
    released: dict[Kind, set[Side]] = field(default_factory=dict)
