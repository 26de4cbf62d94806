"""Calendar v3: events with sync tokens, recurrence, etags, client-chosen ids and watch channels.

Recurring events are stored as Google stores them: a master carrying RRULE/EXDATE/RDATE lines,
and an exception per changed or cancelled instance (`recurringEventId` + `originalStartTime`),
id `<master>_<original start>`. Instances nobody changed exist only by expansion.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import secrets
import time
import zoneinfo
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from dateutil import rrule

from concord_google_emulator.core import (
    ApiError,
    Call,
    Sequence,
    bad_request,
    decode_token,
    encode_token,
    merge_patch,
    new_id,
    not_found,
    page,
    parse_rfc3339,
    rfc3339,
)

__all__ = ["CalendarStore", "Channel"]

_EVENT_ID = re.compile(r"[a-v0-9]{5,1024}")
# Fields a client may write; the rest are the server's.
_WRITABLE = {
    "summary",
    "description",
    "location",
    "start",
    "end",
    "recurrence",
    "attendees",
    "visibility",
    "extendedProperties",
    "colorId",
    "transparency",
    "reminders",
    "status",
    "guestsCanModify",
    "anyoneCanAddSelf",
    "source",
    "sequence",
    "originalStartTime",
    "recurringEventId",
    "eventType",
    "attachments",
    "conferenceData",
    "guestsCanInviteOthers",
    "guestsCanSeeOtherGuests",
    "locked",
    "privateCopy",
}
# Instances expanded from an unbounded rule, at most.
_MAX_INSTANCES = 730


@dataclass
class Channel:
    id: str
    resource_id: str
    calendar: str
    user: str
    address: str
    token: str | None
    expiration_ms: int
    message_number: int = 0


@dataclass
class Calendar:
    id: str
    summary: str
    time_zone: str
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Sync tokens carry it: bumping it makes every token handed out stale (410).
    epoch: int = 0
    color_id: str = "1"


class CalendarStore:
    def __init__(self, seq: Sequence, notify: Callable[[Channel, str], None]) -> None:
        self.seq = seq
        self.notify = notify
        self.calendars: dict[str, dict[str, Calendar]] = {}
        self.channels: dict[str, Channel] = {}

    # ---- users and calendars

    def add_user(self, user: str, time_zone: str = "Europe/Paris") -> None:
        calendars = self.calendars.setdefault(user, {})
        calendars.setdefault(user, Calendar(user, user, time_zone))

    def add_calendar(self, user: str, summary: str) -> Calendar:
        calendar = Calendar(f"{new_id(26)}@group.calendar.google.com", summary, "Europe/Paris")
        self.calendars[user][calendar.id] = calendar
        return calendar

    def calendar(self, call: Call) -> Calendar:
        calendar_id = str(call.params["calendarId"])
        if calendar_id == "primary":
            calendar_id = call.user
        found = self.calendars.get(call.user, {}).get(calendar_id)
        if found is None:
            raise not_found()
        return found

    def invalidate_sync_tokens(self, user: str) -> None:
        for calendar in self.calendars.get(user, {}).values():
            calendar.epoch += 1

    # ---- writes

    def _stamp(self, calendar: Calendar, event: dict[str, Any], call: Call) -> dict[str, Any]:
        seq = self.seq.take()
        event["etag"] = f'"{seq}"'
        event["updated"] = rfc3339()
        event["_seq"] = seq
        calendar.events[event["id"]] = event
        for channel in list(self.channels.values()):
            if channel.calendar == calendar.id and channel.user == call.user:
                call.after.append(functools.partial(self.notify, channel, "exists"))
        return event

    def insert(self, call: Call) -> dict[str, Any]:
        calendar = self.calendar(call)
        body = dict(call.body or {})
        event_id = body.get("id") or new_id()
        if not _EVENT_ID.fullmatch(event_id):
            raise bad_request("Invalid resource id value.", "invalid")
        existing = calendar.events.get(event_id)
        if existing is not None:
            raise ApiError(409, "duplicate", "The requested identifier already exists.")
        event = {k: v for k, v in body.items() if k in _WRITABLE}
        _check_times(event)
        now = rfc3339()
        event.update(
            kind="calendar#event",
            id=event_id,
            status=body.get("status", "confirmed"),
            created=now,
            iCalUID=body.get("iCalUID") or f"{event_id}@google.com",
            htmlLink=f"https://www.google.com/calendar/event?eid={event_id}",
            creator={"email": call.user},
            organizer={"email": call.user, "self": True},
            sequence=int(body.get("sequence", 0)),
        )
        event.setdefault("eventType", "default")
        event.setdefault("reminders", {"useDefault": True})
        return _public(self._stamp(calendar, event, call))

    def _current(self, calendar: Calendar, event_id: str) -> dict[str, Any]:
        """The stored event, or an instance of a stored master made an exception on write."""
        event = calendar.events.get(event_id)
        if event is not None:
            return event
        instance = self._virtual_instance(calendar, event_id)
        if instance is None:
            raise not_found()
        return instance

    def _check_etag(self, call: Call, event: dict[str, Any]) -> None:
        expected = call.if_match()
        if expected is not None and expected not in {"*", event.get("etag")}:
            raise ApiError(412, "conditionNotMet", "Precondition Failed")

    def modify(self, call: Call, *, replace: bool) -> dict[str, Any]:
        calendar = self.calendar(call)
        event = self._current(calendar, str(call.params["eventId"]))
        if event.get("status") == "cancelled" and "recurringEventId" not in event:
            raise ApiError(404, "notFound", "Not Found")
        self._check_etag(call, event)
        body = {k: v for k, v in (call.body or {}).items() if k in _WRITABLE}
        if replace:
            kept = {k: v for k, v in event.items() if k not in _WRITABLE or k in _SERVER_OWNED}
            updated = kept | body
        else:
            updated = merge_patch(event, body)
        for owned in _SERVER_OWNED:
            if owned in event:
                updated[owned] = event[owned]
        _check_times(updated)
        updated["sequence"] = int(event.get("sequence", 0)) + 1
        return _public(self._stamp(calendar, updated, call))

    def delete(self, call: Call) -> None:
        calendar = self.calendar(call)
        event = self._current(calendar, str(call.params["eventId"]))
        if event.get("status") == "cancelled":
            raise ApiError(410, "deleted", "Resource has been deleted")
        self._check_etag(call, event)
        self._stamp(calendar, event | {"status": "cancelled"}, call)

    # ---- reads

    def get(self, call: Call) -> dict[str, Any]:
        calendar = self.calendar(call)
        event = self._current(calendar, str(call.params["eventId"]))
        if event.get("status") == "cancelled" and "recurringEventId" not in event:
            raise ApiError(404, "notFound", "Not Found")
        return _public(event)

    def list_events(self, call: Call) -> dict[str, Any]:
        calendar = self.calendar(call)
        params = call.params
        size = min(int(params.get("maxResults", 250)), 2500)
        sync_token = params.get("syncToken")
        if sync_token:
            for refused in ("timeMin", "timeMax", "q", "orderBy", "updatedMin", "iCalUID"):
                if refused in params:
                    raise bad_request(f"{refused} cannot be used with a syncToken.")
            since = self._since(calendar, str(sync_token))
            stored = sorted(calendar.events.values(), key=lambda e: e["_seq"])
            chosen = [e for e in stored if e["_seq"] > since]
            if params.get("singleEvents"):
                chosen = list(self._singles(calendar, chosen, None, None, show_deleted=True))
        else:
            show_deleted = bool(params.get("showDeleted"))
            stored = sorted(calendar.events.values(), key=lambda e: (e["created"], e["id"]))
            time_min = _bound(params.get("timeMin"))
            time_max = _bound(params.get("timeMax"))
            if params.get("singleEvents"):
                chosen = list(self._singles(calendar, stored, time_min, time_max, show_deleted))
            else:
                chosen = [
                    e
                    for e in stored
                    if (show_deleted or e.get("status") != "cancelled")
                    and _overlaps(e, time_min, time_max)
                ]
            for constraint in params.get("privateExtendedProperty", []):
                name, _, value = str(constraint).partition("=")
                chosen = [e for e in chosen if _private(e).get(name) == value]
            if params.get("iCalUID"):
                chosen = [e for e in chosen if e.get("iCalUID") == params["iCalUID"]]
            if params.get("orderBy") == "updated":
                chosen.sort(key=lambda e: e["_seq"])
        # The high-water mark is taken before paging, so a change between pages is not lost.
        mark = self.seq.current
        if params.get("pageToken"):
            mark = int(decode_token(str(params["pageToken"])).get("mark", mark))
        items, next_token = page(chosen, params.get("pageToken"), size)
        answer: dict[str, Any] = {
            "kind": "calendar#events",
            "etag": f'"{mark}"',
            "summary": calendar.summary,
            "updated": rfc3339(),
            "timeZone": calendar.time_zone,
            "accessRole": "owner",
            "defaultReminders": [],
            "items": [_public(e) for e in items],
        }
        if next_token:
            offset = decode_token(next_token)["offset"]
            answer["nextPageToken"] = encode_token(offset=offset, mark=mark)
        else:
            answer["nextSyncToken"] = encode_token(
                b=self.seq.boot, c=calendar.id, e=calendar.epoch, s=mark
            )
        return answer

    def _since(self, calendar: Calendar, token: str) -> int:
        try:
            values = decode_token(token)
            since, epoch, owner = int(values["s"]), int(values["e"]), values["c"]
        except (ValueError, KeyError, TypeError):
            raise bad_request("Invalid sync token value.") from None
        if owner != calendar.id or epoch != calendar.epoch or values.get("b") != self.seq.boot:
            raise ApiError(
                410, "fullSyncRequired", "Sync token is no longer valid, a full sync is required."
            )
        return since

    def instances(self, call: Call) -> dict[str, Any]:
        calendar = self.calendar(call)
        master = calendar.events.get(str(call.params["eventId"]))
        if master is None or not master.get("recurrence"):
            raise not_found()
        show_deleted = bool(call.params.get("showDeleted"))
        time_min = _bound(call.params.get("timeMin"))
        time_max = _bound(call.params.get("timeMax"))
        chosen = list(
            self._singles(calendar, [master], time_min, time_max, show_deleted, exceptions=True)
        )
        size = min(int(call.params.get("maxResults", 250)), 2500)
        items, next_token = page(chosen, call.params.get("pageToken"), size)
        answer: dict[str, Any] = {
            "kind": "calendar#events",
            "etag": master["etag"],
            "summary": calendar.summary,
            "updated": rfc3339(),
            "timeZone": calendar.time_zone,
            "accessRole": "owner",
            "defaultReminders": [],
            "items": [_public(e) for e in items],
        }
        if next_token:
            answer["nextPageToken"] = next_token
        return answer

    # ---- recurrence

    def _singles(
        self,
        calendar: Calendar,
        events: list[dict[str, Any]],
        time_min: dt.datetime | None,
        time_max: dt.datetime | None,
        show_deleted: bool,
        *,
        exceptions: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Masters expanded into their instances, exceptions in place of the instances they
        replace; `exceptions` also pulls each master's stored exceptions from the calendar."""
        for event in events:
            if not event.get("recurrence"):
                if event.get("recurringEventId") and exceptions:
                    continue
                if (show_deleted or event.get("status") != "cancelled") and _overlaps(
                    event, time_min, time_max
                ):
                    yield event
                continue
            if event.get("status") == "cancelled":
                if show_deleted:
                    yield event
                continue
            for instance in _expand(event, time_max):
                stored = calendar.events.get(instance["id"])
                chosen = stored if stored is not None else instance
                if stored is not None and not exceptions:
                    continue  # the exception is listed on its own
                if chosen.get("status") == "cancelled" and not show_deleted:
                    continue
                if _overlaps(chosen, time_min, time_max):
                    yield chosen

    def _virtual_instance(self, calendar: Calendar, event_id: str) -> dict[str, Any] | None:
        master_id, sep, stamp = event_id.rpartition("_")
        master = calendar.events.get(master_id) if sep else None
        if master is None or not master.get("recurrence") or master.get("status") == "cancelled":
            return None
        for instance in _expand(master, _stamp_bound(stamp)):
            if instance["id"] == event_id:
                return instance
        return None

    # ---- watch channels

    def watch(self, call: Call) -> dict[str, Any]:
        calendar = self.calendar(call)
        body = call.body or {}
        if body.get("type") not in {"web_hook", "webhook"} or not body.get("address"):
            raise bad_request("A web_hook channel needs an address.", "invalid")
        if not str(body["address"]).startswith("https://"):
            raise bad_request("WebHook callback must be HTTPS: " + str(body["address"]))
        channel_id = str(body.get("id") or "")
        if not channel_id or channel_id in self.channels:
            raise bad_request(f"Channel id {channel_id} not unique", "channelIdNotUnique")
        expiration = int(body.get("expiration") or 0)
        longest = int(time.time() * 1000) + 7 * 24 * 3600 * 1000
        expiration = min(expiration, longest) if expiration else longest
        channel = Channel(
            channel_id,
            secrets.token_urlsafe(16),
            calendar.id,
            call.user,
            str(body["address"]),
            body.get("token"),
            expiration,
        )
        self.channels[channel_id] = channel
        call.after.append(lambda: self.notify(channel, "sync"))
        return {
            "kind": "api#channel",
            "id": channel.id,
            "resourceId": channel.resource_id,
            "resourceUri": f"{call.base_url}calendar/v3/calendars/{calendar.id}/events",
            "expiration": str(channel.expiration_ms),
            **({"token": channel.token} if channel.token else {}),
        }

    def stop(self, call: Call) -> None:
        body = call.body or {}
        channel = self.channels.get(str(body.get("id")))
        if channel is None or channel.resource_id != body.get("resourceId"):
            raise not_found(f"Channel '{body.get('id')}' not found for project")
        del self.channels[channel.id]

    def expire_channels(self) -> None:
        now = int(time.time() * 1000)
        for channel in list(self.channels.values()):
            if channel.expiration_ms <= now:
                del self.channels[channel.id]

    def plant(self, user: str, calendar_id: str, event: dict[str, Any]) -> dict[str, Any]:
        """Stores an event as given (admin): what no client could write, e.g. a broken start."""
        calendar = self.calendars[user][calendar_id]
        event = {"kind": "calendar#event", "status": "confirmed", "created": rfc3339()} | event
        event.setdefault("id", new_id())
        call = Call(user, "admin.plant", {}, None, {}, "")
        self._stamp(calendar, event, call)
        for after in call.after:
            after()
        return _public(event)


_SERVER_OWNED = {"id", "kind", "created", "creator", "organizer", "iCalUID", "htmlLink"}


def _public(event: dict[str, Any]) -> dict[str, Any]:
    if event.get("status") == "cancelled":
        keep = {"kind", "etag", "id", "status", "updated", "recurringEventId", "originalStartTime"}
        return {k: v for k, v in event.items() if k in keep}
    return {k: v for k, v in event.items() if not k.startswith("_")}


def _private(event: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = event.get("extendedProperties", {}).get("private", {})
    return found


def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise bad_request(f"Invalid time zone definition: {name}.") from None


def _when(value: Any, what: str) -> dt.datetime | dt.date:
    if not isinstance(value, dict):
        raise bad_request(f"Missing {what} time.", "required")
    try:
        if "date" in value:
            return dt.date.fromisoformat(str(value["date"]))
        if "dateTime" in value:
            text = str(value["dateTime"])
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=_zone(str(value.get("timeZone", ""))))
            elif value.get("timeZone"):
                _zone(str(value["timeZone"]))
            return parsed
    except ValueError:
        raise bad_request(f"Invalid {what} time.") from None
    raise bad_request(f"Missing {what} time.", "required")


def _check_times(event: dict[str, Any]) -> None:
    if event.get("status") == "cancelled":
        return
    start, end = _when(event.get("start"), "start"), _when(event.get("end"), "end")
    if type(start) is not type(end):
        raise bad_request("Start and end must both be dates or both be date-times.")
    all_day = not isinstance(start, dt.datetime)
    if end < start or (all_day and end == start):
        raise bad_request("The specified time range is empty.", "timeRangeEmpty")
    if (
        event.get("recurrence")
        and isinstance(start, dt.datetime)
        and not event["start"].get("timeZone")
    ):
        raise bad_request("Missing time zone definition for start time.", "required")
    if event.get("recurrence"):
        _rule_set(event)


def _utc(value: dt.datetime | dt.date) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC)
    return dt.datetime.combine(value, dt.time(), tzinfo=dt.UTC)


def _overlaps(event: dict[str, Any], lo: dt.datetime | None, hi: dt.datetime | None) -> bool:
    if lo is None and hi is None:
        return True
    if event.get("status") == "cancelled" and "start" not in event:
        return True
    try:
        start = _utc(_when(event.get("start"), "start"))
        end = _utc(_when(event.get("end"), "end"))
    except ApiError:
        return True
    if event.get("recurrence"):
        end = dt.datetime.max.replace(tzinfo=dt.UTC)
    return (lo is None or end > lo) and (hi is None or start < hi)


def _bound(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    try:
        return parse_rfc3339(str(value))
    except ValueError:
        raise bad_request(f"Invalid value for time bound: {value}") from None


def _stamp_bound(stamp: str) -> dt.datetime | None:
    try:
        if "T" in stamp:
            moment = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
            return moment + dt.timedelta(seconds=1)
        return dt.datetime.strptime(stamp, "%Y%m%d").replace(tzinfo=dt.UTC) + dt.timedelta(days=1)
    except ValueError:
        return None


def _rule_set(master: dict[str, Any]) -> rrule.rruleset:
    start = _when(master["start"], "start")
    if isinstance(start, dt.datetime):
        zone = _zone(str(master["start"].get("timeZone") or "UTC"))
        dtstart = start.astimezone(zone)
    else:
        dtstart = dt.datetime.combine(start, dt.time())
    lines = [line for line in master["recurrence"] if not line.upper().startswith("EXDATE")]
    try:
        rules = rrule.rrulestr("\n".join(lines), dtstart=dtstart, forceset=True, unfold=True)
    except (ValueError, TypeError):
        raise bad_request("Invalid recurrence rule.") from None
    assert isinstance(rules, rrule.rruleset)
    for line in master["recurrence"]:
        if line.upper().startswith("EXDATE"):
            for excluded in _exdates(line, dtstart):
                rules.exdate(excluded)
    return rules


def _exdates(line: str, dtstart: dt.datetime) -> Iterator[dt.datetime]:
    head, _, values = line.partition(":")
    params = dict(p.split("=", 1) for p in head.split(";")[1:] if "=" in p)
    for value in values.split(","):
        value = value.strip()
        try:
            if len(value) == 8:
                day = dt.datetime.strptime(value, "%Y%m%d")
                yield day if dtstart.tzinfo is None else day.replace(tzinfo=dtstart.tzinfo)
            elif value.endswith("Z"):
                yield dt.datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
            else:
                local = dt.datetime.strptime(value, "%Y%m%dT%H%M%S")
                zone = _zone(params["TZID"]) if "TZID" in params else dtstart.tzinfo
                yield local.replace(tzinfo=zone) if zone is not None else local
        except (ValueError, KeyError):
            raise bad_request("Invalid recurrence rule.") from None


def _expand(master: dict[str, Any], until: dt.datetime | None) -> Iterator[dict[str, Any]]:
    start = _when(master["start"], "start")
    end = _when(master["end"], "end")
    length = end - start
    all_day = not isinstance(start, dt.datetime)
    zone_name = master["start"].get("timeZone")
    for count, occurrence in enumerate(_rule_set(master)):
        if count >= _MAX_INSTANCES:
            return
        if until is not None and _utc(occurrence.date() if all_day else occurrence) >= until:
            return
        if all_day:
            day = occurrence.date()
            stamp = day.strftime("%Y%m%d")
            when: dict[str, Any] = {"date": day.isoformat()}
            finish: dict[str, Any] = {"date": (day + length).isoformat()}
        else:
            stamp = occurrence.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
            when = {"dateTime": occurrence.isoformat(), "timeZone": zone_name}
            finish = {"dateTime": (occurrence + length).isoformat(), "timeZone": zone_name}
        instance = {k: v for k, v in master.items() if k not in {"recurrence", "id"}}
        instance.update(
            id=f"{master['id']}_{stamp}",
            recurringEventId=master["id"],
            originalStartTime=dict(when),
            start=when,
            end=finish,
        )
        yield instance
