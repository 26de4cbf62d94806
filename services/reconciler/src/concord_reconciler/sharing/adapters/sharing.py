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

Sharing one email is one sequence — claim, link, write, relate, attach, remember — kept in one
class and read top to bottom; that is why the module is long (its rows live in `store.py`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import struct_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord.crm.v1 import crm_connector_service_pb2 as crm
from concord.linker.v1 import linker_service_pb2 as linker
from concord_reconciler.kernel.errors import PeerError
from concord_reconciler.kernel.names import org_name
from concord_reconciler.mailboxes.domain.model import MailboxRecord
from concord_reconciler.sharing.adapters.store import EmailShareStore, ShareRow
from concord_reconciler.sharing.domain.ports import (
    ShareError,
    ShareFailure,
    ShareOutcome,
    ShareReport,
    SharingCrm,
    SharingLinker,
)
from concord_reconciler.sharing.domain.sharing import (
    AttachmentPolicy,
    EmailFieldLimits,
    Quarantine,
    Relation,
    ShareKey,
    SharePlan,
    apply_choice,
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
# Values in one SOQL IN list; keeps a query far below SOQL's length limit.
QUERY_IN_SIZE = 200


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
        others; every failure is in the report, quarantines included. The writes of all the
        emails go together: a page of emails costs a few API calls, not a few per email.
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
                        side=res.SYNC_SIDE_MAIL,
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
        items = [(changes[i].ref, changes[i].item.email) for i in sorted(chosen)]
        results = await self._share_many(mailbox, items, org_settings, mailbox_settings)
        for (ref, _), result in zip(items, results, strict=True):
            if isinstance(result, ShareFailure):
                report.failures.append(result)
                continue
            if result.status == "created":
                report.created += 1
            elif result.status == "related":
                report.related += 1
            else:
                report.already_shared += 1
            report.relations_created += result.relations_created
            report.attachments_created += result.attachments_created
            if result.losses:
                report.losses[ref.native_id] = result.losses
            if result.notes:
                report.notes[ref.native_id] = result.notes
        shared = [
            ref.native_id
            for (ref, _), r in zip(items, results, strict=True)
            if isinstance(r, ShareOutcome)
        ]
        await self.store.record_failures(mailbox.mailbox_id, report.failures, shared)
        return report

    async def share_item(
        self,
        mailbox: MailboxRecord,
        ref: res.ItemRef,
        item: res.EmailItem,
        org_settings: st.OrgSettings,
        mailbox_settings: st.MailboxSettings,
        chosen: Sequence[str] = (),
    ) -> ShareOutcome:
        """Shares one email now, whatever the selection (the Save button path), linked to
        the records the user chose when `chosen` names any."""
        prepared = await self._prepare(mailbox, item, org_settings, mailbox_settings, chosen)
        if isinstance(prepared, ShareOutcome):
            return prepared
        result = await self._write_waiting(mailbox, ref, item, prepared)
        if isinstance(result, ShareFailure):
            raise ShareError(
                result.reason,
                result.message,
                retryable=result.retryable,
                quarantine=result.quarantine,
            )
        return result

    async def _prepare(
        self,
        mailbox: MailboxRecord,
        item: res.EmailItem,
        org_settings: st.OrgSettings,
        mailbox_settings: st.MailboxSettings,
        chosen: Sequence[str] = (),
    ) -> SharePlan | ShareOutcome:
        """The plan for one email, or `already` when this mailbox shared it before."""
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
        if chosen:
            resolution, choice_losses = apply_choice(resolution, chosen)
            linking_losses = [*linking_losses, *choice_losses]
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
            raise ShareError(plan.reason, plan.message, quarantine=True, side=res.SYNC_SIDE_MAIL)
        return plan

    async def _share_many(
        self,
        mailbox: MailboxRecord,
        items: Sequence[tuple[res.ItemRef, res.EmailItem]],
        org_settings: st.OrgSettings,
        mailbox_settings: st.MailboxSettings,
    ) -> list[ShareOutcome | ShareFailure]:
        results: list[ShareOutcome | ShareFailure | None] = [None] * len(items)
        plans: list[tuple[int, SharePlan]] = []
        for index, (ref, item) in enumerate(items):
            try:
                prepared = await self._prepare(mailbox, item, org_settings, mailbox_settings)
            except (ShareError, PeerError) as error:
                results[index] = _failure(ref, error)
                continue
            if isinstance(prepared, ShareOutcome):
                results[index] = prepared
            else:
                plans.append((index, prepared))
        # Claimed only now that every email is linked, so no claim ages while the linker works.
        pending: list[_Pending] = []
        # Emails another writer holds right now (or listed twice here): one by one, waiting.
        deferred: list[tuple[int, SharePlan]] = []
        for index, plan in plans:
            token = await self.store.claim(plan.key)
            if token is None:
                deferred.append((index, plan))
            else:
                ref, item = items[index]
                pending.append(_Pending(index, ref, item, plan, token))
        await self._write_claimed(mailbox, pending)
        for done in pending:
            results[done.index] = done.result()
        for index, plan in deferred:
            ref, item = items[index]
            try:
                results[index] = await self._write_waiting(mailbox, ref, item, plan)
            except (ShareError, PeerError) as error:
                results[index] = _failure(ref, error)
        return [r if r is not None else _failure(items[i][0], None) for i, r in enumerate(results)]

    async def _write_waiting(
        self, mailbox: MailboxRecord, ref: res.ItemRef, item: res.EmailItem, plan: SharePlan
    ) -> ShareOutcome | ShareFailure:
        token = await self._claim(plan.key)
        pending = _Pending(0, ref, item, plan, token)
        await self._write_claimed(mailbox, [pending])
        return pending.result()

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

    async def _write_claimed(self, mailbox: MailboxRecord, pending: Sequence[_Pending]) -> None:
        """Writes claimed emails together; every claim is released, written or not."""
        try:
            await self._write_batch(mailbox, pending)
        except (ShareError, PeerError) as error:
            for each in pending:
                if not each.finished and each.error is None:
                    each.error = _share_error(error)
        finally:
            for each in pending:
                if not each.finished:
                    await self.store.release(each.plan.key, each.token)

    async def _write_batch(self, mailbox: MailboxRecord, pending: Sequence[_Pending]) -> None:
        org = mailbox.org
        live: list[_Pending] = []
        for each in pending:
            key = each.plan.key
            if await self.store.shared_by(key, mailbox.mailbox_id):
                # The same mailbox in a racing session got here first.
                each.outcome = await self._already(key)
                continue
            each.row = await self.store.get(key)
            each.message_id = each.row.email_message_id
            live.append(each)

        # An earlier create may have reached Salesforce and lost its answer: look first.
        lost = [p for p in live if p.message_id is None and p.attempts]
        if lost:
            found = await self._query_in(
                org,
                EMAIL_MESSAGE,
                ["Id", LINK_FIELD],
                LINK_FIELD,
                [p.plan.key.link_id for p in lost],
            )
            by_link = {r.fields.fields[LINK_FIELD].string_value.lower(): r.id for r in found}
            for each in lost:
                each.message_id = by_link.get(each.plan.key.link_id.lower())
                if each.message_id:
                    await self._step(each, self.store.record_message, each.message_id)

        creates = [p for p in live if p.message_id is None and p.error is None]
        for each in creates:
            await self._step(each, self.store.note_attempt, each.attempts + 1)
        creates = [p for p in creates if p.error is None]
        if creates:
            writes = [
                crm.CrmWrite(
                    operation=crm.CRM_WRITE_OPERATION_CREATE,
                    sobject_type=EMAIL_MESSAGE,
                    link_id=p.plan.key.link_id,
                    fields=_struct(p.plan.fields),
                )
                for p in creates
            ]
            results = await self._apply(org, writes, creates)
            for each, result in zip(creates, results, strict=True):
                if result is None:
                    continue
                if result.status != res.WRITE_STATUS_OK or not result.id:
                    each.error = _write_error(result, "EmailMessage")
                    continue
                each.message_id, each.created = result.id, True
                await self._step(each, self.store.record_message, result.id)

        ready = [p for p in live if p.error is None and p.message_id]
        older = [p for p in ready if not p.created]
        existing: dict[str, set[tuple[str, str]]] = {}
        if older:
            # A fresh EmailMessage has no relations yet: only the older ones are asked about.
            found = await self._query_in(
                org,
                RELATION,
                ["EmailMessageId", "RelationId", "RelationType"],
                "EmailMessageId",
                [p.message_id or "" for p in older],
            )
            for record in found:
                got = record.fields.fields
                existing.setdefault(got["EmailMessageId"].string_value, set()).add(
                    (got["RelationId"].string_value, got["RelationType"].string_value)
                )
        children: list[tuple[_Pending, crm.CrmWrite]] = []
        files: list[tuple[_Pending, crm.CrmWrite]] = []
        for each in ready:
            message_id = each.message_id or ""
            have = existing.get(message_id, set())
            each.relations = [
                r for r in each.plan.relations if (r.relation_id, r.relation_type) not in have
            ]
            children.extend((each, _relation_write(message_id, r)) for r in each.relations)
            if each.row is not None and not each.row.attachments_done:
                wanted = each.plan.attachment_fields(message_id)
                if wanted and not each.created:
                    present = await self._attachment_names(org, message_id)
                    wanted = [v for v in wanted if v["Name"] not in present]
                each.files = len(wanted)
                files.extend((each, _attachment_write(v)) for v in wanted)
            await self._step(each, self.store.renew)
        # Relations go together (crm-connector packs them 200 to a collection); files go in
        # batches that stay inside one gRPC message, base64 and all.
        for batch in _batches(children, files):
            owners = [owner for owner, _ in batch]
            results = await self._apply(org, [write for _, write in batch], owners)
            for owner, result in zip(owners, results, strict=True):
                if result is not None and result.status != res.WRITE_STATUS_OK:
                    # Nothing is recorded for this mailbox, so the next try looks up what
                    # got written and adds the rest.
                    owner.error = owner.error or _write_error(result, "relations and attachments")

        for each in ready:
            if each.error is not None:
                continue
            try:
                await self.store.finish(
                    each.plan.key,
                    each.token,
                    mailbox_id=mailbox.mailbox_id,
                    native_id=each.ref.native_id,
                    thread=each.plan.thread,
                    conversation_id=each.item.conversation_id,
                    relations=len(each.relations),
                    attachments_done=True,
                )
            except ShareError as error:
                each.error = error
                continue
            each.finished = True
            each.outcome = ShareOutcome(
                "created" if each.created else "related",
                each.message_id or "",
                relations_created=len(each.relations),
                attachments_created=each.files,
                losses=each.plan.losses,
                notes=each.plan.notes,
            )
        for each in pending:
            if each.outcome is not None and each.outcome.status == "already":
                await self.store.release(each.plan.key, each.token)
                each.finished = True

    async def _step(self, each: _Pending, action: Any, *args: Any) -> None:
        """A store write for one email; a lost claim fails that email, not the batch."""
        try:
            await action(each.plan.key, each.token, *args)
        except ShareError as error:
            each.error = error

    async def _apply(
        self, org: str, writes: Sequence[crm.CrmWrite], owners: Sequence[_Pending]
    ) -> list[crm.CrmWriteResult | None]:
        """One ApplyBatch; when the call itself fails, each email it carried fails with it."""
        try:
            return list(await self.crm.apply_batch(org, writes))
        except PeerError as error:
            for owner in owners:
                owner.error = owner.error or _share_error(error)
            return [None] * len(writes)

    async def _query_in(
        self, org: str, sobject_type: str, fields: Sequence[str], field: str, values: Sequence[str]
    ) -> list[res.CrmRecord]:
        """Records whose `field` is one of `values`, a bounded IN list per query."""
        records: list[res.CrmRecord] = []
        for start in range(0, len(values), QUERY_IN_SIZE):
            request = crm.QueryRecordsRequest(
                org=org,
                sobject_type=sobject_type,
                fields=fields,
                filters=[
                    crm.FieldFilter(
                        field=field,
                        values=[
                            struct_pb2.Value(string_value=v)
                            for v in values[start : start + QUERY_IN_SIZE]
                        ],
                    )
                ],
            )
            while True:
                response = await self.crm.query_records(request)
                records.extend(response.records)
                if not response.next_page_token:
                    break
                request.page_token = response.next_page_token
        return records

    async def _attachment_names(self, org: str, message_id: str) -> set[str]:
        found = await self._query_in(org, ATTACHMENT, ["Name"], "ParentId", [message_id])
        return {record.fields.fields["Name"].string_value for record in found}


@dataclass
class _Pending:
    """One claimed email on its way through a batch, and what happened to it."""

    index: int
    ref: res.ItemRef
    item: res.EmailItem
    plan: SharePlan
    token: str
    row: ShareRow | None = None
    message_id: str | None = None
    created: bool = False
    relations: list[Relation] = field(default_factory=list)
    files: int = 0
    error: ShareError | None = None
    outcome: ShareOutcome | None = None
    finished: bool = False

    @property
    def attempts(self) -> int:
        return self.row.attempts if self.row is not None else 0

    def result(self) -> ShareOutcome | ShareFailure:
        if self.outcome is not None:
            return self.outcome
        return _failure(self.ref, self.error)


def _share_error(error: ShareError | PeerError) -> ShareError:
    if isinstance(error, ShareError):
        return error
    return ShareError(f"PEER_{error.code}", error.describe(), retryable=error.retryable)


def _failure(ref: res.ItemRef, error: ShareError | PeerError | None) -> ShareFailure:
    if error is None:
        # Cannot happen: every email ends written, already shared or failed with a reason.
        return ShareFailure(ref, "SHARE_NOT_FINISHED", "the email was not shared", retryable=True)
    found = _share_error(error)
    return ShareFailure(
        ref,
        found.reason,
        found.message,
        retryable=found.retryable,
        quarantine=found.quarantine,
        side=found.side,
    )


def _relation_write(message_id: str, relation: Relation) -> crm.CrmWrite:
    return crm.CrmWrite(
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


def _attachment_write(values: Mapping[str, Any]) -> crm.CrmWrite:
    return crm.CrmWrite(
        operation=crm.CRM_WRITE_OPERATION_CREATE, sobject_type=ATTACHMENT, fields=_struct(values)
    )


def _batches(
    relations: list[tuple[_Pending, crm.CrmWrite]], files: list[tuple[_Pending, crm.CrmWrite]]
) -> list[list[tuple[_Pending, crm.CrmWrite]]]:
    batches = [relations] if relations else []
    size = BATCH_BYTES
    for owner, write in files:
        if size + write.ByteSize() > BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append((owner, write))
        size += write.ByteSize()
    return batches


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
