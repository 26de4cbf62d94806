"""The provider port: what the connector needs from one mail system (EWS, Graph, Google, DAV).

Items travel as the canonical protobuf messages of `concord.common.v1`: they are the shared data
model of every service, and plain data (no gRPC, no I/O), so the domain can hold them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from concord.common.v1 import resources_pb2
from concord_mail_connector.domain.model import Cursor, Kind, MailboxAccount

__all__ = [
    "Collection",
    "FoundItems",
    "ItemFailure",
    "MailProvider",
    "MailboxAccess",
    "ProviderChangePage",
    "Write",
    "WriteOperation",
    "WriteResult",
]


@dataclass(frozen=True)
class MailboxAccess:
    """An account with its opened secret; lives only for one call, never logged."""

    account: MailboxAccount
    secret: bytes | None = field(repr=False)


@dataclass(frozen=True)
class ProviderChangePage:
    changes: Sequence[resources_pb2.MailChange]
    next_cursor: Cursor
    has_more: bool = False
    full_resync_required: bool = False


@dataclass(frozen=True)
class ItemFailure:
    """An item that exists but could not be read or converted; `problem` never quotes content."""

    ref: resources_pb2.ItemRef
    problem: resources_pb2.ItemProblem


@dataclass(frozen=True)
class FoundItems:
    items: Sequence[resources_pb2.MailItem]
    not_found: Sequence[resources_pb2.ItemRef]
    failures: Sequence[ItemFailure] = ()


class WriteOperation:
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


# An update_mask path that is no payload field: the update stores the write's link id in the
# item, over the one it carries (ApplyItems' `update_mask`). Alone, the update writes nothing else.
LINK_ID_PATH = "link_id"


@dataclass(frozen=True)
class Write:
    operation: str
    link_id: str
    ref: resources_pb2.ItemRef
    item: resources_pb2.MailItem
    # Creates: the folder; empty means the kind's default.
    collection: str = ""
    # Updates: payload paths to change (and LINK_ID_PATH); empty changes every mapped field.
    update_mask: Sequence[str] = ()
    # Creates: no item carries the link id yet (the caller's listings prove it), so the
    # provider need not look it up before writing (ApplyItems' `known_new`).
    known_new: bool = False


@dataclass(frozen=True)
class WriteResult:
    link_id: str
    status: resources_pb2.WriteStatus.ValueType
    ref: resources_pb2.ItemRef | None = None
    error_code: str = ""
    # Never item content: it reaches logs and other services.
    error_message: str = ""
    already_applied: bool = False


@dataclass(frozen=True)
class Collection:
    id: str
    display_name: str
    kind: Kind
    is_default: bool


class MailProvider(Protocol):
    """One mail system. `deadline` is the seconds the caller still waits (None: no limit).

    An item that cannot be read or converted never fails a call: listings carry it as a change
    with `problem` set and no item, lookups as an `ItemFailure`.
    """

    async def list_changes(
        self,
        mailbox: MailboxAccess,
        kind: Kind,
        cursor: Cursor,
        page_size: int,
        deadline: float | None = None,
        include_content: bool = False,
        refs_only: bool = False,
        known: Mapping[str, str] | None = None,
    ) -> ProviderChangePage:
        """`include_content` asks for what costs extra requests (an email's MIME), as far as
        the page's size budget allows; an email listed without it is read with get_items.

        `refs_only` asks for upserts as references (id and version) without their items, and
        `known` (native id -> version) for the items listed at those versions: what a caller
        expecting its own writes back needs. A provider that lists references no cheaper than
        items may list items (the API answers references either way)."""

    async def get_items(
        self,
        mailbox: MailboxAccess,
        refs: Sequence[resources_pb2.ItemRef],
        deadline: float | None = None,
        link_ids: Sequence[str] = (),
        kind: Kind | None = None,
    ) -> FoundItems:
        """Items by reference, and items of `kind` by the link id stored with them (a link id
        found nowhere is simply absent); found items carry their link id in `ref.link_id`."""

    async def apply_items(
        self, mailbox: MailboxAccess, writes: Sequence[Write], deadline: float | None = None
    ) -> list[WriteResult]: ...

    async def list_collections(
        self, mailbox: MailboxAccess, kind: Kind | None, deadline: float | None = None
    ) -> list[Collection]: ...
