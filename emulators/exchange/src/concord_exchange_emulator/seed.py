"""The `demo` seed: a demo mailbox, a service account that may impersonate, a delegate."""

from __future__ import annotations

import base64
import datetime as dt
import pathlib
from email.message import EmailMessage

from lxml import etree

from concord_exchange_emulator import ews, ical
from concord_exchange_emulator import items as it
from concord_exchange_emulator import recurrence as rec
from concord_exchange_emulator.store import Store, StoredItem, new_id
from concord_exchange_emulator.xmlns import T, sub, t

DEMO_MAILBOX = "demo@concord.test"
DEMO_PASSWORD = "demo-password"
SERVICE_ACCOUNT = "svc-concord@concord.test"
SERVICE_PASSWORD = "svc-password"
DELEGATE = "assistant@concord.test"
DELEGATE_PASSWORD = "assistant-password"


def _item(kind: str, **fields: str) -> etree._Element:
    node = etree.Element(t(kind), nsmap={"t": T})
    for name, value in fields.items():
        sub(node, t(name), value)
    return node


def _categories(node: etree._Element, *names: str) -> None:
    cats = sub(node, t("Categories"))
    for name in names:
        sub(cats, t("String"), name)


def _attendees(node: etree._Element, *people: tuple[str, str, str]) -> None:
    required = sub(node, t("RequiredAttendees"))
    for name, address, response in people:
        attendee = sub(required, t("Attendee"))
        mbx = sub(attendee, t("Mailbox"))
        sub(mbx, t("Name"), name)
        sub(mbx, t("EmailAddress"), address)
        sub(attendee, t("ResponseType"), response)


def _mime(subject: str, sender: str, to: str, when: dt.datetime, body: str, n: int) -> str:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = when.strftime("%a, %d %b %Y %H:%M:%S +0000")
    msg["Message-ID"] = f"<demo-{n}@mail.acme.example>"
    msg.set_content(body)
    return base64.b64encode(msg.as_bytes()).decode()


def _stamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


# Enough real messages to page through, few enough to seed in well under a second.
REAL_MESSAGES = 24
# Real calendars and mail shipped with the emulator (sources and licences in its README).
DEMO_DATA = pathlib.Path(__file__).parent / "demo"


def _real_messages(mail_dir: pathlib.Path | None) -> list[bytes]:
    """Raw messages from a maildir (real mail is messier than anything made up here)."""
    if mail_dir is None:
        return []
    files = sorted(p for sub_dir in ("cur", "new") for p in (mail_dir / sub_dir).glob("*"))
    return [p.read_bytes() for p in files[:REAL_MESSAGES] if p.is_file()]


def seed_mailbox(store: Store, mail_dir: pathlib.Path | None = None) -> bool:
    """Create the demo users and mailbox content, with up to REAL_MESSAGES messages from the
    maildir `mail_dir` when given; False when the seed was already there."""
    if store.user(DEMO_MAILBOX) is not None:
        return False
    ews.ensure_mailbox(store, DEMO_MAILBOX, "Demo User")
    store.add_user(DEMO_MAILBOX, DEMO_PASSWORD, DEMO_MAILBOX)
    ews.ensure_mailbox(store, SERVICE_ACCOUNT, "Concord Service")
    store.add_user(SERVICE_ACCOUNT, SERVICE_PASSWORD, SERVICE_ACCOUNT, can_impersonate=True)
    ews.ensure_mailbox(store, DELEGATE, "Demo Assistant")
    store.add_user(DELEGATE, DELEGATE_PASSWORD, DELEGATE)
    store.add_delegate(DEMO_MAILBOX, DELEGATE)

    root = store.distinguished_folder(DEMO_MAILBOX, "msgfolderroot")
    assert root is not None
    emails = store.add_folder(DEMO_MAILBOX, root.id, "Salesforce Emails", "IPF.Note", "Folder")
    contacts = store.add_folder(
        DEMO_MAILBOX, root.id, "Salesforce Contacts", "IPF.Contact", "ContactsFolder"
    )
    calendar = store.distinguished_folder(DEMO_MAILBOX, "calendar")
    tasks = store.distinguished_folder(DEMO_MAILBOX, "tasks")
    inbox = store.distinguished_folder(DEMO_MAILBOX, "inbox")
    assert calendar is not None
    assert tasks is not None
    assert inbox is not None

    base = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    stored: list[tuple[str, etree._Element]] = []

    review = _item("CalendarItem", Subject="Quarterly review with Acme", Sensitivity="Normal")
    sub(review, t("Body"), "Agenda: pipeline, renewals.", BodyType="Text")
    _categories(review, "Salesforce")
    sub(review, t("Start"), _stamp(base + dt.timedelta(days=1, hours=14)))
    sub(review, t("End"), _stamp(base + dt.timedelta(days=1, hours=15)))
    sub(review, t("IsAllDayEvent"), "false")
    sub(review, t("Location"), "Acme HQ, Berlin")
    _attendees(
        review,
        ("Ada Lovelace", "ada@acme.example", "Accept"),
        ("Grace Hopper", "grace@globex.example", "Tentative"),
    )
    sub(review, t("StartTimeZone"), Id="W. Europe Standard Time")
    sub(review, t("EndTimeZone"), Id="W. Europe Standard Time")
    stored.append((calendar.id, review))

    lunch = _item("CalendarItem", Subject="Lunch (private)", Sensitivity="Private")
    sub(lunch, t("Start"), _stamp(base + dt.timedelta(days=2, hours=11)))
    sub(lunch, t("End"), _stamp(base + dt.timedelta(days=2, hours=12)))
    sub(lunch, t("StartTimeZone"), Id="Pacific Standard Time")
    sub(lunch, t("EndTimeZone"), Id="Pacific Standard Time")
    stored.append((calendar.id, lunch))

    offsite = _item("CalendarItem", Subject="Team offsite")
    _categories(offsite, "Salesforce", "Team")
    sub(offsite, t("Start"), _stamp(base + dt.timedelta(days=7)))
    sub(offsite, t("End"), _stamp(base + dt.timedelta(days=8)))
    sub(offsite, t("IsAllDayEvent"), "true")
    stored.append((calendar.id, offsite))

    # A weekly series in another zone than the mailbox's other meetings.
    standup = _item("CalendarItem", Subject="Weekly pipeline stand-up")
    _categories(standup, "Salesforce")
    first = base + dt.timedelta(days=(7 - base.weekday()) % 7 or 7, hours=17)
    sub(standup, t("Start"), _stamp(first))
    sub(standup, t("End"), _stamp(first + dt.timedelta(minutes=30)))
    recurrence = sub(standup, t("Recurrence"))
    weekly = sub(recurrence, t("WeeklyRecurrence"))
    sub(weekly, t("Interval"), "1")
    sub(weekly, t("DaysOfWeek"), "Monday")
    sub(weekly, t("FirstDayOfWeek"), "Monday")
    numbered = sub(recurrence, t("NumberedRecurrence"))
    sub(numbered, t("StartDate"), first.date().isoformat())
    sub(numbered, t("NumberOfOccurrences"), "10")
    sub(standup, t("StartTimeZone"), Id="Eastern Standard Time")
    sub(standup, t("EndTimeZone"), Id="Eastern Standard Time")
    stored.append((calendar.id, standup))

    for n, (subject, due, status) in enumerate(
        [
            ("Send Acme the renewal quote", 3, "NotStarted"),
            ("Follow up with Globex", 5, "InProgress"),
        ]
    ):
        task = _item("Task", Subject=subject)
        if n == 0:
            _categories(task, "Salesforce")
        sub(task, t("DueDate"), _stamp(base + dt.timedelta(days=due)))
        sub(task, t("Status"), status)
        stored.append((tasks.id, task))

    for given, surname, company, address in [
        ("Ada", "Lovelace", "Acme", "ada@acme.example"),
        ("Grace", "Hopper", "Globex", "grace@globex.example"),
        ("Alan", "Turing", "Initech", "alan@initech.example"),
    ]:
        contact = _item("Contact")
        sub(contact, t("FileAs"), f"{surname}, {given}")
        sub(contact, t("DisplayName"), f"{given} {surname}")
        sub(contact, t("GivenName"), given)
        sub(contact, t("CompanyName"), company)
        mails = sub(contact, t("EmailAddresses"))
        sub(mails, t("Entry"), address, Key="EmailAddress1")
        sub(contact, t("Surname"), surname)
        stored.append((contacts.id, contact))

    for n, (subject, sender, folder_id, tagged) in enumerate(
        [
            ("Renewal quote for Acme", "ada@acme.example", emails.id, True),
            ("Re: Globex onboarding", "grace@globex.example", emails.id, False),
            ("Initech intro", "alan@initech.example", inbox.id, True),
            ("Newsletter", "news@example.org", inbox.id, False),
        ]
    ):
        when = base - dt.timedelta(days=n + 1, hours=3)
        message = _item("Message")
        sub(
            message,
            t("MimeContent"),
            _mime(subject, sender, DEMO_MAILBOX, when, f"Hello, about: {subject}", n),
            CharacterSet="UTF-8",
        )
        if tagged:
            _categories(message, "Salesforce")
        stored.append((folder_id, message))

    for n, raw in enumerate(_real_messages(mail_dir)):
        message = _item("Message")
        sub(message, t("MimeContent"), base64.b64encode(raw).decode(), CharacterSet="UTF-8")
        if n % 2 == 0:
            _categories(message, "Salesforce")
        stored.append((emails.id if n % 3 else inbox.id, message))

    # A real thread: the first posts filed in Salesforce Emails, the replies shared from the
    # Inbox by their category.
    shipped = sorted((DEMO_DATA / "mail").glob("*.eml"))
    for n, path in enumerate(shipped):
        message = _item("Message")
        mime = base64.b64encode(path.read_bytes()).decode()
        sub(message, t("MimeContent"), mime, CharacterSet="UTF-8")
        if n >= len(shipped) // 2:
            _categories(message, "Salesforce")
        stored.append((emails.id if n < len(shipped) // 2 else inbox.id, message))

    for folder_id, node in stored:
        item, _ = it.prepare_new(node, owner=DEMO_MAILBOX, owner_name="Demo User")
        store.insert_item(new_id("AAMkI"), DEMO_MAILBOX, folder_id, etree.tostring(item))
    _real_calendars(store, calendar.id, tasks.id, dt.datetime.now(dt.UTC))
    return True


def _real_calendars(store: Store, calendar_id: str, tasks_id: str, now: dt.datetime) -> None:
    """Events, series (with a deleted and an edited occurrence) and a to-do from real
    iCalendar files, moved to the coming weeks."""
    for path in sorted((DEMO_DATA / "calendars").glob("*.ics")):
        for imported in ical.import_calendar(path.read_bytes(), now):
            item, _ = it.prepare_new(imported.element, owner=DEMO_MAILBOX, owner_name="Demo User")
            folder_id = calendar_id if imported.kind == "CalendarItem" else tasks_id
            master = store.insert_item(
                new_id("AAMkI"), DEMO_MAILBOX, folder_id, etree.tostring(item)
            )
            for original, fields in imported.exceptions:
                _edit_occurrence(store, master.id, original, fields)


def _edit_occurrence(
    store: Store, master_id: str, original: dt.datetime, fields: dict[str, str]
) -> None:
    """As a client edits one occurrence through EWS, so the exception is stored the same way."""
    ctx = ews.Context(store, DEMO_MAILBOX, DEMO_MAILBOX, impersonating=False)
    master = store.item(master_id)
    assert master is not None
    index = next(
        (i for i, start, _ in rec.occurrences(etree.fromstring(master.xml)) if start == original),
        None,
    )
    if index is None:
        raise ical.UnsupportedCalendar("an edited occurrence the series does not have")
    occurrence: StoredItem = ews._occurrence(ctx, master, index)
    xml = etree.fromstring(occurrence.xml)
    for name, value in fields.items():
        node = xml.find(t(name))
        if node is None:
            node = sub(xml, t(name))
        node.text = value
    it.sort_children(xml)
    ews._save_exception(ctx, occurrence, xml)
