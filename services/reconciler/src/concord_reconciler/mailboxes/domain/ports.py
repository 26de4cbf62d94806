"""What the mailboxes room needs from the outside world: its store, the mail-connector's accounts,
and the figures behind an org's health."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord.mail.v1 import mail_connector_service_pb2 as mail
from concord_reconciler.mailboxes.domain.health import OrgFigures
from concord_reconciler.mailboxes.domain.model import MailboxRecord, MailboxState


class MailboxStore(Protocol):
    """Mailboxes and their settings (`mailboxes.adapters.store.SqlMailboxStore`)."""

    async def get_mailbox(self, mailbox_id: str) -> MailboxRecord | None: ...

    async def insert_mailbox(
        self, mailbox: MailboxRecord, *, response: tuple[str, str, bytes] | None = None
    ) -> None:
        """Store a new mailbox, and with it the (method, request id, answer) that created it."""
        ...

    async def list_mailboxes(
        self, *, org_id: str | None, state: MailboxState | None, after: str | None, limit: int
    ) -> list[MailboxRecord]: ...

    async def delete_mailbox(self, mailbox_id: str, *, expected_etag: str = "") -> None: ...

    async def set_mailbox_state(
        self, mailbox_id: str, state: MailboxState, reason: str
    ) -> MailboxRecord: ...

    async def get_org_settings(self, org_id: str) -> st.OrgSettings | None: ...

    async def put_org_settings(
        self, org_id: str, settings: st.OrgSettings, *, expected_etag: str
    ) -> st.OrgSettings: ...

    async def get_mailbox_settings(self, mailbox_id: str) -> st.MailboxSettings | None: ...

    async def put_mailbox_settings(
        self, mailbox_id: str, settings: st.MailboxSettings, *, expected_etag: str
    ) -> None: ...


class MailAccounts(Protocol):
    """The mail-connector, for a mailbox's account and what it holds right now."""

    async def upsert_account(
        self, account: mail.MailboxAccount, request_id: str
    ) -> mail.MailboxAccount: ...

    async def delete_account(self, mailbox: str) -> None: ...

    async def push_state(self, mailbox: str) -> tuple[res.PushState.ValueType, str]: ...

    async def get_items(
        self, mailbox: str, refs: Sequence[res.ItemRef] = ()
    ) -> mail.GetItemsResponse: ...


class HealthFigures(Protocol):
    """The figures behind an org's health (`mailboxes.adapters.health.SqlHealthFigures`)."""

    async def figures(self, org_id: str) -> OrgFigures: ...
