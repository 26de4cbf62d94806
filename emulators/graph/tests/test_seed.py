"""The demo seed: the demo app and mailbox with the Exchange demo mailbox's content, real
calendars and mail included."""

from __future__ import annotations

import pathlib
import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from concord_graph_emulator.seed import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_MAILBOX,
    DEMO_TENANT,
)
from concord_graph_emulator.testing import AppCredentials, RunningEmulator

from .conftest import check, token_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    emu = RunningEmulator(tmp_path_factory.mktemp("demo"), seed=True).start()
    creds = AppCredentials(DEMO_TENANT, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
    token = token_for(emu, creds)["access_token"]
    client = httpx.Client(
        base_url=f"{emu.graph_url}/users/{DEMO_MAILBOX}",
        verify=ssl.create_default_context(cafile=emu.ca_cert),
        headers={"Authorization": f"Bearer {token}"},
    )
    yield client
    client.close()
    emu.stop()


def _all(client: httpx.Client, url: str, **params: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url:
        body = client.get(next_url, params=params or None).json()
        found += body["value"]
        next_url, params = body.get("@odata.nextLink"), {}
    return found


def test_the_demo_mailbox_has_the_exchange_demos_meetings_and_real_calendars(
    demo: httpx.Client,
) -> None:
    events = _all(demo, "/events", **{"$top": "50"})
    subjects = {str(e["subject"]) for e in events}
    assert {"Quarterly review with Acme", "Lunch (private)", "Weekly pipeline stand-up"} <= subjects
    # From the real iCalendar files: a weekly series with a deleted occurrence, a daily one with
    # an edited occurrence, an all-day invitation, meetings in Vienna and New York.
    assert {"test6", "test7", "Test meeting from BB", "artsprint 2012", "Test Event 1"} <= subjects
    test6 = next(e for e in events if e["subject"] == "test6")
    master = demo.get(f"/events/{test6['id']}", params={"$select": "cancelledOccurrences"}).json()
    assert len(master["cancelledOccurrences"]) == 1
    test7 = next(e for e in events if e["subject"] == "test7")
    window = {"startDateTime": "2000-01-01T00:00:00Z", "endDateTime": "2100-01-01T00:00:00Z"}
    instances = demo.get(f"/events/{test7['id']}/instances", params=window).json()["value"]
    assert [i["type"] for i in instances] == ["occurrence", "exception", "occurrence"]
    assert [check(e, "Event") for e in events] == [[]] * len(events)


def test_the_demo_mailbox_has_the_real_mail_thread_shared_by_folder_and_category(
    demo: httpx.Client,
) -> None:
    folders = _all(demo, "/mailFolders")
    shared = next(f for f in folders if f["displayName"] == "Salesforce Emails")
    filed = _all(demo, f"/mailFolders/{shared['id']}/messages", **{"$top": "50"})
    inbox = _all(demo, "/mailFolders/inbox/messages", **{"$top": "50"})
    thread = [m for m in filed + inbox if "notmuch" in str(m["subject"]).lower()]
    assert len(thread) == len(list((_DEMO / "mail").glob("*.eml")))
    assert {tuple(m["categories"]) for m in inbox if m in thread} == {("Salesforce",)}


_DEMO = pathlib.Path(__file__).resolve().parents[2] / "exchange/src/concord_exchange_emulator/demo"
