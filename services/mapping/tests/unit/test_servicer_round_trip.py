"""Mapping then reverse-mapping through the servicer (protobuf in, Struct fields, protobuf
out) is the identity on the mapped fields: what the reconciler sees on the wire."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from concord.common.v1 import resources_pb2 as res
from concord.mapping.v1 import mapping_service_pb2 as pb
from concord_mapping.adapters.packaged import table_data
from concord_mapping.api.servicer import MappingServicer
from concord_mapping.domain.model import Kind, TableName, TableVersion
from concord_mapping.domain.service import MappingTables

pytestmark = pytest.mark.unit


class NoOverrides:
    async def version(self, name: TableName, version: int) -> TableVersion | None:
        return None

    async def newest(self, org: str) -> Mapping[Kind, int]:
        return {}

    async def versions(self, name: TableName, before: int, limit: int) -> Sequence[TableVersion]:
        return []

    async def add(self, version: TableVersion) -> None:
        raise AssertionError("nothing is stored here")


SERVICER = MappingServicer(MappingTables(NoOverrides(), table_data()))


def round_trip(item: res.MailItem, zone: str) -> tuple[pb.MappedRecord, pb.MappedItem]:
    async def both() -> tuple[pb.MappedRecord, pb.MappedItem]:
        request = pb.MapToCrmRequest(org="orgs/demo", inputs=[pb.MapToCrmInput(item=item)])
        mapped = (await SERVICER.MapToCrm(request, None)).results[0]  # type: ignore[arg-type]
        assert not mapped.HasField("error"), mapped.error
        back = await SERVICER.MapToMail(
            pb.MapToMailRequest(org="orgs/demo", records=[mapped.record], time_zone=zone),
            None,  # type: ignore[arg-type]
        )
        return mapped, back.results[0]

    return asyncio.run(both())


seconds = st.datetimes(datetime(1990, 1, 1), datetime(2080, 1, 1), timezones=st.just(UTC)).map(
    lambda d: d.replace(microsecond=0)
)
words = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=80).map(
    str.strip
)
ZONES = ["America/New_York", "Europe/London", "Australia/Sydney", "Asia/Kolkata"]


@settings(max_examples=120, deadline=None)
@given(
    start=seconds,
    minutes=st.integers(0, 600),
    subject=words,
    zone=st.sampled_from(ZONES),
    reminder=st.one_of(st.none(), st.integers(0, 10_000)),
    rule=st.sampled_from(
        [
            None,
            "RRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,TH",
            "RRULE:FREQ=MONTHLY;COUNT=12;BYDAY=-1FR",
            "RRULE:FREQ=DAILY;UNTIL=20300101T000000Z",
        ]
    ),
    exclude=st.booleans(),
)
def test_calendar_items_survive_the_wire(
    start: datetime,
    minutes: int,
    subject: str,
    zone: str,
    reminder: int | None,
    rule: str | None,
    exclude: bool,
) -> None:
    calendar = res.CalendarItem(subject=subject, time_zone=zone, show_as=res.SHOW_AS_FREE)
    calendar.start.FromDatetime(start)
    calendar.end.FromDatetime(start + timedelta(minutes=minutes))
    if reminder is not None:
        calendar.reminder_minutes = reminder
    if rule:
        calendar.recurrence.rules.append(rule)
        calendar.recurrence.time_zone = zone
        if exclude:
            calendar.recurrence.excluded_starts.add().FromDatetime(start + timedelta(days=7))
    ref = res.ItemRef(kind=res.OBJECT_KIND_CALENDAR_ITEM, link_id="l1")
    mapped, back = round_trip(res.MailItem(ref=ref, calendar_item=calendar), "UTC")
    assert list(mapped.losses) == []
    got = back.item.calendar_item
    assert (back.item.ref.link_id, got.subject, got.start, got.end) == (
        "l1",
        calendar.subject,
        calendar.start,
        calendar.end,
    )
    assert got.show_as == res.SHOW_AS_FREE
    assert got.HasField("reminder_minutes") == (reminder is not None)
    assert got.reminder_minutes == (reminder or 0)
    if rule:
        assert json_format.MessageToDict(got.recurrence) == json_format.MessageToDict(
            calendar.recurrence
        )


@settings(max_examples=80, deadline=None)
@given(
    first=st.dates(date(1990, 1, 1), date(2080, 1, 1)),
    days=st.integers(1, 14),
    mailbox_zone=st.sampled_from(["Pacific/Kiritimati", "Pacific/Pago_Pago", *ZONES]),
)
def test_all_day_items_survive_the_wire_in_any_mailbox_zone(
    first: date, days: int, mailbox_zone: str
) -> None:
    calendar = res.CalendarItem(
        subject="Offsite",
        all_day=True,
        start_date=first.isoformat(),
        end_date=(first + timedelta(days=days)).isoformat(),
        time_zone="Australia/Sydney",
    )
    item = res.MailItem(ref=res.ItemRef(kind=res.OBJECT_KIND_CALENDAR_ITEM), calendar_item=calendar)
    _, back = round_trip(item, mailbox_zone)
    got = back.item.calendar_item
    assert (got.all_day, got.start_date, got.end_date) == (
        True,
        calendar.start_date,
        calendar.end_date,
    )
    assert not got.HasField("start")


@settings(max_examples=80, deadline=None)
@given(
    given_name=words.map(lambda s: s[:40]),
    family_name=words.map(lambda s: s[:80]).filter(bool),
    title=words.map(lambda s: s[:128]),
    birthday=st.one_of(st.just(""), st.dates().map(date.isoformat)),
)
def test_contacts_survive_the_wire(
    given_name: str, family_name: str, title: str, birthday: str
) -> None:
    contact = res.ContactItem(
        given_name=given_name,
        family_name=family_name,
        job_title=title,
        birthday=birthday,
        email_addresses=[
            res.ContactEmailAddress(
                address="a@example.com", primary=True, type=res.EMAIL_ADDRESS_TYPE_WORK
            )
        ],
        phone_numbers=[res.PhoneNumber(number="+44 20 7946 0000", type=res.PHONE_TYPE_MOBILE)],
    )
    item = res.MailItem(ref=res.ItemRef(kind=res.OBJECT_KIND_CONTACT), contact=contact)
    mapped, back = round_trip(item, "UTC")
    assert list(mapped.losses) == []
    assert back.item.contact == contact
