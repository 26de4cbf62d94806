"""Emulators `make up` runs beside the services, found by entry point, not by a list here.

An emulator package declares ``[project.entry-points."concord.emulators"] <name> = "pkg:spec"``
where ``spec(var_dir: Path, port: int) -> dict`` returns how to start it and what to publish:
``{"argv": [...], "ready_url": "...", "ca_cert": "<path>" | None, "info": {...}}``. The stack
starts it before the services, waits until ``ready_url`` answers 200, and writes ``info`` to
``var/up.json`` under ``emulators.<name>``. Adding an emulator touches only its own package.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

GROUP = "concord.emulators"
# Fixed ports for the embedded default, so a demo's URLs stay the same between runs.
DEFAULT_PORTS = {"salesforce": 50060, "exchange": 50061}
_FIRST_OTHER_PORT = 50070


@dataclass(frozen=True)
class EmulatorSpec:
    name: str
    argv: list[str]
    ready_url: str
    ca_cert: str | None
    info: dict[str, Any]


SpecFactory = Callable[[Path, int], dict[str, Any]]


def installed() -> list[tuple[str, SpecFactory]]:
    """The emulators installed in this environment, in name order."""
    found: list[tuple[str, SpecFactory]] = []
    for entry in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        try:
            found.append((entry.name, entry.load()))
        except (ImportError, AttributeError) as exc:
            problem = f"emulator {entry.name!r} cannot be loaded ({entry.value}): {exc}"
            raise ValueError(problem) from exc
    return found


def default_ports(names: list[str]) -> dict[str, int]:
    others = iter(range(_FIRST_OTHER_PORT, _FIRST_OTHER_PORT + 100))
    return {name: DEFAULT_PORTS.get(name) or next(others) for name in names}


def spec_of(name: str, factory: SpecFactory, var_dir: Path, port: int) -> EmulatorSpec:
    raw = factory(var_dir, port)
    try:
        return EmulatorSpec(
            name=name,
            argv=[str(arg) for arg in raw["argv"]],
            ready_url=str(raw["ready_url"]),
            ca_cert=str(raw["ca_cert"]) if raw.get("ca_cert") else None,
            info=dict(raw.get("info", {})),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"emulator {name!r} returned a malformed spec: {exc}") from exc


def is_ready(spec: EmulatorSpec) -> bool:
    """True once `ready_url` answers 200 (over TLS checked against the emulator's own CA)."""
    context = None
    if spec.ready_url.startswith("https:"):
        if spec.ca_cert is None or not Path(spec.ca_cert).exists():
            return False  # the emulator writes its CA on first start
        context = ssl.create_default_context(cafile=spec.ca_cert)
    try:
        with urllib.request.urlopen(spec.ready_url, timeout=1, context=context) as reply:
            return bool(reply.status == 200)
    except (OSError, urllib.error.URLError, ssl.SSLError):
        return False
