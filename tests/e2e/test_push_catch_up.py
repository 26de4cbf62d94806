"""Issue #17 case 7: a meeting saved while no watch holds the mailbox's subscription — here,
while the mail-connector is killed — reaches Salesforce once the watch starts again, by the
catch-up hint its new subscription sends, not 30 minutes later by the schedule (the stack's
interval: nothing else would start a session)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import pytest
from exchangelib import CalendarItem, EWSDateTime  # type: ignore[import-untyped]

from tests.e2e.clients import demo_mailbox, demo_org, eventually, records
from tests.e2e.conftest import RunningStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_a_meeting_saved_while_the_mail_connector_is_down_is_synced_when_its_watch_starts(
    fresh_stack: RunningStack,
) -> None:
    stack = fresh_stack
    account = demo_mailbox(stack)
    sf = demo_org(stack)
    assert stack.concord("sync", "demo", "--wait").returncode == 0
    log = stack.var_dir / "log" / "mail-connector.log"
    eventually(lambda: "-> streaming" in log.read_text(errors="replace"), within=60)
    # Every session so far has ended (the first sync, the first watch's own catch-up).
    before = eventually(lambda: _ended_sessions(stack), within=60)

    stack.kill_service("mail-connector")
    subject = f"while-push-was-down-{uuid.uuid4().hex[:8]}"
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=2)
    CalendarItem(
        account=account,
        folder=account.calendar,
        subject=subject,
        categories=["Salesforce"],
        start=EWSDateTime.from_datetime(start),
        end=EWSDateTime.from_datetime(start + dt.timedelta(hours=1)),
    ).save(send_meeting_invitations="SendToNone")
    stack.wait_restarted("mail-connector")

    # The saved meeting raised no notification anyone heard: only the restarted watch's
    # catch-up hint starts the session that carries it.
    [event] = eventually(
        lambda: records(sf, f"SELECT Id, Subject FROM Event WHERE Subject = '{subject}'"),
        within=90,
        every=0.5,
    )
    assert event["Subject"] == subject
    known = {s["name"] for s in before}
    new = [s for s in _sessions(stack) if s["name"] not in known]
    assert new, "no session ran after the restart"
    assert {s.get("trigger") for s in new} == {"SESSION_TRIGGER_PUSH"}


def _sessions(stack: RunningStack) -> list[dict[str, Any]]:
    result = stack.concord("--json", "sessions", "demo")
    assert result.returncode == 0, result.stderr
    listed: list[dict[str, Any]] = json.loads(result.stdout).get("sessions", [])
    return listed


def _ended_sessions(stack: RunningStack) -> list[dict[str, Any]] | None:
    """The mailbox's sessions once every one of them has ended, else None."""
    sessions = _sessions(stack)
    ended = ("SESSION_STATE_COMPLETED", "SESSION_STATE_FAILED")
    return sessions if sessions and all(s.get("state") in ended for s in sessions) else None
