"""A meeting saved in the mailbox reaches Salesforce with nobody forcing a session (issue #8):
the Exchange emulator streams the change, the mail-connector publishes a push hint, the
reconciler's scheduler requests a session, the session writes the Event."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import pytest
from exchangelib import CalendarItem, EWSDateTime  # type: ignore[import-untyped]
from simple_salesforce.api import SFType

from tests.e2e.clients import demo_mailbox, demo_org, eventually, records
from tests.e2e.conftest import RunningStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_a_saved_meeting_reaches_salesforce_on_its_own(stack: RunningStack) -> None:
    account = demo_mailbox(stack)
    sf = demo_org(stack)
    # Past the first (scheduled) sync, with the mailbox's subscription streaming: what follows
    # can only have been started by the push.
    assert stack.concord("sync", "demo", "--wait").returncode == 0
    log = stack.var_dir / "log" / "mail-connector.log"
    eventually(lambda: "-> streaming" in log.read_text(errors="replace"), within=60)
    subject = f"pushed-{uuid.uuid4().hex[:8]}"
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=2)
    CalendarItem(
        account=account,
        folder=account.calendar,
        subject=subject,
        categories=["Salesforce"],
        start=EWSDateTime.from_datetime(start),
        end=EWSDateTime.from_datetime(start + dt.timedelta(hours=1)),
    ).save(send_meeting_invitations="SendToNone")

    [event] = eventually(
        lambda: records(
            sf, f"SELECT Id, Subject, Concord_Link_Id__c FROM Event WHERE Subject = '{subject}'"
        ),
        within=60,
    )
    assert event["Concord_Link_Id__c"]
    sessions = stack.concord("--json", "sessions", "demo")
    assert sessions.returncode == 0, sessions.stderr
    assert "SESSION_TRIGGER_PUSH" in sessions.stdout


def test_the_dashboard_shows_push_active_and_the_next_scheduled_sync(stack: RunningStack) -> None:
    log = stack.var_dir / "log" / "mail-connector.log"
    eventually(lambda: "-> streaming" in log.read_text(errors="replace"), within=60)

    def status() -> dict[str, Any]:
        result = stack.concord("--json", "status", "demo")
        assert result.returncode == 0, result.stderr
        shown: dict[str, Any] = json.loads(result.stdout)["status"]
        return shown

    # While a session is pending (the push's catch-up, say) there is no next scheduled one:
    # the dashboard shows it once the mailbox is at rest.
    shown = eventually(lambda: (s := status()).get("nextSyncTime") and s, within=30)
    assert shown["pushState"] == "PUSH_STATE_ACTIVE"
    assert shown["mailbox"]["pushState"] == "PUSH_STATE_ACTIVE"


def test_a_salesforce_edit_reaches_the_mailbox_on_its_own(stack: RunningStack) -> None:
    """Issue #19: an Event saved in Salesforce streams out as a change event (the emulator's
    Pub/Sub API), crm-connector hints its owner's mailbox, the scheduler runs a session."""
    account = demo_mailbox(stack)
    sf = demo_org(stack)
    # A session of a stack just started may meet a peer past its deadline (a cold EWS
    # connection on a loaded machine) and fail, to be tried again: this test needs one done.
    eventually(lambda: stack.concord("sync", "demo", "--wait").returncode == 0, within=90, every=1)
    # The org streams once every one of its channels listens (each object's comes up on its
    # own), so the one Event saved from then on is hinted by its own channel.
    eventually(
        lambda: _change_stream(stack).get("state") == "CHANGE_STREAM_STATE_STREAMING", within=60
    )
    subject = _create_event(sf, "from-salesforce")
    found = eventually(
        lambda: list(account.calendar.filter(subject=subject)), within=120, every=0.5
    )
    assert [item.subject for item in found] == [subject]
    sessions = stack.concord("--json", "sessions", "demo")
    assert sessions.returncode == 0, sessions.stderr
    assert "SESSION_TRIGGER_PUSH" in sessions.stdout


def test_changes_made_while_crm_connector_is_killed_reach_the_mailbox_after_its_restart(
    fresh_stack: RunningStack,
) -> None:
    """Issue #19: kill -9 mid-stream loses no change. A first Event gives the stream a replay
    id; the second is saved while no replica streams; the restarted crm-connector takes its
    lease back and resumes from the replay id kept, so the second is hinted too (a stream
    started from "now" would miss it, and the schedule is 30 minutes away)."""
    stack = fresh_stack
    account = demo_mailbox(stack)
    sf = demo_org(stack)
    # A session of a stack just started may meet a peer past its deadline (a cold EWS
    # connection on a loaded machine) and fail, to be tried again: this test needs one done.
    eventually(lambda: stack.concord("sync", "demo", "--wait").returncode == 0, within=90, every=1)
    log = stack.var_dir / "log" / "crm-connector.log"
    # Every object's channel streaming, not only the first one to log it (a loaded machine
    # brings them up one by one).
    eventually(lambda: _change_stream(stack)["state"] == "CHANGE_STREAM_STATE_STREAMING", within=60)
    before = _create_event(sf, "before-kill")
    eventually(lambda: list(account.calendar.filter(subject=before)), within=60, every=0.5)

    stack.kill_service("crm-connector")
    during = _create_event(sf, "while-killed")
    stack.wait_restarted("crm-connector")
    found = eventually(lambda: list(account.calendar.filter(subject=during)), within=90, every=0.5)
    assert [item.subject for item in found] == [during]
    text = log.read_text(errors="replace")
    assert "resumed without a replay id" not in text  # resumed from one, not a full resync
    sessions = stack.concord("--json", "sessions", "demo")
    assert sessions.returncode == 0, sessions.stderr
    assert "SESSION_TRIGGER_PUSH" in sessions.stdout
    # The dashboard follows the new run, with the lag of the changes it handled.
    stream = eventually(
        lambda: (
            (s := _change_stream(stack)).get("state") == "CHANGE_STREAM_STATE_STREAMING"
            and "lag" in s
            and s
        ),
        within=30,
    )
    assert stream["org"] == f"orgs/{stack.info['demo']['org']}"


def _create_event(sf: Any, prefix: str) -> str:
    subject = f"{prefix}-{uuid.uuid4().hex[:8]}"
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=4)
    events = sf.Event
    assert isinstance(events, SFType)
    events.create(
        {
            "Subject": subject,
            "StartDateTime": start.isoformat(),
            "EndDateTime": (start + dt.timedelta(hours=1)).isoformat(),
        }
    )
    return subject


def _change_stream(stack: RunningStack) -> dict[str, Any]:
    result = stack.concord("--admin", "--json", "health")
    assert result.returncode == 0, result.stderr
    stream: dict[str, Any] = json.loads(result.stdout)["health"].get("changeStream", {})
    return stream
