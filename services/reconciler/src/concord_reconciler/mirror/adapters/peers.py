"""gRPC clients of the four peers, as the sync sides (`adapters.sync_sides`) use them.

Every call has a deadline; the channels retry UNAVAILABLE / RESOURCE_EXHAUSTED (all these
calls are reads or idempotent writes), and what still fails becomes a domain PeerError naming
the peer, the method and the status, so a failed session says which dependency broke. Each
channel spreads its calls over every replica of its peer that reports SERVING.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc

from concord.common.v1 import resources_pb2 as res
from concord.crm.v1 import crm_connector_service_pb2 as crm
from concord.crm.v1 import crm_connector_service_pb2_grpc as crm_grpc
from concord.linker.v1 import linker_service_pb2 as linker
from concord.linker.v1 import linker_service_pb2_grpc as linker_grpc
from concord.mail.v1 import mail_connector_service_pb2 as mail
from concord.mail.v1 import mail_connector_service_pb2_grpc as mail_grpc
from concord.mapping.v1 import mapping_service_pb2 as mapping
from concord.mapping.v1 import mapping_service_pb2_grpc as mapping_grpc
from concord_reconciler.kernel.errors import PeerError
from concord_reconciler.kernel.kinds import Kind
from concord_reconciler.mirror.domain.ports import CrmPage, MailPage
from concord_rpc import AttachIdentity, IdentitySigner, channel, from_rpc_error

__all__ = [
    "CRM_CONNECTOR_SERVICE",
    "LINKER_SERVICE",
    "MAIL_CONNECTOR_SERVICE",
    "MAPPING_SERVICE",
    "GrpcCrmSide",
    "GrpcLinker",
    "GrpcMailSide",
    "GrpcMapping",
    "PeerChannels",
]

T = TypeVar("T")

MAIL_CONNECTOR = "mail-connector"
# A mailbox read waits no longer than this for its push state (a dashboard detail).
PUSH_STATE_SECONDS = 0.5
CRM_CONNECTOR = "crm-connector"
MAPPING = "mapping"
LINKER = "linker"

# What each peer's replicas report SERVING on their health service while they take calls.
MAIL_CONNECTOR_SERVICE = mail.DESCRIPTOR.services_by_name["MailConnectorService"].full_name
CRM_CONNECTOR_SERVICE = crm.DESCRIPTOR.services_by_name["CrmConnectorService"].full_name
MAPPING_SERVICE = mapping.DESCRIPTOR.services_by_name["MappingService"].full_name
LINKER_SERVICE = linker.DESCRIPTOR.services_by_name["LinkerService"].full_name


async def _call(peer: str, method: str, call: Awaitable[T]) -> T:
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        failure = from_rpc_error(error)
        raise PeerError(
            peer,
            method,
            failure.code.name,
            failure.message,
            failure.reason,
            failure.retry_after,
        ) from error


# Changes asked for per ListChanges page: about the most a provider lists in one call (EWS's
# SyncFolderItems 512; Graph and Google cap it lower themselves), so a first sync of thousands
# of items costs a few pages, each one round trip and one mapping call, instead of one per 100.
MAIL_LIST_PAGE = 500
# The request header a mail-connector replica is chosen by: every call for one mailbox goes
# to one replica while it serves, so the mailbox's throttling (Graph's 4 requests in flight, a
# server's "wait") and its provider session are kept in one place.
MAILBOX_AFFINITY = "concord-mailbox"


def _for(mailbox: str) -> tuple[tuple[str, str]]:
    """The metadata that sends a call to the mailbox's replica (`MAILBOX_AFFINITY`)."""
    return ((MAILBOX_AFFINITY, mailbox),)


class GrpcMailSide:
    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self._stub = mail_grpc.MailConnectorServiceStub(channel)
        self._timeout = timeout

    async def list_changes(
        self,
        mailbox: str,
        kind: Kind,
        cursor: res.Cursor,
        known: Mapping[str, str] | None = None,
    ) -> MailPage:
        request = mail.ListChangesRequest(
            mailbox=mailbox,
            kind=kind,
            cursor=cursor,
            page_size=MAIL_LIST_PAGE,
            include_items=True,
            known=[res.ItemRef(native_id=n, version=v) for n, v in (known or {}).items()],
        )
        response = await _call(
            MAIL_CONNECTOR,
            "ListChanges",
            self._stub.ListChanges(request, timeout=self._timeout, metadata=_for(mailbox)),
        )
        return MailPage(
            changes=list(response.changes),
            next_cursor=response.next_cursor,
            full_resync_required=response.full_resync_required,
            has_more=response.has_more,
        )

    async def get_items(
        self,
        mailbox: str,
        refs: Sequence[res.ItemRef] = (),
        link_ids: Sequence[str] = (),
        kind: Kind = res.OBJECT_KIND_UNSPECIFIED,
    ) -> mail.GetItemsResponse:
        request = mail.GetItemsRequest(
            mailbox=mailbox,
            refs=refs,
            link_ids=link_ids,
            kind=kind,
        )
        return await _call(
            MAIL_CONNECTOR,
            "GetItems",
            self._stub.GetItems(request, timeout=self._timeout, metadata=_for(mailbox)),
        )

    async def push_state(self, mailbox: str) -> tuple[res.PushState.ValueType, str]:
        """The mailbox's push as the mail-connector sees it; UNSPECIFIED when it cannot say in
        time (the dashboard shows the rest of the mailbox rather than wait for it)."""
        try:
            response = await _call(
                MAIL_CONNECTOR,
                "ListSubscriptions",
                self._stub.ListSubscriptions(
                    mail.ListSubscriptionsRequest(parent=mailbox),
                    timeout=PUSH_STATE_SECONDS,
                    metadata=_for(mailbox),
                ),
            )
        except PeerError as error:
            return res.PUSH_STATE_UNSPECIFIED, f"mail-connector: {error.code}"
        return response.push_state, response.push_state_reason

    async def apply_items(
        self, mailbox: str, writes: Sequence[mail.MailWrite]
    ) -> list[mail.MailWriteResult]:
        request = mail.ApplyItemsRequest(mailbox=mailbox, writes=writes)
        response = await _call(
            MAIL_CONNECTOR,
            "ApplyItems",
            self._stub.ApplyItems(request, timeout=self._timeout, metadata=_for(mailbox)),
        )
        return list(response.results)

    async def upsert_account(
        self, account: mail.MailboxAccount, request_id: str
    ) -> mail.MailboxAccount:
        response = await _call(
            MAIL_CONNECTOR,
            "UpsertMailboxAccount",
            self._stub.UpsertMailboxAccount(
                mail.UpsertMailboxAccountRequest(account=account, request_id=request_id),
                timeout=self._timeout,
                metadata=_for(account.name.removesuffix("/account")),
            ),
        )
        return response.account

    async def delete_account(self, mailbox: str) -> None:
        """Forget the mailbox's credentials and cursors; already forgotten is fine."""
        try:
            await _call(
                MAIL_CONNECTOR,
                "DeleteMailboxAccount",
                self._stub.DeleteMailboxAccount(
                    mail.DeleteMailboxAccountRequest(name=f"{mailbox}/account"),
                    timeout=self._timeout,
                    metadata=_for(mailbox),
                ),
            )
        except PeerError as error:
            if error.code != "NOT_FOUND":
                raise


class GrpcCrmSide:
    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self._stub = crm_grpc.CrmConnectorServiceStub(channel)
        self._timeout = timeout

    async def list_changes(
        self,
        org: str,
        sobject_type: str,
        cursor: res.Cursor,
        owner_id: str,
        fields: Sequence[str] = (),
    ) -> CrmPage:
        request = crm.ListChangesRequest(
            org=org, sobject_type=sobject_type, cursor=cursor, owner_id=owner_id, fields=fields
        )
        response = await _call(
            CRM_CONNECTOR, "ListChanges", self._stub.ListChanges(request, timeout=self._timeout)
        )
        return CrmPage(
            changes=list(response.changes),
            next_cursor=response.next_cursor,
            full_resync_required=response.full_resync_required,
            has_more=response.has_more,
        )

    async def get_records(
        self, org: str, sobject_type: str, ids: Sequence[str], fields: Sequence[str] = ()
    ) -> crm.GetRecordsResponse:
        request = crm.GetRecordsRequest(org=org, sobject_type=sobject_type, ids=ids, fields=fields)
        return await _call(
            CRM_CONNECTOR, "GetRecords", self._stub.GetRecords(request, timeout=self._timeout)
        )

    async def query_records(self, request: crm.QueryRecordsRequest) -> crm.QueryRecordsResponse:
        return await _call(
            CRM_CONNECTOR, "QueryRecords", self._stub.QueryRecords(request, timeout=self._timeout)
        )

    async def describe(self, org: str, sobject_type: str) -> crm.ObjectDescription:
        request = crm.DescribeObjectRequest(org=org, sobject_type=sobject_type)
        response = await _call(
            CRM_CONNECTOR,
            "DescribeObject",
            self._stub.DescribeObject(request, timeout=self._timeout),
        )
        return response.object

    async def get_budget(self, org: str) -> res.ApiBudget:
        response = await _call(
            CRM_CONNECTOR,
            "GetBudget",
            self._stub.GetBudget(crm.GetBudgetRequest(org=org), timeout=self._timeout),
        )
        return response.budget

    async def get_change_stream(self, org: str) -> res.ChangeStream:
        response = await _call(
            CRM_CONNECTOR,
            "GetChangeStream",
            self._stub.GetChangeStream(crm.GetChangeStreamRequest(org=org), timeout=self._timeout),
        )
        return response.stream

    async def apply_batch(
        self, org: str, writes: Sequence[crm.CrmWrite]
    ) -> list[crm.CrmWriteResult]:
        request = crm.ApplyBatchRequest(org=org, writes=writes)
        response = await _call(
            CRM_CONNECTOR, "ApplyBatch", self._stub.ApplyBatch(request, timeout=self._timeout)
        )
        return list(response.results)


class GrpcMapping:
    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self._stub = mapping_grpc.MappingServiceStub(channel)
        self._timeout = timeout

    async def map_to_crm(
        self, org: str, items: Sequence[res.MailItem], owner_id: str
    ) -> Sequence[mapping.MappedRecord]:
        request = mapping.MapToCrmRequest(
            org=org,
            inputs=[mapping.MapToCrmInput(item=item) for item in items],
            owner_id=owner_id,
        )
        response = await _call(
            MAPPING, "MapToCrm", self._stub.MapToCrm(request, timeout=self._timeout)
        )
        return list(response.results)

    async def map_to_mail(
        self, org: str, records: Sequence[res.CrmRecord]
    ) -> Sequence[mapping.MappedItem]:
        request = mapping.MapToMailRequest(org=org, records=records)
        response = await _call(
            MAPPING, "MapToMail", self._stub.MapToMail(request, timeout=self._timeout)
        )
        return list(response.results)

    async def get_mapping_table(self, name: str) -> mapping.MappingTable:
        response = await _call(
            MAPPING,
            "GetMappingTable",
            self._stub.GetMappingTable(
                mapping.GetMappingTableRequest(name=name), timeout=self._timeout
            ),
        )
        return response.table


class GrpcLinker:
    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self._stub = linker_grpc.LinkerServiceStub(channel)
        self._timeout = timeout

    async def resolve_participants(
        self,
        org: str,
        user_id: str,
        kind: Kind,
        participants: Sequence[res.Participant],
        request_id: str,
        policy: linker.ResolutionPolicy | None = None,
    ) -> linker.ResolveParticipantsResponse:
        request = linker.ResolveParticipantsRequest(
            org=org,
            user_id=user_id,
            kind=kind,
            participants=participants,
            request_id=request_id,
            policy=policy,
        )
        return await _call(
            LINKER,
            "ResolveParticipants",
            self._stub.ResolveParticipants(request, timeout=self._timeout),
        )


@dataclass
class PeerChannels:
    """One retrying, balanced channel per peer, and the ports over them."""

    mail_channel: grpc.aio.Channel
    crm_channel: grpc.aio.Channel
    mapping_channel: grpc.aio.Channel
    linker_channel: grpc.aio.Channel
    timeout: float

    @classmethod
    def open(
        cls,
        *,
        mail_addr: str,
        crm_addr: str,
        mapping_addr: str,
        linker_addr: str,
        timeout: float,
        signer: IdentitySigner,
    ) -> PeerChannels:
        # Each call carries the identity it is made for (concord_rpc.identity); peers refuse
        # calls without one.
        attach = [AttachIdentity(signer)]

        def balanced(addr: str, service: str) -> grpc.aio.Channel:
            # An address may name several replicas (`ipv4:a:1,b:2`, a headless Service's
            # `dns:///` name): calls go round-robin over those SERVING, so a scale-out shares
            # the sessions' calls and a dead or draining replica costs none while another
            # serves (through one virtual address gRPC keeps one connection to one replica).
            return channel(addr, retry=True, interceptors=attach, balance=service)

        return cls(
            channel(
                mail_addr,
                retry=True,
                interceptors=attach,
                balance=MAIL_CONNECTOR_SERVICE,
                affinity=MAILBOX_AFFINITY,
            ),
            balanced(crm_addr, CRM_CONNECTOR_SERVICE),
            balanced(mapping_addr, MAPPING_SERVICE),
            balanced(linker_addr, LINKER_SERVICE),
            timeout,
        )

    @property
    def mail(self) -> GrpcMailSide:
        return GrpcMailSide(self.mail_channel, self.timeout)

    @property
    def crm(self) -> GrpcCrmSide:
        return GrpcCrmSide(self.crm_channel, self.timeout)

    @property
    def mapping(self) -> GrpcMapping:
        return GrpcMapping(self.mapping_channel, self.timeout)

    @property
    def linker(self) -> GrpcLinker:
        return GrpcLinker(self.linker_channel, self.timeout)

    async def close(self) -> None:
        for open_channel in (
            self.mail_channel,
            self.crm_channel,
            self.mapping_channel,
            self.linker_channel,
        ):
            await open_channel.close()
