"""Echo suppression: Concord's own writes, recognised when a listing brings them back.

Every write Concord makes comes back in the next listing of its side as a change. A side
answers each write with the item's version after it (EWS ChangeKey, Graph changeKey, Google
etag, Salesforce SystemModstamp read back by crm-connector), and the executor keeps that version
on the link beside the hash of what was written. A listed item whose version is still the one
the link holds has not changed since Concord last wrote or read it: it needs no mapping, no
comparison and no write. Versions move with every edit, so an edit made after Concord's write
is never taken for an echo; an empty version proves nothing and never matches.

Salesforce keeps SystemModstamp to the second: a user's edit in the second of Concord's write
carries the write's stamp. There the version is not enough, and a record is an echo only when
its LastModifiedById is also the integration user crm-connector logs in as
(`CrmRecord.last_modified_by_concord`); crm-connector reads the stamp back after a write only
for records that user last modified, so a version someone else left is never kept as
Concord's.

Only ACTIVE links lend their versions: a held conflict, a quarantined item or a tombstone is
planned from its listing as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet

from concord_reconciler.mirror.domain.sync import Change, Link, LinkState, Side

__all__ = ["is_echo", "known_versions", "settled"]


def known_versions(links: Iterable[Link], side: Side) -> dict[str, str]:
    """Native id -> the version the link holds for it, for each ACTIVE link of `side`."""
    known: dict[str, str] = {}
    for link in links:
        if link.state is not LinkState.ACTIVE:
            continue
        native, version = link.native(side), link.version_of(side)
        if native and version:
            known[native] = version
    return known


def is_echo(known: Mapping[str, str], native_id: str, version: str) -> bool:
    """Whether an item listed at `version` is unchanged since the link recorded it."""
    return bool(version) and known.get(native_id) == version


def settled(change: Change, live: AbstractSet[str]) -> bool:
    """Whether a listed change asks nothing of the planner: the removal of an item no live
    link holds (one Concord deleted or unshared itself, or one it never mirrored).

    A change with content never is: the side has already set its echoes apart
    (`ChangePage.echoes`), and only the side can tell an echo by more than its version (a
    Salesforce record listed at the stamp of Concord's write may carry a user's edit made in
    the same second, which LastModifiedById alone shows).
    """
    if change.snapshot is not None:
        return False
    return change.native_id not in live
