"""Salesforce through simple-salesforce, unmodified.

simple-salesforce blocks, so every call runs in a bounded thread pool; the event loop never
waits on the network. One client per org holds an OAuth access token: it is obtained from the
org's stored credentials, and obtained again once when Salesforce answers INVALID_SESSION_ID.
Every response's `Sforce-Limit-Info` is kept as the org's budget.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol, TypeVar
from urllib.parse import urlencode

import jwt
import requests
from simple_salesforce.api import Salesforce as SalesforceClient
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceError,
    SalesforceExpiredSession,
)
from simple_salesforce.login import token_login
from simple_salesforce.util import Usage

from concord_crm_connector.domain.errors import (
    ApiLimitExceeded,
    InvalidRequest,
    LoginFailed,
    SalesforceRejected,
    SalesforceUnavailable,
)
from concord_crm_connector.domain.model import (
    LINK_FIELD,
    AuthFlow,
    Budget,
    Change,
    ChangePage,
    Cursor,
    FieldDescription,
    FieldFilter,
    ObjectDescription,
    OrgConnection,
    PicklistEntry,
    Record,
    RecordError,
    RecordWrite,
    SearchTarget,
    WriteOperation,
    WriteOutcome,
    WriteStatus,
)
from concord_crm_connector.domain.queries import (
    MAX_PAGE,
    change_query,
    decode_cursor,
    delete_log_gap,
    delete_log_window,
    encode_cursor,
    filter_query,
    listed_cursor,
    owner_rows,
    parse_datetime,
    rows_within,
    search_query,
    soql_literal,
)
from concord_crm_connector.domain.service import LoginInfo, RecordPage
from concord_crm_connector.domain.writes import (
    COMPOSITE_COLLECTIONS,
    CallKind,
    CollectionCall,
    backoff_seconds,
    error_outcome,
    if_unmodified_since,
    invalid_write,
    outcome_of,
    pack_composites,
    plan_collections,
    record_body,
    rest_errors,
)

__all__ = ["SalesforceOptions", "SalesforceOrgs", "token_request"]

T = TypeVar("T")

# Lets Change Data Capture tell Concord's own writes from everyone else's (`changeOrigin`).
WRITE_HEADERS = {"Sforce-Call-Options": "client=concord"}
# REQUEST_LIMIT_EXCEEDED means the org's rolling 24-hour allocation is spent; calls come back
# as older ones age out, so a caller should wait minutes, not seconds.
LIMIT_RETRY_AFTER_SECONDS = 300.0
# Composite runs at most 25 subrequests; SOSL searches are not among the 5 "heavy" ones.
COMPOSITE_SUBREQUESTS = 25
# Composite counts queries among its five "collections or queries" subrequests.
QUERIES_PER_COMPOSITE = 5
# Ids in one SOQL `IN`, as the reconciler reads them: the URL stays well under its limit.
STAMPS_PER_QUERY = 200
# Who made a record's last change; the integration user's own writes are Concord's.
LAST_MODIFIED_BY = "LastModifiedById"


class UsageStore(Protocol):
    async def secret(self, org: str) -> bytes | None: ...

    async def budget(self, org: str) -> Budget | None: ...

    async def record_usage(self, org: str, used: int, limit: int, calls: int) -> Budget: ...

    async def record_login(self, org: str, instance_url: str, organization_id: str) -> None: ...


@dataclass(frozen=True)
class SalesforceOptions:
    ca_bundle: str = ""
    api_version: str = "62.0"
    max_concurrent_calls: int = 8
    request_timeout_seconds: float = 60.0
    retry_attempts: int = 4
    retry_base_seconds: float = 0.5
    retry_max_seconds: float = 8.0
    describe_ttl_seconds: float = 3600.0
    budget_share: float = 0.5


class _Transient(Exception):
    """A failure the same request may not meet again: 5xx, a lost connection, a locked row.

    For a write it is also ambiguous: the request may have been applied.
    """

    def __init__(self, errors: Sequence[RecordError]) -> None:
        super().__init__(errors[0].code if errors else "transient")
        self.errors = list(errors)


class _Rejected(Exception):
    """Salesforce refused the whole request (4xx other than the session and the limit)."""

    def __init__(self, errors: Sequence[RecordError]) -> None:
        super().__init__(errors[0].code if errors else "rejected")
        self.errors = list(errors) or [RecordError("UNKNOWN_EXCEPTION", "rejected")]


class _LimitReached(Exception):
    """REQUEST_LIMIT_EXCEEDED."""


@dataclass
class _Client:
    sf: SalesforceClient
    http: requests.Session
    connection_etag: str
    # The Id of the user the session acts as (the connection's integration user); "" when the
    # login did not say, and then no record is taken for Concord's own write.
    user_id: str = ""


class SalesforceOrgs:
    def __init__(
        self,
        store: UsageStore,
        options: SalesforceOptions,
        *,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._options = options
        self._sleep = sleep
        self._executor = ThreadPoolExecutor(
            max_workers=options.max_concurrent_calls, thread_name_prefix="salesforce"
        )
        self._clients: dict[str, _Client] = {}
        self._login_locks: dict[str, asyncio.Lock] = {}
        self._describes: dict[tuple[str, str], tuple[float, ObjectDescription]] = {}

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        for client in self._clients.values():
            client.http.close()
        self._clients.clear()

    # ---- sessions ----------------------------------------------------------------------------

    async def _run(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    async def login(self, connection: OrgConnection, secret: bytes) -> LoginInfo:
        client, info = await self._run(lambda: self._login(connection, secret))
        client.http.close()
        return info

    def _http(self) -> requests.Session:
        http = requests.Session()
        # REQUESTS_CA_BUNDLE would otherwise override `verify` (requests merges the
        # environment into every request); trust is this service's setting alone.
        http.trust_env = False
        http.verify = self._options.ca_bundle or True
        http.request = _with_timeout(http.request, self._options.request_timeout_seconds)  # type: ignore[method-assign]
        return http

    def _login(self, connection: OrgConnection, secret: bytes) -> tuple[_Client, LoginInfo]:
        data = token_request(connection, secret)
        http = self._http()
        token_url = connection.login_url.rstrip("/") + "/services/oauth2/token"
        # simple-salesforce keeps the token and the instance of the token response; its `id`
        # (the identity URL) names the user, so the login's own answer is kept as it passes.
        answers: list[requests.Response] = []
        http.hooks["response"].append(lambda response, *args, **kwargs: answers.append(response))
        try:
            token, instance = token_login(
                token_url, data, "login", connection.client_id, None, None, session=http
            )
        except SalesforceAuthenticationFailed as failure:
            http.close()
            raise LoginFailed(
                connection.org, str(failure.code or "authentication failure")
            ) from None
        except requests.RequestException as failure:
            http.close()
            raise SalesforceUnavailable(connection.org, type(failure).__name__) from None
        finally:
            http.hooks["response"].clear()
        instance_url = f"https://{instance}"
        sf = SalesforceClient(
            instance_url=instance_url,
            session_id=token,
            session=http,
            version=connection.api_version or self._options.api_version,
        )
        # Salesforce access tokens start with the org's Id (`00D…!…`): no identity call needed.
        prefix = str(token).split("!", 1)[0]
        organization_id = prefix if prefix.startswith("00D") and len(prefix) in (15, 18) else ""
        user_id = integration_user(answers[-1]) if answers else ""
        client = _Client(sf, http, connection.etag, user_id)
        return client, LoginInfo(instance_url, organization_id)

    async def _client(self, connection: OrgConnection, stale: _Client | None = None) -> _Client:
        org = connection.org
        lock = self._login_locks.setdefault(org, asyncio.Lock())
        async with lock:
            client = self._clients.get(org)
            # A client made from older credentials, or the one that just failed, is replaced.
            if (
                client is not None
                and client is not stale
                and client.connection_etag == connection.etag
            ):
                return client
            secret = await self._store.secret(org)
            if secret is None:
                raise LoginFailed(org, "no secret stored")
            fresh, info = await self._run(lambda: self._login(connection, secret))
            if client is not None:
                client.http.close()
            self._clients[org] = fresh
            if (info.instance_url, info.organization_id) != (
                connection.instance_url,
                connection.organization_id,
            ):
                await self._store.record_login(org, info.instance_url, info.organization_id)
            return fresh

    async def session(self, connection: OrgConnection, *, renew: bool = False) -> LoginInfo:
        """The org's current session for the Pub/Sub API: its token travels as `accesstoken`
        beside the instance URL and the org id (`tenantid`). `renew`: the one used was refused."""
        stale = self._clients.get(connection.org) if renew else None
        client = await self._client(connection, stale=stale)
        token = str(client.sf.session_id)
        prefix = token.split("!", 1)[0]
        return LoginInfo(
            f"https://{client.sf.sf_instance}",
            prefix if prefix.startswith("00D") else connection.organization_id,
            token,
        )

    async def owners(
        self, connection: OrgConnection, ids_by_type: Mapping[str, Sequence[str]]
    ) -> dict[str, str]:
        """OwnerId of each live record, one query per object type (200 ids a query)."""
        found: dict[str, str] = {}
        for sobject_type, ids in ids_by_type.items():
            for start in range(0, len(ids), 200):
                for record in await self.get_records(
                    connection, sobject_type, ids[start : start + 200], ["OwnerId"]
                ):
                    owner = record.fields.get("OwnerId")
                    if owner:
                        found[record.id] = str(owner)
        return found

    async def _user_id(self, connection: OrgConnection) -> str:
        """The integration user's Id, learnt with the login (no call of its own)."""
        return (await self._client(connection)).user_id

    async def _call(self, connection: OrgConnection, work: Callable[[SalesforceClient], T]) -> T:
        """One Salesforce API call; a new token and one more try on INVALID_SESSION_ID."""
        client = await self._client(connection)
        spent = False
        try:
            try:
                return await self._run(lambda: _translated(work, client.sf))
            except SalesforceExpiredSession:
                client = await self._client(connection, stale=client)
                return await self._run(lambda: _translated(work, client.sf))
        except _LimitReached:
            spent = True
            raise
        finally:
            await self._record_usage(connection.org, client.sf, spent)

    async def _record_usage(self, org: str, sf: SalesforceClient, spent: bool) -> None:
        # simple-salesforce reads Sforce-Limit-Info from successful responses only; a refusal
        # for the limit says enough by itself: the allocation is used up.
        usage = sf.api_usage.get("api-usage")
        known = await self._store.budget(org)
        used, limit = (usage.used, usage.total) if isinstance(usage, Usage) else (0, 0)
        if known is not None and known.measure_time is not None and not isinstance(usage, Usage):
            used, limit = known.used, known.limit
        if not limit:
            return
        await self._store.record_usage(org, limit if spent else used, limit, 1)

    async def _may_retry(self, org: str) -> bool:
        """Retries spend the org's calls: only while Concord is within its share."""
        budget = await self._store.budget(org)
        if budget is None or budget.limit <= 0:
            return True
        return (
            budget.used < budget.limit
            and budget.concord_used < budget.limit * self._options.budget_share
        )

    async def _read(self, connection: OrgConnection, work: Callable[[SalesforceClient], T]) -> T:
        """A read: idempotent, so retried on transient failures with back-off."""
        attempt = 0
        while True:
            try:
                return await self._call(connection, work)
            except _LimitReached:
                raise ApiLimitExceeded(connection.org, LIMIT_RETRY_AFTER_SECONDS) from None
            except _Rejected as rejected:
                error = rejected.errors[0]
                raise SalesforceRejected(connection.org, error.code, error.message) from None
            except _Transient as transient:
                if attempt >= self._options.retry_attempts or not await self._may_retry(
                    connection.org
                ):
                    raise SalesforceUnavailable(connection.org, str(transient)) from None
            await self._sleep(self._delay(attempt))
            attempt += 1

    def _delay(self, attempt: int) -> float:
        base = backoff_seconds(
            attempt, self._options.retry_base_seconds, self._options.retry_max_seconds
        )
        # Jitter, so replicas that failed together do not retry together.
        return base * (0.5 + random.random() / 2)

    # ---- writes ------------------------------------------------------------------------------

    async def apply_batch(
        self,
        connection: OrgConnection,
        writes: Sequence[RecordWrite],
        all_or_none: bool,
        read_back: frozenset[str] = frozenset(),
    ) -> list[WriteOutcome]:
        outcomes: list[WriteOutcome | None] = [invalid_write(w) for w in writes]
        if all_or_none and any(outcomes):
            return _rolled_back(outcomes)
        ids = await self._resolve(connection, writes, outcomes)
        # Whose stamps a read with the writes may keep: the integration user's (`modstamps`).
        user_id = await self._user_id(connection) if read_back else ""
        if all_or_none and any(outcomes):
            return _rolled_back(outcomes)
        pending = [i for i, o in enumerate(outcomes) if o is None]
        attempt = 0
        last: dict[int, WriteOutcome] = {}
        reached_salesforce = False
        while pending:
            retry: list[int] = []
            for pack in pack_composites(plan_collections(writes, pending)):
                try:
                    results = await self._call(
                        connection,
                        partial(
                            _write_pack,
                            pack=pack,
                            writes=writes,
                            ids=ids,
                            all_or_none=all_or_none,
                            read_back=read_back,
                            user_id=user_id,
                        ),
                    )
                except _LimitReached:
                    if not reached_salesforce:
                        # Nothing of the batch was sent: the whole call can simply come again.
                        raise ApiLimitExceeded(connection.org, LIMIT_RETRY_AFTER_SECONDS) from None
                    # The org is out of calls: nothing more of the batch is tried now, and what
                    # was written is reported as written.
                    limit = RecordError("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
                    return [
                        o or WriteOutcome(WriteStatus.RETRYABLE, w.id, w.link_id, errors=(limit,))
                        for w, o in zip(writes, outcomes, strict=True)
                    ]
                except _Rejected as rejected:
                    # The request as a whole was refused (e.g. INSUFFICIENT_ACCESS): each of its
                    # records says so; the rest of the batch goes on.
                    reached_salesforce = True
                    for call in pack:
                        for index in call.indices:
                            outcomes[index] = error_outcome(
                                writes[index], call.kind, rejected.errors
                            )
                    continue
                except _Transient as transient:
                    reached_salesforce = True
                    for call in pack:
                        for index in call.indices:
                            last[index] = error_outcome(writes[index], call.kind, transient.errors)
                            # A create without a link id cannot be found again after a lost
                            # answer; sending it twice could make two records.
                            if call.kind == "create":
                                outcomes[index] = last[index]
                            else:
                                retry.append(index)
                    continue
                reached_salesforce = True
                for index, outcome in results.items():
                    if outcome.status is WriteStatus.RETRYABLE:
                        last[index] = outcome
                        retry.append(index)
                    else:
                        outcomes[index] = outcome
            if all_or_none and retry:
                # Salesforce rolled the whole call back: everything in it goes again.
                retry = sorted({*retry, *(i for i, o in enumerate(outcomes) if _rolled(o))})
                for index in retry:
                    outcomes[index] = None
            if not retry:
                break
            if attempt >= self._options.retry_attempts or not await self._may_retry(connection.org):
                for index in retry:
                    outcomes[index] = last.get(index) or WriteOutcome(WriteStatus.RETRYABLE)
                break
            await self._sleep(self._delay(attempt))
            attempt += 1
            pending = sorted(set(retry))
        return [o or WriteOutcome(WriteStatus.RETRYABLE) for o in outcomes]

    async def _resolve(
        self,
        connection: OrgConnection,
        writes: Sequence[RecordWrite],
        outcomes: list[WriteOutcome | None],
    ) -> dict[int, str]:
        """Ids for updates and deletes named by link id, and the version check of updates.

        Updates never go as upserts (an upsert of a record deleted in Salesforce would
        create it again), so a link id is turned into an Id with one query per object type.
        """
        wanted: dict[str, list[int]] = {}
        for index, write in enumerate(writes):
            if outcomes[index] is not None or write.operation not in (
                WriteOperation.UPDATE,
                WriteOperation.DELETE,
            ):
                continue
            if not write.id or write.expected_system_modstamp is not None:
                wanted.setdefault(write.sobject_type, []).append(index)
        ids: dict[int, str] = {}
        for sobject_type, indices in wanted.items():
            for start in range(0, len(indices), 200):
                chunk = indices[start : start + 200]
                links = sorted({writes[i].link_id for i in chunk if not writes[i].id})
                record_ids = sorted({writes[i].id for i in chunk if writes[i].id})
                conditions = []
                if links:
                    conditions.append(
                        f"{LINK_FIELD} IN ({', '.join(soql_literal(v) for v in links)})"
                    )
                if record_ids:
                    conditions.append(f"Id IN ({', '.join(soql_literal(v) for v in record_ids)})")
                query = (
                    f"SELECT Id, {LINK_FIELD}, SystemModstamp FROM {sobject_type} "
                    f"WHERE {' OR '.join(conditions)}"
                )
                rows = await self._read(connection, partial(_query_all, query=query))
                by_link = {str(r.get(LINK_FIELD) or "").lower(): r for r in rows}
                by_id = {str(r["Id"])[:15]: r for r in rows}
                for index in chunk:
                    write = writes[index]
                    row = (
                        by_id.get(write.id[:15]) if write.id else by_link.get(write.link_id.lower())
                    )
                    if row is None:
                        outcomes[index] = WriteOutcome(
                            WriteStatus.NOT_FOUND,
                            write.id,
                            write.link_id,
                            errors=(
                                RecordError("NOT_FOUND", "The requested resource does not exist"),
                            ),
                        )
                        continue
                    ids[index] = str(row["Id"])
                    expected = write.expected_system_modstamp
                    if expected is not None and parse_datetime(str(row["SystemModstamp"])) != (
                        expected.astimezone(UTC).replace(
                            microsecond=expected.microsecond // 1000 * 1000
                        )
                    ):
                        outcomes[index] = WriteOutcome(
                            WriteStatus.CONFLICT,
                            str(row["Id"]),
                            write.link_id,
                            errors=(
                                RecordError(
                                    "CONFLICT", "the record changed since the expected version"
                                ),
                            ),
                        )
        return ids

    # ---- reads -------------------------------------------------------------------------------

    async def modstamps(
        self, connection: OrgConnection, ids: Mapping[str, Sequence[str]]
    ) -> dict[str, datetime]:
        """One SOQL query per object type and 200 ids, five of them to a Composite call.

        Only records last modified by the integration user get a stamp: a record someone else
        edited since Concord's write carries their version, which must not be taken for
        Concord's own (issue #18).
        """
        user_id = await self._user_id(connection)
        queries = [
            filter_query(
                sobject_type,
                ["SystemModstamp", LAST_MODIFIED_BY],
                [FieldFilter("Id", tuple(chunk))],
            )
            for sobject_type, record_ids in ids.items()
            for chunk in (
                record_ids[start : start + STAMPS_PER_QUERY]
                for start in range(0, len(record_ids), STAMPS_PER_QUERY)
            )
        ]
        stamps: dict[str, datetime] = {}
        for start in range(0, len(queries), QUERIES_PER_COMPOSITE):
            chunk = queries[start : start + QUERIES_PER_COMPOSITE]
            for row in await self._read(connection, partial(_query_many, queries=chunk)):
                if row.get("SystemModstamp") and by_user(row, user_id):
                    stamps[str(row["Id"])[:15]] = parse_datetime(str(row["SystemModstamp"]))
        return stamps

    async def list_changes(
        self,
        connection: OrgConnection,
        cursor: Cursor,
        page_size: int,
        fields: Sequence[str],
        owner_id: str = "",
    ) -> ChangePage:
        after = decode_cursor(cursor.token)
        sobject_type = cursor.sobject_type
        names = await self._listed_fields(connection, sobject_type, fields)
        if owner_id:
            names = [*names, "OwnerId"]
        if LAST_MODIFIED_BY.lower() not in {n.lower() for n in names}:
            names = [*names, LAST_MODIFIED_BY]
        user_id = await self._user_id(connection)
        limit = min(page_size or MAX_PAGE, MAX_PAGE)
        # An owner's listing reads everyone's changes thin and only the owner's in full: a
        # bulk load of 10,000 records for one user would otherwise be read in full, every field
        # of the describe, by every other mailbox of the org (issue #18).
        queries = {"changes": change_query(sobject_type, names, after, limit)}
        if owner_id:
            queries = {
                "changes": change_query(sobject_type, ["OwnerId"], after, limit),
                "owned": change_query(sobject_type, names, after, limit, owner_id),
            }
        now = datetime.now(UTC)
        if after is not None and delete_log_gap(after, None, now):
            return ChangePage(Cursor(sobject_type, ""), full_resync_required=True)
        window = delete_log_window(after, now) if after is not None else None
        listed, earliest = await self._read(
            connection,
            partial(_changes_and_delete_log, queries=queries, sobject=sobject_type, window=window),
        )
        if after is not None and delete_log_gap(after, earliest, now):
            return ChangePage(Cursor(sobject_type, ""), full_resync_required=True)
        rows = listed["changes"]
        paired = owner_rows(rows, listed["owned"], owner_id) if owner_id else [(r, r) for r in rows]
        paired = paired[: rows_within([reported or row for row, reported in paired])]
        changes = tuple(
            _change(sobject_type, reported, owner_id, user_id)
            for _, reported in paired
            if reported is not None
        )
        last_record = (
            (parse_datetime(str(paired[-1][0]["SystemModstamp"])), str(paired[-1][0]["Id"]))
            if paired
            else None
        )
        listed_at = listed_cursor(after, last_record, now)
        token = cursor.token if listed_at == after else encode_cursor(listed_at)
        more = len(paired) < len(rows) or len(rows) >= limit
        return ChangePage(Cursor(sobject_type, token), changes, has_more=more)

    async def _listed_fields(
        self, connection: OrgConnection, sobject_type: str, fields: Sequence[str]
    ) -> list[str]:
        """The fields asked for that the object has, or every field of its describe. A mapping
        table reads fields an org may not have (the legacy recurrence fields beside
        Recurrence2PatternText): left out, they read as empty, as in a listing of every field."""
        described = await self.describe(connection, sobject_type)
        if not fields:
            # Compound fields (address, location) cannot be selected beside their parts.
            return [f.name for f in described.fields if f.type not in ("address", "location")]
        known = {f.name.lower() for f in described.fields}
        return [name for name in fields if name.lower() in known]

    async def describe(self, connection: OrgConnection, sobject_type: str) -> ObjectDescription:
        key = (connection.org, sobject_type.lower())
        cached = self._describes.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        raw = await self._read(
            connection, lambda sf: sf.restful(f"sobjects/{sobject_type}/describe")
        )
        described = _description(raw)
        self._describes[key] = (time.monotonic() + self._options.describe_ttl_seconds, described)
        return described

    async def search(
        self,
        connection: OrgConnection,
        emails: Sequence[str],
        terms: Sequence[str],
        targets: Sequence[SearchTarget],
    ) -> list[Record]:
        if not targets:
            raise InvalidRequest(
                "search needs targets", field_violations=[("targets", "is required")]
            )
        queries = [search_query(e, "EMAIL", targets) for e in dict.fromkeys(emails)]
        queries += [search_query(t, "ALL", targets) for t in dict.fromkeys(terms)]
        found: dict[str, Record] = {}
        for start in range(0, len(queries), COMPOSITE_SUBREQUESTS):
            chunk = queries[start : start + COMPOSITE_SUBREQUESTS]
            rows = await self._read(connection, partial(_search_many, queries=chunk))
            user_id = await self._user_id(connection)
            for row in rows:
                record = _record(row, user_id)
                found.setdefault(record.id, record)
        return list(found.values())

    async def get_records(
        self,
        connection: OrgConnection,
        sobject_type: str,
        ids: Sequence[str],
        fields: Sequence[str],
    ) -> list[Record]:
        if not ids:
            return []
        query = filter_query(sobject_type, fields, [FieldFilter("Id", tuple(ids))])
        rows = await self._read(connection, lambda sf: sf.query_all(query)["records"])
        user_id = await self._user_id(connection)
        return [_record(row, user_id) for row in rows]

    async def query_records(
        self,
        connection: OrgConnection,
        sobject_type: str,
        fields: Sequence[str],
        filters: Sequence[FieldFilter],
        order_by: str,
        page_size: int,
        page_token: str,
    ) -> RecordPage:
        size = min(page_size or 200, MAX_PAGE)
        offset = _offset(page_token)
        query = filter_query(sobject_type, fields, filters, order_by, size, offset)
        rows = await self._read(connection, lambda sf: sf.query(query)["records"])
        user_id = await self._user_id(connection)
        records = tuple(_record(row, user_id) for row in rows)
        # SOQL's OFFSET stops at 2,000: a later page would be refused, so there is none.
        more = len(rows) >= size and offset + size < MAX_PAGE
        return RecordPage(records, f"o{offset + size}" if more else "")


# ---- blocking pieces (run in the pool) -------------------------------------------------------


def _with_timeout(request: Callable[..., Any], timeout: float) -> Callable[..., Any]:
    def bounded(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", timeout)
        return request(*args, **kwargs)

    return bounded


def token_request(connection: OrgConnection, secret: bytes) -> dict[str, str]:
    """The token request of the connection's flow.

    The proto has one secret per connection, but OAuth's password and refresh-token flows
    need the connected app's client secret as well: such a secret may be a JSON object
    `{"client_secret": …, "password": …}` (or `refresh_token`); plain text is the password
    (or refresh token) alone, for apps that need no client secret.
    """
    text = secret.decode()
    parts: dict[str, str] = {}
    if text.startswith("{"):
        try:
            loaded = json.loads(text)
        except ValueError:
            loaded = None
        if isinstance(loaded, dict):
            parts = {str(k): str(v) for k, v in loaded.items()}
    data = {"client_id": connection.client_id}
    if connection.auth_flow is AuthFlow.PASSWORD:
        data.update(
            grant_type="password",
            username=connection.username,
            password=parts.get("password", text if not parts else ""),
        )
    elif connection.auth_flow is AuthFlow.CLIENT_CREDENTIALS:
        data.update(grant_type="client_credentials", client_secret=parts.get("client_secret", text))
    elif connection.auth_flow is AuthFlow.REFRESH_TOKEN:
        data.update(
            grant_type="refresh_token",
            refresh_token=parts.get("refresh_token", text if not parts else ""),
        )
    else:
        # JWT bearer: the secret is the connected app's private key (PEM); the assertion is
        # signed the way simple-salesforce signs it, for the audience of the org's login URL.
        try:
            assertion = jwt.encode(
                {
                    "iss": connection.client_id,
                    "sub": connection.username,
                    "aud": connection.login_url.rstrip("/"),
                    "exp": int(time.time()) + 180,
                },
                text,
                algorithm="RS256",
            )
        except (ValueError, TypeError, jwt.PyJWTError):
            raise LoginFailed(connection.org, "private key unusable") from None
        return {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
    if "client_secret" in parts:
        data["client_secret"] = parts["client_secret"]
    return data


def _translated(work: Callable[[SalesforceClient], T], sf: SalesforceClient) -> T:
    """simple-salesforce's and requests' exceptions as the three kinds the adapter acts on."""
    try:
        return work(sf)
    except SalesforceExpiredSession:
        raise
    except SalesforceError as failure:
        errors = rest_errors(failure.content)
        if any(e.code == "REQUEST_LIMIT_EXCEEDED" for e in errors):
            raise _LimitReached() from None
        if failure.status >= 500 or any(e.code == "UNABLE_TO_LOCK_ROW" for e in errors):
            raise _Transient(errors) from None
        raise _Rejected(errors) from None
    except requests.RequestException as failure:
        raise _Transient([RecordError("CONNECTION_LOST", type(failure).__name__)]) from None


def _collection_request(
    call: CollectionCall,
    writes: Sequence[RecordWrite],
    ids: Mapping[int, str],
    all_or_none: bool,
) -> tuple[str, str, dict[str, Any] | None]:
    """(method, path under /services/data/vXX.X/, body) of one Collections request."""
    if call.kind == "delete":
        record_ids = ",".join(ids.get(i) or writes[i].id for i in call.indices)
        query = urlencode({"ids": record_ids, "allOrNone": str(all_or_none).lower()})
        return "DELETE", f"composite/sobjects?{query}", None
    records = [record_body(writes[i], call.kind, ids.get(i, "")) for i in call.indices]
    body = {"allOrNone": all_or_none, "records": records}
    if call.kind == "upsert":
        return "PATCH", f"composite/sobjects/{call.sobject_type}/{LINK_FIELD}", body
    return ("POST" if call.kind == "create" else "PATCH"), "composite/sobjects", body


def _stamp_queries(
    pack: Sequence[CollectionCall],
    writes: Sequence[RecordWrite],
    ids: Mapping[int, str],
    read_back: frozenset[str],
) -> list[str]:
    """SOQL reading the SystemModstamp of what the pack writes, for a Composite request to run
    right after the writes: only where the records are named before they are written (an
    upsert's link ids, an update's Ids), and only when the queries fit beside the writes (a
    Composite request runs at most five Collections and queries)."""
    queries = []
    for call in pack:
        if call.sobject_type not in read_back:
            continue
        if call.kind == "upsert":
            key, values = LINK_FIELD, {writes[i].link_id for i in call.indices}
        elif call.kind == "update":
            key, values = "Id", {ids.get(i) or writes[i].id for i in call.indices}
        else:
            continue  # a create's Id exists only after it, a delete has no stamp to keep
        filters = [FieldFilter(key, tuple(sorted(values)))]
        queries.append(
            filter_query(call.sobject_type, ["SystemModstamp", LAST_MODIFIED_BY], filters)
        )
    return queries if len(pack) + len(queries) <= COMPOSITE_COLLECTIONS else []


def _write_pack(
    sf: SalesforceClient,
    pack: Sequence[CollectionCall],
    writes: Sequence[RecordWrite],
    ids: Mapping[int, str],
    all_or_none: bool,
    read_back: frozenset[str] = frozenset(),
    user_id: str = "",
) -> dict[int, WriteOutcome]:
    """One API call: a Collections request, or a Composite request of up to five of them, with
    the read of the written records' SystemModstamp where it fits (`_stamp_queries`); a stamp
    is kept only for a record `user_id` (the integration user) last modified, as `modstamps`
    does."""
    outcomes: dict[int, WriteOutcome] = {}
    if pack[0].kind == "guarded_update":
        return _write_guarded(sf, pack[0], writes, ids, all_or_none)
    # Not with allOrNone: a read that failed would roll the writes back with it.
    reads = [] if all_or_none else _stamp_queries(pack, writes, ids, read_back)
    if len(pack) == 1 and not reads:
        call = pack[0]
        method, path, body = _collection_request(call, writes, ids, all_or_none)
        try:
            answer = sf.restful(path, method=method, json=body, headers=WRITE_HEADERS)
        except SalesforceError as failure:
            if failure.status >= 500 or failure.status in (401, 403):
                raise
            # The whole request was refused (e.g. a bad external-id field): every record says so.
            _fail_call(outcomes, call, writes, rest_errors(failure.content))
            return outcomes
        _read_results(outcomes, call, writes, answer)
        return outcomes
    version = sf.sf_version
    subrequests = []
    for number, call in enumerate(pack):
        method, path, body = _collection_request(call, writes, ids, all_or_none)
        sub: dict[str, Any] = {
            "method": method,
            "url": f"/services/data/v{version}/{path}",
            "referenceId": f"c{number}",
        }
        if body is not None:
            sub["body"] = body
        subrequests.append(sub)
    for number, query in enumerate(reads):
        subrequests.append(
            {
                "method": "GET",
                "url": f"/services/data/v{version}/query?{urlencode({'q': query})}",
                "referenceId": f"s{number}",
            }
        )
    request: dict[str, Any] = {"allOrNone": all_or_none, "compositeRequest": subrequests}
    if reads:
        # Collated, the reads could run before the writes they read (Salesforce collates by
        # default from API version 49.0): in order, they see them, one round trip later at most.
        request["collateSubrequests"] = False
    answer = sf.restful("composite", method="POST", json=request, headers=WRITE_HEADERS)
    # By reference, not position: Salesforce may collate subrequests and run them out of order.
    responses = {r.get("referenceId"): r for r in (answer or {}).get("compositeResponse", [])}
    for number, call in enumerate(pack):
        response = responses.get(f"c{number}", {})
        status = int(response.get("httpStatusCode", 500))
        if status >= 500:
            raise _Transient(rest_errors(response.get("body")))
        if status >= 300:
            _fail_call(outcomes, call, writes, rest_errors(response.get("body")))
        else:
            _read_results(outcomes, call, writes, response.get("body"))
    stamps: dict[str, datetime] = {}
    for number in range(len(reads)):
        response = responses.get(f"s{number}", {})
        if int(response.get("httpStatusCode", 500)) >= 300:
            continue  # the writes stand; their stamps are read on their own afterwards
        for row in (response.get("body") or {}).get("records", []):
            if row.get("SystemModstamp") and by_user(row, user_id):
                stamps[str(row["Id"])[:15]] = parse_datetime(str(row["SystemModstamp"]))
    for index, outcome in outcomes.items():
        stamp = stamps.get(outcome.id[:15]) if outcome.status is WriteStatus.OK else None
        if stamp is not None:
            outcomes[index] = replace(outcome, system_modstamp=stamp)
    return outcomes


def _write_guarded(
    sf: SalesforceClient,
    call: CollectionCall,
    writes: Sequence[RecordWrite],
    ids: Mapping[int, str],
    all_or_none: bool,
) -> dict[int, WriteOutcome]:
    """One Composite request of conditional sObject Rows updates: each applies only if the
    record is unmodified since the version the write was planned against; otherwise it is a
    conflict, and the edit made in Salesforce stays."""
    version = sf.sf_version
    subrequests = []
    for index in call.indices:
        write = writes[index]
        record_id = ids.get(index) or write.id
        expected = write.expected_system_modstamp
        assert expected is not None  # what makes a write a guarded update
        body = record_body(write, "update", record_id)
        for envelope in ("attributes", "Id"):
            body.pop(envelope, None)
        subrequests.append(
            {
                "method": "PATCH",
                "url": f"/services/data/v{version}/sobjects/{write.sobject_type}/{record_id}",
                "referenceId": f"u{index}",
                "body": body,
                "httpHeaders": {"If-Unmodified-Since": if_unmodified_since(expected)},
            }
        )
    answer = sf.restful(
        "composite",
        method="POST",
        json={"allOrNone": all_or_none, "compositeRequest": subrequests},
        headers=WRITE_HEADERS,
    )
    responses = {r.get("referenceId"): r for r in (answer or {}).get("compositeResponse", [])}
    outcomes: dict[int, WriteOutcome] = {}
    for index in call.indices:
        write = writes[index]
        record_id = ids.get(index) or write.id
        response = responses.get(f"u{index}", {})
        status = int(response.get("httpStatusCode", 500))
        if status < 300:
            outcomes[index] = WriteOutcome(WriteStatus.OK, record_id, write.link_id)
        elif status == 412:
            outcomes[index] = WriteOutcome(
                WriteStatus.CONFLICT,
                record_id,
                write.link_id,
                errors=(RecordError("CONFLICT", "the record changed since the expected version"),),
            )
        elif status >= 500:
            raise _Transient(rest_errors(response.get("body")))
        else:
            outcomes[index] = error_outcome(write, call.kind, rest_errors(response.get("body")))
    return outcomes


def _read_results(
    outcomes: dict[int, WriteOutcome],
    call: CollectionCall,
    writes: Sequence[RecordWrite],
    answer: Any,
) -> None:
    results = answer if isinstance(answer, list) else []
    for position, index in enumerate(call.indices):
        if position < len(results) and isinstance(results[position], Mapping):
            outcomes[index] = outcome_of(writes[index], call.kind, results[position])
        else:
            outcomes[index] = error_outcome(
                writes[index],
                call.kind,
                [RecordError("UNKNOWN_EXCEPTION", "Salesforce returned no result for the record")],
            )


def _fail_call(
    outcomes: dict[int, WriteOutcome],
    call: CollectionCall,
    writes: Sequence[RecordWrite],
    errors: Sequence[RecordError],
) -> None:
    kind: CallKind = call.kind
    for index in call.indices:
        outcomes[index] = error_outcome(writes[index], kind, errors)


def _changes_and_delete_log(
    sf: SalesforceClient,
    queries: Mapping[str, str],
    sobject: str,
    window: tuple[datetime, datetime] | None,
) -> tuple[dict[str, list[dict[str, Any]]], datetime | None]:
    """The rows of each change query (queryAll) and, over `window`, getDeleted's
    `earliestDateAvailable`, in one Composite call."""
    version = sf.sf_version
    subrequests = [
        {
            "method": "GET",
            "url": f"/services/data/v{version}/queryAll?{urlencode({'q': query})}",
            "referenceId": reference,
        }
        for reference, query in queries.items()
    ]
    if window is not None:
        start, end = (moment.strftime("%Y-%m-%dT%H:%M:%SZ") for moment in window)
        subrequests.append(
            {
                "method": "GET",
                "url": f"/services/data/v{version}/sobjects/{sobject}/deleted?"
                + urlencode({"start": start, "end": end}),
                "referenceId": "deleteLog",
            }
        )
    answer = sf.restful(
        "composite", method="POST", json={"allOrNone": False, "compositeRequest": subrequests}
    )
    responses = {r.get("referenceId"): r for r in (answer or {}).get("compositeResponse", [])}
    wanted = [*queries, *(["deleteLog"] if window is not None else [])]
    for reference in wanted:
        response = responses.get(reference, {})
        status = int(response.get("httpStatusCode", 500))
        if status >= 500:
            raise _Transient(rest_errors(response.get("body")))
        if status >= 300:
            raise _Rejected(rest_errors(response.get("body")))
    # A page is at most 2,000 records and each query asks for no more, so no nextRecordsUrl.
    rows = {ref: list((responses[ref].get("body") or {}).get("records", [])) for ref in queries}
    earliest_text = (responses.get("deleteLog", {}).get("body") or {}).get("earliestDateAvailable")
    earliest = parse_datetime(str(earliest_text)) if earliest_text else None
    return rows, earliest


def _query_all(sf: SalesforceClient, query: str) -> list[dict[str, Any]]:
    return list(sf.query_all(query)["records"])


def _query_many(sf: SalesforceClient, queries: Sequence[str]) -> list[dict[str, Any]]:
    """SOQL queries of at most 2,000 rows each, in one Composite call (one API call)."""
    return _composite_gets(sf, "query", queries, "records")


def _search_many(sf: SalesforceClient, queries: Sequence[str]) -> list[dict[str, Any]]:
    """One SOSL search, or up to 25 in one Composite call, results in order."""
    if len(queries) == 1:
        answer = sf.search(queries[0]) or {}
        return list(answer.get("searchRecords", []))
    return _composite_gets(sf, "search", queries, "searchRecords")


def _composite_gets(
    sf: SalesforceClient, resource: str, queries: Sequence[str], rows_key: str
) -> list[dict[str, Any]]:
    """GET `resource?q=` for each query in one Composite call; the rows of all, in order."""
    version = sf.sf_version
    answer = sf.restful(
        "composite",
        method="POST",
        json={
            "allOrNone": False,
            "compositeRequest": [
                {
                    "method": "GET",
                    "url": f"/services/data/v{version}/{resource}?{urlencode({'q': q})}",
                    "referenceId": f"{resource[0]}{number}",
                }
                for number, q in enumerate(queries)
            ],
        },
    )
    rows: list[dict[str, Any]] = []
    for response in (answer or {}).get("compositeResponse", []):
        status = int(response.get("httpStatusCode", 500))
        if status >= 500:
            raise _Transient(rest_errors(response.get("body")))
        if status >= 300:
            raise _Rejected(rest_errors(response.get("body")))
        rows.extend((response.get("body") or {}).get(rows_key, []))
    return rows


# ---- translation ------------------------------------------------------------------------------


def _rolled(outcome: WriteOutcome | None) -> bool:
    return outcome is not None and outcome.status is WriteStatus.ROLLED_BACK


def _rolled_back(outcomes: Sequence[WriteOutcome | None]) -> list[WriteOutcome]:
    rolled = RecordError(
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "Record rolled back because not all records were valid and the request was using "
        "AllOrNone header",
    )
    return [o or WriteOutcome(WriteStatus.ROLLED_BACK, errors=(rolled,)) for o in outcomes]


def integration_user(token_response: requests.Response) -> str:
    """The Id of the user a token acts as: the last segment of the token response's `id`,
    Salesforce's identity URL `https://login.salesforce.com/id/<orgId>/<userId>`."""
    try:
        answer = token_response.json()
    except ValueError:
        return ""
    identity = str(answer.get("id") or "") if isinstance(answer, dict) else ""
    user_id = identity.rstrip("/").rsplit("/", 1)[-1]
    return user_id if user_id.startswith("005") and len(user_id) in (15, 18) else ""


def by_user(row: Mapping[str, Any], user_id: str) -> bool:
    """Whether a row read with LastModifiedById was last modified by `user_id`."""
    modified_by = str(row.get(LAST_MODIFIED_BY) or "")
    return bool(user_id) and bool(modified_by) and modified_by[:15] == user_id[:15]


def _record(row: Mapping[str, Any], user_id: str = "") -> Record:
    attributes = row.get("attributes") or {}
    fields = {k: v for k, v in row.items() if k != "attributes"}
    stamp = fields.get("SystemModstamp")
    return Record(
        sobject_type=str(attributes.get("type", "")),
        id=str(fields.get("Id") or ""),
        fields=fields,
        system_modstamp=parse_datetime(str(stamp)) if stamp else None,
        link_id=str(fields.get(LINK_FIELD) or ""),
        is_deleted=bool(fields.get("IsDeleted", False)),
        last_modified_by_concord=by_user(fields, user_id),
    )


def _change(
    sobject_type: str, row: Mapping[str, Any], owner_id: str = "", user_id: str = ""
) -> Change:
    """A record as a change; with `owner_id`, another owner's record is out of scope.

    The owner is checked here rather than in the query: a record handed to someone else must
    be listed (as leaving the scope), which a WHERE on OwnerId would hide.
    """
    foreign = bool(owner_id) and str(row.get("OwnerId") or "")[:15] != owner_id[:15]
    if row.get("IsDeleted") or foreign:
        stamp = row.get("SystemModstamp")
        return Change(
            Record(
                sobject_type,
                str(row["Id"]),
                system_modstamp=parse_datetime(str(stamp)) if stamp else None,
                is_deleted=bool(row.get("IsDeleted")),
            ),
            deleted=True,
        )
    record = _record(row, user_id)
    return Change(record if record.sobject_type else replace(record, sobject_type=sobject_type))


def _description(raw: Any) -> ObjectDescription:
    body = raw if isinstance(raw, Mapping) else {}
    fields = []
    for item in body.get("fields", []):
        fields.append(
            FieldDescription(
                name=str(item.get("name", "")),
                label=str(item.get("label", "")),
                type=str(item.get("type", "")),
                length=int(item.get("length") or 0),
                createable=bool(item.get("createable")),
                updateable=bool(item.get("updateable")),
                nillable=bool(item.get("nillable")),
                picklist_values=tuple(
                    PicklistEntry(
                        str(p.get("value", "")),
                        str(p.get("label") or ""),
                        bool(p.get("active")),
                        bool(p.get("defaultValue")),
                    )
                    for p in item.get("picklistValues") or ()
                ),
                reference_to=tuple(str(r) for r in item.get("referenceTo") or ()),
                external_id=bool(item.get("externalId")),
                unique=bool(item.get("unique")),
                custom=bool(item.get("custom")),
            )
        )
    return ObjectDescription(
        name=str(body.get("name", "")),
        label=str(body.get("label", "")),
        createable=bool(body.get("createable")),
        updateable=bool(body.get("updateable")),
        deletable=bool(body.get("deletable")),
        fields=tuple(fields),
    )


def _offset(token: str) -> int:
    if not token:
        return 0
    if token.startswith("o") and token[1:].isdigit():
        return int(token[1:])
    raise InvalidRequest(
        "page_token was not issued by this connector",
        field_violations=[("page_token", "not a crm-connector page token")],
    )
