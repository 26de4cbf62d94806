"""The production profile (`make up PROFILE=production`): PostgreSQL with a database per
service, a 3-node NATS cluster keeping 3 copies of every stream, two reconciler replicas; and
the same end-to-end tests as on the embedded default, run on it (a representative set: the
whole suite twice would double `make test`'s longest part)."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from concord.gateway.v1 import gateway_service_pb2
from concord_devstack.postgres import Postgres
from concord_testing import OtlpReceiver
from tests.e2e.clients import eventually
from tests.e2e.conftest import RunningStack, _alive, start_stack, stop_stack
from tests.e2e.test_push import (
    test_a_salesforce_edit_reaches_the_mailbox_on_its_own,
    test_a_saved_meeting_reaches_salesforce_on_its_own,
)
from tests.e2e.test_stack import (
    _gateway,
    test_every_service_reports_serving,
    test_sessions_lists_the_last_session,
    test_status_and_errors_show_a_quarantined_item_with_its_reason,
    test_unknown_mailbox_is_a_clear_error_that_leaks_nothing,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

# Collected here too, on this module's stack: the same tests, on the production profile.
__all__ = [
    "test_a_salesforce_edit_reaches_the_mailbox_on_its_own",
    "test_a_saved_meeting_reaches_salesforce_on_its_own",
    "test_every_service_reports_serving",
    "test_sessions_lists_the_last_session",
    "test_status_and_errors_show_a_quarantined_item_with_its_reason",
    "test_unknown_mailbox_is_a_clear_error_that_leaks_nothing",
]

SIX = ("gateway", "reconciler", "mail-connector", "crm-connector", "mapping", "linker")
STREAMS = {"SESSIONS", "EVENTS", "KV_LEASES"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with OtlpReceiver() as receiver:
        running = start_stack(tmp_path_factory.mktemp("production"), receiver, profile="production")
        try:
            yield running
        finally:
            stop_stack(running)


def _refresh(stack: RunningStack) -> dict[str, Any]:
    stack.info = json.loads(stack.up_file.read_text())
    return stack.info


def _jsz(node: dict[str, Any], query: str = "") -> dict[str, Any]:
    url = f"{node['monitor_url']}/jsz{query}"
    with urllib.request.urlopen(url, timeout=5) as reply:
        answer: dict[str, Any] = json.loads(reply.read())
    return answer


def _streams(node: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Concord's streams as `node` sees them: config and cluster (leader, replicas)."""
    answer = _jsz(node, "?streams=true&config=true")
    return {
        stream["name"]: stream
        for account in answer.get("account_details", [])
        for stream in account.get("stream_detail", [])
    }


def _whole(node: dict[str, Any]) -> bool:
    """`node` is in a 3-peer JetStream cluster with a leader."""
    try:
        meta = _jsz(node).get("meta_cluster", {})
    except OSError:
        return False
    return bool(meta.get("leader")) and meta.get("cluster_size") == 3


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _nats_clients(stack: RunningStack) -> set[str]:
    names: set[str] = set()
    for node in stack.info["nats"]["nodes"]:
        with urllib.request.urlopen(f"{node['monitor_url']}/connz?limit=1024", timeout=5) as r:
            names |= {c.get("name", "") for c in json.loads(r.read()).get("connections", [])}
    return names


def test_the_profile_runs_a_nats_cluster_two_reconcilers_and_postgres(
    stack: RunningStack,
) -> None:
    info = _refresh(stack)
    assert info["profile"] == "production"

    # Three nodes, one JetStream cluster: each sees the same leader and two peers besides itself.
    nodes = info["nats"]["nodes"]
    assert len(nodes) == 3
    assert info["nats"]["url"].split(",") == [node["url"] for node in nodes]
    metas = [_jsz(node)["meta_cluster"] for node in nodes]
    assert {meta["cluster_size"] for meta in metas} == {3}
    assert len({meta["leader"] for meta in metas}) == 1
    assert all(len(meta["replicas"]) == 2 for meta in metas)
    # Every stream the services made is kept on all three (NATS_JETSTREAM_REPLICAS=3).
    streams = _streams(nodes[0])
    assert set(streams) >= STREAMS
    assert {streams[name]["config"]["num_replicas"] for name in STREAMS} == {3}

    # Two reconcilers, each serving and connected to the cluster.
    replica = info["replicas"]["reconciler-2"]
    assert replica["service"] == "reconciler"
    reconcilers = [info["services"]["reconciler"]["address"], replica["address"]]
    assert all(_serving(address) for address in reconcilers)
    expected = {f"reconciler-{address.rsplit(':', 1)[1]}" for address in reconcilers}
    eventually(lambda: expected <= _nats_clients(stack), within=30)

    # Every service on its own PostgreSQL database, migrated there, the reconciler's holding
    # the sessions; no SQLite file.
    sync = stack.concord("sync", "demo", "--wait")
    assert sync.returncode == 0, sync.stdout + sync.stderr
    port = int(info["postgres"]["url"].rsplit(":", 1)[1].split("/")[0])
    postgres = Postgres(stack.var_dir, port)
    databases = info["postgres"]["databases"]
    assert set(databases) == set(SIX)
    for service, url in databases.items():
        database = url.rsplit("/", 1)[1]
        table = "alembic_version_" + service.replace("-", "_")
        found = f"SELECT count(*) FROM information_schema.tables WHERE table_name = '{table}'"
        assert postgres.psql(database, found) == "1", f"{service} did not migrate {database}"
    assert int(postgres.psql("concord_reconciler", "SELECT count(*) FROM sessions")) > 0
    assert list(stack.var_dir.glob("*.db")) == []


def test_both_reconcilers_run_sessions(stack: RunningStack) -> None:
    # The session queue is one work queue both replicas pull from: sessions land on either.
    both = {"reconciler", "reconciler-2"}

    def instances() -> set[str]:
        spans = stack.receiver.spans()
        return {
            str(s.resource.get("service.instance.id")) for s in spans if s.name == "sync.session"
        }

    for _ in range(20):
        if instances() >= both:
            break
        assert stack.concord("sync", "demo", "--wait").returncode == 0
    eventually(lambda: instances() >= both, within=20)


def test_a_sync_survives_killing_one_nats_node(stack: RunningStack) -> None:
    info = _refresh(stack)
    assert stack.concord("sync", "demo", "--wait").returncode == 0
    nodes = info["nats"]["nodes"]
    # The node leading the session queue: its loss costs the most (a new leader is elected).
    leader = _streams(nodes[0])["SESSIONS"]["cluster"]["leader"]
    [victim] = [node for node in nodes if node["name"] == leader]
    os.kill(int(victim["pid"]), signal.SIGKILL)
    started = time.monotonic()

    result = stack.concord("--json", "sync", "demo", "--wait", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    session = json.loads(result.stdout)
    session = session.get("session", session)
    assert session["state"].endswith("COMPLETED"), session
    print(f"a sync with {leader} killed completed {time.monotonic() - started:.1f} s after")

    # The supervisor starts the node again and it rejoins, its streams whole.
    def rejoined() -> bool:
        now = _refresh(stack)
        [node] = [n for n in now["nats"]["nodes"] if n["name"] == leader]
        return node["pid"] != victim["pid"] and _alive(int(node["pid"])) and _whole(node)

    eventually(rejoined, within=60, every=0.5)
    assert all(_whole(node) for node in stack.info["nats"]["nodes"])


def test_gateway_calls_reach_both_reconcilers_and_survive_one_dying(stack: RunningStack) -> None:
    info = _refresh(stack)
    channel, gateway = _gateway(stack)
    metadata = [("authorization", f"Bearer {info['demo']['token']}")]
    request = gateway_service_pb2.GetMailboxStatusRequest(mailbox="mailboxes/demo")

    def answering() -> set[str]:
        """The reconciler replicas that answered the gateway's reads of a mailbox."""
        return {
            str(s.resource.get("service.instance.id"))
            for s in stack.receiver.spans()
            if s.service_name == "reconciler"
            and s.kind == "SERVER"
            and s.name.endswith("ReconcilerService/GetMailbox")
        }

    with channel:

        def status() -> None:
            # The channel is synchronous; the stub is typed for grpc.aio (test_stack._gateway).
            response: Any = gateway.GetMailboxStatus(request, metadata=metadata, timeout=10)
            assert response.status.mailbox.name == "mailboxes/demo"

        for _ in range(10):
            status()
        # Spread over both: one connection to the first replica took every call before.
        eventually(lambda: answering() >= {"reconciler", "reconciler-2"}, within=20)

        # The replica every call went to before dies: the other answers every call while the
        # supervisor has not started it again (0.5 s, then its start-up).
        stack.kill_service("reconciler")
        started = time.monotonic()
        for _ in range(20):
            status()
        print(f"20 calls answered {time.monotonic() - started:.2f} s after the kill")
    stack.wait_restarted("reconciler")
    address = stack.info["services"]["reconciler"]["address"]

    def serving_again() -> bool:
        try:
            return _serving(address)
        except grpc.RpcError:
            return False  # not listening yet

    eventually(serving_again, within=60)
