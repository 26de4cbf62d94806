"""Exchange Online through Graph, end to end (issue #13): a meeting created through Graph in the
demo-graph mailbox with the `Salesforce` category reaches Salesforce with nobody forcing a
session (the Graph emulator notifies the mail-connector's webhook, which publishes a hint, and
the reconciler's scheduler runs the session); a Salesforce edit comes back on the next session;
deletes go both ways; a private meeting never leaves the mailbox."""

from __future__ import annotations

import datetime as dt
import json
import ssl
import uuid
from typing import Any

import httpx
import pytest

from tests.e2e.clients import demo_org, eventually, records
from tests.e2e.conftest import RunningStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def graph_client(stack: RunningStack) -> tuple[httpx.Client, str]:
    """Graph as the demo tenant's app calls it: client credentials, then REST."""
    graph = stack.info["emulators"]["graph"]
    http = httpx.Client(verify=ssl.create_default_context(cafile=graph["ca_cert"]), timeout=10)
    token = http.post(
        graph["token_url"],
        data={
            "grant_type": "client_credentials",
            "client_id": graph["client_id"],
            "client_secret": graph["client_secret"],
            "scope": "https://graph.microsoft.com/.default",
        },
    ).json()["access_token"]
    http.headers["Authorization"] = f"Bearer {token}"
    return http, f"{graph['url']}/users/{graph['mailbox']}"


def meeting(subject: str, **extra: Any) -> dict[str, Any]:
    start = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None) + dt.timedelta(days=2)
    return {
        "subject": subject,
        "start": {"dateTime": start.isoformat(), "timeZone": "UTC"},
        "end": {"dateTime": (start + dt.timedelta(hours=1)).isoformat(), "timeZone": "UTC"},
        **extra,
    }


def test_a_graph_meeting_reaches_salesforce_on_its_own(stack: RunningStack) -> None:
    up = json.loads(stack.up_file.read_text())
    assert set(up["emulators"]["graph"]) >= {
        "url", "token_url", "tenant_id", "client_id", "client_secret", "mailbox"
    }  # fmt: skip
    sf = demo_org(stack)
    assert stack.concord("sync", "demo-graph", "--wait").returncode == 0
    log = stack.var_dir / "log" / "mail-connector.log"
    eventually(lambda: "push demo-graph: starting -> streaming" in log.read_text(), within=60)
    http, user = graph_client(stack)
    try:
        _meeting_reaches_salesforce(stack, http, user, sf)
    finally:
        http.close()


def _meeting_reaches_salesforce(
    stack: RunningStack, http: httpx.Client, user: str, sf: Any
) -> None:
    subject = f"graph-{uuid.uuid4().hex[:8]}"
    private = f"private-{uuid.uuid4().hex[:8]}"
    made = http.post(f"{user}/events", json=meeting(subject, categories=["Salesforce"]))
    assert made.status_code == 201, made.text
    hidden = meeting(private, categories=["Salesforce"], sensitivity="private")
    assert http.post(f"{user}/events", json=hidden).status_code == 201

    [event] = eventually(
        lambda: records(
            sf, f"SELECT Id, Subject, Concord_Link_Id__c FROM Event WHERE Subject = '{subject}'"
        ),
        within=60,
    )
    assert event["Concord_Link_Id__c"]
    sessions = stack.concord("--json", "sessions", "demo-graph")
    assert "SESSION_TRIGGER_PUSH" in sessions.stdout
    assert records(sf, f"SELECT Id FROM Event WHERE Subject = '{private}'") == []

    # A Salesforce edit comes back to the Graph event on the next session.
    sf.Event.update(event["Id"], {"Subject": f"{subject} (edited)"})
    assert stack.concord("sync", "demo-graph", "--wait").returncode == 0
    mine = f"{user}/events/{made.json()['id']}"
    eventually(lambda: http.get(mine).json().get("subject") == f"{subject} (edited)", within=30)
    # Deletes go both ways: in Salesforce → unshared in the mailbox (the org's default: the
    # user's meeting stays, the category that shared it goes) ...
    sf.Event.delete(event["Id"])
    assert stack.concord("sync", "demo-graph", "--wait").returncode == 0
    eventually(lambda: "Salesforce" not in http.get(mine).json()["categories"], within=30)
    # ... and in the mailbox → gone from Salesforce.
    other = f"graph-{uuid.uuid4().hex[:8]}"
    second = http.post(f"{user}/events", json=meeting(other, categories=["Salesforce"])).json()
    soql = f"SELECT Id FROM Event WHERE Subject = '{other}'"
    eventually(lambda: records(sf, soql), within=60)
    assert http.delete(f"{user}/events/{second['id']}").status_code == 204
    eventually(lambda: records(sf, soql) == [], within=60)
