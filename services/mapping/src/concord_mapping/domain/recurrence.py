"""Recurrences: RFC 5545 RRULE (canonical) <-> EWS patterns <-> Salesforce legacy fields.

RRULE is the common ground (Graph, Google, CalDAV and Salesforce's `Recurrence2PatternText`).
EWS and Salesforce's legacy fields express less; a rule they cannot express exactly raises
`UNSUPPORTED_RECURRENCE` instead of being approximated. Equivalences that keep every occurrence
(e.g. COUNT turned into the date of the last occurrence) are exact, so they are allowed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from dateutil.rrule import rrule, rrulestr

from concord_mapping.domain.errors import MappingFailure

__all__ = [
    "MALFORMED_RECURRENCE",
    "UNSUPPORTED_RECURRENCE",
    "EwsPattern",
    "EwsPatternKind",
    "EwsRange",
    "EwsRangeKind",
    "RRule",
    "ews_to_rrule",
    "occurrences",
    "parse_rrule",
    "rrule_to_ews",
    "rrule_to_sf_legacy",
    "sf_legacy_to_rrule",
]

MALFORMED_RECURRENCE = "MALFORMED_RECURRENCE"
UNSUPPORTED_RECURRENCE = "UNSUPPORTED_RECURRENCE"

WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_EWS_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_EWS_INDEX = {1: "First", 2: "Second", 3: "Third", 4: "Fourth", -1: "Last"}
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
# Salesforce RecurrenceDayOfWeekMask: Sunday 1, Monday 2, ... Saturday 64.
_SF_MASK = {"SU": 1, "MO": 2, "TU": 4, "WE": 8, "TH": 16, "FR": 32, "SA": 64}
_SF_INSTANCE = {1: "First", 2: "Second", 3: "Third", 4: "Fourth", -1: "Last"}
_SUPPORTED_PARTS = {"FREQ", "INTERVAL", "COUNT", "UNTIL", "BYDAY", "BYMONTHDAY", "BYMONTH"}
_SUPPORTED_PARTS |= {"BYSETPOS", "WKST"}
# Salesforce's legacy recurrence stops at 100 occurrences.
SF_LEGACY_MAX_OCCURRENCES = 100


def _unsupported(target: str, why: str, field: str = "recurrence") -> MappingFailure:
    return MappingFailure(UNSUPPORTED_RECURRENCE, f"{target} cannot express {why}", field)


@dataclass(frozen=True)
class RRule:
    """One parsed RRULE; `until` is kept as written (UTC instant or floating date)."""

    freq: str
    interval: int = 1
    count: int | None = None
    until: str | None = None
    byday: tuple[str, ...] = ()
    bymonthday: tuple[int, ...] = ()
    bymonth: tuple[int, ...] = ()
    bysetpos: tuple[int, ...] = ()
    wkst: str | None = None
    other: Mapping[str, str] = field(default_factory=dict)

    def text(self) -> str:
        parts = [f"FREQ={self.freq}"]
        if self.interval != 1:
            parts.append(f"INTERVAL={self.interval}")
        if self.count is not None:
            parts.append(f"COUNT={self.count}")
        if self.until is not None:
            parts.append(f"UNTIL={self.until}")
        for name, values in (
            ("BYMONTH", self.bymonth),
            ("BYMONTHDAY", self.bymonthday),
            ("BYDAY", self.byday),
            ("BYSETPOS", self.bysetpos),
        ):
            if values:
                parts.append(f"{name}={','.join(str(v) for v in values)}")
        if self.wkst:
            parts.append(f"WKST={self.wkst}")
        parts.extend(f"{k}={v}" for k, v in self.other.items())
        return "RRULE:" + ";".join(parts)


def parse_rrule(line: str, field: str = "recurrence") -> RRule:
    """An `RRULE:` line (or its value); MALFORMED_RECURRENCE names what is wrong, not the value."""
    body = line.strip()
    if body.upper().startswith("RRULE:"):
        body = body[6:]
    parts: dict[str, str] = {}
    for piece in filter(None, body.split(";")):
        name, sep, value = piece.partition("=")
        if not sep or not value:
            raise MappingFailure(MALFORMED_RECURRENCE, "an RRULE part has no value", field)
        parts[name.strip().upper()] = value.strip().upper()
    if "RSCALE" in parts or "SKIP" in parts:
        # RFC 7529 (non-Gregorian calendars) is valid iCalendar that no target here expresses.
        raise _unsupported("Concord", "RFC 7529 calendar scales (RSCALE/SKIP)", field)
    try:
        freq = parts.pop("FREQ")
        rule = RRule(
            freq=freq,
            interval=int(parts.pop("INTERVAL", "1")),
            count=int(parts.pop("COUNT")) if "COUNT" in parts else None,
            until=parts.pop("UNTIL", None),
            byday=tuple(parts.pop("BYDAY").split(",")) if "BYDAY" in parts else (),
            bymonthday=_ints(parts.pop("BYMONTHDAY", "")),
            bymonth=_ints(parts.pop("BYMONTH", "")),
            bysetpos=_ints(parts.pop("BYSETPOS", "")),
            wkst=parts.pop("WKST", None),
            other=parts,
        )
    except (KeyError, ValueError):
        raise MappingFailure(MALFORMED_RECURRENCE, "the RRULE is not RFC 5545", field) from None
    if freq not in ("SECONDLY", "MINUTELY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY"):
        raise MappingFailure(MALFORMED_RECURRENCE, "the RRULE has an unknown FREQ", field)
    if rule.interval < 1 or (rule.count is not None and rule.count < 1):
        raise MappingFailure(MALFORMED_RECURRENCE, "INTERVAL and COUNT must be positive", field)
    if rule.count is not None and rule.until is not None:
        raise MappingFailure(MALFORMED_RECURRENCE, "the RRULE has both COUNT and UNTIL", field)
    for day in rule.byday:
        if _split_day(day) is None:
            raise MappingFailure(MALFORMED_RECURRENCE, "the RRULE has a bad BYDAY", field)
    try:
        # dateutil's parser is the reference for everything this module does not inspect.
        rrulestr(_for_dateutil(rule.text(), None), dtstart=datetime(2000, 1, 1))
    except (ValueError, TypeError):
        raise MappingFailure(MALFORMED_RECURRENCE, "the RRULE is not RFC 5545", field) from None
    return rule


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",")) if text else ()


def _split_day(day: str) -> tuple[int, str] | None:
    """`-1FR` -> (-1, "FR"); `MO` -> (0, "MO")."""
    code = day[-2:]
    if code not in WEEKDAYS:
        return None
    ordinal = day[:-2]
    if not ordinal:
        return 0, code
    try:
        number = int(ordinal)
    except ValueError:
        return None
    return (number, code) if number and -53 <= number <= 53 else None


def _for_dateutil(text: str, tz: ZoneInfo | None) -> str:
    """dateutil wants UNTIL in UTC for aware starts and floating for naive ones."""
    rule = parse_rrule_unchecked(text)
    if rule.until is None:
        return text
    until = _until_instant(rule.until, tz)
    if tz is None:
        return replace(rule, until=until.replace(tzinfo=None).strftime("%Y%m%dT%H%M%S")).text()
    return replace(rule, until=until.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")).text()


def parse_rrule_unchecked(text: str) -> RRule:
    body = text[6:] if text.upper().startswith("RRULE:") else text
    parts = dict(p.split("=", 1) for p in body.split(";") if "=" in p)
    return RRule(
        freq=parts.pop("FREQ"),
        interval=int(parts.pop("INTERVAL", "1")),
        count=int(parts.pop("COUNT")) if "COUNT" in parts else None,
        until=parts.pop("UNTIL", None),
        byday=tuple(parts.pop("BYDAY").split(",")) if "BYDAY" in parts else (),
        bymonthday=_ints(parts.pop("BYMONTHDAY", "")),
        bymonth=_ints(parts.pop("BYMONTH", "")),
        bysetpos=_ints(parts.pop("BYSETPOS", "")),
        wkst=parts.pop("WKST", None),
        other=parts,
    )


def _until_instant(until: str, tz: ZoneInfo | None) -> datetime:
    """UNTIL as an aware instant (tz given) or a naive wall time: a floating date-only UNTIL
    means the end of that day in the series' zone, so the last day's occurrence is kept."""
    if len(until) == 8:
        moment = datetime.combine(datetime.strptime(until, "%Y%m%d").date(), time(23, 59, 59))
        return moment.replace(tzinfo=tz) if tz else moment
    if until.endswith("Z"):
        moment = datetime.strptime(until, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        return moment.astimezone(tz) if tz else moment.replace(tzinfo=None)
    moment = datetime.strptime(until, "%Y%m%dT%H%M%S")
    return moment.replace(tzinfo=tz) if tz else moment


def occurrences(
    rule: RRule, start: datetime, *, after: datetime, before: datetime
) -> Iterator[datetime]:
    """Starts of the series in [after, before), evaluated on the wall clock of `start`'s zone
    (so 09:00 stays 09:00 across DST); naive `start` means an all-day or floating series."""
    tz = start.tzinfo if isinstance(start.tzinfo, ZoneInfo) else None
    evaluated: rrule = rrulestr(_for_dateutil(rule.text(), tz), dtstart=start)  # type: ignore[assignment]
    for moment in evaluated:
        if moment >= before:
            return
        if moment >= after:
            # dateutil keeps the wall time; re-attaching the zone settles the UTC offset.
            yield moment.replace(tzinfo=tz).astimezone(UTC) if tz else moment


# --- EWS ---------------------------------------------------------------------------------


class EwsPatternKind(StrEnum):
    DAILY = "DailyRecurrence"
    WEEKLY = "WeeklyRecurrence"
    ABSOLUTE_MONTHLY = "AbsoluteMonthlyRecurrence"
    RELATIVE_MONTHLY = "RelativeMonthlyRecurrence"
    ABSOLUTE_YEARLY = "AbsoluteYearlyRecurrence"
    RELATIVE_YEARLY = "RelativeYearlyRecurrence"


class EwsRangeKind(StrEnum):
    NO_END = "NoEndRecurrence"
    END_DATE = "EndDateRecurrence"
    NUMBERED = "NumberedRecurrence"


@dataclass(frozen=True)
class EwsPattern:
    """An EWS recurrence pattern (MS-OXWSCDATA RecurrencePatternTypes), names as in the XSD."""

    kind: EwsPatternKind
    interval: int = 1
    # Monday..Sunday, or Day / Weekday / WeekendDay for relative patterns.
    days_of_week: tuple[str, ...] = ()
    day_of_month: int = 0
    # First, Second, Third, Fourth, Last.
    day_of_week_index: str = ""
    # January..December.
    month: str = ""
    first_day_of_week: str = "Monday"


@dataclass(frozen=True)
class EwsRange:
    kind: EwsRangeKind
    start_date: date
    end_date: date | None = None
    count: int = 0


_DAY_GROUPS = {
    frozenset(WEEKDAYS): "Day",
    frozenset(WEEKDAYS[:5]): "Weekday",
    frozenset(WEEKDAYS[5:]): "WeekendDay",
}
_GROUP_DAYS = {v: tuple(sorted(k, key=WEEKDAYS.index)) for k, v in _DAY_GROUPS.items()}


def rrule_to_ews(rule: RRule, start: datetime) -> tuple[EwsPattern, EwsRange]:
    """The EWS pattern and range for `rule` starting at `start` (local wall time)."""
    _only_supported_parts(rule, "EWS")
    first_day = _EWS_DAYS[WEEKDAYS.index(rule.wkst)] if rule.wkst else "Monday"
    pattern = _ews_pattern(rule, start.date())
    pattern = replace(pattern, first_day_of_week=first_day)
    return pattern, _ews_range(rule, start)


def _only_supported_parts(rule: RRule, target: str) -> None:
    if rule.other:
        raise _unsupported(target, f"{', '.join(sorted(rule.other))} in a recurrence")
    if rule.freq not in ("DAILY", "WEEKLY", "MONTHLY", "YEARLY"):
        raise _unsupported(target, f"FREQ={rule.freq}")


def _ews_pattern(rule: RRule, start: date) -> EwsPattern:
    plain_days = [d for d in rule.byday if len(d) == 2]
    if rule.freq == "DAILY":
        if rule.bymonthday or rule.bymonth or rule.bysetpos:
            raise _unsupported("EWS", "a daily rule filtered by month, day or position")
        if not rule.byday:
            return EwsPattern(EwsPatternKind.DAILY, rule.interval)
        # Every day but only some weekdays is a weekly pattern, exactly, at interval 1.
        if rule.interval == 1 and len(plain_days) == len(rule.byday):
            return EwsPattern(EwsPatternKind.WEEKLY, 1, _ews_days(plain_days))
        raise _unsupported("EWS", "a daily rule with an interval and weekdays")
    if rule.freq == "WEEKLY":
        if rule.bymonthday or rule.bymonth or rule.bysetpos or len(plain_days) != len(rule.byday):
            raise _unsupported("EWS", "a weekly rule filtered by month, day or position")
        days = plain_days or [WEEKDAYS[start.weekday()]]
        return EwsPattern(EwsPatternKind.WEEKLY, rule.interval, _ews_days(days))
    if rule.freq == "MONTHLY":
        if rule.bymonth:
            raise _unsupported("EWS", "a monthly rule limited to some months")
        return _ews_monthly(rule, start, rule.interval)
    # YEARLY
    months = rule.bymonth or (start.month,)
    if len(months) != 1:
        raise _unsupported("EWS", "a yearly rule on several months")
    if rule.interval != 1:
        # EWS yearly patterns have no interval; Outlook writes "every n years" as every 12n
        # months, which is exact when the series starts in the rule's month.
        if months[0] != start.month:
            raise _unsupported("EWS", "a yearly interval starting outside its month")
        return _ews_monthly(replace(rule, bymonth=()), start, 12 * rule.interval)
    monthly = _ews_monthly(replace(rule, bymonth=()), start, 1)
    kind = (
        EwsPatternKind.ABSOLUTE_YEARLY
        if monthly.kind is EwsPatternKind.ABSOLUTE_MONTHLY
        else EwsPatternKind.RELATIVE_YEARLY
    )
    return replace(monthly, kind=kind, interval=1, month=_MONTHS[months[0] - 1])


# RFC 5545 skips months too short for the day; EWS and Salesforce move it to the last day.
_SHORT_MONTHS = "a day of the month after the 28th (it would move in shorter months)"


def _ews_monthly(rule: RRule, start: date, interval: int) -> EwsPattern:
    if not rule.byday:
        days = rule.bymonthday or (start.day,)
        if rule.bysetpos or len(days) != 1:
            raise _unsupported("EWS", "a monthly rule on several days")
        if days[0] == -1:
            return EwsPattern(EwsPatternKind.RELATIVE_MONTHLY, interval, ("Day",), 0, "Last")
        if days[0] < 1:
            raise _unsupported("EWS", "a monthly day counted from the end other than the last")
        if days[0] > 28:
            raise _unsupported("EWS", _SHORT_MONTHS)
        return EwsPattern(EwsPatternKind.ABSOLUTE_MONTHLY, interval, day_of_month=days[0])
    if rule.bymonthday:
        raise _unsupported("EWS", "a rule with both weekdays and days of the month")
    split = [_split_day(d) for d in rule.byday]
    if len(split) == 1 and split[0] and split[0][0] and not rule.bysetpos:
        ordinal, code = split[0]
        if ordinal not in _EWS_INDEX:
            raise _unsupported("EWS", "a weekday position other than 1st-4th or last")
        return EwsPattern(
            EwsPatternKind.RELATIVE_MONTHLY,
            interval,
            _ews_days([code]),
            day_of_week_index=_EWS_INDEX[ordinal],
        )
    codes = {s[1] for s in split if s and not s[0]}
    if len(codes) == len(split) and len(rule.bysetpos) == 1:
        group = _DAY_GROUPS.get(frozenset(codes))
        position = rule.bysetpos[0]
        if len(codes) == 1:
            group = _ews_days(list(codes))[0]
        if group and position in _EWS_INDEX:
            return EwsPattern(
                EwsPatternKind.RELATIVE_MONTHLY,
                interval,
                (group,),
                day_of_week_index=_EWS_INDEX[position],
            )
    raise _unsupported("EWS", "this combination of weekdays and positions")


def _ews_days(codes: Sequence[str]) -> tuple[str, ...]:
    return tuple(_EWS_DAYS[WEEKDAYS.index(c)] for c in sorted(set(codes), key=WEEKDAYS.index))


def _ews_range(rule: RRule, start: datetime) -> EwsRange:
    if rule.count is not None:
        return EwsRange(EwsRangeKind.NUMBERED, start.date(), count=rule.count)
    if rule.until is None:
        return EwsRange(EwsRangeKind.NO_END, start.date())
    return EwsRange(EwsRangeKind.END_DATE, start.date(), end_date=_last_date(rule, start))


def _last_date(rule: RRule, start: datetime) -> date:
    """The local date of the last occurrence: an end date that keeps exactly the same
    occurrences as UNTIL, whatever time of day UNTIL names."""
    tz = start.tzinfo if isinstance(start.tzinfo, ZoneInfo) else None
    evaluated = rrulestr(_for_dateutil(rule.text(), tz), dtstart=start)
    last = None
    for last in evaluated:  # noqa: B007 - bounded by UNTIL
        pass
    if last is None:
        raise _no_occurrence()
    return last.date()


def _no_occurrence() -> MappingFailure:
    return MappingFailure(MALFORMED_RECURRENCE, "the series ends before it starts", "recurrence")


def ews_to_rrule(pattern: EwsPattern, span: EwsRange, zone: ZoneInfo | None) -> RRule:
    """The RRULE of an EWS pattern; the end date becomes UNTIL at the end of that local day."""
    wkst = WEEKDAYS[_EWS_DAYS.index(pattern.first_day_of_week)]
    codes = tuple(
        code
        for day in pattern.days_of_week
        for code in (_GROUP_DAYS[day] if day in _GROUP_DAYS else (WEEKDAYS[_EWS_DAYS.index(day)],))
    )
    index = {v: k for k, v in _EWS_INDEX.items()}.get(pattern.day_of_week_index, 0)
    kind = pattern.kind
    if kind is EwsPatternKind.DAILY:
        rule = RRule("DAILY", pattern.interval)
    elif kind is EwsPatternKind.WEEKLY:
        rule = RRule("WEEKLY", pattern.interval, byday=codes, wkst=wkst if wkst != "MO" else None)
    elif kind in (EwsPatternKind.ABSOLUTE_MONTHLY, EwsPatternKind.ABSOLUTE_YEARLY):
        yearly = kind is EwsPatternKind.ABSOLUTE_YEARLY
        rule = RRule(
            "YEARLY" if yearly else "MONTHLY",
            1 if yearly else pattern.interval,
            bymonthday=(pattern.day_of_month,),
            bymonth=(_MONTHS.index(pattern.month) + 1,) if yearly else (),
        )
    else:
        yearly = kind is EwsPatternKind.RELATIVE_YEARLY
        month = (_MONTHS.index(pattern.month) + 1,) if yearly else ()
        interval = 1 if yearly else pattern.interval
        freq = "YEARLY" if yearly else "MONTHLY"
        if pattern.days_of_week == ("Day",) and index == -1:
            rule = RRule(freq, interval, bymonthday=(-1,), bymonth=month)
        elif len(codes) == 1:
            rule = RRule(freq, interval, byday=(f"{index}{codes[0]}",), bymonth=month)
        else:
            rule = RRule(freq, interval, byday=codes, bysetpos=(index,), bymonth=month)
    if span.kind is EwsRangeKind.NUMBERED:
        return replace(rule, count=span.count)
    if span.kind is EwsRangeKind.END_DATE and span.end_date is not None:
        return replace(rule, until=_until_text(span.end_date, zone))
    return rule


def _until_text(last_day: date, zone: ZoneInfo | None) -> str:
    if zone is None:
        return last_day.strftime("%Y%m%d")
    end = datetime.combine(last_day, time(23, 59, 59), tzinfo=zone)
    return end.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


# --- Salesforce legacy recurrence fields ------------------------------------------------


def rrule_to_sf_legacy(rule: RRule, start: datetime, zone_name: str) -> dict[str, Any]:
    """RecurrenceType & co. Legacy recurrences always end (at most 100 occurrences) and know no
    positions (BYSETPOS) nor several days of the month: those are unsupported, not bent."""
    target = "Salesforce's legacy recurrence"
    _only_supported_parts(rule, target)
    if rule.bysetpos:
        raise _unsupported(target, "BYSETPOS")
    if rule.count is None and rule.until is None:
        raise _unsupported(target, "a series without an end")
    tz = start.tzinfo if isinstance(start.tzinfo, ZoneInfo) else None
    evaluated = list(
        rrulestr(_for_dateutil(rule.text(), tz), dtstart=start, cache=False).xafter(
            start - timedelta(seconds=1), count=SF_LEGACY_MAX_OCCURRENCES + 1, inc=True
        )
    )
    if not evaluated:
        raise _no_occurrence()
    if len(evaluated) > SF_LEGACY_MAX_OCCURRENCES:
        raise _unsupported(target, f"more than {SF_LEGACY_MAX_OCCURRENCES} occurrences")
    fields: dict[str, Any] = {
        "IsRecurrence": True,
        "RecurrenceInterval": rule.interval,
        "RecurrenceEndDateOnly": evaluated[-1].date().isoformat(),
        "RecurrenceTimeZoneSidKey": zone_name,
    }
    split = [_split_day(d) for d in rule.byday]
    if any(s is None for s in split):
        raise _unsupported(target, "this BYDAY")
    days = [s for s in split if s is not None]
    if rule.freq == "DAILY":
        if rule.bymonth or rule.bymonthday:
            raise _unsupported(target, "a daily rule filtered by month or day")
        if not days:
            return fields | {"RecurrenceType": "RecursDaily"}
        if rule.interval == 1 and {c for _, c in days} == set(WEEKDAYS[:5]):
            return fields | {"RecurrenceType": "RecursEveryWeekday", "RecurrenceDayOfWeekMask": 62}
        raise _unsupported(target, "a daily rule on some weekdays")
    if rule.freq == "WEEKLY":
        if rule.bymonth or rule.bymonthday or any(o for o, _ in days):
            raise _unsupported(target, "a weekly rule filtered by month, day or position")
        codes = {c for _, c in days} or {WEEKDAYS[start.weekday()]}
        mask = sum(_SF_MASK[c] for c in codes)
        return fields | {"RecurrenceType": "RecursWeekly", "RecurrenceDayOfWeekMask": mask}
    yearly = rule.freq == "YEARLY"
    if yearly:
        if rule.interval != 1 or len(rule.bymonth) > 1:
            raise _unsupported(target, "a yearly interval or several months")
        month = rule.bymonth[0] if rule.bymonth else start.month
        fields["RecurrenceMonthOfYear"] = _MONTHS[month - 1]
        del fields["RecurrenceInterval"]
    elif rule.bymonth:
        raise _unsupported(target, "a monthly rule limited to some months")
    if not days:
        monthdays = rule.bymonthday or (start.day,)
        if len(monthdays) != 1 or monthdays[0] < 1:
            raise _unsupported(target, "several or negative days of the month")
        if monthdays[0] > 28:
            raise _unsupported(target, _SHORT_MONTHS)
        kind = "RecursYearly" if yearly else "RecursMonthly"
        return fields | {"RecurrenceType": kind, "RecurrenceDayOfMonth": monthdays[0]}
    if len(days) != 1 or days[0][0] not in _SF_INSTANCE or rule.bymonthday:
        raise _unsupported(target, "this weekday position")
    ordinal, code = days[0]
    return fields | {
        "RecurrenceType": "RecursYearlyNth" if yearly else "RecursMonthlyNth",
        "RecurrenceInstance": _SF_INSTANCE[ordinal],
        "RecurrenceDayOfWeekMask": _SF_MASK[code],
    }


def sf_legacy_to_rrule(fields: Mapping[str, Any]) -> RRule:
    """The RRULE of legacy recurrence fields; the end date is the last occurrence's day."""
    kind = fields.get("RecurrenceType")
    interval = int(fields.get("RecurrenceInterval") or 1)
    mask = int(fields.get("RecurrenceDayOfWeekMask") or 0)
    codes = tuple(c for c in WEEKDAYS if mask & _SF_MASK[c])
    instance = {v: k for k, v in _SF_INSTANCE.items()}.get(fields.get("RecurrenceInstance") or "")
    month = fields.get("RecurrenceMonthOfYear")
    bymonth = (_MONTHS.index(month) + 1,) if month in _MONTHS else ()
    day = int(fields.get("RecurrenceDayOfMonth") or 0)
    if kind == "RecursDaily":
        rule = RRule("DAILY", interval)
    elif kind == "RecursEveryWeekday":
        rule = RRule("WEEKLY", 1, byday=WEEKDAYS[:5])
    elif kind == "RecursWeekly":
        rule = RRule("WEEKLY", interval, byday=codes)
    elif kind == "RecursMonthly":
        rule = RRule("MONTHLY", interval, bymonthday=(day,))
    elif kind == "RecursYearly":
        rule = RRule("YEARLY", 1, bymonthday=(day,), bymonth=bymonth)
    elif kind in ("RecursMonthlyNth", "RecursYearlyNth") and instance and len(codes) == 1:
        yearly = kind == "RecursYearlyNth"
        rule = RRule(
            "YEARLY" if yearly else "MONTHLY",
            1 if yearly else interval,
            byday=(f"{instance}{codes[0]}",),
            bymonth=bymonth if yearly else (),
        )
    else:
        raise MappingFailure(
            MALFORMED_RECURRENCE, "the legacy recurrence fields do not form a pattern", "recurrence"
        )
    end = fields.get("RecurrenceEndDateOnly")
    if not end:
        return rule
    zone_name = fields.get("RecurrenceTimeZoneSidKey") or ""
    # An all-day series recurs on dates: its end is a date, whatever zone is recorded.
    zone = ZoneInfo(zone_name) if zone_name and not fields.get("IsAllDayEvent") else None
    return replace(rule, until=_until_text(date.fromisoformat(end), zone))
