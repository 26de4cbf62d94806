"""The Google demo user (issue #14): a meeting inserted through the Calendar API reaches
Salesforce with nobody forcing a session — the watch channel POSTs to the mail-connector's
receiver, which publishes a push hint, and the reconciler's scheduler requests the session."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import google_auth_httplib2  # type: ignore[import-untyped]
import httplib2  # type: ignore[import-untyped]
import pytest
from google.oauth2 import service_account
from googleapiclient.discovery import build  # type: ignore[import-untyped]
from simple_salesforce.api import SFType

from tests.e2e.clients import demo_org, eventually, records
from tests.e2e.conftest import RunningStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def calendar(stack: RunningStack) -> Any:
    """The real client, configured only from what `make up` wrote under emulators.google."""
    info = stack.info["emulators"]["google"]
    key = json.loads(Path(info["service_account_file"]).read_text())
    assert key["token_uri"] == info["token_uri"]
    credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
        key, scopes=["https://www.googleapis.com/auth/calendar"], subject=info["user"]
    )
    http = google_auth_httplib2.AuthorizedHttp(
        credentials, http=httplib2.Http(ca_certs=info["ca_cert"], timeout=10)
    )
    return build(
        "calendar",
        "v3",
        http=http,
        static_discovery=True,
        client_options={"api_endpoint": info["url"] + "calendar/v3/"},
    )


def test_an_inserted_meeting_reaches_salesforce_on_its_own(stack: RunningStack) -> None:
    sf = demo_org(stack)
    log = stack.var_dir / "log" / "mail-connector.log"
    eventually(
        lambda: "push demo-google: starting -> streaming" in log.read_text(errors="replace"),
        within=60,
    )

    def sessions() -> list[dict[str, str]]:
        listed = stack.concord("--json", "sessions", "demo-google", "--limit", "50")
        assert listed.returncode == 0, listed.stderr
        found: list[dict[str, str]] = json.loads(listed.stdout).get("sessions", [])
        return found

    def triggers() -> dict[str, str]:
        """Session name -> trigger, of the mailbox's last sessions."""
        return {s["name"]: s["trigger"] for s in sessions()}

    # At rest first: a session already queued or running would carry the meeting too, and
    # would not count as one started since.
    pending = ("SESSION_STATE_QUEUED", "SESSION_STATE_RUNNING")
    eventually(lambda: all(s.get("state") not in pending for s in sessions()), within=60)
    before = triggers()
    subject = f"google-pushed-{uuid.uuid4().hex[:8]}"
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=2)
    service = calendar(stack)
    service.events().insert(
        calendarId="primary",
        body={
            "summary": subject,
            "start": {"dateTime": start.isoformat(), "timeZone": "Europe/Paris"},
            "end": {
                "dateTime": (start + dt.timedelta(hours=1)).isoformat(),
                "timeZone": "Europe/Paris",
            },
        },
        sendUpdates="none",
    ).execute()
    service.close()
    [event] = eventually(
        lambda: records(
            sf, f"SELECT Id, Subject, Concord_Link_Id__c FROM Event WHERE Subject = '{subject}'"
        ),
        within=90,
    )
    assert event["Concord_Link_Id__c"]
    # The sessions since: a push started them, nobody forced one.
    since = {name: trigger for name, trigger in triggers().items() if name not in before}
    assert "SESSION_TRIGGER_PUSH" in since.values()
    assert "SESSION_TRIGGER_FORCE" not in since.values()


def test_edits_and_deletes_go_both_ways_and_a_private_event_stays(stack: RunningStack) -> None:
    sf = demo_org(stack)
    service = calendar(stack)
    events = service.events()
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=3)

    def meeting(subject: str, **extra: Any) -> dict[str, Any]:
        return {
            "summary": subject,
            "start": {"dateTime": start.isoformat()},
            "end": {"dateTime": (start + dt.timedelta(hours=1)).isoformat()},
            **extra,
        }

    def sync() -> None:
        done = stack.concord("sync", "demo-google", "--wait")
        assert done.returncode == 0, done.stderr

    subject = f"both-{uuid.uuid4().hex[:8]}"
    made = events.insert(calendarId="primary", body=meeting(subject)).execute()
    [event] = eventually(
        lambda: records(sf, f"SELECT Id FROM Event WHERE Subject = '{subject}'"), within=60
    )
    # simple-salesforce's SFType by name (its attribute access confuses the stubs).
    SFType(
        object_name="Event",
        session_id=sf.session_id,
        sf_instance=sf.sf_instance,
        sf_version=sf.sf_version,
        session=sf.session,
    ).update(event["Id"], {"Subject": f"{subject} edited"})

    def edited() -> bool | None:
        sync()
        got = events.get(calendarId="primary", eventId=made["id"]).execute()
        return got["summary"] == f"{subject} edited" or None

    eventually(edited, within=60, every=1)

    events.delete(calendarId="primary", eventId=made["id"]).execute()
    eventually(
        lambda: not records(sf, f"SELECT Id FROM Event WHERE Id = '{event['Id']}'") or None,
        within=60,
    )

    private = f"private-{uuid.uuid4().hex[:8]}"
    events.insert(calendarId="primary", body=meeting(private, visibility="private")).execute()
    sync()
    assert records(sf, f"SELECT Id FROM Event WHERE Subject = '{private}'") == []
    service.close()
