"""The reconciler's shape: rooms that depend one way, an API over ports, readable modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "concord_reconciler"
PACKAGE = "concord_reconciler"
# Each room may import only the rooms before it.
ORDER = ["kernel", "mailboxes", "mirror", "sharing", "sessions"]
LONGEST = 600

pytestmark = pytest.mark.unit


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join((PACKAGE, *parts))] = path
    return found


def _imports(path: Path) -> set[str]:
    """The reconciler modules `path` imports (`from x import y` counts x.y when it is one)."""
    modules = _modules()
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE):
            found.add(node.module)
            found.update(
                f"{node.module}.{a.name}"
                for a in node.names
                if f"{node.module}.{a.name}" in modules
            )
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(PACKAGE))
    return found


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_rooms_depend_one_way() -> None:
    wrong = []
    for module, path in _modules().items():
        room = _room(module)
        if room not in ORDER:
            continue
        allowed = set(ORDER[: ORDER.index(room) + 1])
        wrong += [f"{module} -> {i}" for i in _imports(path) if _room(i) not in allowed]
    assert wrong == []


def test_the_api_talks_to_ports_never_to_adapters() -> None:
    wrong = [
        f"{module} -> {i}"
        for module, path in _modules().items()
        if _room(module) == "api"
        for i in _imports(path)
        if ".adapters" in i
    ]
    assert wrong == []


def test_domains_do_no_io() -> None:
    io = ("grpc", "sqlalchemy", "nats", "concord_events", "httpx", "concord_store")
    wrong = []
    for module, path in _modules().items():
        if ".domain" not in module:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            wrong += [f"{module} -> {n}" for n in names if n.split(".")[0] in io]
    assert wrong == []


def test_no_import_cycle() -> None:
    graph = {m: _imports(p) & set(_modules()) for m, p in _modules().items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt == node or nxt.startswith(node + "."):
                continue  # a package importing its own submodule
            if state.get(nxt) == 1:
                cycles.append([*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_long_modules_say_why() -> None:
    wrong = []
    for module, path in _modules().items():
        text = path.read_text()
        if text.count("\n") <= LONGEST or "migrations" in module:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if "long" not in doc.lower():
            wrong.append(f"{module}: {text.count(chr(10))} lines, no reason in its docstring")
    assert wrong == []
