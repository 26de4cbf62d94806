"""The Google harness of the mail-provider contract suite: the Google emulator over HTTPS, a
service account with domain-wide delegation, the provider under test, and the real client for
what "another client" does."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from concord_google_emulator.testing import RunningEmulator as GoogleEmulator
from concord_google_emulator.testing import build_service
from concord_mail_connector.adapters.google import GoogleProvider
from concord_mail_connector.domain.model import MailboxAccount, Provider
from concord_mail_connector.domain.provider import MailboxAccess


class GoogleHarness:
    def __init__(self, emulator: GoogleEmulator) -> None:
        self.emulator = emulator
        self.provider = GoogleProvider(
            max_workers=4, max_back_off=2, base_back_off=0.05, ca_file=emulator.ca_file
        )
        # One service account for the whole domain, as an org runs it.
        self.key: dict[str, Any] = emulator.service_account()
        self._services: list[Any] = []

    def new_mailbox(self) -> MailboxAccess:
        address = self.emulator.add_user(f"g-{uuid.uuid4().hex[:10]}@concord.test")
        settings = {
            "service_account_email": self.key["client_email"],
            "api_url": self.emulator.base,
        }
        now = datetime.now(UTC)
        account = MailboxAccount(
            address.split("@")[0], address, Provider.GOOGLE, settings, True, now, now, "e"
        )
        return MailboxAccess(account, json.dumps(self.key).encode())

    def service(self, mailbox: MailboxAccess, api: str) -> Any:
        made = build_service(self.emulator, self.key, api, mailbox.account.address)
        self._services.append(made)
        return made

    def lose_next_create_response(self) -> None:
        self.emulator.admin(
            "POST", "faults", {"kind": "drop_response", "method": "calendar.events.insert"}
        )

    def edit_elsewhere(self, mailbox: MailboxAccess, native_id: str, subject: str) -> None:
        if native_id.startswith("people/"):
            # As Exchange's harness edits a contact's subject: a field Concord does not map.
            people = self.service(mailbox, "people").people()
            person = people.get(resourceName=native_id, personFields="names").execute()
            people.updateContact(
                resourceName=native_id,
                updatePersonFields="nicknames",
                body={"etag": person["etag"], "nicknames": [{"value": subject}]},
            ).execute()
            return
        self.service(mailbox, "calendar").events().patch(
            calendarId="primary", eventId=native_id, body={"summary": subject}
        ).execute()

    def plant_unreadable_event(self, mailbox: MailboxAccess) -> None:
        # No client can write such an event, so it goes straight into the emulator's store.
        self.emulator.admin(
            "POST",
            f"users/{mailbox.account.address}/events",
            {
                "event": {
                    "summary": "Damaged",
                    "start": {"dateTime": "not-a-date"},
                    "end": {"dateTime": "2031-06-02T09:00:00Z"},
                }
            },
        )

    def plant_poison_event(self, mailbox: MailboxAccess) -> str:
        too_far = {"useDefault": False, "overrides": [{"method": "popup", "minutes": 2**31}]}
        planted = self.emulator.admin(
            "POST",
            f"users/{mailbox.account.address}/events",
            {
                "event": {
                    "summary": "Remind me in 4,000 years",
                    "start": {"dateTime": "2031-06-02T08:00:00Z"},
                    "end": {"dateTime": "2031-06-02T09:00:00Z"},
                    "reminders": too_far,
                }
            },
        )
        return str(planted["id"])

    def deliver(self, mailbox: MailboxAccess, where: str, mime: bytes, *categories: str) -> None:
        users = self.service(mailbox, "gmail").users()
        labels = {x["name"]: x["id"] for x in users.labels().list(userId="me").execute()["labels"]}
        wanted = {"shared": "Salesforce Emails", "inbox": "INBOX", "sent": "SENT"}[where]
        ids = []
        for name in (wanted, *categories):
            if name not in labels:
                labels[name] = (
                    users.labels().create(userId="me", body={"name": name}).execute()["id"]
                )
            ids.append(labels[name])
        raw = base64.urlsafe_b64encode(mime).decode()
        users.messages().insert(userId="me", body={"raw": raw, "labelIds": ids}).execute()

    async def close(self) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """Idempotent: the suite's harness fixture may close it, and this module's fixture does."""
        for made in self._services:
            made.close()
        self._services.clear()
        self.provider.shutdown()
        self.emulator.admin("DELETE", "faults")


@pytest.fixture(scope="module")
def google_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GoogleEmulator]:
    emu = GoogleEmulator(tmp_path_factory.mktemp("google")).start()
    yield emu
    emu.stop()


@pytest.fixture
def google_harness(google_emulator: GoogleEmulator) -> Iterator[GoogleHarness]:
    # Synchronous: the suite's own (async) harness fixture asks for it by name.
    made = GoogleHarness(google_emulator)
    yield made
    made.shutdown()
    # Every request the provider sent is one the discovery documents allow.
    assert google_emulator.admin("DELETE", "violations") == []
