"""Each session's sync engine over the peers' gRPC APIs: the mirror's two sides, the link store
and the email pass, bound to the session's mailbox, org and user."""

from __future__ import annotations

from dataclasses import dataclass

from concord.common.v1 import resources_pb2 as res
from concord_reconciler.mirror.adapters.crm_side import CrmSyncSide
from concord_reconciler.mirror.adapters.links import SqlLinkStore
from concord_reconciler.mirror.adapters.mail_side import MailSyncSide
from concord_reconciler.mirror.adapters.session_links import SessionLinks
from concord_reconciler.mirror.adapters.sync_sides import (
    CrmClient,
    LinkerClient,
    MailClient,
    MappingClient,
    SessionMapping,
)
from concord_reconciler.sessions.domain.runner import SessionScope, SyncPorts
from concord_reconciler.sharing.adapters.email_share import GrpcEmailShare
from concord_reconciler.sharing.adapters.sharing import EmailSharing

# The mail providers whose adapters store the link id an update names (ApplyItems'
# `link_id` path). DAV has no adapter yet: its sessions fail before writing anything.
RELINKING_PROVIDERS = frozenset(
    {res.MAIL_PROVIDER_EXCHANGE_EWS, res.MAIL_PROVIDER_GRAPH, res.MAIL_PROVIDER_GOOGLE}
)


@dataclass
class GrpcSyncEngine:
    """Builds each session's sides over the peers' channels, with the link store."""

    mail: MailClient
    crm: CrmClient
    mapping: MappingClient
    linker: LinkerClient
    # Each session gets its own view (`SessionLinks`): its first reads in one go, no write of
    # a cursor that did not move.
    links: SqlLinkStore
    # Shares the mailbox's emails after the pairs; None: sessions share no email.
    sharing: EmailSharing | None = None

    def ports(self, scope: SessionScope) -> SyncPorts:
        shared = SessionMapping(self.mapping, scope.org, scope.crm_user_id)
        emails = None
        if (
            self.sharing is not None
            and scope.mailbox_record is not None
            and scope.org_settings is not None
            and scope.mailbox_settings is not None
        ):
            emails = GrpcEmailShare(
                self.mail,
                self.sharing,
                scope.mailbox_record,
                scope.org_settings,
                scope.mailbox_settings,
            )
        return SyncPorts(
            mail=MailSyncSide(
                self.mail,
                shared,
                scope.mailbox,
                dict(scope.categories),
                relinks=scope.mailbox_record is None
                or scope.mailbox_record.provider in RELINKING_PROVIDERS,
            ),
            crm=CrmSyncSide(
                self.crm,
                shared,
                self.linker,
                scope.org,
                scope.crm_user_id,
                scope.resolution,
            ),
            links=SessionLinks(self.links),
            emails=emails,
        )
