"""The walking skeleton end to end: `make up`'s stack, the `concord` CLI, one trace per session."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from exchangelib import (  # type: ignore[import-untyped]
    Attendee,
    CalendarItem,
    EWSDateTime,
    Mailbox,
)
from exchangelib.folders import Folder  # type: ignore[import-untyped]
from simple_salesforce.api import SFType

from concord.common.v1 import resources_pb2
from concord.gateway.v1 import gateway_service_pb2, gateway_service_pb2_grpc
from concord.reconciler.v1 import resources_pb2 as rres
from concord_devstack.tokens import mint, signing_key
from concord_testing import OtlpReceiver, ReceivedSpan
from tests.e2e.clients import demo_mailbox, demo_org, records
from tests.e2e.conftest import BIN, RunningStack, _alive, _wait_gone, start_stack, stop_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SIX = {"gateway", "reconciler", "mail-connector", "crm-connector", "mapping", "linker"}
PEERS = SIX - {"gateway", "reconciler"}


def _session(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.stdout)
    session: dict[str, Any] = data.get("session", data)
    return session


def _ancestors(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> list[ReceivedSpan]:
    chain = []
    while span.parent_span_id and span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        chain.append(span)
    return chain


def test_every_service_reports_serving(stack: RunningStack) -> None:
    result = stack.concord("status")
    assert result.returncode == 0, result.stderr
    for name in SIX:
        assert name in result.stdout
    as_json = json.loads(stack.concord("--json", "status").stdout)
    assert as_json, "status --json printed nothing"
    print(f"stack reached SERVING in {stack.start_seconds:.1f}s")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    # Without push: the sessions here are the ones the tests force (test_push covers push).
    with OtlpReceiver() as receiver:
        running = start_stack(
            tmp_path_factory.mktemp("stack"), receiver, {"MAIL_CONNECTOR_PUSH_ENABLED": "false"}
        )
        try:
            yield running
        finally:
            stop_stack(running)


def save_meeting(stack: RunningStack) -> str:
    """A shared meeting with an attendee, so a session has something to map and to link."""
    account = demo_mailbox(stack)
    subject = f"traced-{uuid.uuid4().hex[:8]}"
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=3)
    CalendarItem(
        account=account,
        folder=account.calendar,
        subject=subject,
        categories=["Salesforce"],
        required_attendees=[Attendee(mailbox=Mailbox(email_address="ann@acme.example"))],
        start=EWSDateTime.from_datetime(start),
        end=EWSDateTime.from_datetime(start + dt.timedelta(hours=1)),
    ).save(send_meeting_invitations="SendToNone")
    return subject


def test_a_session_is_one_trace_across_all_six_services(stack: RunningStack) -> None:
    # The first (scheduled) sync is over; what the forced session finds is this meeting.
    assert stack.concord("sync", "demo", "--wait").returncode == 0
    save_meeting(stack)
    result = stack.concord("--json", "sync", "demo", "--wait")
    assert result.returncode == 0, result.stderr
    session = _session(result)
    assert session["state"].endswith("COMPLETED"), session
    trace_id = session["traceId"]

    def complete(spans: list[ReceivedSpan]) -> bool:
        mine = [s for s in spans if s.trace_id == trace_id]
        return {s.service_name for s in mine if s.kind == "SERVER"} >= SIX and any(
            s.name == "sync.session" for s in mine
        )

    stack.receiver.wait_for(complete, timeout=20)
    spans = stack.receiver.trace(trace_id)
    by_id = {s.span_id: s for s in spans}
    (root,) = [s for s in spans if s.name == "sync.session"]
    assert root.service_name == "reconciler"

    # The NATS hop: sync.session descends from the consumer span, whose parent is the publish
    # span, which descends from the gateway's handling of SyncMailbox.
    chain = _ancestors(root, by_id)
    kinds = [(s.service_name, s.kind) for s in chain]
    assert ("reconciler", "CONSUMER") in kinds, kinds
    assert ("reconciler", "PRODUCER") in kinds, kinds
    assert ("gateway", "SERVER") in kinds, kinds
    assert kinds.index(("reconciler", "CONSUMER")) < kinds.index(("reconciler", "PRODUCER"))

    # Every peer serves the reconciler under sync.session; a peer's own calls (the linker asking
    # crm-connector) hang below, in the same trace.
    # Outside the session, only the gateway's mailbox read reaches a peer (the mail-connector,
    # for the mailbox's push state): every other peer span hangs below sync.session.
    for peer in PEERS:
        served = [s for s in spans if s.service_name == peer and s.kind == "SERVER"]
        in_session = [s for s in served if root in _ancestors(s, by_id)]
        assert in_session, f"{peer} has no span under the session"
        for outside in set(map(id, served)) - set(map(id, in_session)):
            span = next(s for s in served if id(s) == outside)
            assert span.name.endswith("/ListSubscriptions"), span.name
        callers = set()
        for span in in_session:
            parent = by_id[span.parent_span_id or ""]
            assert parent.kind == "CLIENT"
            callers.add(parent.service_name)
        assert "reconciler" in callers, (peer, callers)


def test_sessions_lists_the_last_session(stack: RunningStack) -> None:
    synced = _session(stack.concord("--json", "sync", "demo", "--wait"))
    listing = stack.concord("--json", "sessions", "demo")
    assert listing.returncode == 0, listing.stderr
    assert synced["name"] in listing.stdout
    table = stack.concord("sessions", "demo")
    assert table.returncode == 0
    assert synced["name"].rsplit("/", 1)[-1] in table.stdout


def test_unknown_mailbox_is_a_clear_error_that_leaks_nothing(stack: RunningStack) -> None:
    # A user learns nothing of mailboxes that are not theirs, not even whether they exist:
    # an unknown mailbox is denied exactly like another user's.
    result = stack.concord("sync", "nope", "--wait")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "PERMISSION_DENIED" in lines[0]
    assert "Traceback" not in result.stderr


def _gateway(
    stack: RunningStack,
) -> tuple[grpc.Channel, gateway_service_pb2_grpc.GatewayServiceStub]:
    channel = grpc.insecure_channel(stack.info["services"]["gateway"]["address"])
    return channel, gateway_service_pb2_grpc.GatewayServiceStub(channel)  # type: ignore[arg-type]


def test_malformed_request_is_invalid_argument(stack: RunningStack) -> None:
    channel, gateway = _gateway(stack)
    token = stack.info["demo"]["token"]
    with channel, pytest.raises(grpc.RpcError) as raised:
        gateway.SyncMailbox(
            gateway_service_pb2.SyncMailboxRequest(mailbox="not a/mailbox name"),
            metadata=[("authorization", f"Bearer {token}")],
            timeout=10,
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_request_without_a_valid_token_is_refused(stack: RunningStack) -> None:
    channel, gateway = _gateway(stack)
    request = gateway_service_pb2.SyncMailboxRequest(mailbox="mailboxes/demo")
    with channel:
        for metadata in ([], [("authorization", "Bearer not-a-token")]):
            with pytest.raises(grpc.RpcError) as raised:
                gateway.SyncMailbox(request, metadata=metadata, timeout=10)
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "not-a-token" not in (raised.value.details() or "")


def test_a_dead_dependency_fails_the_session_with_its_reason(fresh_stack: RunningStack) -> None:
    fresh_stack.stop_service("mail-connector")
    result = fresh_stack.concord("--json", "sync", "demo", "--wait")
    assert result.returncode == 1
    session = _session(result)
    assert session["state"].endswith("FAILED"), session
    assert "mail-connector" in session["failureReason"]

    # Recorded, not lost: the session list shows it failed, with its reason.
    listing = json.loads(fresh_stack.concord("--json", "sessions", "demo").stdout)
    assert session["name"] in json.dumps(listing)
    assert "mail-connector" in json.dumps(listing)


def test_down_stops_every_process(fresh_stack: RunningStack) -> None:
    pids = fresh_stack.pids()
    assert all(_alive(pid) for pid in pids)
    down = subprocess.run(
        [str(BIN / "concord-devstack"), "--var-dir", str(fresh_stack.var_dir), "down"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert down.returncode == 0, down.stderr
    assert _wait_gone(fresh_stack.supervisor.pid, 10)
    left = [pid for pid in pids if not _wait_gone(pid, 10)]
    assert left == [], f"processes left behind: {left}"
    assert not fresh_stack.up_file.exists()


def test_status_and_errors_show_a_quarantined_item_with_its_reason(stack: RunningStack) -> None:
    sf = demo_org(stack)
    [owner] = records(
        sf,
        "SELECT Id FROM User WHERE Username = "
        f"'{stack.info['emulators']['salesforce']['username']}'",
    )
    start = dt.datetime.now(dt.UTC) + dt.timedelta(days=4)
    events = SFType("Event", sf.session_id, sf.sf_instance, "62.0", session=sf.session)
    bad = events.create(
        {
            "Subject": f"unreadable-{uuid.uuid4().hex[:6]}",
            "StartDateTime": start.isoformat(),
            "EndDateTime": (start + dt.timedelta(hours=1)).isoformat(),
            "OwnerId": owner["Id"],
            # Salesforce stores any text here; no recurrence mapping can read this one.
            "Recurrence2PatternText": "RRULE:FREQ=SOMETIMES;INTERVAL=x",
        }
    )
    synced = _session(stack.concord("--json", "sync", "demo", "--wait"))
    assert synced["state"].endswith("COMPLETED"), synced  # the rest of the session went on

    errors = stack.concord("--json", "errors", "demo")
    assert errors.returncode == 0, errors.stderr
    [error] = [e for e in json.loads(errors.stdout)["itemErrors"] if bad["id"] in json.dumps(e)]
    assert error["quarantined"]
    assert error["reason"]
    table = stack.concord("errors", "demo")
    assert error["reason"] in table.stdout
    status = stack.concord("status")
    assert status.returncode == 0, status.stderr
    assert error["reason"] in status.stdout


# -- mailbox contents and secrets never reach spans or logs (issue #8's tracing rule) -------

# Shorter values (e.g. "Lunch") could match unrelated text by chance.
MIN_LENGTH = 8


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
        for service in sorted(SIX)
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


def test_the_orgs_admin_sees_its_health_with_the_api_budget(stack: RunningStack) -> None:
    result = stack.concord("--admin", "--json", "health")
    assert result.returncode == 0, result.stderr
    health = json.loads(result.stdout)["health"]
    assert health["org"] == f"orgs/{stack.info['demo']['org']}"
    assert health["state"] in ("HEALTH_STATE_HEALTHY", "HEALTH_STATE_DEGRADED")
    assert int(health["budget"]["limit"]) > 0
    denied = stack.concord("health")  # a user, not the org's admin
    assert denied.returncode == 4, denied.stderr


def test_another_orgs_admin_is_not_told_a_mailbox_id_exists(stack: RunningStack) -> None:
    # Issue #17, case 6: registering `demo` (the demo org's) as another org's admin said
    # "mailboxes/demo already exists". Now it is answered like any mailbox not theirs.
    token = mint(signing_key(stack.var_dir), subject="root", org="globex", role="admin")
    metadata = [("authorization", f"Bearer {token}")]
    channel, gateway = _gateway(stack)
    with channel:
        with pytest.raises(grpc.RpcError) as taken:
            gateway.RegisterMailbox(
                gateway_service_pb2.RegisterMailboxRequest(
                    mailbox_id="demo",
                    mailbox=rres.Mailbox(
                        owner_user_id="carol",
                        crm_user_id="005000000000009AAA",
                        address="carol@globex.example",
                        provider=resources_pb2.MAIL_PROVIDER_EXCHANGE_EWS,
                    ),
                ),
                metadata=metadata,
                timeout=20,
            )
        with pytest.raises(grpc.RpcError) as missing:
            gateway.GetMailboxStatus(
                gateway_service_pb2.GetMailboxStatusRequest(mailbox="mailboxes/nope"),
                metadata=metadata,
                timeout=20,
            )
    assert taken.value.code() == missing.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (taken.value.details() or "").replace("demo", "X") == (
        missing.value.details() or ""
    ).replace("nope", "X")
    assert "exist" not in (taken.value.details() or "")


def test_a_huge_suspension_reason_is_refused_and_status_still_answers(
    stack: RunningStack,
) -> None:
    # Issue #17, case 4: a 20 MiB reason by a plain user was stored, and every later
    # `concord status` of the org failed with "Received message larger than max".
    channel, gateway = _gateway(stack)
    metadata = [("authorization", f"Bearer {stack.info['demo']['token']}")]
    with channel:
        with pytest.raises(grpc.RpcError) as refused:
            gateway.SuspendMailbox(
                gateway_service_pb2.SuspendMailboxRequest(
                    mailbox="mailboxes/demo", reason="x" * (20 << 20)
                ),
                metadata=metadata,
                timeout=20,
            )
        # A blocking channel answers the message itself (the stubs are typed for asyncio).
        demo = cast(
            gateway_service_pb2.GetMailboxStatusResponse,
            gateway.GetMailboxStatus(
                gateway_service_pb2.GetMailboxStatusRequest(mailbox="mailboxes/demo"),
                metadata=metadata,
                timeout=20,
            ),
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "reason" in (refused.value.details() or "")
    assert demo.status.mailbox.state != rres.MAILBOX_STATE_SUSPENDED
    status = stack.concord("status")
    assert status.returncode == 0, status.stderr


def test_a_second_make_up_over_the_same_var_syncs_with_this_runs_addresses(
    tmp_path: Path,
) -> None:
    """With --free-ports the emulators listen elsewhere on every run: the org's connection and
    the mailbox's account must follow, or every session of the second run fails."""
    with OtlpReceiver() as receiver:
        first = start_stack(tmp_path, receiver)
        try:
            assert first.concord("sync", "demo", "--wait").returncode == 0
            first_emulators = {name: e["url"] for name, e in first.info["emulators"].items()}
        finally:
            stop_stack(first)
        second = start_stack(tmp_path, receiver)
        try:
            second_emulators = {name: e["url"] for name, e in second.info["emulators"].items()}
            assert second_emulators != first_emulators, "the ports did not change; no test"
            result = second.concord("--json", "sync", "demo", "--wait")
            assert result.returncode == 0, result.stdout + result.stderr
            assert _session(result)["state"].endswith("COMPLETED")
        finally:
            stop_stack(second)
