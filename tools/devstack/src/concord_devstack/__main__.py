"""`concord-devstack up|down`: the whole system on embedded defaults, as `make up` runs it."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from concord_devstack import emulators
from concord_devstack.demo import register_demo
from concord_devstack.stack import (
    EMBEDDED,
    PROFILES,
    SERVICES,
    FreePorts,
    Layout,
    Stack,
    StackError,
    service_env,
)
from concord_devstack.tokens import (
    DEMO_MAILBOX,
    DEMO_ORG,
    DEMO_USER,
    mint,
    signing_key,
)
from concord_runtime.identity import shared_identity_key

UP_FILE = "up.json"
# The mail-connector's Graph webhook receiver, on the embedded default's fixed ports.
GRAPH_WEBHOOK_PORT = 50081
# The mail-connector's receiver for Google watch channels, on the embedded default.
GOOGLE_PUSH_PORT = 50069


def _var_dir(arg: str | None) -> Path:
    path = Path(arg or os.environ.get("CONCORD_VAR_DIR", "var")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def up(args: argparse.Namespace) -> int:
    var_dir = _var_dir(args.var_dir)
    up_path = var_dir / UP_FILE
    running = _running_supervisor(up_path)
    if running:
        print(f"concord is already running (pid {running}); `make down` stops it", file=sys.stderr)
        return 1
    up_path.unlink(missing_ok=True)

    started = time.monotonic()
    try:
        installed = emulators.installed()
    except ValueError as exc:
        print(f"make up failed: {exc}", file=sys.stderr)
        return 1
    ports = FreePorts() if args.free_ports else None
    layout = Layout.create(
        var_dir,
        free_ports=ports,
        emulator_names=[name for name, _ in installed],
        profile=args.profile,
    )
    key = signing_key(var_dir)
    specs = {
        name: emulators.spec_of(name, factory, var_dir, layout.emulator_ports[name])
        for name, factory in installed
    }
    extra_env = {"gateway": {"GATEWAY_AUTH_HS256_KEY": key}}
    if "salesforce" in specs and specs["salesforce"].ca_cert:
        # The emulator's own CA: the connector trusts it and nothing else for that org.
        extra_env["crm-connector"] = {"CRM_CONNECTOR_CA_BUNDLE": specs["salesforce"].ca_cert}
        pubsub = specs["salesforce"].info.get("pubsub_addr")
        if pubsub:
            # Salesforce changes stream from the emulator's Pub/Sub API (issue #19).
            extra_env["crm-connector"]["CRM_CONNECTOR_PUBSUB_ENDPOINT"] = str(pubsub)
    mail_env: dict[str, str] = {}
    if "graph" in specs and specs["graph"].ca_cert:
        mail_env.update(graph_env(specs["graph"].ca_cert, ports))
    if "google" in specs and specs["google"].ca_cert:
        # The Google emulator's CA, and a port for the receiver its watch channels POST to.
        mail_env["MAIL_CONNECTOR_GOOGLE_CA_FILE"] = specs["google"].ca_cert
        mail_env["MAIL_CONNECTOR_GOOGLE_PUSH_PORT"] = str(
            ports.take() if ports else GOOGLE_PUSH_PORT
        )
    if mail_env:
        extra_env["mail-connector"] = mail_env
    if ports:
        ports.release()  # every port is picked: the children may bind them now
    stack = Stack(layout, service_env(), extra_env=extra_env, emulators=specs)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        stack.start(timeout=args.timeout)
        user_token = mint(key, subject=DEMO_USER, org=DEMO_ORG, role="user")
        admin_token = mint(key, subject="demo-admin", org=DEMO_ORG, role="admin")
        register_demo(
            {name: layout.address(name) for name in ("gateway", "crm-connector", "mail-connector")},
            admin_token,
            {name: spec.info for name, spec in specs.items()},
            shared_identity_key(var_dir),
        )
    except (StackError, OSError, RuntimeError) as exc:
        print(f"make up failed: {exc}", file=sys.stderr)
        stack.stop()
        return 1

    info = _up_info(stack, user_token, admin_token)
    _write_json(up_path, info)
    _print_summary(info, time.monotonic() - started)

    reported: set[str] = set()
    while not stopping.wait(0.25):
        said = stack.revive()
        for line in said:
            print(line, flush=True)
        if any(line.startswith("~") for line in said):
            # Tools find services by up.json: the restarted ones have new pids.
            _write_json(up_path, _up_info(stack, user_token, admin_token))
        for process in stack.dead():
            if process.name in specs and process.name not in reported:
                reported.add(process.name)
                print(f"! {process.name} exited (code {process.exited()}); see {process.log_path}")
    print("stopping ...", flush=True)
    stack.stop()
    up_path.unlink(missing_ok=True)
    print("stopped.")
    return 0


def graph_env(ca_cert: str, free_ports: FreePorts | None) -> dict[str, str]:
    """The mail-connector trusts the Graph emulator's CA (for Graph and its login endpoint)
    and runs its Graph webhook receiver where the emulator's notifications reach it."""
    port = free_ports.take() if free_ports else GRAPH_WEBHOOK_PORT
    return {
        "MAIL_CONNECTOR_GRAPH_CA_BUNDLE": ca_cert,
        "MAIL_CONNECTOR_GRAPH_WEBHOOK_URL": f"http://127.0.0.1:{port}",
        "MAIL_CONNECTOR_GRAPH_WEBHOOK_HOST": "127.0.0.1",
        "MAIL_CONNECTOR_GRAPH_WEBHOOK_PORT": str(port),
    }


def _up_info(stack: Stack, user_token: str, admin_token: str) -> dict[str, Any]:
    layout = stack.layout
    return {
        "ready": True,
        "supervisor_pid": os.getpid(),
        "var_dir": str(layout.var_dir),
        "profile": layout.profile,
        "nats": _nats_info(stack),
        **_production_info(stack),
        "services": {
            name: {
                "address": layout.address(name),
                "pid": stack.processes[name].pid,
                "log": str(stack.processes[name].log_path),
            }
            for name in SERVICES
        },
        "emulators": {
            name: {**spec.info, "pid": stack.processes[name].pid, "ca_cert": spec.ca_cert}
            for name, spec in stack.emulators.items()
        },
        "demo": {
            "org": DEMO_ORG,
            "user": DEMO_USER,
            "mailbox": DEMO_MAILBOX,
            "token": user_token,
            "admin_token": admin_token,
        },
    }


def _nats_info(stack: Stack) -> dict[str, Any]:
    """NATS's URL (every node's, comma-separated, on a cluster) and the pid of its first node."""
    layout = stack.layout
    if not layout.nats_nodes:
        return {"url": layout.nats_url, "pid": stack.processes["nats"].pid}
    nodes = [
        {
            "name": node.name,
            "url": f"nats://{layout.host}:{node.port}",
            "cluster_url": f"nats://{layout.host}:{node.cluster_port}",
            "monitor_url": f"http://{layout.host}:{node.monitor_port}",
            "pid": stack.processes[node.name].pid,
            "log": str(stack.processes[node.name].log_path),
        }
        for node in layout.nats_nodes
    ]
    return {"url": layout.nats_url, "pid": nodes[0]["pid"], "nodes": nodes}


def _production_info(stack: Stack) -> dict[str, Any]:
    """PostgreSQL and the services' extra replicas, when the profile runs them."""
    layout = stack.layout
    info: dict[str, Any] = {}
    postgres = layout.postgres
    if postgres is not None:
        info["postgres"] = {
            "url": postgres.url("postgres"),
            "pid": stack.processes["postgres"].pid,
            "data_dir": str(postgres.data_dir),
            "log": str(stack.processes["postgres"].log_path),
            "databases": stack.database_urls,
        }
    if layout.replicas:
        info["replicas"] = {
            name: {
                "service": service,
                "address": layout.address(name),
                "pid": stack.processes[name].pid,
                "log": str(stack.processes[name].log_path),
            }
            for name, service in layout.replicas.items()
        }
    return info


def _children(info: dict[str, Any]) -> list[dict[str, Any]]:
    """Every child process up.json names."""
    return [
        info["nats"],
        *info["nats"].get("nodes", []),
        *([info["postgres"]] if "postgres" in info else []),
        *info.get("replicas", {}).values(),
        *info["services"].values(),
        *info["emulators"].values(),
    ]


def _write_json(path: Path, data: dict[str, Any]) -> None:
    # Written atomically: readers (the CLI, tests) never see half a file.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.chmod(0o600)
    tmp.replace(path)


def _print_summary(info: dict[str, Any], seconds: float) -> None:
    print(f"concord is up in {seconds:.1f}s — every service reports SERVING\n")
    print(f"  {'profile':<16} {info['profile']}")
    for node in info["nats"].get("nodes", []):
        print(f"  {node['name']:<16} {node['url']:<22} log: {node['log']}")
    if not info["nats"].get("nodes"):
        print(f"  {'nats':<16} {info['nats']['url']}")
    if "postgres" in info:
        pg = info["postgres"]
        print(f"  {'postgres':<16} {pg['url']:<22} log: {pg['log']}")
    for name, svc in [*info["services"].items(), *info.get("replicas", {}).items()]:
        print(f"  {name:<16} {svc['address']:<22} log: {svc['log']}")
    for name, emulator in info["emulators"].items():
        print(f"  {name + ' (emulator)':<16} {emulator.get('url', '')}")
    print(
        f"\n  demo mailbox '{info['demo']['mailbox']}' registered for user {info['demo']['user']}"
    )
    print(f"  state and tokens: {Path(info['var_dir']) / UP_FILE}\n")
    print("Try:  .venv/bin/concord status")
    print("      .venv/bin/concord sync demo --wait")
    print("      .venv/bin/concord sessions demo")
    print("Ctrl-C (or `make down`) stops everything.", flush=True)


def _running_supervisor(up_path: Path) -> int | None:
    try:
        pid = int(json.loads(up_path.read_text())["supervisor_pid"])
    except (OSError, ValueError, KeyError):
        return None
    try:
        os.kill(pid, 0)
    except OSError:
        return None
    return pid


def down(args: argparse.Namespace) -> int:
    up_path = _var_dir(args.var_dir) / UP_FILE
    pid = _running_supervisor(up_path)
    if pid is None:
        print("concord is not running")
        up_path.unlink(missing_ok=True)
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            print("stopped.")
            return 0
        time.sleep(0.1)
    # The supervisor did not stop in time: take its children down by hand.
    with contextlib.suppress(OSError):
        info = json.loads(up_path.read_text())
        for child in _children(info):
            with contextlib.suppress(OSError):
                os.kill(int(child["pid"]), signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    print("stopped (forced).")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="concord-devstack", description=__doc__)
    parser.add_argument("--var-dir", help="state directory (default: $CONCORD_VAR_DIR or ./var)")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start everything and wait for Ctrl-C")
    p_up.add_argument("--free-ports", action="store_true", help="use free ports, not defaults")
    p_up.add_argument("--timeout", type=float, default=120.0, help="seconds to reach SERVING")
    p_up.add_argument(
        "--profile",
        choices=PROFILES,
        default=EMBEDDED,
        help="embedded (default: one NATS server, SQLite) or production (PostgreSQL, "
        "a 3-node NATS cluster, two reconcilers)",
    )
    p_up.set_defaults(func=up)
    p_down = sub.add_parser("down", help="stop what `up` started")
    p_down.add_argument("--timeout", type=float, default=30.0)
    p_down.set_defaults(func=down)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
