"""Email sharing against the world (issue #7): claim the key, link, write, remember.

Exactly once rests on three things, each enough for a case the others miss:

- the `email_shares` primary key (org, key): of any number of sessions, replicas or mailboxes
  racing on one email, one inserts the row and writes the EmailMessage; the others wait for its
  claim and then only add their relations;
- a claim with a deadline on that row, so a writer that crashed is taken over, and the
  `attempts` count, so whoever takes over looks the EmailMessage up by its link id before
  writing again (a lost answer must not become a second record);
- the EmailMessage's `Concord_Link_Id__c`, unique in Salesforce, sent as an upsert by
  crm-connector: even a replayed request lands on the same record.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf import struct_pb2
from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord.crm.v1 import crm_connector_service_pb2 as crm
from concord.linker.v1 import linker_service_pb2 as linker
from concord_reconciler.adapters.sharing_tables import email_share_mailboxes, email_shares
from concord_reconciler.domain.errors import PeerError
from concord_reconciler.domain.model import KindCounts, MailboxRecord, SideCounts
from concord_reconciler.domain.names import org_name
from concord_reconciler.domain.sharing import (
    AttachmentPolicy,
    EmailFieldLimits,
    FieldLoss,
    Quarantine,
    Relation,
    ShareKey,
    SharePlan,
    email_selection,
    participants_of,
    plan_share,
    select_shared,
    share_key,
)

__all__ = [
    "EmailShareStore",
    "EmailSharing",
    "ShareFailure",
    "ShareOutcome",
    "ShareReport",
    "share_emails",
]

log = logging.getLogger(__name__)

EMAIL_MESSAGE = "EmailMessage"
RELATION = "EmailMessageRelation"
ATTACHMENT = "Attachment"
LINK_FIELD = "Concord_Link_Id__c"
# What one ApplyBatch may carry: under gRPC's default 4 MiB message limit with room to spare.
BATCH_BYTES = 3_500_000


class SharingCrm(Protocol):
    """What sharing needs of crm-connector (adapters.peers.GrpcCrmSide provides it)."""

    async def apply_batch(
        self, org: str, writes: Sequence[crm.CrmWrite]
    ) -> Sequence[crm.CrmWriteResult]: ...

    async def query_records(self, request: crm.QueryRecordsRequest) -> crm.QueryRecordsResponse: ...

    async def describe(self, org: str, sobject_type: str) -> crm.ObjectDescription: ...


class SharingLinker(Protocol):
    async def resolve_participants(
        self,
        org: str,
        user_id: str,
        kind: int,
        participants: Sequence[res.Participant],
        request_id: str,
        policy: linker.ResolutionPolicy | None = None,
    ) -> linker.ResolveParticipantsResponse: ...


# ---- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShareFailure:
    """One email not shared, with why. `quarantine`: retrying will not help until it changes."""

    ref: res.ItemRef
    reason: str
    message: str
    retryable: bool = False
    quarantine: bool = False


@dataclass(frozen=True)
class ShareOutcome:
    """What sharing one email did."""

    # `created`: this call wrote the EmailMessage; `related`: it existed (another mailbox, an
    # earlier try) and this mailbox's relations were added; `already`: this mailbox had shared
    # it before, nothing was written.
    status: str
    email_message_id: str
    relations_created: int = 0
    attachments_created: int = 0
    losses: tuple[FieldLoss, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass
class ShareReport:
    """Counts for the session and the dashboard, and every email that failed."""

    seen: int = 0
    selected: int = 0
    # Listed with a problem instead of content (malformed MIME at the connector).
    unreadable: int = 0
    created: int = 0
    related: int = 0
    already_shared: int = 0
    relations_created: int = 0
    attachments_created: int = 0
    failures: list[ShareFailure] = field(default_factory=list)
    # Per native id: fields that lost information, and remarks such as a hashed key.
    losses: dict[str, tuple[FieldLoss, ...]] = field(default_factory=dict)
    notes: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def quarantined(self) -> int:
        return sum(1 for f in self.failures if f.quarantine)

    @property
    def errors(self) -> int:
        return len(self.failures)

    def kind_counts(self) -> KindCounts:
        """The session's EMAIL line: a new EmailMessage is a create, relations added to one
        that existed an update; emails nobody selected are skipped on purpose."""
        return KindCounts(
            kind=res.OBJECT_KIND_EMAIL,
            mail_changes_seen=self.seen,
            crm=SideCounts(created=self.created, updated=self.related, errors=self.errors),
            quarantined=self.quarantined,
            skipped=self.seen - self.selected - self.unreadable,
        )


class ShareError(Exception):
    def __init__(
        self, reason: str, message: str, *, retryable: bool = False, quarantine: bool = False
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retryable = retryable
        self.quarantine = quarantine


# ---- the store ----------------------------------------------------------------------------


def _now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class ShareRow:
    email_message_id: str | None
    attempts: int
    attachments_done: bool


class EmailShareStore:
    """The `email_shares` rows and their claims (compare-and-set; SQLite and PostgreSQL)."""

    def __init__(self, engine: AsyncEngine, *, claim_seconds: float = 120.0) -> None:
        self.engine = engine
        self.claim_us = int(claim_seconds * 1_000_000)

    def _row(self, key: ShareKey) -> object:
        return and_(email_shares.c.org_id == key.org_id, email_shares.c.share_key == key.digest)

    async def shared_by(self, key: ShareKey, mailbox_id: str) -> bool:
        async with self.engine.connect() as conn:
            found = await conn.execute(
                select(email_share_mailboxes.c.mailbox_id).where(
                    email_share_mailboxes.c.org_id == key.org_id,
                    email_share_mailboxes.c.share_key == key.digest,
                    email_share_mailboxes.c.mailbox_id == mailbox_id,
                )
            )
            return found.first() is not None

    async def saved_threads(self, mailbox_id: str) -> set[str]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(
                    email_share_mailboxes.c.thread, email_share_mailboxes.c.conversation_id
                ).where(email_share_mailboxes.c.mailbox_id == mailbox_id)
            )
            return {value for row in rows for value in row if value}

    async def claim(self, key: ShareKey) -> str | None:
        """A claim token, or None while another writer holds an unexpired claim."""
        token = str(uuid.uuid4())
        now = _now_us()
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    insert(email_shares).values(
                        org_id=key.org_id,
                        share_key=key.digest,
                        key_source="message_id" if key.from_message_id else "content_hash",
                        link_id=key.link_id,
                        email_message_id=None,
                        attempts=0,
                        attachments_done=False,
                        claim_token=token,
                        claim_until_us=now + self.claim_us,
                        create_time_us=now,
                        update_time_us=now,
                    )
                )
            return token
        except IntegrityError:
            pass  # the row exists: take its claim if it is free or expired
        async with self.engine.begin() as conn:
            taken = await conn.execute(
                update(email_shares)
                .where(
                    self._row(key),  # type: ignore[arg-type]
                    or_(email_shares.c.claim_token.is_(None), email_shares.c.claim_until_us < now),
                )
                .values(claim_token=token, claim_until_us=now + self.claim_us, update_time_us=now)
            )
            return token if taken.rowcount == 1 else None

    async def _update(self, key: ShareKey, token: str, **values: object) -> None:
        now = _now_us()
        async with self.engine.begin() as conn:
            changed = await conn.execute(
                update(email_shares)
                .where(self._row(key), email_shares.c.claim_token == token)  # type: ignore[arg-type]
                .values(update_time_us=now, claim_until_us=now + self.claim_us, **values)
            )
        if changed.rowcount != 1:
            # Held past its deadline and taken over: the other writer looks up before writing,
            # so stopping here loses nothing.
            raise ShareError(
                "SHARE_CLAIM_LOST", "another writer took this email over", retryable=True
            )

    async def get(self, key: ShareKey) -> ShareRow:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        email_shares.c.email_message_id,
                        email_shares.c.attempts,
                        email_shares.c.attachments_done,
                    ).where(self._row(key))  # type: ignore[arg-type]
                )
            ).one()
        return ShareRow(row.email_message_id, row.attempts, bool(row.attachments_done))

    async def renew(self, key: ShareKey, token: str) -> None:
        await self._update(key, token)

    async def note_attempt(self, key: ShareKey, token: str, attempts: int) -> None:
        await self._update(key, token, attempts=attempts)

    async def record_message(self, key: ShareKey, token: str, email_message_id: str) -> None:
        await self._update(key, token, email_message_id=email_message_id)

    async def finish(
        self,
        key: ShareKey,
        token: str,
        *,
        mailbox_id: str,
        native_id: str,
        thread: str,
        conversation_id: str,
        relations: int,
        attachments_done: bool,
    ) -> None:
        """This mailbox is done with the email; the claim is released in the same commit."""
        now = _now_us()
        async with self.engine.begin() as conn:
            released = await conn.execute(
                update(email_shares)
                .where(self._row(key), email_shares.c.claim_token == token)  # type: ignore[arg-type]
                .values(
                    claim_token=None,
                    claim_until_us=0,
                    update_time_us=now,
                    attachments_done=attachments_done,
                )
            )
            if released.rowcount != 1:
                raise ShareError(
                    "SHARE_CLAIM_LOST", "another writer took this email over", retryable=True
                )
            await conn.execute(
                insert(email_share_mailboxes).values(
                    org_id=key.org_id,
                    share_key=key.digest,
                    mailbox_id=mailbox_id,
                    native_id=native_id,
                    thread=thread[:255],
                    conversation_id=conversation_id,
                    relations=relations,
                    create_time_us=now,
                )
            )

    async def release(self, key: ShareKey, token: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(email_shares)
                .where(self._row(key), email_shares.c.claim_token == token)  # type: ignore[arg-type]
                .values(claim_token=None, claim_until_us=0)
            )


# ---- sharing ------------------------------------------------------------------------------


def _struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    fields = struct_pb2.Struct()
    fields.update(values)
    return fields


def _status_name(status: int) -> str:
    return res.WriteStatus.Name(status)  # type: ignore[arg-type]


def _write_error(result: crm.CrmWriteResult, what: str) -> ShareError:
    code = result.errors[0].code if result.errors else _status_name(result.status)
    fields = ", ".join(result.errors[0].fields) if result.errors else ""
    retryable = result.status == res.WRITE_STATUS_RETRYABLE
    # Salesforce's own message can quote the value it refused (STRING_TOO_LONG does), and
    # item errors are shown on the dashboard: the code and the field names say enough.
    return ShareError(
        code,
        f"Salesforce refused the {what}: {code}" + (f" on {fields}" if fields else ""),
        retryable=retryable,
        quarantine=not retryable,
    )


class EmailSharing:
    """Shares emails of one reconciler's mailboxes; safe to run from any number of replicas."""

    def __init__(
        self,
        engine: AsyncEngine,
        crm_side: SharingCrm,
        linker_side: SharingLinker,
        *,
        attachments: AttachmentPolicy | None = None,
        claim_seconds: float = 120.0,
        wait_seconds: float = 30.0,
    ) -> None:
        self.store = EmailShareStore(engine, claim_seconds=claim_seconds)
        self.crm = crm_side
        self.linker = linker_side
        self.attachments = attachments or AttachmentPolicy()
        self.wait_seconds = wait_seconds
        self._limits: dict[str, EmailFieldLimits] = {}

    async def limits(self, org_id: str) -> EmailFieldLimits:
        """The org's EmailMessage field lengths, from its describe (crm-connector caches it)."""
        if org_id not in self._limits:
            described = await self.crm.describe(org_name(org_id), EMAIL_MESSAGE)
            lengths = {f.name: f.length for f in described.fields if f.length}
            self._limits[org_id] = EmailFieldLimits.from_lengths(lengths)
        return self._limits[org_id]

    async def share_emails(
        self,
        mailbox: MailboxRecord,
        changes: Sequence[res.MailChange],
        *,
        org_settings: st.OrgSettings,
        mailbox_settings: st.MailboxSettings,
    ) -> ShareReport:
        """Shares what the user's settings select among listed EMAIL changes.

        `mailbox_settings` are the effective ones (org defaults filled in). Auto-share counts
        mail from the mailbox's registration on as new. One email's failure never stops the
        others; every failure is in the report, quarantines included.
        """
        report = ShareReport(seen=len(changes))
        for change in changes:
            if change.HasField("problem") and change.problem.reason:
                report.unreadable += 1
                report.failures.append(
                    ShareFailure(
                        change.ref,
                        change.problem.reason,
                        change.problem.message,
                        quarantine=True,
                    )
                )
        if org_settings.email_target == st.EMAIL_TARGET_TASK:
            # Tasks of type Email are not built yet: nothing is written rather than the wrong
            # object, and the report says why.
            report.notes[""] = ("the org keeps emails as Tasks; only EmailMessage is supported",)
            return report
        selection = email_selection(mailbox_settings, all_new_since=mailbox.create_time)
        saved = await self.store.saved_threads(mailbox.mailbox_id) if selection.thread else set()
        chosen = select_shared(changes, selection, saved)
        report.selected = len(chosen)
        for index in sorted(chosen):
            change = changes[index]
            try:
                outcome = await self.share_item(
                    mailbox, change.ref, change.item.email, org_settings, mailbox_settings
                )
            except ShareError as error:
                report.failures.append(
                    ShareFailure(
                        change.ref,
                        error.reason,
                        error.message,
                        retryable=error.retryable,
                        quarantine=error.quarantine,
                    )
                )
                continue
            except PeerError as error:
                report.failures.append(
                    ShareFailure(
                        change.ref,
                        f"PEER_{error.code}",
                        error.describe(),
                        retryable=error.retryable,
                    )
                )
                continue
            if outcome.status == "created":
                report.created += 1
            elif outcome.status == "related":
                report.related += 1
            else:
                report.already_shared += 1
            report.relations_created += outcome.relations_created
            report.attachments_created += outcome.attachments_created
            if outcome.losses:
                report.losses[change.ref.native_id] = outcome.losses
            if outcome.notes:
                report.notes[change.ref.native_id] = outcome.notes
        return report

    async def share_item(
        self,
        mailbox: MailboxRecord,
        ref: res.ItemRef,
        item: res.EmailItem,
        org_settings: st.OrgSettings,
        mailbox_settings: st.MailboxSettings,
    ) -> ShareOutcome:
        """Shares one email now, whatever the selection (the Save button path too)."""
        key = share_key(mailbox.org_id, item)
        if await self.store.shared_by(key, mailbox.mailbox_id):
            return await self._already(key)
        participants, linking_losses = participants_of(item)
        policy = linker.ResolutionPolicy(
            auto_resolve=org_settings.auto_resolve,
            blacklist=[*org_settings.blacklist, *mailbox_settings.blacklist],
        )
        resolution = await self.linker.resolve_participants(
            mailbox.org,
            mailbox.crm_user_id,
            res.OBJECT_KIND_EMAIL,
            participants,
            # Per mailbox: its participants and policy are its own; a replay creates nothing twice.
            f"{key.link_id}/{mailbox.mailbox_id}",
            policy,
        )
        plan = plan_share(
            key,
            item,
            mailbox_address=mailbox.address,
            resolution=resolution,
            limits=await self.limits(mailbox.org_id),
            attachments=self.attachments,
            linking_losses=linking_losses,
        )
        if isinstance(plan, Quarantine):
            raise ShareError(plan.reason, plan.message, quarantine=True)
        token = await self._claim(key)
        try:
            if await self.store.shared_by(key, mailbox.mailbox_id):
                # The same mailbox in a racing session got here first.
                await self.store.release(key, token)
                return await self._already(key)
            return await self._write(mailbox, ref, item, plan, token)
        except BaseException:
            await self.store.release(key, token)
            raise

    async def _already(self, key: ShareKey) -> ShareOutcome:
        row = await self.store.get(key)
        return ShareOutcome(
            "already", row.email_message_id or "", notes=(key.note,) if key.note else ()
        )

    async def _claim(self, key: ShareKey) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_seconds
        delay = 0.02
        while True:
            token = await self.store.claim(key)
            if token is not None:
                return token
            if loop.time() >= deadline:
                raise ShareError(
                    "SHARE_BUSY", "another session is sharing this email now", retryable=True
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _write(
        self,
        mailbox: MailboxRecord,
        ref: res.ItemRef,
        item: res.EmailItem,
        plan: SharePlan,
        token: str,
    ) -> ShareOutcome:
        key = plan.key
        org = mailbox.org
        row = await self.store.get(key)
        message_id = row.email_message_id
        created = False
        if message_id is None and row.attempts:
            # An earlier create may have reached Salesforce and lost its answer.
            message_id = await self._find_message(org, key.link_id)
            if message_id is not None:
                await self.store.record_message(key, token, message_id)
        if message_id is None:
            await self.store.note_attempt(key, token, row.attempts + 1)
            message_id = await self._create_message(org, plan)
            await self.store.record_message(key, token, message_id)
            created = True
        # A fresh EmailMessage has no relations or attachments yet: no need to ask.
        existing = set() if created else await self._relations(org, message_id)
        relations = [r for r in plan.relations if (r.relation_id, r.relation_type) not in existing]
        files: list[dict[str, Any]] = []
        if not row.attachments_done:
            files = plan.attachment_fields(message_id)
            if files and not created:
                present = await self._attachment_names(org, message_id)
                files = [f for f in files if f["Name"] not in present]
        await self.store.renew(key, token)
        await self._create_children(org, message_id, relations, files)
        await self.store.finish(
            key,
            token,
            mailbox_id=mailbox.mailbox_id,
            native_id=ref.native_id,
            thread=plan.thread,
            conversation_id=item.conversation_id,
            relations=len(relations),
            attachments_done=True,
        )
        return ShareOutcome(
            "created" if created else "related",
            message_id,
            relations_created=len(relations),
            attachments_created=len(files),
            losses=plan.losses,
            notes=plan.notes,
        )

    async def _query(
        self, org: str, sobject_type: str, fields: Sequence[str], where: dict[str, str]
    ) -> list[res.CrmRecord]:
        request = crm.QueryRecordsRequest(
            org=org,
            sobject_type=sobject_type,
            fields=fields,
            filters=[
                crm.FieldFilter(field=name, values=[struct_pb2.Value(string_value=value)])
                for name, value in where.items()
            ],
        )
        records: list[res.CrmRecord] = []
        while True:
            response = await self.crm.query_records(request)
            records.extend(response.records)
            if not response.next_page_token:
                return records
            request.page_token = response.next_page_token

    async def _find_message(self, org: str, link_id: str) -> str | None:
        found = await self._query(org, EMAIL_MESSAGE, ["Id"], {LINK_FIELD: link_id})
        return found[0].id if found else None

    async def _relations(self, org: str, message_id: str) -> set[tuple[str, str]]:
        found = await self._query(
            org, RELATION, ["RelationId", "RelationType"], {"EmailMessageId": message_id}
        )
        return {
            (
                record.fields.fields["RelationId"].string_value,
                record.fields.fields["RelationType"].string_value,
            )
            for record in found
        }

    async def _attachment_names(self, org: str, message_id: str) -> set[str]:
        found = await self._query(org, ATTACHMENT, ["Name"], {"ParentId": message_id})
        return {record.fields.fields["Name"].string_value for record in found}

    async def _create_message(self, org: str, plan: SharePlan) -> str:
        write = crm.CrmWrite(
            operation=crm.CRM_WRITE_OPERATION_CREATE,
            sobject_type=EMAIL_MESSAGE,
            link_id=plan.key.link_id,
            fields=_struct(plan.fields),
        )
        (result,) = await self.crm.apply_batch(org, [write])
        if result.status != res.WRITE_STATUS_OK or not result.id:
            raise _write_error(result, "EmailMessage")
        return result.id

    async def _create_children(
        self,
        org: str,
        message_id: str,
        relations: Sequence[Relation],
        files: Sequence[dict[str, Any]],
    ) -> None:
        writes = [
            crm.CrmWrite(
                operation=crm.CRM_WRITE_OPERATION_CREATE,
                sobject_type=RELATION,
                fields=_struct(
                    {
                        "EmailMessageId": message_id,
                        "RelationId": relation.relation_id,
                        "RelationType": relation.relation_type,
                        "RelationAddress": relation.address,
                    }
                ),
            )
            for relation in relations
        ]
        # Relations go together (crm-connector packs them 200 to a collection); files go in
        # batches that stay inside one gRPC message, base64 and all.
        batches: list[list[crm.CrmWrite]] = [writes] if writes else []
        size = BATCH_BYTES
        for values in files:
            write = crm.CrmWrite(
                operation=crm.CRM_WRITE_OPERATION_CREATE,
                sobject_type=ATTACHMENT,
                fields=_struct(values),
            )
            if size + write.ByteSize() > BATCH_BYTES:
                batches.append([])
                size = 0
            batches[-1].append(write)
            size += write.ByteSize()
        for batch in batches:
            results = await self.crm.apply_batch(org, batch)
            failed = [r for r in results if r.status != res.WRITE_STATUS_OK]
            if failed:
                # Nothing is recorded for this mailbox, so the next try looks up what got
                # written and adds the rest.
                raise _write_error(failed[0], "relations and attachments")


async def share_emails(
    sharing: EmailSharing,
    mailbox: MailboxRecord,
    changes: Sequence[res.MailChange],
    *,
    org_settings: st.OrgSettings,
    mailbox_settings: st.MailboxSettings,
) -> ShareReport:
    """The session runner's entry point: share the selected emails among listed changes."""
    return await sharing.share_emails(
        mailbox, changes, org_settings=org_settings, mailbox_settings=mailbox_settings
    )
