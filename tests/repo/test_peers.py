"""One test environment: every in-memory stand-in for a Concord service is in concord_testing.

Tests of one service talk to the others through `concord_testing.peers` (issue #20). A fake
servicer written in a test file drifts from the shared one and from the service it stands for;
these checks refuse it, and refuse a second peer for the same service.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT / "libs/testing/src/concord_testing/peers"
SEARCHED = ("services", "tools", "libs", "emulators", "tests", "benchmarks")

# A class named like a stand-in for one of Concord's services (or for Salesforce behind one).
PEER_LIKE = re.compile(r"^_?Fake\w*(Mail|Crm|Salesforce|Mapping|Linker|Reconciler|Connector|Peer)")
# Classes subclassing a generated servicer outside concord_testing, and why each is no peer.
ALLOWED = {
    ("libs/protos/tests/test_protos.py", "_Reconciler"): (
        "checks the generated servicer base's asyncio typing itself; it stands in for no service"
    ),
    ("tools/devstack/tests/test_demo.py", "Peers"): (
        "the one stand-in for the gateway (registering the demo mailboxes, #17 case 5), landed "
        "beside the shared peers in the same merge; it moves to concord_testing as a GatewayPeer "
        "when a second test needs one"
    ),
}

pytestmark = pytest.mark.unit


def _base_name(base: ast.expr) -> str:
    """`ReconcilerServiceServicer` for `rec_grpc.ReconcilerServiceServicer` or the bare name."""
    if isinstance(base, ast.Attribute):
        return base.attr
    if isinstance(base, ast.Name):
        return base.id
    return ""


def peer_fakes(source: str) -> Iterator[tuple[str, str]]:
    """(class name, why) for each class in `source` that stands in for a peer."""
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        servicers = [b for b in map(_base_name, node.bases) if b.endswith("Servicer")]
        if servicers:
            yield node.name, f"subclasses the generated {servicers[0]}"
        elif PEER_LIKE.match(node.name):
            yield node.name, "is named like a stand-in for a Concord service"


def _test_files() -> Iterator[Path]:
    """Every Python file but product code (`src/`), where the real servicers live."""
    for top in SEARCHED:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).parts
            if "src" in parts or ".venv" in parts or "node_modules" in parts:
                continue
            yield path


def test_the_checker_finds_servicers_and_fakes() -> None:
    source = (
        "class FakeCrm:\n    pass\n"
        "class Mailbox(mail_grpc.MailConnectorServiceServicer):\n    pass\n"
        "class FakeClock:\n    pass\n"
    )
    assert [name for name, _ in peer_fakes(source)] == ["FakeCrm", "Mailbox"]


def test_no_peer_fake_is_defined_outside_concord_testing() -> None:
    found = []
    for path in _test_files():
        relative = path.relative_to(ROOT).as_posix()
        for name, why in peer_fakes(path.read_text()):
            if (relative, name) not in ALLOWED:
                found.append(f"{relative}: {name} {why}")
    assert found == [], "use (or extend) a peer from concord_testing.peers instead:\n" + "\n".join(
        found
    )


def test_each_service_has_one_peer() -> None:
    servicers: Counter[str] = Counter()
    services: Counter[str] = Counter()
    for path in sorted(PEERS.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            servicers.update(b for b in map(_base_name, node.bases) if b.endswith("Servicer"))
            for statement in node.body:
                if (
                    isinstance(statement, ast.Assign)
                    and [_base_name(t) for t in statement.targets] == ["service"]
                    and isinstance(statement.value, ast.Constant)
                ):
                    services[str(statement.value.value)] += 1
    assert servicers, f"found no peers in {PEERS}"
    assert [s for s, n in servicers.items() if n > 1] == []
    assert [s for s, n in services.items() if n > 1] == []
    assert set(services) == {"crm-connector", "mail-connector", "mapping", "linker", "reconciler"}
