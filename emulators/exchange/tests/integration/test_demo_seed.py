"""The demo mailbox as exchangelib sees it: real calendars (single and recurring meetings in
several zones, a deleted and an edited occurrence, an invitation with attendees), a real to-do
and a real mail thread, next to the hand-written items."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from exchangelib import DELEGATE, Account, EWSDateTime, EWSTimeZone  # type: ignore[import-untyped]

from concord_exchange_emulator.seed import DEMO_MAILBOX, DEMO_PASSWORD

pytestmark = pytest.mark.integration

UTC = EWSTimeZone("UTC")


@pytest.fixture
def demo(make_config: Any) -> Any:
    return Account(
        DEMO_MAILBOX,
        config=make_config(DEMO_MAILBOX, DEMO_PASSWORD),
        autodiscover=False,
        access_type=DELEGATE,
    )


def test_real_calendars_are_current_and_keep_their_zones_and_series(demo: Any) -> None:
    now = EWSDateTime.now(UTC)
    view = list(
        demo.calendar.view(start=now - dt.timedelta(days=1), end=now + dt.timedelta(days=60))
    )
    by_subject: dict[str, list[Any]] = {}
    for item in view:
        by_subject.setdefault(item.subject, []).append(item)

    # SabreDAV weekly series, COUNT=8 with one EXDATE: seven occurrences, 00:30 in Berlin.
    weekly = by_subject["test6"]
    assert len(weekly) == 7
    berlin = EWSTimeZone("Europe/Berlin")
    assert {
        (o.start.astimezone(berlin).hour, o.start.astimezone(berlin).minute) for o in weekly
    } == {(0, 30)}
    assert len({o.start.astimezone(berlin).weekday() for o in weekly}) == 1

    # Daily series with its second day edited (RECURRENCE-ID): an exception in the series.
    daily = by_subject["test7"]
    [edited] = by_subject["test7 - edited"]
    assert len(daily) == 2
    assert edited.type == "Exception"
    assert edited.location == "location"

    # Single meetings across zones, at their own wall-clock times.
    [new_york] = by_subject["Test Event 1"]
    assert new_york.start.astimezone(EWSTimeZone("America/New_York")).hour == 10
    [vienna] = by_subject["artsprint 2012"]
    assert vienna.start.astimezone(EWSTimeZone("Europe/Vienna")).hour == 10
    assert vienna.location == "aka bild, wien"

    # A BlackBerry invitation: all day, organizer and attendees from the file.
    [invite] = by_subject["Test meeting from BB"]
    assert invite.is_all_day
    assert "Salesforce" in invite.categories
    [master] = [
        i for i in demo.calendar.filter(subject="Test meeting from BB").only("required_attendees")
    ]
    assert sorted(a.mailbox.email_address for a in master.required_attendees) == [
        "rembrand@daxlab.com",
        "rembrand@xs4all.nl",
        "rembspam@xs4all.nl",
    ]
    assert {a.response_type for a in master.required_attendees} == {"NoResponseReceived"}
    for item in view:
        assert item.start >= now - dt.timedelta(days=1)


def test_a_real_todo_and_a_real_thread_are_seeded(demo: Any) -> None:
    assert "Test Todo 1" in {t.subject for t in demo.tasks.all().only("subject")}
    shared = demo.msg_folder_root / "Salesforce Emails"
    filed = {m.subject for m in shared.all().only("subject")}
    assert any(s and s.startswith("[notmuch] [PATCH 2/2]") for s in filed)
    tagged = [
        m
        for m in demo.inbox.all().only("subject", "categories", "message_id")
        if m.subject and "lib/message: Add function to get maildir" in m.subject
    ]
    assert tagged
    assert all("Salesforce" in (m.categories or ()) for m in tagged)
    assert all(m.message_id for m in tagged)


def test_messages_stored_from_mime_carry_what_exchange_derives(demo: Any) -> None:
    thread = [
        m
        for m in demo.inbox.all()
        if m.subject and "lib/message: Add function to get maildir" in m.subject
    ]
    shared = demo.msg_folder_root / "Salesforce Emails"
    thread += [m for m in shared.all() if m.subject and "get maildir" in m.subject]
    assert len(thread) >= 3
    # One conversation for the whole thread, keyed on its first message.
    assert len({m.conversation_id.id for m in thread}) == 1
    replies = [m for m in thread if m.in_reply_to]
    assert replies
    assert all(m.references for m in replies)
    assert all(m.to_recipients and m.body for m in thread)
    assert {m.conversation_topic for m in thread} == {
        "[notmuch] [PATCH 1/2] lib/message: Add function to get maildir flags."
    }
