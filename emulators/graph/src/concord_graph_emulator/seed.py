"""The `demo` seed: the demo app registration and mailbox, with the content the Exchange
emulator's demo seed has (the same made-up meetings, tasks and contacts, and the same real
mail and calendars it ships, read from that package's `demo/` folder)."""

from __future__ import annotations

import datetime as dt
import pathlib
from email.message import EmailMessage
from typing import Any

from concord_graph_emulator import resources as res
from concord_graph_emulator import zones
from concord_graph_emulator.ical import import_calendar
from concord_graph_emulator.store import Item, Mailbox, Store, new_id

__all__ = [
    "DEMO_CLIENT_ID",
    "DEMO_CLIENT_SECRET",
    "DEMO_MAILBOX",
    "DEMO_TENANT",
    "seed_demo",
]

DEMO_MAILBOX = "demo@concord.test"
DEMO_TENANT = "6f1d5c1e-0000-4000-8000-00000000c0de"
DEMO_CLIENT_ID = "0c0c0c0c-0000-4000-8000-00000000a991"
DEMO_CLIENT_SECRET = "demo-graph-secret"
# The real data the Exchange emulator's seed ships (sources and licences in its README).
EXCHANGE_DEMO = (
    pathlib.Path(__file__).resolve().parents[3] / "exchange/src/concord_exchange_emulator/demo"
)


def _zoned(when: dt.datetime, zone: str) -> dict[str, str]:
    return {"dateTime": res.graph_datetime(when.replace(tzinfo=None)), "timeZone": zone}


def _event(box: Mailbox, **data: Any) -> dict[str, Any]:
    data.setdefault("organizer", {"emailAddress": {"name": "Demo User", "address": box.address}})
    data.setdefault("attendees", [])
    data["type"] = "seriesMaster" if data.get("recurrence") else "singleInstance"
    data.setdefault("iCalUId", "040000008200E00074C5B7101A82E008" + new_id("")[:32].upper())
    return data


def _attendee(name: str, address: str, response: str) -> dict[str, Any]:
    return {
        "type": "required",
        "emailAddress": {"name": name, "address": address},
        "status": {"response": response, "time": "0001-01-01T00:00:00Z"},
    }


def _mime(subject: str, sender: str, when: dt.datetime, n: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = DEMO_MAILBOX
    msg["Subject"] = subject
    msg["Date"] = when.strftime("%a, %d %b %Y %H:%M:%S +0000")
    msg["Message-ID"] = f"<demo-{n}@mail.acme.example>"
    msg.set_content(f"Hello, about: {subject}")
    return msg.as_bytes()


def seed_demo(store: Store, demo_dir: pathlib.Path = EXCHANGE_DEMO) -> Mailbox:
    store.add_app(DEMO_TENANT, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
    box = store.add_mailbox(DEMO_MAILBOX, "Demo User")
    calendar = box.well_known("calendar")
    tasks = box.well_known("defaultList")
    inbox = box.well_known("inbox")
    assert calendar is not None
    assert tasks is not None
    assert inbox is not None
    emails = store.add_folder(box, "mailFolder", "Salesforce Emails")
    contacts = store.add_folder(box, "contactFolder", "Salesforce Contacts")
    base = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for name, color in (("Salesforce", "preset4"), ("Team", "preset7")):
        box.categories.append({"id": new_id("cat"), "displayName": name, "color": color})

    def add(folder: str, kind: str, data: dict[str, Any], mime: bytes | None = None) -> None:
        store.insert(box, Item(new_id(), kind, folder, data, mime=mime))

    berlin, pacific = "W. Europe Standard Time", "Pacific Standard Time"
    review_start = (base + dt.timedelta(days=1, hours=14)).astimezone(zones.zone(berlin))
    add(calendar.id, "event", _event(
        box,
        subject="Quarterly review with Acme",
        body={"contentType": "text", "content": "Agenda: pipeline, renewals."},
        categories=["Salesforce"],
        start=_zoned(review_start, berlin),
        end=_zoned(review_start + dt.timedelta(hours=1), berlin),
        location={"displayName": "Acme HQ, Berlin", "locationType": "default"},
        attendees=[
            _attendee("Ada Lovelace", "ada@acme.example", "accepted"),
            _attendee("Grace Hopper", "grace@globex.example", "tentativelyAccepted"),
        ],
    ))  # fmt: skip
    lunch = (base + dt.timedelta(days=2, hours=11)).astimezone(zones.zone(pacific))
    add(calendar.id, "event", _event(
        box, subject="Lunch (private)", sensitivity="private",
        start=_zoned(lunch, pacific), end=_zoned(lunch + dt.timedelta(hours=1), pacific),
    ))  # fmt: skip
    add(calendar.id, "event", _event(
        box, subject="Team offsite", categories=["Salesforce", "Team"], isAllDay=True,
        start=_zoned(base + dt.timedelta(days=7), "UTC"),
        end=_zoned(base + dt.timedelta(days=8), "UTC"),
    ))  # fmt: skip
    eastern = "Eastern Standard Time"
    first = base + dt.timedelta(days=(7 - base.weekday()) % 7 or 7, hours=17)
    local = first.astimezone(zones.zone(eastern))
    add(calendar.id, "event", _event(
        box, subject="Weekly pipeline stand-up", categories=["Salesforce"],
        start=_zoned(local, eastern), end=_zoned(local + dt.timedelta(minutes=30), eastern),
        recurrence={
            "pattern": {"type": "weekly", "interval": 1, "firstDayOfWeek": "monday",
                        "daysOfWeek": [local.strftime("%A").lower()]},
            "range": {"type": "numbered", "startDate": local.date().isoformat(),
                      "numberOfOccurrences": 10},
        },
    ))  # fmt: skip
    for n, (title, due, status) in enumerate(
        [
            ("Send Acme the renewal quote", 3, "notStarted"),
            ("Follow up with Globex", 5, "inProgress"),
        ]
    ):
        add(tasks.id, "todoTask", {
            "title": title, "status": status, "categories": ["Salesforce"] if n == 0 else [],
            "dueDateTime": _zoned(base + dt.timedelta(days=due), "UTC"),
        })  # fmt: skip
    for given, surname, company, address in [
        ("Ada", "Lovelace", "Acme", "ada@acme.example"),
        ("Grace", "Hopper", "Globex", "grace@globex.example"),
        ("Alan", "Turing", "Initech", "alan@initech.example"),
    ]:
        add(contacts.id, "contact", {
            "givenName": given, "surname": surname, "displayName": f"{given} {surname}",
            "fileAs": f"{surname}, {given}", "companyName": company,
            "emailAddresses": [{"name": f"{given} {surname}", "address": address}],
        })  # fmt: skip
    made = [
        ("Renewal quote for Acme", "ada@acme.example", emails.id, True),
        ("Re: Globex onboarding", "grace@globex.example", emails.id, False),
        ("Initech intro", "alan@initech.example", inbox.id, True),
        ("Newsletter", "news@example.org", inbox.id, False),
    ]
    for n, (subject, sender, folder_id, tagged) in enumerate(made):
        when = base - dt.timedelta(days=n + 1, hours=3)
        _deliver(store, box, folder_id, _mime(subject, sender, when, n), tagged, when)
    # A real thread: the first posts filed in Salesforce Emails, the replies shared from the
    # Inbox by their category (as in the Exchange demo mailbox).
    shipped = sorted((demo_dir / "mail").glob("*.eml"))
    for n, path in enumerate(shipped):
        late = n >= len(shipped) // 2
        folder_id = inbox.id if late else emails.id
        _deliver(store, box, folder_id, path.read_bytes(), late, base - dt.timedelta(hours=n))
    # Real calendars: single meetings, a weekly series with a deleted occurrence, a daily one
    # with an edited occurrence, an all-day invitation with attendees, a to-do.
    for path in sorted((demo_dir / "calendars").glob("*.ics")):
        import_calendar(store, box, path.read_bytes(), dt.datetime.now(dt.UTC))
    return box


def _deliver(
    store: Store, box: Mailbox, folder: str, mime: bytes, tagged: bool, when: dt.datetime
) -> None:
    data = res.message_from_mime(mime, when)
    data["categories"] = ["Salesforce"] if tagged else []
    store.insert(box, Item(new_id(), "message", folder, data, mime=mime))
