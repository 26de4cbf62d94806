"""The demo seed and the `make up` hook: the same data as the Exchange demo, a key file that
stays valid across runs, and cursors of an earlier run that are stale."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

from concord_google_emulator.__main__ import service_account_file
from concord_google_emulator.app import Emulator
from concord_google_emulator.core import ApiError, Call
from concord_google_emulator.devstack import spec
from concord_google_emulator.seed import DEMO_USER, seed_demo

pytestmark = pytest.mark.unit


def call(emulator: Emulator, method: str, body: object = None, **params: object) -> Any:
    return emulator.handlers[method](
        Call(DEMO_USER, method, dict(params), body, {}, "https://127.0.0.1/")
    )


def test_the_demo_user_has_the_exchange_demo_data() -> None:
    emulator = Emulator()
    assert seed_demo(emulator)
    assert not seed_demo(emulator)
    events = call(emulator, "calendar.events.list", calendarId="primary", maxResults=2500)
    summaries = {str(e["summary"]) for e in events["items"]}
    # The hand-written meetings and those of the real iCalendar files both.
    assert {"Quarterly review with Acme", "Lunch (private)", "Team offsite"} <= summaries
    assert {"test6", "test7"} <= summaries
    items = events["items"]
    [lunch] = [e for e in items if e["summary"] == "Lunch (private)"]
    assert lunch["visibility"] == "private"
    assert any(e.get("recurrence") for e in items)
    assert any(e.get("recurringEventId") for e in items)  # the edited occurrence
    labels = call(emulator, "gmail.users.labels.list", userId="me")["labels"]
    names = {str(x["name"]) for x in labels}
    assert {"Salesforce", "Salesforce Emails"} <= names
    messages = call(emulator, "gmail.users.messages.list", userId="me", maxResults=500)
    assert len(messages["messages"]) >= 10
    people = call(
        emulator, "people.people.connections.list", resourceName="people/me", personFields="names"
    )
    assert people["totalPeople"] == 3


def test_the_key_file_survives_a_restart_and_old_cursors_do_not(tmp_path: pathlib.Path) -> None:
    first = Emulator()
    path = service_account_file(first, tmp_path, "https://127.0.0.1:1/token")
    key = json.loads(path.read_text())
    seed_demo(first)
    token = call(first, "calendar.events.list", calendarId="primary", maxResults=2500)[
        "nextSyncToken"
    ]
    second = Emulator()
    again = service_account_file(second, tmp_path, "https://127.0.0.1:2/token")
    reread = json.loads(again.read_text())
    assert (reread["private_key_id"], reread["token_uri"]) == (
        key["private_key_id"],
        "https://127.0.0.1:2/token",
    )
    assert key["client_email"] in second.issuer.accounts
    seed_demo(second)
    with pytest.raises(ApiError) as stale:
        call(second, "calendar.events.list", calendarId="primary", syncToken=token)
    assert stale.value.code == 410


def test_the_make_up_hook_names_what_a_client_needs(tmp_path: pathlib.Path) -> None:
    made = spec(tmp_path, 50999)
    info = made["info"]
    assert info["url"] == "https://127.0.0.1:50999/"
    assert info["token_uri"] == "https://127.0.0.1:50999/token"
    assert info["service_account_file"] == str(tmp_path / "google" / "service-account.json")
    assert info["user"] == DEMO_USER
    assert made["ca_cert"] == str(tmp_path / "google" / "tls" / "ca.pem")
    assert "--trust-ca" in made["argv"]
