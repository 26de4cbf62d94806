"""The two sides the chaos driver edits, as people would: a mailbox (Exchange through exchangelib,
or Graph over REST) and Salesforce (simple-salesforce, as the mailbox's owner's records).

Every meeting the driver makes carries a token at the start of its subject (`chaos<run>-007 v3`):
the token finds it on either side whatever Concord did to it, the version says which edit it
shows. A side answers what it holds for every token; the harness judges.
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections import defaultdict
from typing import Any, Protocol

import httpx
from exchangelib import Account, CalendarItem, EWSDateTime  # type: ignore[import-untyped]
from simple_salesforce.api import Salesforce

__all__ = ["CrmSide", "ExchangeSide", "GraphSide", "Side"]

_CATEGORY = "Salesforce"  # what shares a meeting with Salesforce (the default selection)


def _slot(n: int) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    start += dt.timedelta(days=3, minutes=30 * n)
    return start, start + dt.timedelta(minutes=30)


def _token(subject: str) -> str:
    return subject.split(" ", 1)[0]


class Side(Protocol):
    name: str

    def create(self, n: int, subject: str) -> None: ...

    def update(self, token: str, subject: str) -> bool:
        """False when the side holds no meeting of `token` (not mirrored here yet)."""
        ...

    def holdings(self, prefix: str) -> dict[str, list[str]]:
        """Every subject per token, for the tokens starting with `prefix`."""
        ...

    def close(self) -> None: ...


class ExchangeSide:
    def __init__(self, name: str, account: Account) -> None:
        self.name = name
        self.account = account

    def close(self) -> None:
        self.account.protocol.close()

    def create(self, n: int, subject: str) -> None:
        start, end = _slot(n)
        CalendarItem(
            account=self.account,
            folder=self.account.calendar,
            subject=subject,
            categories=[_CATEGORY],
            start=EWSDateTime.from_datetime(start),
            end=EWSDateTime.from_datetime(end),
        ).save(send_meeting_invitations="SendToNone")

    def update(self, token: str, subject: str) -> bool:
        found = list(self.account.calendar.filter(subject__startswith=f"{token} "))
        if not found:
            return False
        for item in found:  # more than one is a duplicate: the harness counts it
            item.subject = subject
            item.save(update_fields=["subject"], send_meeting_invitations="SendToNone")
        return True

    def holdings(self, prefix: str) -> dict[str, list[str]]:
        held: dict[str, list[str]] = defaultdict(list)
        for item in self.account.calendar.filter(subject__startswith=prefix).only("subject"):
            held[_token(item.subject)].append(item.subject)
        return dict(held)


class GraphSide:
    def __init__(self, name: str, info: dict[str, Any]) -> None:
        self.name = name
        self.http = httpx.Client(
            verify=ssl.create_default_context(cafile=info["ca_cert"]), timeout=30
        )
        token = self.http.post(
            info["token_url"],
            data={
                "grant_type": "client_credentials",
                "client_id": info["client_id"],
                "client_secret": info["client_secret"],
                "scope": "https://graph.microsoft.com/.default",
            },
        )
        token.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        self.user = f"{info['url']}/users/{info['mailbox']}"

    def close(self) -> None:
        self.http.close()

    def create(self, n: int, subject: str) -> None:
        start, end = _slot(n)
        made = self.http.post(
            f"{self.user}/events",
            json={
                "subject": subject,
                "categories": [_CATEGORY],
                "start": {"dateTime": start.replace(tzinfo=None).isoformat(), "timeZone": "UTC"},
                "end": {"dateTime": end.replace(tzinfo=None).isoformat(), "timeZone": "UTC"},
            },
        )
        made.raise_for_status()

    def _events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        url: str | None = f"{self.user}/events?$select=subject&$top=500"
        while url:
            page = self.http.get(url)
            page.raise_for_status()
            body = page.json()
            events += body["value"]
            url = body.get("@odata.nextLink")
        return events

    def update(self, token: str, subject: str) -> bool:
        found = [e for e in self._events() if str(e.get("subject", "")).startswith(f"{token} ")]
        for event in found:
            # A refused write (a throttled 429) is no edit: it raises, so the driver tries
            # again or counts its outcome unknown, never as made.
            url = f"{self.user}/events/{event['id']}"
            patched = self.http.patch(url, json={"subject": subject})
            patched.raise_for_status()
        return bool(found)

    def holdings(self, prefix: str) -> dict[str, list[str]]:
        held: dict[str, list[str]] = defaultdict(list)
        for event in self._events():
            subject = str(event.get("subject", ""))
            if subject.startswith(prefix):
                held[_token(subject)].append(subject)
        return dict(held)


class CrmSide:
    """One Salesforce user's Events (the owner Concord mirrors a mailbox for)."""

    def __init__(self, name: str, sf: Salesforce, owner_id: str) -> None:
        self.name = name
        self.sf = sf
        self.owner_id = owner_id

    def close(self) -> None:
        self.sf.session.close()

    def create(self, n: int, subject: str) -> None:
        start, end = _slot(n)
        self.sf.Event.create(  # type: ignore[operator]
            {
                "Subject": subject,
                "OwnerId": self.owner_id,
                "StartDateTime": start.isoformat(),
                "EndDateTime": end.isoformat(),
            }
        )

    def _query(self, like: str) -> list[dict[str, Any]]:
        soql = (
            f"SELECT Id, Subject FROM Event WHERE Subject LIKE '{like}%' "
            f"AND OwnerId = '{self.owner_id}'"
        )
        found: list[dict[str, Any]] = self.sf.query_all(soql)["records"]
        return found

    def update(self, token: str, subject: str) -> bool:
        found = self._query(f"{token} ")
        for record in found:
            self.sf.Event.update(record["Id"], {"Subject": subject})  # type: ignore[operator]
        return bool(found)

    def holdings(self, prefix: str) -> dict[str, list[str]]:
        held: dict[str, list[str]] = defaultdict(list)
        for record in self._query(prefix):
            held[_token(record["Subject"])].append(record["Subject"])
        return dict(held)
