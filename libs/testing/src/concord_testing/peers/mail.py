"""mail-connector in memory: one store of mail items, and the accounts of mailboxes.

Kept honest where Concord depends on it: a create carrying a link id that is already stored is
answered as applied before (not stored twice); an update names its target and, with a version,
is refused as a conflict when the item moved on; an update mask changes only the fields named
(paths relative to the payload); each stored write gets a new version. Accounts are stored
without their secret, which the answer only says it has.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf import field_mask_pb2

from concord.common.v1 import resources_pb2 as res
from concord.mail.v1 import mail_connector_service_pb2 as mail
from concord.mail.v1 import mail_connector_service_pb2_grpc as mail_grpc
from concord_rpc import NotFound
from concord_testing.peers.base import Peer

__all__ = ["MailPeer"]


class MailPeer(Peer, mail_grpc.MailConnectorServiceServicer):
    """Mail items by native id behind mail-connector's API.

    Tests seed `items` with `add`, and steer it with `change_pages` (what ListChanges answers,
    oldest first), `make_unreadable` (items GetItems reports as failures), `refuse` (writes
    the provider refuses), `stored_form` (how the provider keeps a written item, e.g. trimming
    a value), `state_token` and `push_state`.
    """

    service = "mail-connector"
    full_name = mail.DESCRIPTOR.services_by_name["MailConnectorService"].full_name
    _add_to_server = mail_grpc.add_MailConnectorServiceServicer_to_server

    def __init__(self, items: Iterable[res.MailItem] = ()) -> None:
        super().__init__()
        self.items: dict[str, res.MailItem] = {}
        self.accounts: dict[str, mail.MailboxAccount] = {}
        self.change_pages: list[mail.ListChangesResponse] = []
        self.unreadable: dict[str, str] = {}
        self.refusals: dict[str, tuple[res.WriteStatus.ValueType, str]] = {}
        self.stored_form: Callable[[res.MailItem], None] | None = None
        self.push_state: res.PushState.ValueType = res.PUSH_STATE_ACTIVE
        #: The sync state a listing with nothing new answers as its cursor.
        self.state_token = "t"
        self._ids = itertools.count(1)
        self._versions = itertools.count(1)
        for item in items:
            self.add(item)

    # -- the test's side -------------------------------------------------------------------

    def add(self, item: res.MailItem) -> res.MailItem:
        self.items[item.ref.native_id] = item
        return item

    def add_email(self, native_id: str, email: res.EmailItem) -> res.MailItem:
        return self.add(
            res.MailItem(
                ref=res.ItemRef(kind=res.OBJECT_KIND_EMAIL, native_id=native_id), email=email
            )
        )

    def refuse(
        self, link_id: str, status: res.WriteStatus.ValueType, error_code: str = "ErrorSomething"
    ) -> None:
        """Writes with this link id fail with `status` and the provider's `error_code`."""
        self.refusals[link_id] = (status, error_code)

    def make_unreadable(self, native_id: str, reason: str = "MALFORMED_MIME") -> None:
        """GetItems reports this item as one the connector cannot convert, with `reason`."""
        self.unreadable[native_id] = reason

    # -- the API ---------------------------------------------------------------------------

    async def ListChanges(
        self, request: mail.ListChangesRequest, context: Any
    ) -> mail.ListChangesResponse:
        self._enter("ListChanges", request)
        if self.change_pages:
            page = self.change_pages.pop(0)
            known = {ref.native_id: ref.version for ref in request.known}
            if request.include_items and not known:
                return page
            # As the connector answers: an upsert without items asked for, or at a version
            # the caller said it holds, keeps its reference, not its item.
            bare = mail.ListChangesResponse()
            bare.CopyFrom(page)
            for change in bare.changes:
                if not change.ref.native_id:
                    change.ref.CopyFrom(change.item.ref)
                held = known.get(change.ref.native_id)
                if not request.include_items or (held and held == change.ref.version):
                    change.ClearField("item")
            return bare
        # Nothing changed: the cursor of the mailbox's current state.
        return mail.ListChangesResponse(next_cursor=res.Cursor(token=self.state_token))

    async def GetItems(self, request: mail.GetItemsRequest, context: Any) -> mail.GetItemsResponse:
        self._enter("GetItems", request)
        response = mail.GetItemsResponse()
        for ref in request.refs:
            if ref.native_id in self.unreadable:
                response.failures.add(
                    ref=ref,
                    problem=res.ItemProblem(
                        reason=self.unreadable[ref.native_id], message="cannot convert"
                    ),
                )
            elif ref.native_id in self.items:
                response.items.append(self.items[ref.native_id])
            else:
                response.not_found.append(ref)
        wanted = set(request.link_ids)
        response.items.extend(
            i for i in self.items.values() if i.ref.link_id and i.ref.link_id in wanted
        )
        return response

    async def ApplyItems(
        self, request: mail.ApplyItemsRequest, context: Any
    ) -> mail.ApplyItemsResponse:
        self._enter("ApplyItems", request)
        return mail.ApplyItemsResponse(results=[self._write(w) for w in request.writes])

    def _write(self, write: mail.MailWrite) -> mail.MailWriteResult:
        if write.link_id in self.refusals:
            status, code = self.refusals[write.link_id]
            return mail.MailWriteResult(
                link_id=write.link_id, status=status, ref=write.ref, error_code=code
            )
        if write.operation == mail.MAIL_WRITE_OPERATION_CREATE:
            stored = next(
                (
                    i
                    for i in self.items.values()
                    if write.link_id and i.ref.link_id == write.link_id
                ),
                None,
            )
            if stored is not None:
                return mail.MailWriteResult(
                    link_id=write.link_id,
                    status=res.WRITE_STATUS_OK,
                    ref=stored.ref,
                    already_applied=True,
                )
            native_id = f"n-{write.link_id}" if write.link_id else f"n{next(self._ids)}"
            return self._store(write, native_id, res.MailItem())
        before = self.items.get(write.ref.native_id)
        if before is None:
            return mail.MailWriteResult(
                link_id=write.link_id,
                status=res.WRITE_STATUS_NOT_FOUND,
                ref=write.ref,
                error_code="ErrorItemNotFound",
            )
        if write.ref.version and write.ref.version != before.ref.version:
            return mail.MailWriteResult(
                link_id=write.link_id,
                status=res.WRITE_STATUS_CONFLICT,
                ref=before.ref,
                error_code="ErrorIrresolvableConflict",
            )
        if write.operation == mail.MAIL_WRITE_OPERATION_DELETE:
            del self.items[write.ref.native_id]
            return mail.MailWriteResult(link_id=write.link_id, status=res.WRITE_STATUS_OK)
        return self._store(write, write.ref.native_id, before)

    def _store(
        self, write: mail.MailWrite, native_id: str, before: res.MailItem
    ) -> mail.MailWriteResult:
        stored = res.MailItem()
        stored.CopyFrom(write.item)
        payload = stored.WhichOneof("payload")
        # `link_id` is no payload field: the link id is stored with every update (below).
        paths = [p for p in write.update_mask.paths if p != "link_id"]
        if write.update_mask.paths and payload and before.WhichOneof("payload") == payload:
            # Only the masked fields change; the rest is what the item held.
            kept = getattr(stored, payload)
            kept.CopyFrom(getattr(before, payload))
            field_mask_pb2.FieldMask(paths=paths).MergeMessage(
                getattr(write.item, payload), kept, replace_repeated_field=True
            )
        stored.ref.CopyFrom(
            res.ItemRef(
                kind=write.item.ref.kind or before.ref.kind,
                native_id=native_id,
                version=f"v{next(self._versions)}",
                link_id=write.link_id or before.ref.link_id,
            )
        )
        if self.stored_form is not None:
            self.stored_form(stored)
        self.items[native_id] = stored
        return mail.MailWriteResult(
            link_id=write.link_id, status=res.WRITE_STATUS_OK, ref=stored.ref
        )

    async def ListSubscriptions(
        self, request: mail.ListSubscriptionsRequest, context: Any
    ) -> mail.ListSubscriptionsResponse:
        self._enter("ListSubscriptions", request)
        return mail.ListSubscriptionsResponse(push_state=self.push_state)

    async def UpsertMailboxAccount(
        self, request: mail.UpsertMailboxAccountRequest, context: Any
    ) -> mail.UpsertMailboxAccountResponse:
        self._enter("UpsertMailboxAccount", request)
        account = mail.MailboxAccount()
        account.CopyFrom(request.account)
        # The secret is kept where the connector keeps secrets; answers only say there is one.
        account.has_secret = bool(request.account.secret)
        account.ClearField("secret")
        self.accounts[account.name] = account
        return mail.UpsertMailboxAccountResponse(account=account)

    async def GetMailboxAccount(
        self, request: mail.GetMailboxAccountRequest, context: Any
    ) -> mail.GetMailboxAccountResponse:
        self._enter("GetMailboxAccount", request)
        if request.name not in self.accounts:
            raise NotFound(f"no account {request.name}")
        return mail.GetMailboxAccountResponse(account=self.accounts[request.name])

    async def DeleteMailboxAccount(
        self, request: mail.DeleteMailboxAccountRequest, context: Any
    ) -> mail.DeleteMailboxAccountResponse:
        self._enter("DeleteMailboxAccount", request)
        if self.accounts.pop(request.name, None) is None:
            raise NotFound(f"no account {request.name}")
        return mail.DeleteMailboxAccountResponse()
