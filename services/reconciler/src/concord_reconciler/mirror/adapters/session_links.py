"""The link store as one session uses it (`SessionLinks`): its first reads in one go."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from concord_reconciler.kernel.kinds import Kind
from concord_reconciler.mirror.adapters.links import MailboxRows, SqlLinkStore
from concord_reconciler.mirror.domain.ports import Intent, ItemFailure
from concord_reconciler.mirror.domain.sync import Link, Side

__all__ = ["SessionLinks"]

# What a pair reads before it lists, in `MailboxRows`' terms.
_PIECES = ("intents", "links", "cursors", "released")


class SessionLinks:
    """The link store as one session uses it: what its pairs read first in one go, and no
    write of what did not change (issue #18: a quiet session's cost is mostly its SQL).

    - The first read of a mailbox reads every kind's rows at once (`mailbox_rows`): four
      statements a session instead of four a pair. Each kind's share serves that kind's first
      read once; after that, or once the session commits anything of the kind (a recovery, a
      second round of the pair), the kind is read from the database again, and so is any
      other kind whose rows as first read hold a link id the session wrote.
      The rows are the session's own: only this session (it holds the mailbox's lease) writes
      them, but for a user's ResolveConflict or RetryItem, which may land while a session runs
      and are then taken up by the next one, as they always could be.
    - A cursor is written only when it moved: a quiet pair whose sides answer the same tokens
      commits nothing, and a commit left with nothing to write opens no transaction.
    - A commit of cursors alone (a pair that listed nothing to write, the walk past Concord's
      own writes, a page of emails) is held back and written by `flush`, every kind's in one
      transaction at the session's end, instead of one transaction each. Holding a cursor back
      only delays it: a session that ends before its flush leaves the cursors where they were,
      and the next session lists those changes again, which writes nothing twice. A commit
      with anything else in it is written at once, with its cursors, as before.

    Made per session (`GrpcSyncEngine.ports`), so nothing read is kept beyond it.
    """

    def __init__(self, store: SqlLinkStore) -> None:
        self.store = store
        self._rows: dict[str, MailboxRows] = {}
        # (mailbox, kind, piece) already served, or made stale by a commit of the kind.
        self._spent: set[tuple[str, Kind, str]] = set()
        # Per mailbox, the kind of each link id in its rows as first read.
        self._kind_of: dict[str, dict[str, Kind]] = {}
        # The cursors as stored, as far as this session read or wrote them.
        self._stored: dict[tuple[str, Kind], dict[Side, str]] = {}
        # Cursors moved by commits of cursors alone, not written yet (`flush` writes them).
        self._held: dict[tuple[str, Kind], dict[Side, str]] = {}

    async def _first(self, mailbox_id: str, kind: Kind, piece: str) -> MailboxRows | None:
        """The mailbox's rows if this kind's `piece` was not served yet (then it is)."""
        if (mailbox_id, kind, piece) in self._spent:
            return None
        self._spent.add((mailbox_id, kind, piece))
        rows = self._rows.get(mailbox_id)
        if rows is None:
            rows = self._rows[mailbox_id] = await self.store.mailbox_rows(mailbox_id)
        return rows

    def _stale(self, mailbox_id: str, kind: Kind) -> None:
        self._spent.update((mailbox_id, kind, piece) for piece in _PIECES)

    def _written(self, mailbox_id: str, kind: Kind, link_ids: Iterable[str]) -> None:
        """Links or intents of these ids written for `kind`: that kind is read again, and so
        is any other whose rows as first read hold one of the ids (a link id is derived with
        its kind, but an item may carry one of another kind's)."""
        self._stale(mailbox_id, kind)
        rows = self._rows.get(mailbox_id)
        if rows is None:
            return
        kind_of = self._kind_of.get(mailbox_id)
        if kind_of is None:
            kind_of = self._kind_of[mailbox_id] = {
                **{i.link_id: k for k, found in rows.intents.items() for i in found},
                **{link.link_id: k for k, found in rows.links.items() for link in found},
            }
        for link_id in link_ids:
            other = kind_of.get(link_id)
            if other is not None and other != kind:
                self._stale(mailbox_id, other)

    async def pending_intents(self, mailbox_id: str, kind: Kind) -> list[Intent]:
        rows = await self._first(mailbox_id, kind, "intents")
        if rows is None:
            return await self.store.pending_intents(mailbox_id, kind)
        return list(rows.intents.get(kind, ()))

    async def load_links(self, mailbox_id: str, kind: Kind) -> list[Link]:
        rows = await self._first(mailbox_id, kind, "links")
        if rows is None:
            return await self.store.load_links(mailbox_id, kind)
        return list(rows.links.get(kind, ()))

    async def load_cursors(self, mailbox_id: str, kind: Kind) -> dict[Side, str]:
        rows = await self._first(mailbox_id, kind, "cursors")
        if rows is None:
            cursors = await self.store.load_cursors(mailbox_id, kind)
        else:
            cursors = dict(rows.cursors.get(kind, {}))
        self._stored[(mailbox_id, kind)] = dict(cursors)
        # What this session moved and holds back is where its pairs stand.
        return {**cursors, **self._held.get((mailbox_id, kind), {})}

    async def released(self, mailbox_id: str, kind: Kind) -> set[Side]:
        rows = await self._first(mailbox_id, kind, "released")
        if rows is None:
            return await self.store.released(mailbox_id, kind)
        return set(rows.released.get(kind, ()))

    async def journal(self, mailbox_id: str, intents: Sequence[Intent]) -> None:
        for intent in intents:
            self._written(mailbox_id, intent.kind, [intent.link_id])
        await self.store.journal(mailbox_id, intents)

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
        stored = self._stored.get((mailbox_id, kind))
        held = self._held.setdefault((mailbox_id, kind), {})
        given = cursors or {}
        for side, token in given.items():
            # A cursor moved back to where it is stored has nothing left to write.
            if stored is not None and stored.get(side) == token:
                held.pop(side, None)
        moved = {
            side: token
            for side, token in given.items()
            if stored is None or stored.get(side) != token
        }
        if stored is not None and moved and not (links or resolved or failures or retried):
            held.update(moved)
            return
        if not (links or resolved or moved or failures or retried):
            return
        self._written(mailbox_id, kind, [*(link.link_id for link in links), *resolved])
        for link in links:
            self._written(mailbox_id, link.kind, [link.link_id])
        for failure in failures:
            self._stale(mailbox_id, failure.kind)
        await self.store.commit(mailbox_id, kind, links, resolved, moved or None, failures, retried)
        for side in moved:
            held.pop(side, None)
        if stored is not None:
            stored.update(moved)

    async def flush(self) -> None:
        """Write the cursors held back, every kind's in one transaction."""
        by_mailbox: dict[str, dict[Kind, dict[Side, str]]] = {}
        for (mailbox_id, kind), held in self._held.items():
            if held:
                by_mailbox.setdefault(mailbox_id, {})[kind] = dict(held)
        for mailbox_id, cursors in by_mailbox.items():
            await self.store.move_cursors(mailbox_id, cursors)
            for kind, moved in cursors.items():
                self._stored.setdefault((mailbox_id, kind), {}).update(moved)
                self._held.pop((mailbox_id, kind), None)
