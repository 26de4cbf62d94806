"""The REST API under `/services/data/vXX.X/`, as a router independent of the HTTP server.

Composite requests run their subrequests through the same router, so a subrequest behaves
exactly like the call it stands for. Calls are dispatched on several threads at once: a call
that writes holds the org's write lock (`Org.writing`) for its whole handler, so what it
checks is what it commits onto; reads take no lock.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import json
import logging
import re
import secrets
import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from concord_salesforce_emulator import ids, soql, sosl, timefmt
from concord_salesforce_emulator.errors import SalesforceError, malformed_query, not_found
from concord_salesforce_emulator.org import ROLLED_BACK, AmbiguousUpsert, Org, WriteResult
from concord_salesforce_emulator.pubsub import WriteContext, change_origin, current_write
from concord_salesforce_emulator.schema import SObjectType

log = logging.getLogger(__name__)

MIN_VERSION = 31.0
LATEST_VERSION = "65.0"
COLLECTION_LIMIT = 200
COMPOSITE_LIMIT = 25
COMPOSITE_HEAVY_LIMIT = 5
OPEN_CURSORS = 100


@dataclass
class Call:
    method: str
    path: str  # after /services/data/vXX.X/, without a leading slash
    query: dict[str, list[str]]
    body: Any
    user_id: str
    version: str
    headers: dict[str, str] = field(default_factory=dict)

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Reply:
    status: int
    body: Any = None  # None: no body (204)
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[["RestApi", Call, re.Match[str]], Reply]
_ROUTES: list[tuple[str, re.Pattern[str], Handler]] = []


def route(method: str, pattern: str, first: bool = False) -> Callable[[Handler], Handler]:
    """Register a handler; `first` puts it ahead of the catch-all `sobjects/{type}/{id}` ones."""

    def register(handler: Handler) -> Handler:
        entry = (method, re.compile(f"^{pattern}/?$"), handler)
        if first:
            _ROUTES.insert(0, entry)
        else:
            _ROUTES.append(entry)
        return handler

    return register


@dataclass
class Cursor:
    """A query's matching rows; each page is rendered when it is fetched."""

    rows: list[dict[str, Any]]
    render: Callable[[dict[str, Any]], dict[str, Any]]
    total: int
    position: int
    page_size: int


def version_of(text: str) -> str | None:
    """`62.0` from `v62.0` when the API serves that version, else None."""
    match = re.fullmatch(r"v(\d+)\.0", text)
    if (
        not match
        or float(match.group(1)) < MIN_VERSION
        or float(match.group(1)) > float(LATEST_VERSION)
    ):
        return None
    return f"{match.group(1)}.0"


class RestApi:
    def __init__(
        self,
        org: Org,
        page_size: int = 2000,
        api_limit: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        self.org = org
        self.page_size = page_size
        self.api_limit = api_limit or (lambda: (0, 0))
        self.cursors: dict[str, Cursor] = {}
        self._cursors_lock = threading.Lock()

    def dispatch(self, call: Call) -> Reply:
        allowed = False
        for method, pattern, handler in _ROUTES:
            match = pattern.match(call.path)
            if match is None:
                continue
            allowed = True
            if method != call.method:
                continue
            # Who writes, and through which client: change events carry both.
            token = current_write.set(
                WriteContext(
                    call.user_id,
                    change_origin(call.version, call.headers.get("sforce-call-options", "")),
                )
            )
            try:
                with self._lock_for(call, handler):
                    return handler(self, call, match)
            except AmbiguousUpsert as error:
                urls = [
                    f"/services/data/v{call.version}/sobjects/{error.sobject.name}/{m}"
                    for m in error.matches
                ]
                return Reply(300, urls)
            except SalesforceError as error:
                return Reply(error.status, error.rest_body())
            except Exception:
                # A bug in the emulator must still look like Salesforce's own failures.
                log.exception("unexpected error in %s %s", call.method, call.path)
                return Reply(
                    500,
                    [
                        {
                            "errorCode": "UNKNOWN_EXCEPTION",
                            "message": "An unexpected error occurred. Please include "
                            "this ErrorId if you contact support: emulator",
                        }
                    ],
                )
            finally:
                current_write.reset(token)
        if allowed:
            return Reply(
                405,
                [
                    {
                        "errorCode": "METHOD_NOT_ALLOWED",
                        "message": f"HTTP Method '{call.method}' not allowed. Allowed are GET,HEAD",
                    }
                ],
            )
        return Reply(404, not_found().rest_body())

    def _lock_for(self, call: Call, handler: Handler) -> AbstractContextManager[None]:
        if call.method == "GET" or handler in _LOCKING_ITSELF:
            return nullcontext()
        return self.org.writing()

    # ---- shared pieces -----------------------------------------------------------------------

    def sobject(self, name: str) -> SObjectType:
        return self.org.sobject(unquote(name))

    def record_body(self, call: Call) -> dict[str, Any]:
        if not isinstance(call.body, dict):
            raise SalesforceError(
                "JSON_PARSER_ERROR", "The request body is not a JSON object", status=400
            )
        return call.body

    def run_query(self, call: Call, include_deleted: bool) -> Reply:
        explain = call.param("explain")
        text = call.param("q") if explain is None else explain
        if text is None:
            raise malformed_query("A query string has to be specified")
        planned = soql.plan(text, self.org.schema)
        # As Salesforce's optimizer: rows named by an Id or an indexed field are read through
        # the index, not by scanning the type (the WHERE is still tested on each).
        access = planned.index_access(self.org.indexed)
        walk = planned.modstamp_walk() if explain is None else None
        ordered = (
            self.org.by_modstamp(planned.sobject, walk.floor, include_deleted) if walk else None
        )
        # Of an index and the walk by SystemModstamp, the one that reads fewer rows, as the
        # optimizer weighs them: an owner's few records by OwnerId, the next page of many by
        # SystemModstamp.
        if (
            walk is not None
            and ordered is not None
            and (access is None or self.org.index_size(planned.sobject, access) > walk.limit)
        ):
            fields = (r.fields for r in ordered)
            walked = planned.walk(fields, walk.limit, self._resolve, self._source)
            # In the order a scan meets them, so rows sharing a SystemModstamp rank as they
            # would in a scan of the type.
            records = self.org.in_scan_order(walked)
        elif access is not None:
            records = [
                r.fields for r in self.org.read_index(planned.sobject, access, include_deleted)
            ]
        else:
            records = [r.fields for r in self.org.live(planned.sobject, include_deleted)]
        if explain is not None:
            matched = planned.run(records, self._resolve, self._source)
            total = sum(1 for _ in self.org.live(planned.sobject, include_deleted))
            return Reply(200, planned.explain(len(matched), total, access))
        if planned.query.count_only:
            rows = planned.run(records, self._resolve, self._source)
            return Reply(200, {"totalSize": len(rows), "done": True, "records": []})
        if planned.is_aggregate:
            results = planned.aggregate(records, self._resolve, self._source)
            return Reply(200, {"totalSize": len(results), "done": True, "records": results})
        rows = planned.run(records, self._resolve, self._source)

        def render(row: dict[str, Any]) -> dict[str, Any]:
            return planned.render(
                row, planned.sobject.name, self._resolve, call.version, self._source
            )

        cursor = Cursor(rows, render, len(rows), 0, self._batch_size(call))
        return Reply(
            200, self._page(cursor, call.version, "queryAll" if include_deleted else "query")
        )

    def _source(self, name: str) -> Iterable[dict[str, Any]]:
        """The live records of one type, for subqueries and semi-joins."""
        sobject = self.org.schema.get(name)
        if sobject is None:
            return []
        return [r.fields for r in self.org.live(sobject)]

    def _batch_size(self, call: Call) -> int:
        options = call.headers.get("sforce-query-options", "")
        match = re.search(r"batchSize=(\d+)", options)
        if match:
            # Salesforce honours 200..2000 and treats the size as a hint.
            return max(min(int(match.group(1)), self.page_size), min(200, self.page_size))
        return self.page_size

    def _page(self, cursor: Cursor, version: str, resource: str) -> dict[str, Any]:
        end = cursor.position + cursor.page_size
        body: dict[str, Any] = {"totalSize": cursor.total, "done": end >= cursor.total}
        page = [cursor.render(row) for row in cursor.rows[cursor.position : end]]
        if end < cursor.total:
            locator = "01g5e" + secrets.token_hex(6).upper()[:10]
            cursor.position = end
            with self._cursors_lock:
                self.cursors[locator] = cursor
                # Salesforce keeps a bounded number of open cursors; the oldest go first.
                while len(self.cursors) > OPEN_CURSORS:
                    del self.cursors[next(iter(self.cursors))]
            body["nextRecordsUrl"] = f"/services/data/v{version}/{resource}/{locator}-{end}"
        body["records"] = page
        return body

    def take_cursor(self, locator: str, position: int) -> Cursor | None:
        """The open cursor at `position`, closed (its next page opens another): two clients
        asking for one page cannot both get it."""
        with self._cursors_lock:
            cursor = self.cursors.get(locator)
            if cursor is None or cursor.position != position:
                return None
            del self.cursors[locator]
            return cursor

    def _resolve(self, raw_id: str) -> tuple[str, dict[str, Any]] | None:
        record = self.org.store.get(raw_id)
        if record is None or record.deleted_at is not None:
            return None
        return record.sobject, record.fields


# ---- resources ------------------------------------------------------------------------------


@route("GET", "")
def _resources(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    base = f"/services/data/v{call.version}"
    names = [
        "sobjects",
        "query",
        "queryAll",
        "search",
        "composite",
        "limits",
        "recent",
        "tabs",
        "theme",
    ]
    return Reply(200, {name: f"{base}/{name}" for name in names})


# What a Developer Edition org's `/limits` lists, with its maxima (REST API Developer Guide,
# "List Organization Limits"); only DailyApiRequests is counted here.
_LIMITS: dict[str, int] = {
    "ActiveScratchOrgs": 3,
    "AnalyticsExternalDataSizeMB": 40960,
    "ConcurrentAsyncGetReportInstances": 200,
    "ConcurrentEinsteinDataInsightsStoryCreation": 5,
    "ConcurrentEinsteinDiscoveryStoryCreation": 2,
    "ConcurrentSyncReportRuns": 20,
    "DailyAnalyticsDataflowJobExecutions": 60,
    "DailyAnalyticsUploadedFilesSizeMB": 51200,
    "DailyAsyncApexExecutions": 250000,
    "DailyAsyncApexTests": 500,
    "DailyBulkApiBatches": 15000,
    "DailyBulkV2QueryFileStorageMB": 976562,
    "DailyBulkV2QueryJobs": 10000,
    "DailyDeliveredPlatformEvents": 10000,
    "DailyDurableGenericStreamingApiEvents": 10000,
    "DailyDurableStreamingApiEvents": 10000,
    "DailyEinsteinDataInsightsStoryCreation": 1000,
    "DailyEinsteinDiscoveryPredictAPICalls": 50000,
    "DailyEinsteinDiscoveryPredictionsByCDC": 500000,
    "DailyEinsteinDiscoveryStoryCreation": 100,
    "DailyFunctionsApiCallLimit": 235000,
    "DailyGenericStreamingApiEvents": 10000,
    "DailyScratchOrgs": 6,
    "DailyStandardVolumePlatformEvents": 10000,
    "DailyStreamingApiEvents": 10000,
    "DailyWorkflowEmails": 15,
    "DataStorageMB": 5,
    "DurableStreamingApiConcurrentClients": 20,
    "FileStorageMB": 20,
    "HourlyAsyncReportRuns": 1200,
    "HourlyDashboardRefreshes": 200,
    "HourlyDashboardResults": 5000,
    "HourlyDashboardStatuses": 999999999,
    "HourlyLongTermIdMapping": 100000,
    "HourlyManagedContentPublicRequests": 50000,
    "HourlyODataCallout": 10000,
    "HourlyPublishedPlatformEvents": 50000,
    "HourlyPublishedStandardVolumePlatformEvents": 1000,
    "HourlyShortTermIdMapping": 100000,
    "HourlySyncReportRuns": 500,
    "HourlyTimeBasedWorkflow": 50,
    "MassEmail": 10,
    "MonthlyEinsteinDiscoveryStoryCreation": 500,
    "MonthlyPlatformEventsUsageEntitlement": 0,
    "Package2VersionCreates": 6,
    "Package2VersionCreatesWithoutValidation": 500,
    "PermissionSets": 1500,
    "PrivateConnectOutboundCalloutHourlyLimitMB": 0,
    "PublishCallbackUsageInApex": 5000000,
    "SingleEmail": 15,
    "StreamingApiConcurrentClients": 20,
}


@route("GET", "limits")
def _limits(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    used, limit = api.api_limit()
    body: dict[str, Any] = {
        name: {"Max": most, "Remaining": most} for name, most in sorted(_LIMITS.items())
    }
    body["DailyApiRequests"] = {"Max": limit, "Remaining": max(limit - used, 0)}
    # Storage is what the org's rows take: Salesforce counts about 2 KB a record.
    records = len(api.org.store.every_record())
    body["DataStorageMB"] = {"Max": 5, "Remaining": max(5 - records * 2 // 1024, 0)}
    return Reply(200, dict(sorted(body.items())))


@route("GET", "limits/recordCount")
def _record_count(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    wanted = [n for v in call.query.get("sObjects", []) for n in v.split(",") if n]
    counts = []
    for name in wanted:
        sobject = api.org.schema.get(name)
        if sobject is None:
            continue
        count = sum(1 for _ in api.org.live(sobject))
        if count:
            counts.append({"count": count, "name": sobject.name})
    return Reply(200, {"sObjects": counts})


@route("GET", "sobjects")
def _global_describe(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    return Reply(200, api.org.schema.global_describe(call.version))


@route("GET", r"sobjects/(?P<type>\w+)/describe")
def _describe(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    sobject = api.sobject(match["type"])
    describe = api.org.schema.describe(sobject, call.version)
    # Salesforce lets clients cache describes: an ETag and the metadata's last change.
    etag = hashlib.md5(json.dumps(describe, sort_keys=True).encode()).hexdigest()
    return Reply(
        200,
        describe,
        {"ETag": f'"{etag}--gzip"', "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT"},
    )


@route("GET", r"sobjects/(?P<type>\w+)")
def _basic_info(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    sobject = api.sobject(match["type"])
    entry = api.org.schema.global_describe(call.version)["sobjects"]
    info = next(e for e in entry if e["name"] == sobject.name)
    return Reply(200, {"objectDescribe": info, "recentItems": []})


@route("POST", r"sobjects/(?P<type>\w+)")
def _create(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    sobject = api.sobject(match["type"])
    result = api.org.create(sobject, api.record_body(call), call.user_id)
    return Reply(201, {"id": result.id, "success": True, "errors": []})


def _window(call: Call) -> tuple[dt.datetime, dt.datetime]:
    start, end = call.param("start"), call.param("end")
    if not start or not end:
        raise SalesforceError(
            "MISSING_ARGUMENT", "start and end are both required parameters", status=400
        )
    try:
        return timefmt.parse_datetime(start), timefmt.parse_datetime(end)
    except ValueError:
        raise SalesforceError(
            "INVALID_DATE_FORMAT", f"Invalid date format: {start} {end}", status=400
        ) from None


def _covered(end: dt.datetime) -> str:
    # Salesforce covers whole minutes, up to the last one that is complete.
    latest = min(end, timefmt.now()).replace(second=0, microsecond=0)
    return timefmt.format_datetime(latest)


@route("GET", r"sobjects/(?P<type>\w+)/updated")
def _get_updated(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    sobject = api.sobject(match["type"])
    start, end = _window(call)
    _check_window(start, end, days=30)
    return Reply(
        200, {"ids": api.org.updated(sobject, start, end), "latestDateCovered": _covered(end)}
    )


@route("GET", r"sobjects/(?P<type>\w+)/deleted")
def _get_deleted(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    sobject = api.sobject(match["type"])
    start, end = _window(call)
    _check_window(start, end, days=15)
    records, earliest = api.org.deleted(sobject, start, end)
    return Reply(
        200,
        {
            "deletedRecords": records,
            "earliestDateAvailable": timefmt.format_datetime(earliest),
            "latestDateCovered": _covered(end),
        },
    )


def _check_window(start: dt.datetime, end: dt.datetime, days: int) -> None:
    if end < start:
        raise SalesforceError("INVALID_REPLICATION_DATE", "end date cannot be before start date")
    if start < timefmt.now() - dt.timedelta(days=days):
        raise SalesforceError(
            "INVALID_REPLICATION_DATE", f"startDate cannot be more than {days} days ago"
        )


@route("GET", r"sobjects/(?P<type>\w+)/(?P<id>[^/]+)")
def _retrieve(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    sobject = api.sobject(match["type"])
    record = api.org.retrieve(sobject, unquote(match["id"]))
    fields = call.param("fields")
    names = [f.strip() for f in fields.split(",")] if fields else None
    tag = _etag(sobject, record.fields)
    refused = _strong_precondition(tag, call.headers)
    if refused is not None:
        # HTTP's rule for reads: a matching If-None-Match is "not modified", not a failure.
        return Reply(304 if refused == "none-match" else 412, headers=_tagged(tag))
    if _not_modified_since(record.fields, call.headers.get("if-modified-since")):
        return Reply(304, headers=_tagged(tag))
    return Reply(200, api.org.render(sobject, record, call.version, names), _tagged(tag))


@route("PATCH", r"sobjects/(?P<type>\w+)/(?P<id>[^/]+)")
def _update(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    sobject = api.sobject(match["type"])
    record = api.org.retrieve(sobject, unquote(match["id"]))
    if _modified_since(record.fields, call.headers.get("if-unmodified-since")):
        # Weak validation, as Salesforce documents it: against LastModifiedDate, to the second.
        return Reply(412)
    if _strong_precondition(_etag(sobject, record.fields), call.headers) is not None:
        return Reply(412)
    _single(
        api.org.write_many(
            [("update", sobject, record.id, api.record_body(call))], call.user_id, all_or_none=True
        )
    )
    updated = api.org.retrieve(sobject, record.id)
    return Reply(204, headers=_tagged(_etag(sobject, updated.fields)))


@route("DELETE", r"sobjects/(?P<type>\w+)/(?P<id>[^/]+)")
def _delete(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    sobject = api.sobject(match["type"])
    raw = unquote(match["id"])
    record_id = ids.normalize(raw)
    record = api.org.store.get(record_id) if record_id else None
    if record is not None and record.sobject == sobject.name and record.deleted_at is not None:
        raise SalesforceError("ENTITY_IS_DELETED", "entity is deleted", [], status=404)
    record = api.org.retrieve(sobject, raw)
    _single(api.org.delete_many([record.id], all_or_none=True))
    return Reply(204)


@route("GET", r"sobjects/(?P<type>\w+)/(?P<field>\w+)/(?P<value>[^/]+)")
def _retrieve_by_external_id(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    sobject = api.sobject(match["type"])
    if sobject.field(match["field"]) is None:
        # `sobjects/Account/quickActions/x`: a sub-resource this org lacks, not an id lookup.
        raise not_found()
    value = unquote(match["value"])
    _kind, record_id = api.org.upsert_plan(sobject, match["field"], value)
    if record_id is None:
        raise not_found()
    record = api.org.retrieve(sobject, record_id)
    fields = call.param("fields")
    names = [f.strip() for f in fields.split(",")] if fields else None
    return Reply(200, api.org.render(sobject, record, call.version, names))


@route("PATCH", r"sobjects/(?P<type>\w+)/(?P<field>\w+)/(?P<value>[^/]+)")
def _upsert(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    sobject = api.sobject(match["type"])
    field_name, value = match["field"], unquote(match["value"])
    body = dict(api.record_body(call))
    described = sobject.field(field_name)
    in_body = [v for k, v in body.items() if k.lower() == field_name.lower()]
    if described is not None and any(str(v) != value for v in in_body):
        raise SalesforceError(
            "INVALID_FIELD",
            f"The value provided for the external ID field {field_name} in the request body "
            "does not match the value in the request URL",
        )
    kind, record_id = api.org.upsert_plan(sobject, field_name, value)
    if kind == "create":
        if described is not None and described["type"] != "id":
            body[described["name"]] = value
        result = _single(api.org.write_many([("create", sobject, None, body)], call.user_id, True))
        return Reply(201, {"id": result.id, "success": True, "errors": [], "created": True})
    result = _single(api.org.write_many([("update", sobject, record_id, body)], call.user_id, True))
    if float(call.version) < 46.0:
        return Reply(204)
    return Reply(200, {"id": result.id, "success": True, "errors": [], "created": False})


def _single(results: list[WriteResult | SalesforceError]) -> WriteResult:
    result = results[0]
    if isinstance(result, SalesforceError):
        raise result
    return result


# ---- query and search -----------------------------------------------------------------------


@route("GET", "query")
def _query(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    return api.run_query(call, include_deleted=False)


@route("GET", "queryAll")
def _query_all(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    return api.run_query(call, include_deleted=True)


@route("GET", r"(?P<resource>query|queryAll)/(?P<locator>\w+)-(?P<position>\d+)")
def _query_more(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    cursor = api.take_cursor(match["locator"], int(match["position"]))
    if cursor is None:
        raise SalesforceError("INVALID_QUERY_LOCATOR", "invalid query locator")
    return Reply(200, api._page(cursor, call.version, match["resource"]))


@route("GET", "search")
def _search(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    text = call.param("q")
    if not text:
        raise SalesforceError(
            "MALFORMED_SEARCH", "No search term found. The search term must be enclosed in braces."
        )
    results = sosl.search(text, api.org.schema, api.org, api._resolve, call.version)
    return Reply(200, {"searchRecords": results})


# ---- collections ----------------------------------------------------------------------------


def _records_of(call: Call) -> tuple[list[dict[str, Any]], bool]:
    body = call.body if isinstance(call.body, dict) else {}
    records = body.get("records")
    if not isinstance(records, list):
        raise SalesforceError("JSON_PARSER_ERROR", "records: expected an array of sObjects")
    if len(records) > COLLECTION_LIMIT:
        raise _too_many()
    return records, bool(body.get("allOrNone", False))


def _too_many() -> SalesforceError:
    return SalesforceError(
        "EXCEEDED_ID_LIMIT",
        "record limit reached. cannot submit more than 200 records into this call",
    )


def _collection_reply(
    results: list[WriteResult | SalesforceError], with_created: bool, ids_in: list[str | None]
) -> Reply:
    body = []
    for index, result in enumerate(results):
        if isinstance(result, SalesforceError):
            body.append({"id": ids_in[index], "success": False, "errors": [result.record_error()]})
        else:
            entry: dict[str, Any] = {"id": result.id, "success": True, "errors": []}
            if with_created:
                entry["created"] = result.created
            body.append(entry)
    return Reply(200, body)


def _type_of(api: RestApi, record: dict[str, Any]) -> SObjectType:
    attributes = next((v for k, v in record.items() if k.lower() == "attributes"), None)
    name = attributes.get("type") if isinstance(attributes, dict) else None
    if not name:
        raise SalesforceError(
            "INVALID_TYPE", "sObject type must be specified in attributes.type", []
        )
    sobject = api.org.schema.get(name)
    if sobject is None:
        raise SalesforceError("INVALID_TYPE", f"sObject type '{name}' is not supported.", [])
    return sobject


@route("POST", "composite/sobjects")
def _collection_create(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    records, all_or_none = _records_of(call)
    return _collection_write(api, call, records, all_or_none, mode="create")


@route("PATCH", "composite/sobjects")
def _collection_update(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    records, all_or_none = _records_of(call)
    return _collection_write(api, call, records, all_or_none, mode="update")


@route("PATCH", r"composite/sobjects/(?P<type>\w+)/(?P<field>\w+)")
def _collection_upsert(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    records, all_or_none = _records_of(call)
    sobject = api.sobject(match["type"])
    described = sobject.field(match["field"])
    if described is None or not (described["externalId"] or described["idLookup"]):
        raise SalesforceError(
            "INVALID_FIELD",
            f"Field name provided, {match['field']} is not an External ID or indexed field for "
            f"{sobject.name}",
        )
    return _collection_write(
        api, call, records, all_or_none, mode="upsert", upsert=(sobject, described["name"])
    )


def _collection_write(
    api: RestApi,
    call: Call,
    records: list[dict[str, Any]],
    all_or_none: bool,
    mode: str,
    upsert: tuple[SObjectType, str] | None = None,
) -> Reply:
    operations: list[tuple[str, SObjectType, str | None, dict[str, Any]]] = []
    early: dict[int, SalesforceError] = {}
    ids_in: list[str | None] = []
    for index, record in enumerate(records):
        # Field names are case-insensitive: `id` is the record's Id.
        id_key = (
            next((k for k in record if k.lower() == "id"), "Id")
            if isinstance(record, dict)
            else "Id"
        )
        record_id = record.get(id_key) if isinstance(record, dict) else None
        ids_in.append(record_id if mode == "update" else None)
        try:
            if not isinstance(record, dict):
                raise SalesforceError("JSON_PARSER_ERROR", "expected an sObject", [])
            sobject = _type_of(api, record)
            values = {k: v for k, v in record.items() if k.lower() != "attributes"}
            if id_key != "Id" and id_key in values:
                values["Id"] = values.pop(id_key)
            if mode == "create":
                if record_id is not None:
                    raise SalesforceError(
                        "INVALID_FIELD_FOR_INSERT_UPDATE",
                        "cannot specify Id in an insert call",
                        ["Id"],
                    )
                operations.append(("create", sobject, None, values))
            elif mode == "update":
                if not record_id:
                    raise SalesforceError(
                        "MISSING_ARGUMENT", "Id not specified in an update call", []
                    )
                values.pop("Id", None)
                if ids.normalize(str(record_id)) is None:
                    raise SalesforceError("MALFORMED_ID", f"malformed id {record_id}", [])
                operations.append(("update", sobject, str(record_id), values))
            else:
                assert upsert is not None
                target, field_name = upsert
                if sobject.name != target.name:
                    raise SalesforceError(
                        "INVALID_TYPE", f"Expected records of type {target.name}", []
                    )
                key = next((v for k, v in values.items() if k.lower() == field_name.lower()), None)
                if key is None and field_name != "Id":
                    raise SalesforceError(
                        "MISSING_ARGUMENT", f"{field_name} not specified", [field_name]
                    )
                kind, existing = api.org.upsert_plan(sobject, field_name, key)
                if field_name == "Id":
                    values.pop("Id", None)
                elif kind == "update":
                    values = {k: v for k, v in values.items() if k.lower() != field_name.lower()}
                operations.append((kind, sobject, existing, values))
        except SalesforceError as error:
            early[index] = error
    if early and all_or_none:
        results: list[WriteResult | SalesforceError] = [
            early.get(i, ROLLED_BACK) for i in range(len(records))
        ]
        return _collection_reply(results, mode == "upsert", ids_in)
    written = iter(api.org.write_many(operations, call.user_id, all_or_none))
    results = [early[i] if i in early else next(written) for i in range(len(records))]
    return _collection_reply(results, mode == "upsert", ids_in)


@route("DELETE", "composite/sobjects")
def _collection_delete(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    raw = call.param("ids") or ""
    record_ids = [i for i in raw.split(",") if i]
    if len(record_ids) > COLLECTION_LIMIT:
        raise _too_many()
    all_or_none = (call.param("allOrNone") or "false").lower() == "true"
    results = api.org.delete_many(record_ids, all_or_none)
    return _collection_reply(results, False, [ids.normalize(i) or i for i in record_ids])


# ---- composite ------------------------------------------------------------------------------

_REFERENCE = re.compile(r"@\{(?P<ref>[A-Za-z0-9_]+)\.(?P<path>[^}]+)\}")


def _lookup(body: Any, path: str) -> Any:
    current = body
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        current = current[int(part[1:-1])] if part.startswith("[") else current[part]
    return current


def _substitute(value: Any, results: dict[str, Any]) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            if match["ref"] not in results:
                raise KeyError(match["ref"])
            return str(_lookup(results[match["ref"]], match["path"]))

        return _REFERENCE.sub(replace, value)
    if isinstance(value, list):
        return [_substitute(v, results) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, results) for k, v in value.items()}
    return value


@route("POST", "composite")
def _composite(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    body = call.body if isinstance(call.body, dict) else {}
    subrequests = body.get("compositeRequest")
    if not isinstance(subrequests, list) or not subrequests:
        raise SalesforceError("JSON_PARSER_ERROR", "compositeRequest: expected a non-empty array")
    if len(subrequests) > COMPOSITE_LIMIT:
        raise SalesforceError(
            "LIMIT_EXCEEDED", f"Maximum number of subrequests is {COMPOSITE_LIMIT}"
        )
    heavy = sum(
        1
        for s in subrequests
        if re.search(r"/(composite/sobjects|query|queryAll)(/|\?|$)", str(s.get("url", "")))
    )
    if heavy > COMPOSITE_HEAVY_LIMIT:
        raise SalesforceError(
            "LIMIT_EXCEEDED",
            f"Maximum number of sObject Collections and query subrequests is "
            f"{COMPOSITE_HEAVY_LIMIT}",
        )
    all_or_none = bool(body.get("allOrNone", False))
    if not all_or_none:
        return Reply(200, {"compositeResponse": _run_composite(api, call, subrequests, False)})
    with api.org.transaction() as transaction:
        responses = _run_composite(api, call, subrequests, True)
        failed = transaction.rollback = any(r["httpStatusCode"] >= 400 for r in responses)
    if failed:
        # Salesforce reports every subrequest but the failed one as rolled back.
        responses = [
            r if r["httpStatusCode"] >= 400 else _halted(r["referenceId"]) for r in responses
        ]
    return Reply(200, {"compositeResponse": responses})


def _run_composite(
    api: RestApi, call: Call, subrequests: list[Any], all_or_none: bool
) -> list[dict[str, Any]]:
    results: dict[str, Any] = {}
    responses: list[dict[str, Any]] = []
    halted = False
    for sub in subrequests:
        reference = str(sub.get("referenceId", ""))
        if halted:
            responses.append(_halted(reference))
            continue
        try:
            url = _substitute(str(sub.get("url", "")), results)
            sub_body = _substitute(sub.get("body"), results)
        except (KeyError, IndexError, TypeError):
            reply = Reply(
                400, [{"errorCode": "INVALID_REFERENCE", "message": "Invalid reference specified."}]
            )
        else:
            headers = sub.get("httpHeaders")
            reply = _subcall(
                api,
                call,
                str(sub.get("method", "GET")).upper(),
                url,
                sub_body,
                headers if isinstance(headers, dict) else {},
            )
        if reply.status < 300:
            results[reference] = reply.body
        responses.append(
            {
                "body": reply.body,
                "httpHeaders": reply.headers,
                "httpStatusCode": reply.status,
                "referenceId": reference,
            }
        )
        if reply.status >= 400 and all_or_none:
            halted = True
    return responses


def _halted(reference: str) -> dict[str, Any]:
    return {
        "body": [
            {
                "errorCode": "PROCESSING_HALTED",
                "message": "The transaction was rolled back since another operation in the "
                "same transaction failed.",
            }
        ],
        "httpHeaders": {},
        "httpStatusCode": 400,
        "referenceId": reference,
    }


def _subcall(
    api: RestApi, call: Call, method: str, url: str, body: Any, headers: dict[str, Any]
) -> Reply:
    """One subrequest, with the headers the subrequest carries (conditional ones included) over
    those of the Composite request."""
    parts = urlsplit(url)
    match = re.match(r"^/services/data/(v[^/]+)/?(.*)$", parts.path)
    version = version_of(match.group(1)) if match else None
    if match is None or version is None:
        return Reply(404, not_found().rest_body())
    if match.group(2).startswith("composite") and not match.group(2).startswith(
        "composite/sobjects"
    ):
        return Reply(
            400, [{"errorCode": "INVALID_INPUT", "message": "Composite requests cannot be nested"}]
        )
    sub = Call(
        method,
        match.group(2).rstrip("/"),
        parse_qs(parts.query),
        body,
        call.user_id,
        version,
        call.headers | {str(k).lower(): str(v) for k, v in headers.items()},
    )
    reply = api.dispatch(sub)
    if reply.status == 201 and method == "POST" and isinstance(reply.body, dict):
        reply.headers = {"Location": f"/services/data/v{version}/{sub.path}/{reply.body['id']}"}
    return reply


# ---- sObject Collections retrieve, UI resources ---------------------------------------------


def _split(values: Any) -> list[str]:
    if isinstance(values, list):
        return [str(v).strip() for v in values if str(v).strip()]
    return [v.strip() for v in str(values or "").split(",") if v.strip()]


def _collection_retrieve(
    api: RestApi, call: Call, type_name: str, raw_ids: Any, raw_fields: Any
) -> Reply:
    sobject = api.sobject(type_name)
    wanted_ids, names = _split(raw_ids), _split(raw_fields)
    if not wanted_ids or not names:
        raise SalesforceError(
            "MISSING_ARGUMENT", "Both ids and fields are required", [], status=400
        )
    if len(wanted_ids) > 2000:
        raise SalesforceError("LIMIT_EXCEEDED", "Maximum number of ids is 2000", [], status=400)
    for name in names:
        if sobject.field(name) is None:
            raise SalesforceError(
                "INVALID_FIELD",
                f"No such column '{name}' on entity '{sobject.name}'. If you are attempting to "
                "use a custom field, be sure to append the '__c' after the custom field name. "
                "Please reference your WSDL or the describe call for the appropriate names.",
                status=400,
            )
    rows: list[dict[str, Any] | None] = []
    for raw_id in wanted_ids:
        try:
            record = api.org.retrieve(sobject, raw_id)
        except SalesforceError:
            # A deleted, unknown or malformed id answers null in its position.
            rows.append(None)
            continue
        rows.append(api.org.render(sobject, record, call.version, names))
    return Reply(200, rows)


@route("POST", r"composite/sobjects/(?P<type>\w+)")
def _collection_retrieve_post(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    body = api.record_body(call)
    lowered = {k.lower(): v for k, v in body.items()}
    return _collection_retrieve(api, call, match["type"], lowered.get("ids"), lowered.get("fields"))


@route("GET", r"composite/sobjects/(?P<type>\w+)")
def _collection_retrieve_get(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    return _collection_retrieve(api, call, match["type"], call.param("ids"), call.param("fields"))


@route("GET", r"sobjects/(?P<type>\w+)/describe/layouts", first=True)
def _layouts(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    sobject = api.sobject(match["type"])
    # One page layout listing the object's editable fields, two to a row, as the UI shows.
    items = [
        {
            "editableForNew": bool(f["createable"]),
            "editableForUpdate": bool(f["updateable"]),
            "label": f["label"],
            "layoutComponents": [
                {
                    "details": f,
                    "displayLines": 1,
                    "tabOrder": n,
                    "type": "Field",
                    "value": f["name"],
                }
            ],
            "placeholder": False,
            "required": not f["nillable"] and f["createable"] and not f["defaultedOnCreate"],
        }
        for n, f in enumerate(sobject.describe["fields"])
        if f["createable"] or f["updateable"]
    ]
    rows = [
        {"layoutItems": items[i : i + 2], "numItems": len(items[i : i + 2])}
        for i in range(0, len(items), 2)
    ]
    section = {
        "collapsed": False,
        "columns": 2,
        "heading": "Information",
        "layoutRows": rows,
        "layoutSectionId": f"01B{sobject.key_prefix}0000000001",
        "parentLayoutId": f"00h{sobject.key_prefix}0000000001",
        "rows": len(rows),
        "tabOrder": "TopToBottom",
        "useCollapsibleSection": False,
        "useHeading": True,
    }
    layout: dict[str, Any] = {
        "buttonLayoutSection": None,
        "detailLayoutSections": [section],
        "editLayoutSections": [section],
        "feedView": None,
        "highlightsPanelLayoutSection": None,
        "id": f"00h{sobject.key_prefix}0000000001",
        "multirowEditLayoutSections": [],
        "offlineLinks": [],
        "quickActionList": {"quickActionListItems": []},
        "relatedContent": None,
        "relatedLists": [],
        "saveOptions": [],
    }
    return Reply(
        200,
        {
            "layouts": [layout],
            "recordTypeMappings": [],
            "recordTypeSelectorRequired": [False],
        },
    )


def _list_view(sobject: SObjectType, version: str) -> dict[str, Any]:
    list_id = f"00B{sobject.key_prefix}000000Al1"
    base = f"/services/data/v{version}/sobjects/{sobject.name}/listviews/{list_id}"
    return {
        "describeUrl": f"{base}/describe",
        "developerName": "All",
        "id": list_id,
        "label": f"All {sobject.describe.get('labelPlural') or sobject.name}",
        "resultsUrl": f"{base}/results",
        "soqlCompatible": True,
        "url": base,
    }


@route("GET", r"sobjects/(?P<type>\w+)/listviews", first=True)
def _listviews(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    sobject = api.sobject(match["type"])
    base = f"/services/data/v{call.version}/sobjects/{sobject.name}/listviews"
    return Reply(
        200,
        {
            "done": True,
            "listviews": [_list_view(sobject, call.version)],
            "nextRecordsUrl": None,
            "size": 1,
            "sobjectType": sobject.name,
        }
        | {"url": base},
    )


@route("GET", r"sobjects/(?P<type>\w+)/listviews/(?P<id>\w+)", first=True)
def _listview(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    sobject = api.sobject(match["type"])
    view = _list_view(sobject, call.version)
    if match["id"] != view["id"]:
        raise not_found()
    return Reply(200, view)


@route("GET", r"sobjects/(?P<type>\w+)/listviews/recent", first=True)
def _listviews_recent(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    return _listviews(api, call, match)


@route("GET", "recent")
def _recent(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    # Recently viewed: the newest records the org's users touched, newest first (no UI here).
    limit = int(call.param("limit") or 200)
    records = sorted(
        (r for r in api.org.store.every_record() if r.deleted_at is None),
        key=lambda r: str(r.fields.get("LastModifiedDate") or ""),
        reverse=True,
    )
    shown = []
    for record in records:
        sobject = api.org.schema.get(record.sobject)
        if sobject is None or sobject.field("Name") is None or record.sobject in _NOT_RECENT:
            continue
        shown.append(
            {
                "attributes": api.org.attributes(record.sobject, record.id, call.version),
                "Id": record.id,
                "Name": record.fields.get("Name"),
            }
        )
        if len(shown) >= limit:
            break
    return Reply(200, shown)


_NOT_RECENT = frozenset({"Organization", "BusinessHours", "Pricebook2", "User"})
_TABBED = ("Account", "Contact", "Lead", "Opportunity", "Case", "Campaign", "Product2", "Task")


def _icon(name: str, version: str) -> list[dict[str, Any]]:
    slug = name.lower()
    return [
        {
            "contentType": "image/svg+xml",
            "height": 0,
            "theme": "theme4",
            "url": f"/img/icon/t4v35/standard/{slug}.svg",
            "width": 0,
        },
        {
            "contentType": "image/png",
            "height": 120,
            "theme": "theme4",
            "url": f"/img/icon/t4v35/standard/{slug}_120.png",
            "width": 120,
        },
    ]


@route("GET", "tabs")
def _tabs(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    tabs = []
    for name in _TABBED:
        sobject = api.org.schema.get(name)
        if sobject is None:
            continue
        tabs.append(
            {
                "colors": [{"color": "5867E8", "context": "primary", "theme": "theme4"}],
                "custom": False,
                "iconUrl": f"/img/icon/{name.lower()}s32.png",
                "icons": _icon(name, call.version),
                "label": sobject.describe.get("labelPlural") or name,
                "miniIconUrl": f"/img/icon/{name.lower()}s16.png",
                "name": f"standard-{name}",
                "sobjectName": name,
                "url": f"/{sobject.key_prefix}/o",
            }
        )
    return Reply(200, tabs)


@route("GET", "theme")
def _theme(api: RestApi, call: Call, match: re.Match[str]) -> Reply:
    items = [
        {
            "colors": [{"color": "5867E8", "context": "primary", "theme": "theme4"}],
            "icons": _icon(name, call.version),
            "name": name,
        }
        for name in _TABBED
        if api.org.schema.get(name) is not None
    ]
    return Reply(200, {"themeItems": items})


# Handlers that write take the write lock themselves, or write nothing: a Composite, for its
# writing subrequests only (an all-or-none one from its first write to its end); a Collections
# retrieve, which is a POST that reads.
_LOCKING_ITSELF: frozenset[Handler] = frozenset({_composite, _collection_retrieve_post})


def encode(reply: Reply) -> bytes | None:
    return None if reply.body is None else json.dumps(reply.body).encode()


# Salesforce computes ETags for Account rows only; other objects neither send one nor honour
# If-Match / If-None-Match (Conditional Request Headers, REST API Developer Guide).
_ETAGGED = frozenset({"Account"})


def _etag(sobject: SObjectType, fields: dict[str, Any]) -> str | None:
    """A strong ETag of the record's content, shaped as Salesforce's (`"<base64>--gzip"`)."""
    if sobject.name not in _ETAGGED:
        return None
    content = json.dumps(fields, sort_keys=True, default=str).encode()
    return f'"{base64.b64encode(hashlib.sha256(content).digest()).decode()}--gzip"'


def _tagged(tag: str | None) -> dict[str, str]:
    return {"ETag": tag} if tag else {}


def _strong_precondition(tag: str | None, headers: dict[str, str]) -> str | None:
    """Which of If-Match / If-None-Match refuses the request ("match", "none-match"), if any.

    Only where the record has an ETag (Account rows); a value that is not a list of quoted
    entity tags (or `*`) is a 400, as Salesforce documents for PATCH and POST."""
    if tag is None:
        return None
    wanted = headers.get("if-match")
    if wanted is not None and not _tag_listed(tag, wanted, "If-Match"):
        return "match"
    unwanted = headers.get("if-none-match")
    if unwanted is not None and _tag_listed(tag, unwanted, "If-None-Match"):
        return "none-match"
    return None


def _tag_listed(tag: str, header: str, name: str) -> bool:
    values = [v.strip() for v in header.split(",") if v.strip()]
    if values == ["*"]:
        return True
    for value in values:
        if not re.fullmatch(r'(W/)?"[^"]*"', value):
            raise SalesforceError(
                "INVALID_HEADER_TYPE", f"{name}: not a list of entity tags: {header}", status=400
            )
    # Strong comparison: a weak tag never matches a strong one.
    return tag in values


def _not_modified_since(fields: dict[str, Any], header: str | None) -> bool:
    """Whether a read's `If-Modified-Since` makes it a 304; an unreadable date is ignored, as
    HTTP says for reads."""
    if not header:
        return False
    try:
        return not _modified_since(fields, header)
    except SalesforceError:
        return False


def _modified_since(fields: dict[str, Any], header: str | None) -> bool:
    """Whether `If-Unmodified-Since` fails: the record's LastModifiedDate, truncated to the
    second as an HTTP date is, lies after the header's time."""
    if not header:
        return False
    try:
        limit = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        # Salesforce documents the 400 for an invalid value; the error code is ours.
        raise SalesforceError(
            "INVALID_HEADER_TYPE", f"If-Unmodified-Since: not an HTTP date: {header}", status=400
        ) from None
    stamp = fields.get("LastModifiedDate") or fields["SystemModstamp"]
    modified = timefmt.parse_datetime(str(stamp)).replace(microsecond=0)
    return modified > limit
