"""The CRM connector's use cases, over a store and the Salesforce adapter (ports)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol, cast

from concord_crm_connector.domain.activities import (
    event_relations,
    invitees,
    marks_to_read,
    salesforce_writes,
)
from concord_crm_connector.domain.errors import (
    ApiLimitExceeded,
    ConnectionNotFound,
    InvalidRequest,
    SalesforceRejected,
    SalesforceUnavailable,
)
from concord_crm_connector.domain.model import (
    Budget,
    ChangePage,
    ConnectionUpdate,
    Cursor,
    FieldFilter,
    ObjectDescription,
    OrgConnection,
    Record,
    RecordError,
    RecordWrite,
    SearchTarget,
    WriteOperation,
    WriteOutcome,
    WriteStatus,
)
from concord_rpc import Unimplemented

__all__ = ["SALESFORCE_ISSUE", "CrmConnector", "LoginInfo", "OrgStore", "RecordPage", "Salesforce"]

SALESFORCE_ISSUE = 3
# The objects whose changes the reconciler lists back: their writes answer a SystemModstamp.
# Others (EmailMessage, EventRelation, Attachment) are written once and never listed.
LISTED_BACK = frozenset({"Event", "Task", "Contact"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

log = logging.getLogger(__name__)
ROLLED_BACK = RecordError(
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was using "
    "AllOrNone header",
)


class OrgStore(Protocol):
    async def get(self, org: str) -> OrgConnection | None: ...

    async def upsert(self, update: ConnectionUpdate) -> OrgConnection:
        """Raises EtagMismatch when `update.expected_etag` is set and stale."""

    async def cursor(self, org: str, sobject_type: str) -> Cursor | None: ...

    async def budget(self, org: str) -> Budget | None: ...

    async def secret(self, org: str) -> bytes | None: ...

    async def record_login(self, org: str, instance_url: str, organization_id: str) -> None: ...


@dataclass(frozen=True)
class LoginInfo:
    instance_url: str
    organization_id: str
    # The session's access token; only the Pub/Sub adapter reads it (never logged or stored).
    access_token: str = field(default="", repr=False)


@dataclass(frozen=True)
class RecordPage:
    records: tuple[Record, ...]
    next_page_token: str = ""


class Salesforce(Protocol):
    """The Salesforce adapter: REST, Collections, Composite, SOQL/SOSL."""

    async def login(self, connection: OrgConnection, secret: bytes) -> LoginInfo: ...

    async def list_changes(
        self,
        connection: OrgConnection,
        cursor: Cursor,
        page_size: int,
        fields: Sequence[str],
        owner_id: str = "",
    ) -> ChangePage: ...

    async def apply_batch(
        self,
        connection: OrgConnection,
        writes: Sequence[RecordWrite],
        all_or_none: bool,
        read_back: frozenset[str] = frozenset(),
    ) -> list[WriteOutcome]:
        """Outcomes in input order. For the object types in `read_back`, an outcome may carry
        its record's SystemModstamp, read in the same request as the write where that fits;
        the rest are for `modstamps`."""
        ...

    async def modstamps(
        self, connection: OrgConnection, ids: Mapping[str, Sequence[str]]
    ) -> dict[str, datetime]:
        """SystemModstamp of each record last modified by the integration user, by object
        type -> ids; keyed by 15-character Id. Records someone else modified are left out."""
        ...

    async def search(
        self,
        connection: OrgConnection,
        emails: Sequence[str],
        terms: Sequence[str],
        targets: Sequence[SearchTarget],
    ) -> list[Record]: ...

    async def describe(self, connection: OrgConnection, sobject_type: str) -> ObjectDescription: ...

    async def get_records(
        self,
        connection: OrgConnection,
        sobject_type: str,
        ids: Sequence[str],
        fields: Sequence[str],
    ) -> list[Record]: ...

    async def query_records(
        self,
        connection: OrgConnection,
        sobject_type: str,
        fields: Sequence[str],
        filters: Sequence[FieldFilter],
        order_by: str,
        page_size: int,
        page_token: str,
    ) -> RecordPage: ...


class CrmConnector:
    def __init__(self, store: OrgStore, salesforce: Salesforce | None) -> None:
        self._store = store
        self._salesforce = salesforce

    async def upsert_connection(self, update: ConnectionUpdate) -> OrgConnection:
        if self._salesforce is None:
            return await self._store.upsert(update)
        existing = await self._store.get(update.org)
        secret = update.secret
        if secret is None and existing is not None:
            secret = await self._store.secret(update.org)
        if secret is None:
            raise InvalidRequest(
                "a new connection needs its secret",
                field_violations=[("connection.secret", "is required")],
            )
        # Credentials that cannot log in are refused before they replace working ones.
        candidate = OrgConnection(
            org=update.org,
            login_url=update.login_url,
            auth_flow=update.auth_flow,
            client_id=update.client_id,
            username=update.username,
            api_version=update.api_version,
            has_secret=True,
            update_time=existing.update_time if existing else _EPOCH,
            etag="",
        )
        info = await self._salesforce.login(candidate, secret)
        stored = await self._store.upsert(update)
        await self._store.record_login(update.org, info.instance_url, info.organization_id)
        return replace(stored, instance_url=info.instance_url, organization_id=info.organization_id)

    async def get_connection(self, org: str) -> OrgConnection:
        connection = await self._store.get(org)
        if connection is None:
            raise ConnectionNotFound(org)
        return connection

    async def list_changes(
        self,
        org: str,
        sobject_type: str,
        cursor_token: str,
        page_size: int,
        fields: Sequence[str] = (),
        owner_id: str = "",
    ) -> ChangePage:
        connection = await self._store.get(org)
        if connection is None:
            # Nothing to reach yet: no changes, and the cursor stays where it was.
            stored = await self._store.cursor(org, sobject_type)
            return ChangePage(next_cursor=stored or Cursor(sobject_type, cursor_token))
        salesforce = self._require_salesforce("listing Salesforce changes")
        return await salesforce.list_changes(
            connection, Cursor(sobject_type, cursor_token), page_size, fields, owner_id
        )

    async def apply_batch(
        self, org: str, writes: Sequence[RecordWrite], all_or_none: bool
    ) -> list[WriteOutcome]:
        """Applies `writes` in order. Activity links and cancellations are turned into
        Salesforce's own fields here (`domain.activities`); the EventRelation rows of Events
        just created follow as a second batch, best effort: the Event is written and linked,
        and a relation Salesforce refuses is logged, never a reason to write the Event again."""
        if not writes:
            return []
        salesforce = self._require_salesforce("writing to Salesforce")
        connection = await self.get_connection(org)
        subjects: dict[str, str] = {}
        for sobject_type, ids in marks_to_read(writes).items():
            for record in await salesforce.get_records(connection, sobject_type, ids, ["Subject"]):
                subjects[record.id] = str(record.fields.get("Subject") or "")
        planned = salesforce_writes(writes, subjects)
        sent = [i for i, p in enumerate(planned) if isinstance(p, RecordWrite)]
        if all_or_none and len(sent) < len(planned):
            # One write is refused before Salesforce: so is the batch, as allOrNone would.
            return [
                p
                if isinstance(p, WriteOutcome)
                else WriteOutcome(WriteStatus.ROLLED_BACK, p.id, p.link_id, errors=(ROLLED_BACK,))
                for p in planned
            ]
        # An Event that gets EventRelation rows below may change with them: its stamp is read
        # after they are written, not with the Event.
        read_back = LISTED_BACK - {"Event"} if any(invitees(w) for w in writes) else LISTED_BACK
        answered = await salesforce.apply_batch(
            connection, [cast(RecordWrite, planned[i]) for i in sent], all_or_none, read_back
        )
        outcomes = [p if isinstance(p, WriteOutcome) else None for p in planned]
        for index, outcome in zip(sent, answered, strict=True):
            outcomes[index] = outcome
        done = [o for o in outcomes if o is not None]
        relations = event_relations(writes, done)
        if relations:
            refused = [
                o
                for o in await salesforce.apply_batch(connection, relations, False)
                if o.status is not WriteStatus.OK
            ]
            if refused:
                log.warning(
                    "%d of %d event relations were refused: %s",
                    len(refused),
                    len(relations),
                    sorted({e.code for o in refused for e in o.errors}),
                )
        return await _stamped(salesforce, connection, planned, done)

    async def search(
        self,
        org: str,
        emails: Sequence[str],
        terms: Sequence[str],
        targets: Sequence[SearchTarget],
    ) -> list[Record]:
        salesforce = self._require_salesforce("searching Salesforce")
        connection = await self.get_connection(org)
        if not emails and not terms:
            return []
        return await salesforce.search(connection, emails, terms, targets)

    async def describe(self, org: str, sobject_type: str) -> ObjectDescription:
        salesforce = self._require_salesforce("describing Salesforce objects")
        return await salesforce.describe(await self.get_connection(org), sobject_type)

    async def get_records(
        self, org: str, sobject_type: str, ids: Sequence[str], fields: Sequence[str]
    ) -> list[Record]:
        salesforce = self._require_salesforce("reading Salesforce records")
        return await salesforce.get_records(
            await self.get_connection(org), sobject_type, ids, fields
        )

    async def query_records(
        self,
        org: str,
        sobject_type: str,
        fields: Sequence[str],
        filters: Sequence[FieldFilter],
        order_by: str,
        page_size: int,
        page_token: str,
    ) -> RecordPage:
        salesforce = self._require_salesforce("querying Salesforce records")
        return await salesforce.query_records(
            await self.get_connection(org),
            sobject_type,
            fields,
            filters,
            order_by,
            page_size,
            page_token,
        )

    async def budget(self, org: str) -> Budget:
        # Nothing measured yet (no call made to the org) reads as zero use of a zero limit.
        return await self._store.budget(org) or Budget()

    def _require_salesforce(self, what: str) -> Salesforce:
        if self._salesforce is None:
            raise Unimplemented(what, issue=SALESFORCE_ISSUE)
        return self._salesforce


async def _stamped(
    salesforce: Salesforce,
    connection: OrgConnection,
    planned: Sequence[RecordWrite | WriteOutcome],
    outcomes: list[WriteOutcome],
) -> list[WriteOutcome]:
    """The outcomes with each written record's SystemModstamp, read back right after the
    writes (one call per 1,000 records) unless the write's own request read it already: the
    version the reconciler keeps on its link, so the next listing knows Concord's own write when
    it comes back (issue #18).

    A record someone else edited between the write and this read (LastModifiedById is not the
    integration user) gets no stamp: their version is not Concord's. A read that fails leaves
    the stamps out; either costs the next session a comparison and nothing else.
    """
    wanted: dict[str, list[str]] = {}
    for write, outcome in zip(planned, outcomes, strict=True):
        if (
            isinstance(write, RecordWrite)
            and write.sobject_type in LISTED_BACK
            and write.operation is not WriteOperation.DELETE
            and outcome.status is WriteStatus.OK
            and outcome.id
            and outcome.system_modstamp is None
        ):
            wanted.setdefault(write.sobject_type, []).append(outcome.id)
    if not wanted:
        return outcomes
    try:
        stamps = await salesforce.modstamps(connection, wanted)
    except (ApiLimitExceeded, SalesforceRejected, SalesforceUnavailable):
        log.warning("written records' SystemModstamp unreadable", exc_info=True)
        return outcomes
    return [
        replace(o, system_modstamp=stamps.get(o.id[:15])) if o.id[:15] in stamps else o
        for o in outcomes
    ]
