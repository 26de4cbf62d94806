"""`concord` against a fake gateway: output, --json, exit codes, the one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
from grpc_health.v1 import health_pb2

from concord.common.v1 import resources_pb2 as res
from concord_cli.__main__ import main
from concord_testing import OtlpReceiver

if TYPE_CHECKING:
    from conftest import Stack  # type: ignore[import-not-found]

pytestmark = pytest.mark.integration

Capture = pytest.CaptureFixture[str]


@pytest.fixture(autouse=True)
def quiet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "CONCORD_GATEWAY",
        "CONCORD_TOKEN",
        "CONCORD_UP_FILE",
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


def test_status_lists_every_service_and_nats(stack: Stack, capsys: Capture) -> None:
    assert run(stack, "status") == 0
    out = capsys.readouterr().out
    for name in ("gateway", "reconciler", "mail-connector", "linker", "nats"):
        assert name in out
    assert out.count("SERVING") == 6
    assert "REACHABLE" in out


def test_status_json(stack: Stack, capsys: Capture) -> None:
    assert run(stack, "--json", "status") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True
    assert {s["status"] for s in data["services"]} == {"SERVING"}
    assert data["nats"]["status"] == "REACHABLE"


def test_status_fails_when_a_service_is_not_serving(stack: Stack, capsys: Capture) -> None:
    stack.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert run(stack, "status") == 1
    assert "NOT_SERVING" in capsys.readouterr().out


def test_status_fails_when_a_service_is_unreachable(
    stack: Stack, dead_address: str, capsys: Capture
) -> None:
    info = json.loads(stack.up_file.read_text())
    info["services"]["linker"]["address"] = dead_address
    info["nats"]["url"] = f"nats://{dead_address}"
    stack.up_file.write_text(json.dumps(info))
    assert run(stack, "--json", "status") == 1
    data = json.loads(capsys.readouterr().out)
    assert {s["name"]: s["status"] for s in data["services"]}["linker"] == "UNREACHABLE"
    assert data["nats"]["status"] == "UNREACHABLE"


def test_sync_prints_the_session_and_sends_the_token(stack: Stack, capsys: Capture) -> None:
    assert run(stack, "sync", "demo", "--wait") == 0
    out = capsys.readouterr().out
    assert "s-42" in out
    assert "COMPLETED" in out
    assert "0.21s" in out
    (request,) = stack.fake.requests
    assert (request.mailbox, request.wait) == ("mailboxes/demo", True)
    assert request.request_id
    assert stack.fake.authorizations == ["Bearer user-token-for-tests"]


def test_sync_timeout_is_the_wait_timeout(stack: Stack) -> None:
    assert run(stack, "sync", "mailboxes/demo", "--timeout", "2.5") == 0
    (request,) = stack.fake.requests
    assert request.wait
    assert request.wait_timeout.ToMilliseconds() == 2500


def test_sync_json_is_the_response(stack: Stack, capsys: Capture) -> None:
    assert run(stack, "--json", "sync", "demo", "--wait") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["session"]["state"] == "SESSION_STATE_COMPLETED"
    assert data["session"]["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert data["timedOut"] is False


def test_a_failed_session_exits_1_with_its_reason(stack: Stack, capsys: Capture) -> None:
    stack.fake.outcome = res.Session(
        session_id="s-9", state=res.SESSION_STATE_FAILED, failure_reason="mail-connector is down"
    )
    assert run(stack, "--json", "sync", "demo", "--wait") == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["session"]["failureReason"] == "mail-connector is down"
    assert captured.err == "concord: session s-9 FAILED: mail-connector is down\n"


def test_a_timed_out_wait_exits_1(stack: Stack, capsys: Capture) -> None:
    stack.fake.outcome = res.Session(session_id="s-9", state=res.SESSION_STATE_RUNNING)
    stack.fake.timed_out = True
    assert run(stack, "sync", "demo", "--wait") == 1
    assert "timed out" in one_error_line(capsys)


def test_an_unknown_mailbox_is_one_line_naming_the_code(stack: Stack, capsys: Capture) -> None:
    assert run(stack, "sync", "nope", "--wait") == 1
    assert one_error_line(capsys) == "concord: mailbox 'nope' not found (NOT_FOUND)"


def test_a_dead_gateway_is_one_line(stack: Stack, dead_address: str, capsys: Capture) -> None:
    assert run(stack, "--gateway", dead_address, "sessions", "demo") == 1
    assert (
        one_error_line(capsys) == f"concord: gateway at {dead_address} is unreachable (UNAVAILABLE)"
    )


def test_sessions_table_and_json(stack: Stack, capsys: Capture) -> None:
    assert run(stack, "sessions", "demo", "--limit", "2") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["SESSION", "s-42", "s-43"]
    assert stack.fake.requests[0].page_size == 2
    assert run(stack, "sessions", "demo", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert [s["sessionId"] for s in data["sessions"]] == ["s-42", "s-43"]


def test_mailboxes_follows_pages(stack: Stack, capsys: Capture) -> None:
    assert run(stack, "--json", "mailboxes") == 0
    data = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in data["mailboxes"]] == ["mailboxes/demo", "mailboxes/other"]
    assert run(stack, "mailboxes") == 0
    assert "other" in capsys.readouterr().out


def test_token_and_gateway_flags_override_the_up_file(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONCORD_TOKEN", "from-env")
    assert run(stack, "sessions", "demo") == 0
    assert run(stack, "--token", "from-flag", "--gateway", stack.address, "sessions", "demo") == 0
    assert stack.fake.authorizations == ["Bearer from-env", "Bearer from-flag"]


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
    # Flushed before exit: the spans are already there.
    spans = otlp_receiver.spans()
    (root,) = [s for s in spans if s.name == "concord sync"]
    assert root.service_name == "concord-cli"
    (call,) = [s for s in spans if s.kind == "CLIENT"]
    assert (call.trace_id, call.parent_span_id) == (root.trace_id, root.span_id)
    assert "SyncMailbox" in call.name
