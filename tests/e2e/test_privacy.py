"""Mailbox contents and secrets never reach spans or logs (issue #8's tracing rule).

A session syncs the demo mailbox with the demo org; then every exported span (names,
attributes, events, status messages) and every service's log is searched for what the mailbox
holds — subjects, attendee and sender addresses, contact names and addresses — and for the
credentials and tokens the stack runs with.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from exchangelib.folders import Folder

from concord_testing import OtlpReceiver
from tests.e2e.clients import demo_mailbox
from tests.e2e.conftest import RunningStack, start_stack, stop_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SERVICES = ("gateway", "reconciler", "mail-connector", "crm-connector", "mapping", "linker")
# Shorter values (e.g. "Lunch") could match unrelated text by chance.
MIN_LENGTH = 8


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with OtlpReceiver() as receiver:
        running = start_stack(tmp_path_factory.mktemp("privacy"), receiver)
        try:
            yield running
        finally:
            stop_stack(running)


def mailbox_contents(stack: RunningStack) -> set[str]:
    """What the demo mailbox holds that must stay in it, read as its owner reads it."""
    account = demo_mailbox(stack)
    owner = stack.info["emulators"]["exchange"]["mailbox"].lower()
    found: set[str] = set()

    def add(value: object) -> None:
        text = str(value or "").strip()
        if len(text) >= MIN_LENGTH and text.lower() != owner:
            found.add(text)

    folder: Folder
    for folder in account.msg_folder_root.walk():
        if not folder.total_count:
            continue
        for item in folder.all():
            add(getattr(item, "subject", ""))
            sender = getattr(item, "sender", None)
            add(getattr(sender, "email_address", ""))
            for attendee in (getattr(item, "required_attendees", None) or []) + (
                getattr(item, "optional_attendees", None) or []
            ):
                add(attendee.mailbox.email_address)
            for address in getattr(item, "email_addresses", None) or []:
                add(address.email)
            add(getattr(item, "display_name", ""))
    return found


def secrets(stack: RunningStack) -> set[str]:
    exchange = stack.info["emulators"]["exchange"]
    salesforce = stack.info["emulators"]["salesforce"]
    values = {
        exchange["password"],
        exchange["service_account"]["password"],
        salesforce["password"],
        salesforce["client_secret"],
        stack.info["demo"]["token"],
        stack.info["demo"]["admin_token"],
    }
    return {v for v in values if v}


def haystack(stack: RunningStack) -> str:
    spans: list[Any] = [
        [s.trace_id, s.name, s.attributes, s.events, s.status_message]
        for s in stack.receiver.spans()
    ]
    logs = [
        (stack.var_dir / "log" / f"{service}.log").read_text(errors="replace")
        for service in SERVICES
        if (stack.var_dir / "log" / f"{service}.log").exists()
    ]
    return json.dumps(spans, default=str) + "\n".join(logs)


def test_a_session_leaves_no_mailbox_content_or_secret_in_spans_or_logs(
    stack: RunningStack,
) -> None:
    contents = mailbox_contents(stack)
    assert len(contents) >= 10, "the demo mailbox should hold real content to look for"
    result = stack.concord("--json", "sync", "demo", "--wait")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    session = data.get("session", data)
    assert session["state"].endswith("COMPLETED"), session
    trace_id = session["traceId"]
    # The session's spans reach the receiver in the exporters' next batches.
    stack.receiver.wait_for(
        lambda spans: any(s.trace_id == trace_id and s.name == "sync.session" for s in spans),
        timeout=30,
    )
    time.sleep(2)  # the rest of the batch, from the other services

    text = haystack(stack)
    assert trace_id
    assert trace_id in text  # the search does look at the session's spans
    leaked = sorted(value for value in contents | secrets(stack) if value in text)
    assert not leaked, f"found in spans or logs: {leaked[:5]}"


def test_the_search_finds_what_it_looks_for(stack: RunningStack, tmp_path: Path) -> None:
    # The check above can fail: a value written to a service log is found.
    log = stack.var_dir / "log" / "linker.log"
    before = log.read_text(errors="replace") if log.exists() else ""
    marker = "planted-subject-that-must-be-found"
    with log.open("a") as out:
        out.write(f'{{"message": "{marker}"}}\n')
    try:
        assert marker in haystack(stack)
    finally:
        log.write_text(before)
