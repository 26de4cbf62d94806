"""MailConnectorService over gRPC: validate, translate protos <-> domain, call the domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

import grpc
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from concord.common.v1 import resources_pb2
from concord.mail.v1 import mail_connector_service_pb2 as pb
from concord.mail.v1 import mail_connector_service_pb2_grpc as pb_grpc
from concord_mail_connector.api.push import PUSH_ISSUE, push_state, subscriptions
from concord_mail_connector.domain.errors import InvalidRequest
from concord_mail_connector.domain.model import (
    AccountUpdate,
    Kind,
    MailboxAccount,
    Provider,
    parse_account_name,
    parse_mailbox_name,
)
from concord_mail_connector.domain.provider import Write, WriteOperation
from concord_mail_connector.domain.push import WatchState
from concord_mail_connector.domain.service import MailConnector
from concord_rpc import Unimplemented
from concord_rpc.requests import Violations

__all__ = ["MailConnectorServicer"]

Context = grpc.aio.ServicerContext[Any, Any]

PROVIDERS_ISSUE = 4

_KINDS = {
    resources_pb2.OBJECT_KIND_CALENDAR_ITEM: Kind.CALENDAR_ITEM,
    resources_pb2.OBJECT_KIND_TASK: Kind.TASK,
    resources_pb2.OBJECT_KIND_CONTACT: Kind.CONTACT,
    resources_pb2.OBJECT_KIND_EMAIL: Kind.EMAIL,
}
_PROVIDERS = {
    resources_pb2.MAIL_PROVIDER_EXCHANGE_EWS: Provider.EXCHANGE_EWS,
    resources_pb2.MAIL_PROVIDER_GRAPH: Provider.GRAPH,
    resources_pb2.MAIL_PROVIDER_GOOGLE: Provider.GOOGLE,
    resources_pb2.MAIL_PROVIDER_DAV: Provider.DAV,
}
_PROVIDER_ENUMS = {provider: enum for enum, provider in _PROVIDERS.items()}
_KIND_ENUMS = {kind: enum for enum, kind in _KINDS.items()}
_OPERATIONS = {
    pb.MAIL_WRITE_OPERATION_CREATE: WriteOperation.CREATE,
    pb.MAIL_WRITE_OPERATION_UPDATE: WriteOperation.UPDATE,
    pb.MAIL_WRITE_OPERATION_DELETE: WriteOperation.DELETE,
}
MAX_BATCH = 100
# Versions a listing may be told the caller holds (ListChangesRequest.known): a few chunks of
# writes, about 1 MB of references.
MAX_KNOWN = 5000
# Empty means impersonation (one service account for the org), the adapter's default.
EWS_ACCESS_TYPES = frozenset({"", "impersonation", "delegate"})
# Google Calendar has no categories: what a Google account shares (empty means `all`).
GOOGLE_CALENDAR_SELECTIONS = frozenset({"", "all", "external", "calendar", "color"})
# The `provider_settings` member each provider takes, and its required fields.
_SETTINGS: dict[Provider, tuple[str, tuple[str, ...]]] = {
    Provider.EXCHANGE_EWS: ("ews", ("service_url", "username")),
    Provider.GRAPH: ("graph", ("tenant_id", "client_id")),
    Provider.GOOGLE: ("google", ("service_account_email",)),
    Provider.DAV: ("dav", ("username",)),
}


class PushStates(Protocol):
    def state(self, mailbox: str) -> WatchState | None: ...


class MailConnectorServicer(pb_grpc.MailConnectorServiceServicer):
    def __init__(self, domain: MailConnector, push: PushStates | None = None) -> None:
        self._domain = domain
        # None when push is turned off: every mailbox then lists no subscriptions.
        self._push = push

    async def ListChanges(
        self, request: pb.ListChangesRequest, context: Context
    ) -> pb.ListChangesResponse:
        checks = Violations(InvalidRequest)
        mailbox = checks.name(parse_mailbox_name, request.mailbox, "mailbox")
        kind = _KINDS.get(request.kind)
        if kind is None:
            checks.add("kind", "is required")
        checks.check("page_size", request.page_size >= 0, "must not be negative")
        checks.check("known", len(request.known) <= MAX_KNOWN, f"takes at most {MAX_KNOWN}")
        for index, ref in enumerate(request.known[:MAX_KNOWN]):
            checks.require(f"known[{index}].native_id", ref.native_id)
        if checks or kind is None:
            raise checks.error()
        page = await self._domain.list_changes(
            mailbox,
            kind,
            request.collection,
            request.cursor.token,
            request.page_size,
            _deadline(context),
            include_content=request.include_items,
            refs_only=not request.include_items,
            known={ref.native_id: ref.version for ref in request.known if ref.version},
        )
        changes = []
        for change in page.changes:
            listed = resources_pb2.MailChange()
            listed.CopyFrom(change)
            if not request.include_items:
                listed.ClearField("item")
            changes.append(listed)
        return pb.ListChangesResponse(
            changes=changes,
            next_cursor=resources_pb2.Cursor(
                collection=page.next_cursor.collection, token=page.next_cursor.token
            ),
            has_more=page.has_more,
            full_resync_required=page.full_resync_required,
        )

    async def GetItems(self, request: pb.GetItemsRequest, context: Context) -> pb.GetItemsResponse:
        checks = Violations(InvalidRequest)
        mailbox = checks.name(parse_mailbox_name, request.mailbox, "mailbox")
        asked = len(request.refs) + len(request.link_ids)
        checks.check("refs", 0 < asked <= MAX_BATCH, f"takes 1 to {MAX_BATCH} with link_ids")
        for index, ref in enumerate(request.refs):
            checks.require(f"refs[{index}].native_id", ref.native_id)
        for index, link_id in enumerate(request.link_ids):
            checks.require(f"link_ids[{index}]", link_id)
        kind = _KINDS.get(request.kind)
        if request.link_ids and kind is None:
            checks.add("kind", "is required with link_ids")
        if checks:
            raise checks.error()
        found = await self._domain.get_items(
            mailbox, list(request.refs), _deadline(context), list(request.link_ids), kind
        )
        return pb.GetItemsResponse(
            items=found.items,
            not_found=found.not_found,
            failures=[pb.ItemFailure(ref=f.ref, problem=f.problem) for f in found.failures],
        )

    async def ApplyItems(
        self, request: pb.ApplyItemsRequest, context: Context
    ) -> pb.ApplyItemsResponse:
        checks = Violations(InvalidRequest)
        mailbox = checks.name(parse_mailbox_name, request.mailbox, "mailbox")
        checks.check("writes", 0 < len(request.writes) <= MAX_BATCH, f"takes 1 to {MAX_BATCH}")
        writes: list[Write] = []
        for index, write in enumerate(request.writes):
            field = f"writes[{index}]"
            operation = _OPERATIONS.get(write.operation)
            if operation is None:
                checks.add(f"{field}.operation", "is required")
                continue
            checks.require(f"{field}.link_id", write.link_id)
            if operation != WriteOperation.CREATE:
                checks.require(f"{field}.ref.native_id", write.ref.native_id)
            if operation != WriteOperation.DELETE:
                checks.check(
                    f"{field}.item", write.item.WhichOneof("payload") is not None, "is required"
                )
            writes.append(
                Write(
                    operation=operation,
                    link_id=write.link_id,
                    ref=write.ref,
                    item=write.item,
                    collection=write.collection,
                    update_mask=list(write.update_mask.paths),
                    known_new=write.known_new and operation == WriteOperation.CREATE,
                )
            )
        if checks:
            raise checks.error()
        results = await self._domain.apply_items(mailbox, writes, _deadline(context))
        return pb.ApplyItemsResponse(
            results=[
                pb.MailWriteResult(
                    link_id=result.link_id,
                    status=result.status,
                    ref=result.ref,
                    error_code=result.error_code,
                    error_message=result.error_message,
                    already_applied=result.already_applied,
                )
                for result in results
            ]
        )

    async def ListCollections(
        self, request: pb.ListCollectionsRequest, context: Context
    ) -> pb.ListCollectionsResponse:
        mailbox = parse_mailbox_name(request.mailbox)
        kind = _KINDS.get(request.kind)
        collections = await self._domain.list_collections(mailbox, kind, _deadline(context))
        return pb.ListCollectionsResponse(
            collections=[
                pb.Collection(
                    id=c.id,
                    display_name=c.display_name,
                    kind=_KIND_ENUMS[c.kind],
                    is_default=c.is_default,
                )
                for c in collections
            ]
        )

    async def CreateSubscription(
        self, request: pb.CreateSubscriptionRequest, context: Context
    ) -> pb.CreateSubscriptionResponse:
        parse_mailbox_name(request.parent, "parent")
        raise Unimplemented(
            "choosing push subscriptions per collection (every account is watched on the "
            "folders Concord syncs; see ListSubscriptions)",
            issue=PUSH_ISSUE,
        )

    async def DeleteSubscription(
        self, request: pb.DeleteSubscriptionRequest, context: Context
    ) -> pb.DeleteSubscriptionResponse:
        raise Unimplemented(
            "removing push subscriptions per collection (MAIL_CONNECTOR_PUSH_ENABLED=false "
            "turns push off)",
            issue=PUSH_ISSUE,
        )

    async def ListSubscriptions(
        self, request: pb.ListSubscriptionsRequest, context: Context
    ) -> pb.ListSubscriptionsResponse:
        """The provider subscriptions the mailbox's push watch holds now, one per kind; none
        while push is degraded (the mailbox is polled) or turned off. One page always."""
        checks = Violations(InvalidRequest)
        mailbox = checks.name(parse_mailbox_name, request.parent, "parent")
        checks.check("page_size", request.page_size >= 0, "must not be negative")
        if checks:
            raise checks.error()
        await self._domain.get_account(mailbox)  # NOT_FOUND for a mailbox with no account
        state = None if self._push is None else self._push.state(mailbox)
        push, reason = push_state(state, enabled=self._push is not None)
        return pb.ListSubscriptionsResponse(
            subscriptions=subscriptions(mailbox, state),
            push_state=push,
            push_state_reason=reason,
        )

    async def UpsertMailboxAccount(
        self, request: pb.UpsertMailboxAccountRequest, context: Context
    ) -> pb.UpsertMailboxAccountResponse:
        account = await self._domain.upsert_account(_account_update(request))
        return pb.UpsertMailboxAccountResponse(account=_account_proto(account))

    async def GetMailboxAccount(
        self, request: pb.GetMailboxAccountRequest, context: Context
    ) -> pb.GetMailboxAccountResponse:
        account = await self._domain.get_account(parse_account_name(request.name))
        return pb.GetMailboxAccountResponse(account=_account_proto(account))

    async def DeleteMailboxAccount(
        self, request: pb.DeleteMailboxAccountRequest, context: Context
    ) -> pb.DeleteMailboxAccountResponse:
        await self._domain.delete_account(parse_account_name(request.name), request.etag or None)
        return pb.DeleteMailboxAccountResponse()


def _account_update(request: pb.UpsertMailboxAccountRequest) -> AccountUpdate:
    checks = Violations(InvalidRequest)
    if not request.HasField("account"):
        checks.add("account", "is required")
        raise checks.error()
    account = request.account
    mailbox = checks.name(parse_account_name, account.name, "account.name")
    checks.check("account.address", "@" in account.address, "must be an email address")
    provider = _PROVIDERS.get(account.provider)
    settings: dict[str, Any] = {}
    if provider is None:
        checks.add("account.provider", "is required")
    else:
        member, required = _SETTINGS[provider]
        if account.WhichOneof("provider_settings") != member:
            checks.add(f"account.{member}", f"is required for {provider.label} accounts")
        else:
            given = getattr(account, member)
            for name in required:
                checks.require(f"account.{member}.{name}", getattr(given, name))
            if provider is Provider.EXCHANGE_EWS:
                checks.check(
                    "account.ews.access_type",
                    given.access_type in EWS_ACCESS_TYPES,
                    "must be impersonation or delegate",
                )
            if provider is Provider.GOOGLE:
                _check_google(checks, given)
            settings = json_format.MessageToDict(given, preserving_proto_field_name=True)
    if checks or provider is None:
        raise checks.error()
    return AccountUpdate(
        mailbox=mailbox,
        address=account.address,
        provider=provider,
        settings=settings,
        secret=account.secret or None,
        expected_etag=account.etag or None,
        request_id=request.request_id or None,
    )


def _check_google(checks: Violations, given: pb.GoogleSettings) -> None:
    selection = given.calendar_selection
    checks.check(
        "account.google.calendar_selection",
        selection in GOOGLE_CALENDAR_SELECTIONS,
        "must be all, external, calendar or color",
    )
    if selection == "calendar":
        checks.require("account.google.calendar_id", given.calendar_id)
    if selection == "color":
        checks.require("account.google.color_id", given.color_id)


def _account_proto(account: MailboxAccount) -> pb.MailboxAccount:
    message = pb.MailboxAccount(
        name=f"mailboxes/{account.mailbox}/account",
        address=account.address,
        provider=_PROVIDER_ENUMS[account.provider],
        has_secret=account.has_secret,
        update_time=_timestamp(account.update_time),
        etag=account.etag,
    )
    member, _ = _SETTINGS[account.provider]
    json_format.ParseDict(dict(account.settings), getattr(message, member))
    if account.secret_update_time is not None:
        message.secret_update_time.CopyFrom(_timestamp(account.secret_update_time))
    return message


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _deadline(context: Context) -> float | None:
    """Seconds the caller still waits, so throttling is waited out only when it fits."""
    remaining = context.time_remaining()
    return None if remaining is None else float(remaining)
