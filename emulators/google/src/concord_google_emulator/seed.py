"""The `demo` seed: the Exchange emulator's demo mailbox, as a Google Workspace user has it.

The same meetings, tasks, contacts and messages as the Exchange seed (the made-up ones, the real
iCalendar files and the real mail thread that package ships, and real messages from a maildir
when given), written through the emulator's own API handlers so they are stored exactly as a
client's writes would be. Contacts go in the `Salesforce` group, shared messages carry the
`Salesforce` label or the `Salesforce Emails` one.
"""

from __future__ import annotations

import base64
import datetime as dt
import importlib.resources
import logging
import pathlib
from email.message import EmailMessage
from typing import Any

import icalendar

from concord_google_emulator.app import Emulator
from concord_google_emulator.core import ApiError, Call

__all__ = ["DEMO_USER", "seed_demo"]

DEMO_USER = "demo-google@concord.test"
# Enough real messages to page through, few enough to seed in well under a second.
REAL_MESSAGES = 24
_log = logging.getLogger(__name__)


def _demo_data() -> pathlib.Path:
    """The Exchange emulator's shipped demo data (sources and licences in its README)."""
    return pathlib.Path(str(importlib.resources.files("concord_exchange_emulator") / "demo"))


class _Client:
    """The emulator's handlers, called as the demo user (no HTTP, same code paths)."""

    def __init__(self, emulator: Emulator, user: str) -> None:
        self.emulator = emulator
        self.user = user

    def __call__(self, method: str, body: Any = None, **params: Any) -> Any:
        call = Call(self.user, method, params, body, {}, "https://127.0.0.1/")
        with self.emulator.lock:
            return self.emulator.handlers[method](call)


def _stamp(when: dt.datetime, zone: str) -> dict[str, str]:
    return {"dateTime": when.isoformat(), "timeZone": zone}


def _mime(subject: str, sender: str, to: str, when: dt.datetime, body: str, n: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = when.strftime("%a, %d %b %Y %H:%M:%S +0000")
    msg["Message-ID"] = f"<demo-{n}@mail.acme.example>"
    msg.set_content(body)
    return msg.as_bytes()


def seed_demo(emulator: Emulator, mail_dir: pathlib.Path | None = None) -> bool:
    """The demo user and its content; False when it was already there."""
    if DEMO_USER in emulator.users:
        return False
    emulator.add_user(DEMO_USER)
    client = _Client(emulator, DEMO_USER)
    base = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    _meetings(client, base)
    _real_calendars(client, base)
    _tasks(client, base)
    _contacts(client)
    _mail(client, base, mail_dir)
    return True


def _meetings(client: _Client, base: dt.datetime) -> None:
    review = base + dt.timedelta(days=1, hours=14)
    client(
        "calendar.events.insert",
        {
            "summary": "Quarterly review with Acme",
            "description": "Agenda: pipeline, renewals.",
            "location": "Acme HQ, Berlin",
            "start": _stamp(review, "Europe/Berlin"),
            "end": _stamp(review + dt.timedelta(hours=1), "Europe/Berlin"),
            "attendees": [
                {
                    "email": "ada@acme.example",
                    "displayName": "Ada Lovelace",
                    "responseStatus": "accepted",
                },
                {
                    "email": "grace@globex.example",
                    "displayName": "Grace Hopper",
                    "responseStatus": "tentative",
                },
            ],
        },
        calendarId="primary",
    )
    lunch = base + dt.timedelta(days=2, hours=11)
    client(
        "calendar.events.insert",
        {
            "summary": "Lunch (private)",
            "visibility": "private",
            "start": _stamp(lunch, "America/Los_Angeles"),
            "end": _stamp(lunch + dt.timedelta(hours=1), "America/Los_Angeles"),
        },
        calendarId="primary",
    )
    offsite = (base + dt.timedelta(days=7)).date()
    client(
        "calendar.events.insert",
        {
            "summary": "Team offsite",
            "start": {"date": offsite.isoformat()},
            "end": {"date": (offsite + dt.timedelta(days=1)).isoformat()},
        },
        calendarId="primary",
    )
    first = base + dt.timedelta(days=(7 - base.weekday()) % 7 or 7, hours=17)
    client(
        "calendar.events.insert",
        {
            "summary": "Weekly pipeline stand-up",
            "start": _stamp(first, "America/New_York"),
            "end": _stamp(first + dt.timedelta(minutes=30), "America/New_York"),
            "recurrence": ["RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=10"],
        },
        calendarId="primary",
    )


def _when(value: dt.date | dt.datetime, shift: dt.timedelta) -> dict[str, str]:
    if not isinstance(value, dt.datetime):
        return {"date": (value + shift).isoformat()}
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    zone = getattr(value.tzinfo, "key", None) or "UTC"
    return {"dateTime": (value + shift).isoformat(), "timeZone": zone}


def _ical_stamp(value: dt.date | dt.datetime, shift: dt.timedelta) -> str:
    if not isinstance(value, dt.datetime):
        return (value + shift).strftime("%Y%m%d")
    moved = value + shift
    if moved.tzinfo is None:
        moved = moved.replace(tzinfo=dt.UTC)  # floating times are read as UTC here
    return moved.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def _recurrence(component: Any, shift: dt.timedelta) -> list[str]:
    lines: list[str] = []
    rule = component.get("RRULE")
    if rule is not None:
        rule = icalendar.vRecur(dict(rule))
        if "UNTIL" in rule:
            rule["UNTIL"] = [u + shift for u in rule["UNTIL"]]
        lines.append("RRULE:" + rule.to_ical().decode())  # type: ignore[no-untyped-call]
    exdates = component.get("EXDATE")
    for group in exdates if isinstance(exdates, list) else [exdates] if exdates else []:
        values = [_ical_stamp(d.dt, shift) for d in group.dts]
        if values:
            kind = ";VALUE=DATE" if len(values[0]) == 8 else ""
            lines.append(f"EXDATE{kind}:" + ",".join(values))
    return lines


def _real_calendars(client: _Client, base: dt.datetime) -> None:
    """Events, series (with deleted and edited occurrences) and to-dos from real iCalendar
    files, moved by whole weeks into the coming weeks, as the Exchange seed does."""
    for path in sorted((_demo_data() / "calendars").glob("*.ics")):
        try:
            calendar = icalendar.Calendar.from_ical(path.read_bytes())
        except ValueError:
            _log.warning("demo calendar %s cannot be read", path.name)
            continue
        events = [c for c in calendar.walk("VEVENT") if c.get("DTSTART") is not None]
        if not events:
            continue
        starts = [c.decoded("DTSTART") for c in events]
        first = min(
            s
            if isinstance(s, dt.datetime) and s.tzinfo
            else dt.datetime.combine(
                s if not isinstance(s, dt.datetime) else s.date(), dt.time(), dt.UTC
            )
            for s in starts
        )
        weeks = max(0, (base - first).days // 7 + 1)
        shift = dt.timedelta(weeks=weeks)
        masters: dict[str, str] = {}
        for component in events:
            if component.get("RECURRENCE-ID") is not None:
                continue
            start = component.decoded("DTSTART")
            end = (
                component.decoded("DTEND")
                if component.get("DTEND")
                else start
                + (
                    component.decoded("DURATION")
                    if component.get("DURATION")
                    else dt.timedelta(hours=1)
                )
            )
            body: dict[str, Any] = {
                "summary": str(component.get("SUMMARY", "")),
                "description": str(component.get("DESCRIPTION", "")),
                "location": str(component.get("LOCATION", "")),
                "start": _when(start, shift),
                "end": _when(end, shift),
            }
            recurrence = _recurrence(component, shift)
            if recurrence:
                body["recurrence"] = recurrence
            try:
                made = client("calendar.events.insert", body, calendarId="primary")
            except ApiError as exc:
                _log.warning("demo event from %s refused: %s", path.name, exc.message)
                continue
            masters[str(component.get("UID", ""))] = made["id"]
        for component in events:
            original = component.get("RECURRENCE-ID")
            master = masters.get(str(component.get("UID", "")))
            if original is None or master is None:
                continue
            instance = f"{master}_{_ical_stamp(original.dt, shift)}"
            start = component.decoded("DTSTART")
            end = component.decoded("DTEND") if component.get("DTEND") else start
            patch = {
                "summary": str(component.get("SUMMARY", "")),
                "start": _when(start, shift),
                "end": _when(end, shift),
            }
            try:
                client("calendar.events.patch", patch, calendarId="primary", eventId=instance)
            except ApiError as exc:
                _log.warning("demo occurrence from %s refused: %s", path.name, exc.message)
        for todo in calendar.walk("VTODO"):
            due = todo.decoded("DUE") if todo.get("DUE") else None
            body = {
                "title": str(todo.get("SUMMARY", "")),
                "notes": str(todo.get("DESCRIPTION", "")),
            }
            if due is not None:
                day = (due.date() if isinstance(due, dt.datetime) else due) + shift
                body["due"] = f"{day.isoformat()}T00:00:00.000Z"
            client("tasks.tasks.insert", body, tasklist="@default")


def _tasks(client: _Client, base: dt.datetime) -> None:
    for subject, due in [("Send Acme the renewal quote", 3), ("Follow up with Globex", 5)]:
        day = (base + dt.timedelta(days=due)).date()
        client(
            "tasks.tasks.insert",
            {"title": subject, "due": f"{day.isoformat()}T00:00:00.000Z"},
            tasklist="@default",
        )


def _contacts(client: _Client) -> None:
    group = client("people.contactGroups.create", {"contactGroup": {"name": "Salesforce"}})
    for given, surname, company, address in [
        ("Ada", "Lovelace", "Acme", "ada@acme.example"),
        ("Grace", "Hopper", "Globex", "grace@globex.example"),
        ("Alan", "Turing", "Initech", "alan@initech.example"),
    ]:
        client(
            "people.people.createContact",
            {
                "names": [{"givenName": given, "familyName": surname}],
                "organizations": [{"name": company}],
                "emailAddresses": [{"value": address, "type": "work"}],
                "memberships": [
                    {"contactGroupMembership": {"contactGroupResourceName": group["resourceName"]}}
                ],
            },
            personFields="names",
        )


def _insert(client: _Client, raw: bytes, labels: list[str]) -> None:
    body = {"raw": base64.urlsafe_b64encode(raw).decode(), "labelIds": labels}
    client("gmail.users.messages.insert", body, userId="me")


def _mail(client: _Client, base: dt.datetime, mail_dir: pathlib.Path | None) -> None:
    shared = client("gmail.users.labels.create", {"name": "Salesforce"}, userId="me")["id"]
    folder = client("gmail.users.labels.create", {"name": "Salesforce Emails"}, userId="me")["id"]
    for n, (subject, sender, filed, tagged) in enumerate(
        [
            ("Renewal quote for Acme", "ada@acme.example", True, True),
            ("Re: Globex onboarding", "grace@globex.example", True, False),
            ("Initech intro", "alan@initech.example", False, True),
            ("Newsletter", "news@example.org", False, False),
        ]
    ):
        when = base - dt.timedelta(days=n + 1, hours=3)
        labels = [folder] if filed else ["INBOX"]
        if tagged:
            labels.append(shared)
        _insert(
            client, _mime(subject, sender, DEMO_USER, when, f"Hello, about: {subject}", n), labels
        )
    if mail_dir is not None:
        files = sorted(p for sub in ("cur", "new") for p in (mail_dir / sub).glob("*"))
        for n, path in enumerate(p for p in files[:REAL_MESSAGES] if p.is_file()):
            labels = [folder] if n % 3 else ["INBOX"]
            if n % 2 == 0:
                labels.append(shared)
            _insert(client, path.read_bytes(), labels)
    # A real thread: the first posts filed in Salesforce Emails, the replies shared from the
    # Inbox by their label.
    shipped = sorted((_demo_data() / "mail").glob("*.eml"))
    for n, path in enumerate(shipped):
        first_half = n < len(shipped) // 2
        _insert(client, path.read_bytes(), [folder] if first_half else ["INBOX", shared])
