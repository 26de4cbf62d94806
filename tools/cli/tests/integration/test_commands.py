"""`concord` through the real gateway: output, --json, exit codes, one-line errors, hostile use."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
from grpc_health.v1 import health_pb2

from concord.common.v1 import resources_pb2 as res
from concord.reconciler.v1 import resources_pb2 as rres
from concord_cli.__main__ import main
from concord_rpc import Identity
from concord_testing import OtlpReceiver

if TYPE_CHECKING:
    from conftest import Stack  # type: ignore[import-not-found]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

Capture = pytest.CaptureFixture[str]

# As conftest.py mints them (it is not importable under --import-mode=importlib).
KEY = "cli-test-signing-key-0123456789-abcdefghij"


@pytest.fixture(autouse=True)
def quiet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "CONCORD_GATEWAY",
        "CONCORD_TOKEN",
        "CONCORD_UP_FILE",
        "CONCORD_MAILBOX_SECRET",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_TRACES_EXPORTER",
    ):
        monkeypatch.delenv(name, raising=False)


def run(stack: Stack, *argv: str) -> int:
    return main(["--up-file", str(stack.up_file), *argv])


def one_error_line(capsys: Capture) -> str:
    err = capsys.readouterr().err
    (line,) = err.splitlines()
    assert "Traceback" not in err
    return line


def token(sub: str, org: str, role: str, **changes: object) -> str:
    import time

    import jwt

    now = int(time.time())
    claims: dict[str, object] = {"iss": "concord", "aud": "concord-gateway", "sub": sub}
    claims |= {"org": org, "role": role}
    claims |= {"iat": now, "exp": now + 600} | changes
    key = str(claims.pop("key", KEY))
    return jwt.encode(claims, key, algorithm="HS256")


# -- status ----------------------------------------------------------------------------------


def test_status_lists_every_service_and_nats(stack: Stack, capsys: Capture) -> None:
    assert run(stack, "status") == 0
    out = capsys.readouterr().out
    for name in ("gateway", "reconciler", "mail-connector", "linker", "nats"):
        assert name in out
    assert out.count("SERVING") == 6
    assert "REACHABLE" in out


def test_a_cluster_is_reachable_while_one_of_its_nodes_is(
    stack: Stack, dead_address: str, capsys: Capture
) -> None:
    # The production profile's up.json lists every node of the NATS cluster, comma-separated.
    info = json.loads(stack.up_file.read_text())
    live = info["nats"]["url"]
    info["nats"]["url"] = f"nats://{dead_address},{live}"
    stack.up_file.write_text(json.dumps(info))
    assert run(stack, "--json", "status") == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    info["nats"]["url"] = f"nats://{dead_address}"
    stack.up_file.write_text(json.dumps(info))
    assert run(stack, "status") == 1
    assert "UNREACHABLE" in capsys.readouterr().out


def test_status_json_and_a_service_not_serving(stack: Stack, capsys: Capture) -> None:
    assert run(stack, "--json", "status") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True
    stack.set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
    assert run(stack, "status") == 1
    assert "NOT_SERVING" in capsys.readouterr().out


def test_status_shows_your_mailboxes_and_their_latest_error(stack: Stack, capsys: Capture) -> None:
    assert run(stack, "status") == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("MAILBOX")))
    assert lines[header + 1].split()[:4] == ["demo", "ACTIVE", "-", "1"]
    assert "UNKNOWN_TIME_ZONE: time zone 'Mars Standard Time' is not known" in lines[header + 1]
    assert len(lines) == header + 2  # the demo user's mailbox only
    assert run(stack, "--json", "status") == 0
    data = json.loads(capsys.readouterr().out)
    assert [m["mailbox"]["name"] for m in data["mailboxes"]] == ["mailboxes/demo"]
    assert data["mailboxes"][0]["itemErrorCount"] == 1


def test_status_with_a_bad_token_still_reports_health(stack: Stack, capsys: Capture) -> None:
    expired = token("demo-user", "demo", "user", exp=1_000_000)
    assert run(stack, "--token", expired, "status") == 0
    out = capsys.readouterr().out
    assert out.count("SERVING") == 6
    assert "mailboxes: the bearer token has expired (UNAUTHENTICATED)" in out


def test_status_of_a_mailbox_is_its_dashboard(stack: Stack, capsys: Capture) -> None:
    assert run(stack, "sync", "demo", "--wait") == 0
    capsys.readouterr()
    assert run(stack, "status", "demo") == 0
    out = capsys.readouterr().out
    assert "state        ACTIVE" in out
    assert "item errors  1" in out
    assert "UNKNOWN_TIME_ZONE" in out
    assert "time zone 'Mars Standard Time' is not known" in out
    assert "COMPLETED" in out  # the last session


# -- sync ------------------------------------------------------------------------------------


def test_sync_wait_shows_each_state_then_the_counts(stack: Stack, capsys: Capture) -> None:
    assert main(["--up-file", str(stack.up_file), "sync", "demo", "--wait"]) == 0
    out = capsys.readouterr().out.splitlines()
    progress = [line.split()[-1] for line in out[:3]]
    assert progress == ["QUEUED", "RUNNING", "COMPLETED"]
    block = "\n".join(out[3:])
    assert "state        COMPLETED" in block
    assert "changes      mail 2, crm 0" in block
    assert "crm writes   created 2" in block
    # Through the real gateway, as the demo user, signed for the reconciler.
    demo = Identity(subject="demo-user", org="demo", role="user")
    assert ("RequestSession", demo) in stack.callers()
    assert ("GetSession", demo) in stack.callers()


def test_sync_json_is_the_final_session_only(stack: Stack, capsys: Capture) -> None:
    assert run(stack, "--json", "sync", "demo", "--wait") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["session"]["state"] == "SESSION_STATE_COMPLETED"
    assert data["timedOut"] is False


def test_sync_without_wait_returns_the_queued_session(stack: Stack, capsys: Capture) -> None:
    assert run(stack, "sync", "mailboxes/demo") == 0
    assert "state        QUEUED" in capsys.readouterr().out


def test_a_failed_session_exits_1_with_its_reason(stack: Stack, capsys: Capture) -> None:
    stack.reconciler.outcome = rres.SESSION_STATE_FAILED
    stack.reconciler.failure_reason = "mail-connector is down"
    assert run(stack, "--json", "sync", "demo", "--wait") == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["session"]["failureReason"] == "mail-connector is down"
    assert captured.err == "concord: session s-1 FAILED: mail-connector is down\n"


def test_a_wait_that_runs_out_exits_8(stack: Stack, capsys: Capture) -> None:
    stack.reconciler.outcome = None  # stays RUNNING
    assert run(stack, "sync", "demo", "--timeout", "1.5") == 8
    assert "timed out" in one_error_line(capsys)


# -- hostile callers -------------------------------------------------------------------------


def test_another_users_another_orgs_and_a_missing_mailbox_are_one_refusal(
    stack: Stack, capsys: Capture
) -> None:
    lines = []
    for mailbox in ("colleague", "foreign", "nope"):
        assert run(stack, "sync", mailbox, "--wait") == 4
        lines.append(one_error_line(capsys).replace(mailbox, "X"))
    assert lines == ["concord: you may not act on mailbox 'X' (PERMISSION_DENIED)"] * 3
    assert not stack.reconciler.acted


@pytest.mark.parametrize(
    "bad",
    [
        token("demo-user", "demo", "user", exp=1_000_000),
        token("demo-user", "demo", "user", key="attacker-key-0123456789-abcdefghijk"),
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJyb290Iiwib3JnIjoiZGVtbyIsInJvbGUiOiJhZG1pbiJ9.",
    ],
    ids=["expired", "wrong-key", "alg-none"],
)
def test_a_bad_token_exits_3_without_echoing_it(stack: Stack, capsys: Capture, bad: str) -> None:
    assert run(stack, "--token", bad, "sessions", "demo") == 3
    line = one_error_line(capsys)
    assert "UNAUTHENTICATED" in line
    assert bad not in line
    assert stack.callers() == []


def test_no_token_is_a_usage_error(stack: Stack, capsys: Capture) -> None:
    stack.write_up(token=None)
    assert run(stack, "sessions", "demo") == 2
    assert "no token" in one_error_line(capsys)


def test_a_replayed_mutation_answers_as_the_first_time_and_acts_once(
    stack: Stack, capsys: Capture
) -> None:
    replay = ["--json", "--request-id", "r-1", "suspend", "demo"]
    assert run(stack, *replay, "--reason", "holiday") == 0
    first = json.loads(capsys.readouterr().out)
    assert run(stack, *replay, "--reason", "something else") == 0
    assert json.loads(capsys.readouterr().out) == first
    assert first["mailbox"]["suspendedReason"] == "holiday"
    assert stack.reconciler.acted == {"SuspendMailbox": 1}
    # Another caller with the same id is another request: it acts (the admin, same mailbox).
    assert run(stack, "--admin", *replay) == 0
    assert stack.reconciler.acted == {"SuspendMailbox": 2}


# -- item errors, retry, suspend, resume ------------------------------------------------------


def test_errors_show_the_reason_and_retry_releases_the_item(stack: Stack, capsys: Capture) -> None:
    assert run(stack, "errors", "demo") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["ITEM", "KIND", "SIDE", "REASON"]
    assert table[1].split()[:6] == ["e1", "CALENDAR_ITEM", "MAIL", "UNKNOWN_TIME_ZONE", "3", "yes"]
    assert run(stack, "--json", "errors", "demo", "--quarantined") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totalSize"] == 1

    assert run(stack, "retry", "demo/e1") == 0
    assert "released mailboxes/demo/itemErrors/e1; session s-1 QUEUED" in capsys.readouterr().out
    assert run(stack, "--json", "errors", "demo", "--quarantined") == 0
    assert json.loads(capsys.readouterr().out)["totalSize"] == 0


def test_retrying_an_item_of_another_users_mailbox_is_refused(
    stack: Stack, capsys: Capture
) -> None:
    assert run(stack, "retry", "colleague/e1") == 4
    assert "PERMISSION_DENIED" in one_error_line(capsys)
    assert run(stack, "retry", "not-an-item") == 2
    assert "<mailbox>/<item error>" in one_error_line(capsys)


def test_conflicts_show_both_values_and_resolve_sends_the_choice(
    stack: Stack, capsys: Capture
) -> None:
    assert run(stack, "conflicts", "demo") == 0
    table = [line.split("  ") for line in capsys.readouterr().out.splitlines()]
    rows = [[cell.strip() for cell in line if cell.strip()] for line in table]
    assert rows == [
        ["CONFLICT", "KIND", "FIELD", "MAILBOX VALUE", "SALESFORCE VALUE", "RESOLVED"],
        ["l1", "CALENDAR_ITEM", "Subject", "Pipeline review (moved)", "Pipeline review", "no"],
        ["l1", "CALENDAR_ITEM", "Location", '["Room 2"]', "-", "no"],
    ]

    argv = ("resolve", "demo/l1", "--take", "crm", "--field", "Subject=mail")
    assert run(stack, *argv) == 0
    out = capsys.readouterr().out
    assert "resolved mailboxes/demo/conflicts/l1; session s-1 QUEUED applies it" in out
    (sent,) = stack.reconciler.resolutions
    assert (sent.name, sent.take, [(c.field, c.take) for c in sent.fields]) == (
        "mailboxes/demo/conflicts/l1",
        res.SYNC_SIDE_CRM,
        [("Subject", res.SYNC_SIDE_MAIL)],
    )
    assert run(stack, "--json", "conflicts", "demo") == 0
    (listed,) = json.loads(capsys.readouterr().out)["conflicts"]
    assert listed["resolutionPending"] is True


def test_resolving_needs_a_side_and_another_users_conflict_is_refused(
    stack: Stack, capsys: Capture
) -> None:
    assert run(stack, "resolve", "demo/l1", "--take", "both") == 2
    assert "'mail' or 'crm'" in one_error_line(capsys)
    assert run(stack, "resolve", "demo/l1", "--take", "mail", "--field", "Subject") == 2
    assert "FIELD=mail|crm" in one_error_line(capsys)
    assert run(stack, "resolve", "l1", "--take", "mail") == 2
    assert "<mailbox>/<conflict>" in one_error_line(capsys)
    assert run(stack, "resolve", "colleague/l1", "--take", "mail") == 4
    assert "PERMISSION_DENIED" in one_error_line(capsys)
    assert run(stack, "conflicts", "colleague") == 4
    assert "PERMISSION_DENIED" in one_error_line(capsys)
    assert stack.reconciler.resolutions == []


def test_suspend_then_resume(stack: Stack, capsys: Capture) -> None:
    assert run(stack, "suspend", "demo", "--reason", "holiday") == 0
    assert "SUSPENDED (holiday)" in capsys.readouterr().out
    assert run(stack, "--json", "resume", "demo") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["mailbox"]["state"] == "MAILBOX_STATE_ACTIVE"
    assert data["session"]["state"] == "SESSION_STATE_QUEUED"


# -- mailboxes -------------------------------------------------------------------------------


def test_mailbox_add_needs_an_admin_and_list_shows_what_you_may_see(
    stack: Stack, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    add = [
        "mailbox",
        "add",
        "carol",
        "--owner",
        "carol",
        "--crm-user",
        "005C",
        "--address",
        "carol@demo.test",
        "--ews-url",
        "https://ews.test/EWS/Exchange.asmx",
        "--ews-username",
        "svc",
    ]
    assert run(stack, *add) == 4
    assert "PERMISSION_DENIED" in one_error_line(capsys)
    monkeypatch.setenv("CONCORD_MAILBOX_SECRET", "s3cret")
    assert run(stack, "--admin", *add) == 0
    assert "carol" in capsys.readouterr().out
    assert stack.reconciler.mailboxes["mailboxes/carol"].org == "orgs/demo"

    assert run(stack, "--json", "mailbox", "list") == 0
    mine = [m["name"] for m in json.loads(capsys.readouterr().out)["mailboxes"]]
    assert mine == ["mailboxes/demo"]
    assert run(stack, "--admin", "mailboxes") == 0
    org = capsys.readouterr().out
    assert "colleague" in org
    assert "carol" in org
    assert "foreign" not in org

    assert run(stack, "mailbox", "remove", "carol") == 4
    assert "PERMISSION_DENIED" in one_error_line(capsys)
    assert run(stack, "--admin", "mailbox", "remove", "carol") == 0
    assert "mailboxes/carol removed" in capsys.readouterr().out
    assert "mailboxes/carol" not in stack.reconciler.mailboxes


# -- settings --------------------------------------------------------------------------------


def set_org_settings(stack: Stack, *assignments: str) -> int:
    return run(stack, "--admin", "settings", "set", "--org", *assignments)


def test_user_settings_get_and_set(stack: Stack, capsys: Capture) -> None:
    assert run(stack, "settings", "set", "demo", "blacklist=spam.test,ann@x.test") == 0
    assert "blacklist    spam.test, ann@x.test" in capsys.readouterr().out
    assert run(stack, "--json", "settings", "get", "demo") == 0
    assert json.loads(capsys.readouterr().out)["settings"]["blacklist"] == [
        "spam.test",
        "ann@x.test",
    ]


def test_an_admin_locks_a_setting_and_the_user_cannot_change_it(
    stack: Stack, capsys: Capture
) -> None:
    assert (
        set_org_settings(
            stack, "locked_user_fields=blacklist", "conflict_policy=crm_wins", "sync_interval=15m"
        )
        == 0
    )
    out = capsys.readouterr().out
    assert re.search(r"^conflict_policy +crm_wins$", out, re.M)
    assert re.search(r"^sync_interval +15m$", out, re.M)
    assert re.search(r"^locked_user_fields +blacklist$", out, re.M)
    assert run(stack, "settings", "get", "demo") == 0
    assert "(locked by the org)" in capsys.readouterr().out
    assert run(stack, "settings", "set", "demo", "blacklist=x.test") == 6
    line = one_error_line(capsys)
    assert "locked" in line
    assert "FAILED_PRECONDITION" in line


def test_an_admin_turns_a_users_access_to_settings_off(stack: Stack, capsys: Capture) -> None:
    assert set_org_settings(stack, "settings_access_disabled_users=demo-user,someone-else") == 0
    out = capsys.readouterr().out
    assert re.search(r"^settings_access_disabled_users +demo-user, someone-else$", out, re.M)
    for command in (("get", "demo"), ("set", "demo", "blacklist=x.test")):
        assert run(stack, "settings", *command) == 4
        line = one_error_line(capsys)
        assert "turned off access to these settings" in line
        assert "PERMISSION_DENIED" in line
    assert run(stack, "--admin", "settings", "get", "demo") == 0
    assert re.search(r"^settings_access_disabled +true$", capsys.readouterr().out, re.M)


def test_org_settings_are_for_the_orgs_admin_only(stack: Stack, capsys: Capture) -> None:
    assert run(stack, "settings", "get", "--org") == 4
    assert "PERMISSION_DENIED" in one_error_line(capsys)
    assert run(stack, "--admin", "settings", "get", "--org-id", "globex") == 4
    assert "PERMISSION_DENIED" in one_error_line(capsys)
    assert run(stack, "--admin", "--json", "settings", "get", "--org") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["settings"]["name"] == "orgs/demo/settings"
    assert not stack.reconciler.acted


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["settings", "set", "demo", "nonsense=1"], "not a setting"),
        (["settings", "set", "demo", "locked_fields=blacklist"], "not a setting"),
        (["settings", "set", "demo", "settings_access_disabled=false"], "not a setting"),
        (["settings", "set", "demo"], "nothing to set"),
        (["--admin", "settings", "set", "--org", "conflict_policy=sometimes"], "one of"),
        (["--admin", "settings", "set", "--org", "sync_interval=soon"], "duration"),
        (["settings", "get", "demo", "--org"], "not both"),
        (["settings", "get"], "give a mailbox"),
    ],
)
def test_settings_usage_errors_exit_2(
    stack: Stack, capsys: Capture, argv: list[str], words: str
) -> None:
    assert run(stack, *argv) == 2
    assert words in one_error_line(capsys)
    assert not stack.reconciler.acted


def test_org_health_is_for_the_admin(stack: Stack, capsys: Capture) -> None:
    assert run(stack, "--admin", "health") == 0
    out = capsys.readouterr().out
    assert re.search(r"^state +DEGRADED$", out, re.M)
    assert re.search(r"^mailboxes +ACTIVE 2, SUSPENDED 1$", out, re.M)
    assert "1200 of 15000 used; Concord 300 (allowed 50%)" in out
    assert run(stack, "health") == 4
    assert "PERMISSION_DENIED" in one_error_line(capsys)
    assert run(stack, "--admin", "health", "--org-id", "globex") == 4
    capsys.readouterr()
    assert [method for method, _ in stack.callers()] == ["GetOrgHealth"]


# -- transport -------------------------------------------------------------------------------


def test_a_dead_gateway_exits_7_with_one_line(
    stack: Stack, dead_address: str, capsys: Capture
) -> None:
    assert run(stack, "--gateway", dead_address, "sessions", "demo") == 7
    assert (
        one_error_line(capsys) == f"concord: gateway at {dead_address} is unreachable (UNAVAILABLE)"
    )


def test_sessions_table_and_json(stack: Stack, capsys: Capture) -> None:
    # The first runs to its end, so the second is a session of its own (not joined to it).
    assert run(stack, "sync", "demo", "--wait") == 0
    assert run(stack, "sync", "demo") == 0
    capsys.readouterr()
    assert run(stack, "sessions", "demo", "--limit", "1") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["SESSION", "s-2"]
    assert run(stack, "sessions", "demo", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert [s["sessionId"] for s in data["sessions"]] == ["s-2", "s-1"]


def test_the_cli_traces_a_run_when_an_endpoint_is_set(
    stack: Stack, otlp_receiver: OtlpReceiver
) -> None:
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
    }
    result = subprocess.run(
        [sys.executable, "-m", "concord_cli", "--up-file", str(stack.up_file), "sync", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    spans = otlp_receiver.spans()
    (root,) = [s for s in spans if s.name == "concord sync"]
    assert root.service_name == "concord-cli"
    (call,) = [s for s in spans if s.kind == "CLIENT"]
    assert (call.trace_id, call.parent_span_id) == (root.trace_id, root.span_id)
    assert "SyncMailbox" in call.name
