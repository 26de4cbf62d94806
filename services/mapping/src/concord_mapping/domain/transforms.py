"""Field transforms named by mapping tables, each with both directions and loss reporting.

A transform reads the rule's source field (and, for composite values such as an event's times,
its siblings) and writes the rule's target field; whatever does not survive is recorded as a
`Loss`, and whatever cannot be mapped at all raises `MappingFailure` for that item only.
Values are in the JSON forms both sides use: the canonical item as protobuf JSON
(snake_case, enums by name, timestamps RFC 3339) and Salesforce fields as the REST API has them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any

from concord_mapping.domain import recurrence as rec
from concord_mapping.domain.describe import TEXT_TYPES, FieldDescribe, SObjectDescribe
from concord_mapping.domain.errors import MappingFailure
from concord_mapping.domain.table import FieldRule
from concord_mapping.domain.text import html_to_text, truncate
from concord_mapping.domain.timezones import equivalent_zone, iana_zone, zone

__all__ = ["TRANSFORMS", "Loss", "LossKind", "Side", "Step", "Transform"]

MISSING_REQUIRED_FIELD = "MISSING_REQUIRED_FIELD"
INVALID_VALUE = "INVALID_VALUE"
# Salesforce accepts at most this much recurrence text in Recurrence2PatternText.
PATTERN_TEXT_LIMIT = 512


class LossKind(StrEnum):
    TRUNCATED = "FIELD_LOSS_KIND_TRUNCATED"
    UNREPRESENTABLE = "FIELD_LOSS_KIND_UNREPRESENTABLE"
    DROPPED = "FIELD_LOSS_KIND_DROPPED"


@dataclass(frozen=True)
class Loss:
    field: str
    kind: LossKind
    detail: str


class Side(StrEnum):
    CRM = "crm"
    MAIL = "mail"


@dataclass(slots=True)
class Step:
    """One rule applied to one item: where to read, where to write, what was lost."""

    rule: FieldRule
    params: Mapping[str, Any]
    source: Mapping[str, Any]
    out: dict[str, Any]
    losses: list[Loss]
    describe: SObjectDescribe | None
    # Salesforce -> mail only: the mailbox's zone, for Salesforce values that carry none.
    mailbox_zone: str = ""
    side: Side = Side.CRM

    @property
    def target(self) -> str:
        return self.rule.crm_field if self.side is Side.CRM else self.rule.mail_key

    def read(self) -> Any:
        path = self.rule.mail_key if self.side is Side.CRM else self.rule.crm_field
        return get_path(self.source, path)

    def sibling(self, name: str) -> Any:
        """Another source field: a mail field name (CRM side) or a Salesforce field."""
        return get_path(self.source, name)

    def write(self, value: Any, target: str | None = None) -> None:
        if self.side is Side.CRM:
            name = target or self.rule.crm_field
            # Only text longer than its field's limit is cut (most writes are None or short).
            if isinstance(value, str) and self.describe is not None:
                limit = self.describe.text_limits.get(name, 0)
                if 0 < limit < len(value):
                    value = self._fit(name, value)
            self.out[name] = value
        else:
            set_path(self.out, target or self.rule.mail_key, value)

    def lose(self, kind: LossKind, detail: str, target: str | None = None) -> None:
        name = target or self.target
        shown = name if self.side is Side.CRM else f"{self.rule.mail_field.split('.')[0]}.{name}"
        self.losses.append(Loss(shown, kind, detail))

    def fail(self, reason: str, message: str) -> MappingFailure:
        return MappingFailure(reason, message, self.rule.mail_field)

    def salesforce_zone(self, name: str, target: str = "RecurrenceTimeZoneSidKey") -> str:
        """An IANA name Salesforce's restricted zone list accepts for the same zone."""
        found = self.crm_field(target)
        allowed = found.picklist_values if found and found.restricted_picklist else ()
        return equivalent_zone(name, allowed, self.rule.mail_field)

    def crm_field(self, name: str) -> FieldDescribe | None:
        return self.describe.field(name) if self.describe else None

    def _fit(self, name: str, value: Any) -> Any:
        """Every text written to Salesforce fits its field; what is cut is reported."""
        if not isinstance(value, str) or not value or self.describe is None:
            return value
        limit = self.describe.text_limits.get(name, 0)
        value, cut = truncate(value, limit)
        if cut:
            self.lose(LossKind.TRUNCATED, f"shortened to the field's {limit} characters", name)
        return value


def _tail(path: str) -> str:
    return path.split(".", 1)[1]


def get_path(data: Mapping[str, Any], path: str) -> Any:
    if path in data:
        # Salesforce-side names such as `concord.RecurrenceExclusions` are keys, not paths.
        return data[path]
    current: Any = data
    for part in path.split("."):
        if not isinstance(current, Mapping):
            return None
        current = current.get(part)
    return current


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        data = data.setdefault(part, {})
    data[parts[-1]] = value


@dataclass(frozen=True)
class Transform:
    to_crm: Callable[[Step, Any], None]
    to_mail: Callable[[Step, Any], None]
    # Salesforce field types the transform's output fits; None: any.
    crm_types: frozenset[str] | None = None
    # Salesforce fields written besides the rule's own (validation checks them too).
    extra_fields: Callable[[FieldRule, Mapping[str, Any]], Sequence[str]] = field(
        default=lambda rule, params: ()
    )
    # Salesforce fields the mail direction reads besides the rule's own: a listing that selects
    # only what a table reads (`mapper.crm_fields_read`) must map as one that selects them all.
    mail_reads: Callable[[FieldRule, Mapping[str, Any]], Sequence[str]] = field(
        default=lambda rule, params: ()
    )


# --- value forms ---------------------------------------------------------------------------


def _blank(value: Any) -> bool:
    return value is None or value == ""


def _unset_enum(step: Step, value: Any) -> bool:
    """An enum's zero value (`SHOW_AS_UNSPECIFIED`); only where the mail field is an enum, so
    text that happens to end the same way is never taken for it."""
    return (
        step.side is Side.CRM
        and not step.params.get("open")
        and isinstance(value, str)
        and value.endswith("_UNSPECIFIED")
    )


def parse_instant(value: str) -> datetime:
    """RFC 3339 or Salesforce's `2026-01-05T10:00:00.000+0000`, as an aware UTC datetime."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    elif len(text) > 5 and text[-5] in "+-" and text[-4:].isdigit():
        text = f"{text[:-2]}:{text[-2:]}"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def format_instant(moment: datetime) -> str:
    """The canonical timestamp form: UTC, `Z`, fractions only when there are some."""
    moment = moment.astimezone(UTC)
    if moment.year >= 1000:
        # The same text as strftime below, which costs twice as much.
        text = moment.isoformat(timespec="seconds")[:19]
    else:
        # strftime writes such years without leading zeros; kept as it was.
        text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def _instant_or_fail(step: Step, value: Any) -> datetime:
    try:
        return parse_instant(str(value))
    except ValueError:
        raise step.fail(INVALID_VALUE, "the timestamp is not ISO 8601") from None


def _date_or_fail(step: Step, value: Any) -> date:
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        raise step.fail(INVALID_VALUE, "the date is not YYYY-MM-DD") from None


# --- transforms ----------------------------------------------------------------------------


def _copy_to_crm(step: Step, value: Any) -> None:
    if isinstance(value, list | dict):
        raise step.fail(INVALID_VALUE, "a list or structure needs a transform, not `copy`")
    step.write(None if _blank(value) else value)


def _copy_to_mail(step: Step, value: Any) -> None:
    found = step.crm_field(step.rule.crm_field)
    if value is not None and found and found.type == "datetime":
        value = format_instant(_instant_or_fail(step, value))
    step.write(value)


def _required_to_crm(step: Step, value: Any) -> None:
    if _blank(value):
        raise step.fail(MISSING_REQUIRED_FIELD, f"{step.target} is required by Salesforce")
    _copy_to_crm(step, value)


def _body_to_crm(step: Step, value: Any) -> None:
    """Plain text wins; an HTML-only body becomes readable text, and the markup is a loss."""
    if not _blank(value):
        step.write(value)
        return
    html = step.sibling(_tail(step.rule.mail_field).replace("_text", "_html"))
    if _blank(html):
        step.write(None)
        return
    step.write(html_to_text(str(html)) or None)
    step.lose(LossKind.UNREPRESENTABLE, "HTML formatting kept as plain text")


def _picklist_to(step: Step, value: Any) -> None:
    if _blank(value) or _unset_enum(step, value):
        step.write(None)
        return
    values: Mapping[str, Any] = step.params.get("values") or {}
    if value in values:
        step.write(values[value])
    elif step.params.get("open"):
        step.write(value)
    elif "fallback" in step.params:
        step.write(step.params["fallback"])
        step.lose(LossKind.UNREPRESENTABLE, f"{value} has no equivalent; written as the fallback")
    else:
        step.lose(LossKind.DROPPED, f"{value} has no equivalent on this side")


def _constant_to_crm(step: Step, value: Any) -> None:
    step.write(step.params.get("value"))


def _prefix_to_crm(step: Step, value: Any) -> None:
    step.write(None if _blank(value) else f"{step.params.get('prefix', '')}{value}")


def _date_of_to_crm(step: Step, value: Any) -> None:
    step.write(None if _blank(value) else _instant_or_fail(step, value).date().isoformat())


_PRIVATE_SENSITIVITY = {"SENSITIVITY_PRIVATE", "SENSITIVITY_CONFIDENTIAL"}


def _private_to_crm(step: Step, value: Any) -> None:
    """Salesforce knows private or not: a private or confidential label makes the Event private;
    the label itself beyond that is reported, not kept."""
    sensitivity = step.sibling("sensitivity") or "SENSITIVITY_UNSPECIFIED"
    step.write(bool(value) or sensitivity in _PRIVATE_SENSITIVITY)
    if sensitivity in ("SENSITIVITY_PERSONAL", "SENSITIVITY_CONFIDENTIAL"):
        step.lose(LossKind.UNREPRESENTABLE, f"Salesforce has no {sensitivity}; kept as IsPrivate")


def _instant(step: Step, value: Any) -> None:
    """A timestamp in the canonical form whichever side it comes from."""
    step.write(None if _blank(value) else format_instant(_instant_or_fail(step, value)))


def _nothing(step: Step, value: Any) -> None:
    """The direction this transform has no meaning in (e.g. hints for the linker)."""


# Event times. Salesforce keeps an all-day event as dates (ActivityDate) with StartDateTime and
# EndDateTime at midnight GMT of its first and last day (inclusive); the canonical item keeps
# dates with an exclusive end. Dates are moved as dates, never through a zone.


def _is_all_day(step: Step) -> bool:
    key = "all_day" if step.side is Side.CRM else "IsAllDayEvent"
    return bool(step.sibling(key))


def _midnight(day: date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


def _event_start_to_crm(step: Step, value: Any) -> None:
    if _is_all_day(step):
        step.write(_midnight(_all_day_span(step)[0]))
        return
    if _blank(value):
        raise step.fail(MISSING_REQUIRED_FIELD, "a timed event needs a start")
    step.write(format_instant(_instant_or_fail(step, value)))


def _event_end_to_crm(step: Step, value: Any) -> None:
    if _is_all_day(step):
        first, after = _all_day_span(step)
        step.write(_midnight(max(first, after - timedelta(days=1))))
        return
    start = step.sibling("start")
    if _blank(value) or _blank(start):
        raise step.fail(MISSING_REQUIRED_FIELD, "a timed event needs a start and an end")
    end = _instant_or_fail(step, value)
    if end < _instant_or_fail(step, start):
        raise step.fail(INVALID_VALUE, "the event ends before it starts")
    step.write(format_instant(end))


def _all_day_span(step: Step) -> tuple[date, date]:
    start = step.sibling("start_date")
    if _blank(start):
        raise step.fail(MISSING_REQUIRED_FIELD, "an all-day event needs its start date")
    first = _date_or_fail(step, start)
    end = step.sibling("end_date")
    after = _date_or_fail(step, end) if not _blank(end) else first + timedelta(days=1)
    if after < first:
        raise step.fail(INVALID_VALUE, "the event ends before it starts")
    return first, after


def _event_start_to_mail(step: Step, value: Any) -> None:
    if not _is_all_day(step) and value is not None:
        step.write(format_instant(_instant_or_fail(step, value)))


def _event_end_to_mail(step: Step, value: Any) -> None:
    if _is_all_day(step):
        last = step.sibling("EndDateTime") or step.sibling("StartDateTime")
        if last is not None:
            day = _date_or_fail(step, last) + timedelta(days=1)
            step.write(day.isoformat(), "end_date")
        return
    if value is not None:
        step.write(format_instant(_instant_or_fail(step, value)))


def _all_day_date_to_crm(step: Step, value: Any) -> None:
    if _is_all_day(step):
        step.write(_all_day_span(step)[0].isoformat())


def _all_day_date_to_mail(step: Step, value: Any) -> None:
    if _is_all_day(step):
        day = value or step.sibling("StartDateTime")
        if day is not None:
            step.write(_date_or_fail(step, day).isoformat())


def _time_zone_to_crm(step: Step, value: Any) -> None:
    if _blank(value):
        return
    name = iana_zone(str(value), step.rule.mail_field)
    # Salesforce only keeps a zone on series; a single event is fixed by its instants.
    if step.sibling("recurrence"):
        step.write(step.salesforce_zone(name, step.rule.crm_field))


def _time_zone_to_mail(step: Step, value: Any) -> None:
    name = value or step.sibling("Recurrence2PatternTimeZone") or step.mailbox_zone
    if name:
        step.write(iana_zone(str(name), step.rule.crm_field))


def _reminder_before_start_to_crm(step: Step, value: Any) -> None:
    if value is None:
        step.write(False, "IsReminderSet")
        step.write(None)
        return
    minutes = int(value)
    if _is_all_day(step):
        name = step.sibling("time_zone") or "UTC"
        first = datetime.combine(_all_day_span(step)[0], datetime.min.time(), zone(str(name)))
        start = first.astimezone(UTC)
    else:
        start = _instant_or_fail(step, step.sibling("start"))
    step.write(True, "IsReminderSet")
    step.write(format_instant(start - timedelta(minutes=minutes)))


def _reminder_before_start_to_mail(step: Step, value: Any) -> None:
    if not step.sibling("IsReminderSet") or value is None:
        return
    start = step.sibling("StartDateTime")
    if start is None:
        return
    begin = _instant_or_fail(step, start)
    if step.sibling("IsAllDayEvent"):
        # StartDateTime holds the day at GMT midnight; the reminder is against the local one.
        name = step.sibling("RecurrenceTimeZoneSidKey") or step.mailbox_zone or "UTC"
        begin = datetime.combine(begin.date(), datetime.min.time(), zone(str(name)))
    before = begin - _instant_or_fail(step, value)
    step.write(round(before.total_seconds() / 60))


def _reminder_at_to_crm(step: Step, value: Any) -> None:
    step.write(not _blank(value), "IsReminderSet")
    step.write(None if _blank(value) else format_instant(_instant_or_fail(step, value)))


def _reminder_at_to_mail(step: Step, value: Any) -> None:
    if step.sibling("IsReminderSet") and value is not None:
        step.write(format_instant(_instant_or_fail(step, value)))


def _recurrence_to_crm(step: Step, value: Any) -> None:
    """Recurrence2PatternText (RRULE) by default, or the legacy fields with `format: legacy`.
    Removed occurrences go to `concord.RecurrenceExclusions`: Salesforce keeps them as
    exclusion records the connector writes, not inside the pattern."""
    if not value or not value.get("rules"):
        return
    lines = [str(line) for line in value["rules"]]
    rrules = [line for line in lines if line.upper().startswith("RRULE")]
    others = [
        line.split(":", 1)[0].split(";", 1)[0].upper() for line in lines if line not in rrules
    ]
    if others or len(rrules) != 1:
        what = ", ".join(sorted(set(others))) or "several RRULEs"
        raise step.fail(rec.UNSUPPORTED_RECURRENCE, f"Salesforce cannot express {what}")
    rule = rec.parse_rrule(rrules[0], step.rule.mail_field)
    name = value.get("time_zone") or step.sibling("time_zone")
    all_day = bool(step.sibling("all_day"))
    if not name and not all_day:
        raise step.fail("UNKNOWN_TIME_ZONE", "a timed series needs the zone it recurs in")
    zone_name = step.salesforce_zone(iana_zone(str(name), step.rule.mail_field)) if name else ""
    exclusions = list(value.get("excluded_dates") or []) + [
        format_instant(_instant_or_fail(step, s)) for s in value.get("excluded_starts") or []
    ]
    if step.params.get("format") == "legacy":
        start = _series_start(step, zone_name, all_day)
        for key, field_value in rec.rrule_to_sf_legacy(rule, start, zone_name).items():
            step.write(field_value, key)
        # An all-day series starts on a date: GMT midnight of it, as Salesforce keeps all-day.
        first = _midnight(start.date()) if all_day else format_instant(start)
        step.write(first, "RecurrenceStartDateTime")
    else:
        text = rule.text()
        if len(text) > PATTERN_TEXT_LIMIT:
            raise step.fail(rec.UNSUPPORTED_RECURRENCE, "the rule is longer than Salesforce keeps")
        step.write(text)
        if zone_name:
            step.write(zone_name, "RecurrenceTimeZoneSidKey")
    step.write(exclusions or None, "concord.RecurrenceExclusions")


def _series_start(step: Step, zone_name: str, all_day: bool) -> datetime:
    if all_day:
        return datetime.combine(_all_day_span(step)[0], datetime.min.time())
    start = _instant_or_fail(step, step.sibling("start"))
    return start.astimezone(zone(zone_name))


def _recurrence_to_mail(step: Step, value: Any) -> None:
    legacy = step.sibling("RecurrenceType")
    if not value and not legacy:
        return
    name = (
        step.sibling("RecurrenceTimeZoneSidKey")
        or step.sibling("Recurrence2PatternTimeZone")
        or step.mailbox_zone
    )
    zone_name = iana_zone(str(name), step.rule.crm_field) if name else ""
    if value:
        rule = rec.parse_rrule(str(value).splitlines()[0], step.rule.crm_field)
    else:
        rule = rec.sf_legacy_to_rrule(step.source)
    out: dict[str, Any] = {"rules": [rule.text()], "time_zone": zone_name}
    exclusions = step.sibling("concord.RecurrenceExclusions") or []
    out["excluded_dates"] = [e for e in exclusions if len(e) == 10]
    out["excluded_starts"] = [e for e in exclusions if len(e) != 10]
    step.write(out)


def _address_to_crm(step: Step, value: Any) -> None:
    part = step.params.get("part", "address")
    step.write((value or {}).get(part) or None)


def _address_list_to_crm(step: Step, value: Any) -> None:
    addresses = [a.get("address") for a in value or []]
    missing = sum(1 for a in addresses if not a)
    if missing:
        step.lose(LossKind.DROPPED, f"{missing} recipient(s) without an address")
    step.write("; ".join(a for a in addresses if a) or None)


_RSVP = {
    "RESPONSE_STATUS_ACCEPTED": "Accepted",
    "RESPONSE_STATUS_ORGANIZER": "Accepted",
    "RESPONSE_STATUS_DECLINED": "Declined",
    "RESPONSE_STATUS_NEEDS_ACTION": "New",
    "RESPONSE_STATUS_UNSPECIFIED": "New",
}


def _event_relations_to_crm(step: Step, value: Any) -> None:
    """One EventRelation row per attendee with an address; the linker fills RelationId."""
    rows = []
    for position, attendee in enumerate(value or [], start=1):
        address = (attendee.get("email") or "").strip()
        if not address:
            step.lose(LossKind.DROPPED, f"attendee {position} has no address")
            continue
        response = attendee.get("response_status") or "RESPONSE_STATUS_UNSPECIFIED"
        if response not in _RSVP:
            step.lose(
                LossKind.UNREPRESENTABLE,
                f"attendee {position}: EventRelation has no {response}; shown as New",
            )
        rows.append(
            {
                "Email": address,
                "DisplayName": attendee.get("display_name") or None,
                "Status": _RSVP.get(response, "New"),
                "IsInvitee": attendee.get("role") != "ATTENDEE_ROLE_RESOURCE",
            }
        )
    step.write(rows or None)


def _primary_email_to_crm(step: Step, value: Any) -> None:
    entries = [e for e in value or [] if e.get("address")]
    if not entries:
        step.write(None)
        return
    chosen = next((e for e in entries if e.get("primary")), entries[0])
    step.write(chosen["address"])
    if len(entries) > 1:
        step.lose(LossKind.DROPPED, f"{len(entries) - 1} more address(es) have no field")


def _primary_email_to_mail(step: Step, value: Any) -> None:
    entries = [{"address": value, "type": "EMAIL_ADDRESS_TYPE_WORK", "primary": True}]
    step.write(entries if value else [])


def _phones_to_crm(step: Step, value: Any) -> None:
    fields: Mapping[str, str] = step.params.get("fields") or {}
    written: set[str] = set()
    for phone in value or []:
        kind = phone.get("type") or "PHONE_TYPE_UNSPECIFIED"
        target = fields.get(kind)
        if target is None or target in written:
            step.lose(LossKind.DROPPED, f"a {kind} number has no free field", target or "Phone")
            continue
        written.add(target)
        step.write(phone.get("number") or None, target)
    for target in fields.values():
        if target not in written:
            step.write(None, target)


def _phones_to_mail(step: Step, value: Any) -> None:
    fields: Mapping[str, str] = step.params.get("fields") or {}
    step.write(
        [
            {"number": step.sibling(target), "type": kind}
            for kind, target in fields.items()
            if step.sibling(target)
        ]
    )


_ADDRESS_PARTS = {
    "street": "Street",
    "city": "City",
    "region": "State",
    "postal_code": "PostalCode",
    "country": "Country",
}


def _addresses_to_crm(step: Step, value: Any) -> None:
    prefixes: Mapping[str, str] = step.params.get("fields") or {}
    written: set[str] = set()
    for address in value or []:
        kind = address.get("type") or "POSTAL_ADDRESS_TYPE_UNSPECIFIED"
        prefix = prefixes.get(kind)
        if prefix is None or prefix in written:
            step.lose(LossKind.DROPPED, f"a {kind} address has no free field", "MailingAddress")
            continue
        written.add(prefix)
        for part, suffix in _ADDRESS_PARTS.items():
            step.write(address.get(part) or None, prefix + suffix)
    for prefix in prefixes.values():
        if prefix not in written:
            for suffix in _ADDRESS_PARTS.values():
                step.write(None, prefix + suffix)


def _addresses_to_mail(step: Step, value: Any) -> None:
    prefixes: Mapping[str, str] = step.params.get("fields") or {}
    out = []
    for kind, prefix in prefixes.items():
        parts = {part: step.sibling(prefix + suffix) for part, suffix in _ADDRESS_PARTS.items()}
        if any(parts.values()):
            out.append({"type": kind} | {k: v or "" for k, v in parts.items()})
    step.write(out)


def _phone_fields(rule: FieldRule, params: Mapping[str, Any]) -> Sequence[str]:
    return list((params.get("fields") or {}).values())


def _address_fields(rule: FieldRule, params: Mapping[str, Any]) -> Sequence[str]:
    return [p + s for p in (params.get("fields") or {}).values() for s in _ADDRESS_PARTS.values()]


def _reminder_fields(rule: FieldRule, params: Mapping[str, Any]) -> Sequence[str]:
    return ["IsReminderSet"]


def _recurrence_fields(rule: FieldRule, params: Mapping[str, Any]) -> Sequence[str]:
    if params.get("format") == "legacy":
        return _LEGACY_RECURRENCE[:5]
    return ["RecurrenceTimeZoneSidKey"]


# What `recurrence.sf_legacy_to_rrule` reads; the first five are what the legacy format writes.
_LEGACY_RECURRENCE = [
    "RecurrenceType",
    "RecurrenceInterval",
    "RecurrenceEndDateOnly",
    "RecurrenceStartDateTime",
    "RecurrenceTimeZoneSidKey",
    "RecurrenceDayOfWeekMask",
    "RecurrenceInstance",
    "RecurrenceMonthOfYear",
    "RecurrenceDayOfMonth",
    "IsAllDayEvent",
]


def _reads(*names: str) -> Callable[[FieldRule, Mapping[str, Any]], Sequence[str]]:
    return lambda rule, params: names


_TEXT = TEXT_TYPES
_DATETIME = frozenset({"datetime"})
_DATE = frozenset({"date"})

TRANSFORMS: Mapping[str, Transform] = {
    "copy": Transform(_copy_to_crm, _copy_to_mail),
    "required": Transform(_required_to_crm, _copy_to_mail),
    "body": Transform(_body_to_crm, _copy_to_mail, _TEXT),
    "picklist": Transform(_picklist_to, _picklist_to, _TEXT | {"multipicklist"}),
    "constant": Transform(_constant_to_crm, _nothing),
    "prefix": Transform(_prefix_to_crm, _copy_to_mail, _TEXT),
    "date_of": Transform(_date_of_to_crm, _nothing, _DATE),
    "instant": Transform(_instant, _instant, _DATETIME),
    "private": Transform(_private_to_crm, _copy_to_mail, frozenset({"boolean"})),
    "event_start": Transform(
        _event_start_to_crm, _event_start_to_mail, _DATETIME, mail_reads=_reads("IsAllDayEvent")
    ),
    "event_end": Transform(
        _event_end_to_crm,
        _event_end_to_mail,
        _DATETIME,
        mail_reads=_reads("IsAllDayEvent", "EndDateTime", "StartDateTime"),
    ),
    "all_day_date": Transform(
        _all_day_date_to_crm,
        _all_day_date_to_mail,
        _DATE,
        mail_reads=_reads("IsAllDayEvent", "StartDateTime"),
    ),
    "time_zone": Transform(
        _time_zone_to_crm,
        _time_zone_to_mail,
        _TEXT,
        mail_reads=_reads("Recurrence2PatternTimeZone"),
    ),
    "reminder_before_start": Transform(
        _reminder_before_start_to_crm,
        _reminder_before_start_to_mail,
        _DATETIME,
        _reminder_fields,
        _reads("IsReminderSet", "StartDateTime", "IsAllDayEvent", "RecurrenceTimeZoneSidKey"),
    ),
    "reminder_at": Transform(
        _reminder_at_to_crm,
        _reminder_at_to_mail,
        _DATETIME,
        _reminder_fields,
        _reminder_fields,
    ),
    "recurrence_rrule": Transform(
        _recurrence_to_crm,
        _recurrence_to_mail,
        _TEXT,
        _recurrence_fields,
        _reads(*_LEGACY_RECURRENCE, "Recurrence2PatternTimeZone"),
    ),
    "address": Transform(_address_to_crm, _nothing, _TEXT),
    "address_list": Transform(_address_list_to_crm, _nothing, _TEXT),
    "event_relations": Transform(_event_relations_to_crm, _nothing),
    "primary_email": Transform(_primary_email_to_crm, _primary_email_to_mail, _TEXT),
    "phones": Transform(_phones_to_crm, _phones_to_mail, _TEXT, _phone_fields, _phone_fields),
    "postal_addresses": Transform(
        _addresses_to_crm, _addresses_to_mail, _TEXT, _address_fields, _address_fields
    ),
}
