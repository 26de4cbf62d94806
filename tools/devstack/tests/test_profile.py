"""The production profile's layout and children: three NATS nodes routed to each other,
PostgreSQL, a second reconciler; each service on its own database and on every NATS node."""

from __future__ import annotations

import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from concord_devstack.__main__ import _children
from concord_devstack.postgres import database_name
from concord_devstack.stack import (
    PRODUCTION,
    SERVICES,
    FreePorts,
    Layout,
    Process,
    Stack,
    StackError,
    die_with_parent,
)


def _production(tmp_path: Path) -> Layout:
    ports = FreePorts()
    layout = Layout.create(tmp_path, free_ports=ports, emulator_names=[], profile=PRODUCTION)
    ports.release()
    return layout


def test_the_production_layout_gives_every_new_part_a_port_of_its_own(tmp_path: Path) -> None:
    layout = _production(tmp_path)
    assert [node.name for node in layout.nats_nodes] == ["nats-1", "nats-2", "nats-3"]
    assert layout.replicas == {"reconciler-2": "reconciler"}
    assert layout.replicas_of("reconciler") == ["reconciler", "reconciler-2"]
    assert layout.replicas_of("linker") == ["linker"]
    assert layout.postgres_port is not None
    used = [*layout.ports.values(), layout.postgres_port]
    used += [p for n in layout.nats_nodes for p in (n.port, n.cluster_port, n.monitor_port)]
    assert len(set(used)) == len(used) == len(SERVICES) + 1 + 1 + 9
    for port in used:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
    # The services are given every node, so they connect while any one is down.
    assert layout.nats_url == ",".join(f"nats://127.0.0.1:{n.port}" for n in layout.nats_nodes)


def test_the_embedded_default_has_none_of_it(tmp_path: Path) -> None:
    layout = Layout.create(tmp_path, free_ports=None, emulator_names=[])
    assert (layout.nats_nodes, layout.postgres_port, layout.replicas) == ((), None, {})
    assert layout.nats_url == "nats://127.0.0.1:4222"
    with pytest.raises(StackError, match="unknown profile 'staging'"):
        Layout.create(tmp_path, free_ports=None, emulator_names=[], profile="staging")


def test_each_nats_node_routes_to_all_three_in_one_cluster(tmp_path: Path) -> None:
    layout = _production(tmp_path)
    stack = Stack(layout, {})
    routes = ",".join(f"nats://127.0.0.1:{n.cluster_port}" for n in layout.nats_nodes)
    for node in layout.nats_nodes:
        argv = stack.nats_node_process(node).argv
        assert argv[argv.index("-n") + 1] == node.name
        assert argv[argv.index("--routes") + 1] == routes
        assert argv[argv.index("--cluster_name") + 1] == "concord"
        assert argv[argv.index("--cluster") + 1] == f"nats://127.0.0.1:{node.cluster_port}"
        assert argv[argv.index("-sd") + 1] == str(tmp_path / node.name)
        assert "-js" in argv


def test_services_get_their_own_database_the_cluster_and_three_copies(tmp_path: Path) -> None:
    layout = _production(tmp_path)
    urls = {s: f"postgresql://postgres@127.0.0.1:1/{database_name(s)}" for s in SERVICES}
    stack = Stack(layout, {}, database_urls=urls)
    for service in SERVICES:
        env = stack.service_process(service).env
        prefix = service.upper().replace("-", "_") + "_"
        assert env[prefix + "DATABASE_URL"] == urls[service]
        assert env["NATS_URL"] == layout.nats_url
        assert env["NATS_JETSTREAM_REPLICAS"] == "3"
    second = stack.service_process("reconciler", "reconciler-2")
    assert second.name == "reconciler-2"
    assert second.env["RECONCILER_PORT"] == str(layout.ports["reconciler-2"])
    assert second.env["RECONCILER_DATABASE_URL"] == urls["reconciler"]  # one store, shared
    assert second.env["OTEL_SERVICE_NAME"] == "reconciler"
    assert second.env["OTEL_RESOURCE_ATTRIBUTES"] == "service.instance.id=reconciler-2"
    assert second.log_path.name == "reconciler-2.log"
    assert database_name("mail-connector") == "concord_mail_connector"


def test_callers_are_given_every_reconciler_replica(tmp_path: Path) -> None:
    layout = _production(tmp_path)
    env = Stack(layout, {}).service_process("gateway").env
    first, second = layout.address("reconciler"), layout.address("reconciler-2")
    assert env["RECONCILER_ADDR"] == f"ipv4:{first},{second}"
    assert env["LINKER_ADDR"] == layout.address("linker")


def test_on_the_embedded_default_services_keep_their_sqlite_and_one_copy(tmp_path: Path) -> None:
    stack = Stack(Layout.create(tmp_path, free_ports=None, emulator_names=[]), {})
    env = stack.service_process("reconciler").env
    assert "RECONCILER_DATABASE_URL" not in env
    assert "NATS_JETSTREAM_REPLICAS" not in env
    assert stack.service_process("gateway").env["RECONCILER_ADDR"] == "127.0.0.1:50051"


def test_a_server_run_as_another_user_still_dies_with_the_supervisor() -> None:
    argv = die_with_parent(["postgres"], user="postgres", death_signal=signal.SIGINT)
    # One setpriv: the user switch first, the parent-death signal (INT: fast shutdown) kept.
    assert argv[0].endswith("setpriv")
    assert argv[1:] == [
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        "--pdeathsig",
        "INT",
        "--",
        "postgres",
    ]


def _dying(name: str, tmp: Path) -> Process:
    return Process(name, [sys.executable, "-c", "raise SystemExit(3)"], {}, tmp / f"{name}.log")


def test_the_new_parts_are_restarted_like_the_rest(tmp_path: Path) -> None:
    stack = Stack(_production(tmp_path), {})
    names = ["postgres", "nats-2", "reconciler-2"]
    stack.processes = {name: _dying(name, tmp_path) for name in names}
    for process in stack.processes.values():
        process.start()
        assert process.popen is not None
        process.popen.wait(10)
    now = time.monotonic()
    assert [line.split()[1] for line in stack.revive(now)] == names
    restarted = stack.revive(now + 60)
    assert [line.split()[1] for line in restarted] == names
    assert all(line.startswith("~") for line in restarted)
    for process in stack.processes.values():
        assert process.popen is not None
        process.popen.wait(10)


def test_down_knows_every_child_of_the_production_profile() -> None:
    info = {
        "nats": {"pid": 1, "nodes": [{"pid": 1}, {"pid": 2}, {"pid": 3}]},
        "postgres": {"pid": 4},
        "replicas": {"reconciler-2": {"pid": 5}},
        "services": {"gateway": {"pid": 6}},
        "emulators": {"exchange": {"pid": 7}},
    }
    assert {child["pid"] for child in _children(info)} == {1, 2, 3, 4, 5, 6, 7}
