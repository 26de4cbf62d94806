"""Items through exchangelib: create, get, update (ChangeKey conflicts), delete, move, find."""

from __future__ import annotations

import datetime as dt
from email.message import EmailMessage

import pytest
from exchangelib import (  # type: ignore[import-untyped]
    Account,
    Attendee,
    CalendarItem,
    Contact,
    EWSDateTime,
    EWSTimeZone,
    ExtendedProperty,
    Folder,
    HTMLBody,
    Mailbox,
    Message,
    Q,
    Task,
)
from exchangelib.errors import (  # type: ignore[import-untyped]
    ErrorIrresolvableConflict,
    ErrorItemNotFound,
)
from exchangelib.indexed_properties import EmailAddress  # type: ignore[import-untyped]

from concord_exchange_emulator.xmlns import M, S, T

pytestmark = pytest.mark.integration

UTC = EWSTimeZone("UTC")
BERLIN = EWSTimeZone("Europe/Berlin")


class LinkId(ExtendedProperty):  # type: ignore[misc]
    property_set_id = "c11ff724-aa03-4555-9952-8fa248a11c3e"
    property_name = "concord_link_id"
    property_type = "String"


# exchangelib registers extended properties process-wide; a name of the tests' own keeps them
# clear of the mail-connector's `link_id` when both run in one pytest worker.
ATTR = "emulator_test_link_id"


@pytest.fixture(scope="module", autouse=True)
def _register_link_id() -> object:
    for cls in (CalendarItem, Message, Task, Contact):
        cls.register(ATTR, LinkId)
    yield None
    for cls in (CalendarItem, Message, Task, Contact):
        cls.deregister(ATTR)


def _meeting(account: Account, **kwargs: object) -> CalendarItem:
    start = EWSDateTime(2030, 3, 4, 10, 0, tzinfo=BERLIN)
    fields: dict[str, object] = {
        "folder": account.calendar,
        "subject": "Pipeline review",
        "start": start,
        "end": start + dt.timedelta(hours=1),
        "location": "Room 1",
        "body": "Agenda",
        "sensitivity": "Private",
        "categories": ["Salesforce"],
        "required_attendees": [
            Attendee(mailbox=Mailbox(email_address="ada@acme.example"), response_type="Accept")
        ],
    }
    fields.update(kwargs)
    item = CalendarItem(account=account, **fields)
    item.save(send_meeting_invitations="SendToNone")
    return item


def test_calendar_item_round_trip(account: Account) -> None:
    item = _meeting(account, emulator_test_link_id="link-1")
    got = account.calendar.get(id=item.id)
    assert got.subject == "Pipeline review"
    assert got.start == item.start
    assert got.end == item.end
    assert got.location == "Room 1"
    assert got.body == "Agenda"
    assert got.sensitivity == "Private"
    assert got.categories == ["Salesforce"]
    assert got.is_all_day is False
    assert got._start_timezone == BERLIN
    assert got.organizer.email_address == account.primary_smtp_address
    assert [(a.mailbox.email_address, a.response_type) for a in got.required_attendees] == [
        ("ada@acme.example", "Accept")
    ]
    assert got.uid
    assert got.emulator_test_link_id == "link-1"
    assert got.changekey == item.changekey
    # How a retried create finds the first one: a restriction on the extended property.
    assert [i.id for i in account.calendar.filter(emulator_test_link_id="link-1")] == [item.id]
    assert account.calendar.filter(emulator_test_link_id="link-2").count() == 0


def test_all_day_event(account: Account) -> None:
    item = CalendarItem(
        account=account,
        folder=account.calendar,
        subject="Holiday",
        start=dt.date(2030, 5, 1),
        end=dt.date(2030, 5, 2),
        is_all_day=True,
    )
    item.save(send_meeting_invitations="SendToNone")
    got = account.calendar.get(id=item.id)
    assert got.is_all_day is True
    assert got.start == dt.date(2030, 5, 1)


def test_task_and_contact_round_trip(account: Account) -> None:
    task = Task(
        account=account,
        folder=account.tasks,
        subject="Call Acme",
        due_date=dt.date(2030, 1, 2),
        status="InProgress",
        categories=["Salesforce"],
        emulator_test_link_id="t-1",
    )
    task.save()
    got_task = account.tasks.get(id=task.id)
    assert (got_task.subject, got_task.status, got_task.emulator_test_link_id) == (
        "Call Acme",
        "InProgress",
        "t-1",
    )
    contact = Contact(
        account=account,
        folder=account.contacts,
        display_name="Ada Lovelace",
        given_name="Ada",
        surname="Lovelace",
        company_name="Acme",
        email_addresses=[EmailAddress(email="ada@acme.example", label="EmailAddress1")],
    )
    contact.save()
    got = account.contacts.get(id=contact.id)
    assert (got.given_name, got.surname, got.company_name) == ("Ada", "Lovelace", "Acme")
    assert got.email_addresses[0].email == "ada@acme.example"
    got.email_addresses = [EmailAddress(email="ada@new.example", label="EmailAddress1")]
    got.save(update_fields=["email_addresses"])
    assert account.contacts.get(id=contact.id).email_addresses[0].email == "ada@new.example"


def test_message_with_mime_content(account: Account) -> None:
    mime = EmailMessage()
    mime["From"] = "Ada <ada@acme.example>"
    mime["To"] = account.primary_smtp_address
    mime["Subject"] = "Quote"
    mime["Message-ID"] = "<quote-1@acme.example>"
    mime["Date"] = "Tue, 01 Jan 2030 10:00:00 +0000"
    mime.set_content("Please find the quote.")
    folder = Folder(parent=account.msg_folder_root, name="Salesforce Emails")
    folder.save()
    message = Message(account=account, folder=folder, mime_content=mime.as_bytes())
    message.save()
    got = folder.get(id=message.id)
    assert got.subject == "Quote"
    assert got.message_id == "<quote-1@acme.example>"
    assert got.sender.email_address == "ada@acme.example"
    assert b"Please find the quote." in got.mime_content
    assert got.is_read is False


def test_message_without_mime_gets_one(account: Account) -> None:
    message = Message(
        account=account, folder=account.inbox, subject="Hi", body=HTMLBody("<p>x</p>")
    )
    message.save()
    got = account.inbox.get(id=message.id)
    assert got.message_id
    assert b"Subject: Hi" in got.mime_content


def test_update_with_a_stale_changekey_and_never_overwrite_conflicts(account: Account) -> None:
    item = _meeting(account)
    stale = account.calendar.get(id=item.id)
    item.subject = "First edit"
    item.save(update_fields=["subject"], conflict_resolution="NeverOverwrite")
    assert item.changekey != stale.changekey
    stale.subject = "Second edit"
    with pytest.raises(ErrorIrresolvableConflict):
        stale.save(update_fields=["subject"], conflict_resolution="NeverOverwrite")
    assert account.calendar.get(id=item.id).subject == "First edit"
    # AutoResolve (exchangelib's default) lets the later write win.
    stale.save(update_fields=["subject"])
    assert account.calendar.get(id=item.id).subject == "Second edit"


def test_update_sets_and_deletes_fields(account: Account) -> None:
    item = _meeting(account, emulator_test_link_id="before")
    item.location = None
    item.categories = ["Salesforce", "Won"]
    item.emulator_test_link_id = "after"
    item.save(update_fields=["location", "categories", ATTR], conflict_resolution="NeverOverwrite")
    got = account.calendar.get(id=item.id)
    assert got.location is None
    assert got.categories == ["Salesforce", "Won"]
    assert got.emulator_test_link_id == "after"


def test_delete_and_move(account: Account) -> None:
    first = _meeting(account, subject="To delete")
    first_id = first.id
    first.delete()
    with pytest.raises(ErrorItemNotFound):
        account.calendar.get(id=first_id)
    task = Task(account=account, folder=account.tasks, subject="To move")
    task.save()
    target = Folder(parent=account.msg_folder_root, name="Moved here")
    target.save()
    old_id = task.id
    task.move(target)
    assert task.id != old_id
    assert [t.subject for t in target.all()] == ["To move"]
    assert account.tasks.filter(subject="To move").count() == 0
    task.move_to_trash()
    assert account.trash.filter(subject="To move").count() == 1


def test_find_item_paging(account: Account) -> None:
    items = [
        Task(account=account, folder=account.tasks, subject=f"Task {n:02d}") for n in range(25)
    ]
    account.bulk_create(folder=account.tasks, items=items)
    qs = account.tasks.all().order_by("subject")
    qs.page_size = 10
    subjects = [t.subject for t in qs]
    assert subjects == [f"Task {n:02d}" for n in range(25)]
    assert account.tasks.all().count() == 25
    assert [t.subject for t in account.tasks.all().order_by("-subject")[:3]] == [
        "Task 24",
        "Task 23",
        "Task 22",
    ]


def test_find_item_restrictions(account: Account) -> None:
    _meeting(account, subject="A", categories=["Salesforce"])
    _meeting(
        account,
        subject="B",
        categories=["Other"],
        start=EWSDateTime(2030, 6, 1, 9, tzinfo=UTC),
        end=EWSDateTime(2030, 6, 1, 10, tzinfo=UTC),
    )
    _meeting(account, subject="C", categories=[])
    cal = account.calendar
    assert {i.subject for i in cal.filter(categories__contains=["Salesforce"])} == {"A"}
    assert {i.subject for i in cal.filter(subject="B")} == {"B"}
    assert {i.subject for i in cal.filter(start__gte=EWSDateTime(2030, 5, 1, tzinfo=UTC))} == {"B"}
    june = cal.filter(
        start__lt=EWSDateTime(2030, 7, 1, tzinfo=UTC), end__gt=EWSDateTime(2030, 6, 1, tzinfo=UTC)
    )
    assert {i.subject for i in june} == {"B"}
    assert {i.subject for i in cal.filter(Q(subject="A") | Q(subject="C"))} == {"A", "C"}
    assert {i.subject for i in cal.filter(~Q(subject="A"))} == {"B", "C"}
    assert {i.subject for i in cal.filter(subject__icontains="b")} == {"B"}
    assert {i.subject for i in cal.filter(subject__in=["A", "B"])} == {"A", "B"}
    assert {i.subject for i in cal.filter(is_all_day=False)} == {"A", "B", "C"}
    assert {i.subject for i in cal.filter(is_all_day=True)} == set()


@pytest.mark.parametrize(
    ("restriction", "code"),
    [
        # A bitmask test the emulator does not evaluate.
        (
            '<t:Excludes><t:FieldURI FieldURI="item:Subject"/><t:Bitmask Value="1"/></t:Excludes>',
            "ErrorUnsupportedQueryFilter",
        ),
        # Comparing a structured field (a recurrence pattern) with a constant.
        (
            '<t:IsEqualTo><t:FieldURI FieldURI="calendar:Recurrence"/>'
            '<t:FieldURIOrConstant><t:Constant Value="x"/></t:FieldURIOrConstant></t:IsEqualTo>',
            "ErrorUnsupportedPathForQuery",
        ),
    ],
)
def test_an_unsupported_restriction_is_an_error_not_a_wrong_answer(
    account: Account, restriction: str, code: str
) -> None:
    from exchangelib.recurrence import (  # type: ignore[import-untyped]
        DailyPattern,
        Recurrence,
    )

    _meeting(
        account,
        recurrence=Recurrence(
            pattern=DailyPattern(interval=1), start=dt.date(2030, 3, 4), number=3
        ),
    )
    body = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<s:Envelope xmlns:s="{S}" xmlns:m="{M}" xmlns:t="{T}"><s:Body>'
        '<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape>'
        '</m:ItemShape><m:IndexedPageItemView MaxEntriesReturned="10" Offset="0" '
        'BasePoint="Beginning"/>'
        f"<m:Restriction>{restriction}</m:Restriction>"
        '<m:ParentFolderIds><t:DistinguishedFolderId Id="calendar"/></m:ParentFolderIds>'
        "</m:FindItem></s:Body></s:Envelope>"
    )
    session = account.protocol.get_session()
    try:
        response = session.post(
            account.protocol.service_endpoint,
            data=body.encode(),
            headers={"Content-Type": "text/xml"},
        )
    finally:
        account.protocol.release_session(session)
    assert response.status_code == 200
    assert f"<m:ResponseCode>{code}</m:ResponseCode>" in response.text
    assert 'ResponseClass="Error"' in response.text


def test_calendar_view(account: Account) -> None:
    _meeting(account, subject="In")
    _meeting(
        account,
        subject="Out",
        start=EWSDateTime(2031, 1, 1, 9, tzinfo=UTC),
        end=EWSDateTime(2031, 1, 1, 10, tzinfo=UTC),
    )
    view = account.calendar.view(
        start=EWSDateTime(2030, 3, 1, tzinfo=UTC), end=EWSDateTime(2030, 4, 1, tzinfo=UTC)
    )
    assert [i.subject for i in view] == ["In"]


def test_find_item_restricted_on_the_link_id_property(account: Account) -> None:
    # How the mail-connector finds items whose create answer was lost: one FindItem on the
    # extended property, an Or of IsEqualTo for a batch of link ids.
    for subject, link in (("A", "l-a"), ("B", "l-b"), ("C", "l-c")):
        _meeting(account, subject=subject, **{ATTR: link})
    _meeting(account, subject="no link")
    cal = account.calendar
    found = cal.filter(**{f"{ATTR}__in": ["l-a", "l-c", "l-missing"]}).only("subject", ATTR)
    assert sorted((i.subject, getattr(i, ATTR)) for i in found) == [("A", "l-a"), ("C", "l-c")]
    assert [i.subject for i in cal.filter(**{ATTR: "l-b"})] == ["B"]
    assert {i.subject for i in cal.filter(**{f"{ATTR}__exists": False})} == {"no link"}
