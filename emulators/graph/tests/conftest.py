"""The emulator in-process over HTTPS, and a Graph client for it: msal for the token (the
provider's library), httpx for REST."""

from __future__ import annotations

import json
import pathlib
import re
import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import msal  # type: ignore[import-untyped]
import pytest
import requests

from concord_graph_emulator.testing import AppCredentials, RunningEmulator


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    emu = RunningEmulator(tmp_path_factory.mktemp("graph")).start()
    yield emu
    emu.stop()


def token_for(emu: RunningEmulator, creds: AppCredentials, secret: str | None = None) -> Any:
    session = requests.Session()
    # REQUESTS_CA_BUNDLE would otherwise override the emulator's CA.
    session.trust_env = False
    session.verify = emu.ca_cert
    app = msal.ConfidentialClientApplication(
        creds.client_id,
        client_credential=secret or creds.client_secret,
        authority=emu.authority(creds.tenant_id),
        http_client=session,
        instance_discovery=False,
    )
    try:
        return app.acquire_token_for_client(scopes=["https://graph.microsoft.com/.default"])
    finally:
        session.close()


class Graph:
    """A mailbox of its own and an authorised client, per test."""

    def __init__(self, emu: RunningEmulator) -> None:
        self.emu = emu
        self.creds = emu.new_app()
        self.address = emu.new_mailbox()
        token = token_for(emu, self.creds)["access_token"]
        self.http = httpx.Client(
            base_url=emu.graph_url,
            verify=ssl.create_default_context(cafile=emu.ca_cert),
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        self.user = f"/users/{self.address}"

    def event(self, subject: str = "Kick-off", **extra: Any) -> dict[str, Any]:
        body = {
            "subject": subject,
            "start": {"dateTime": "2031-06-02T10:00:00", "timeZone": "Europe/Paris"},
            "end": {"dateTime": "2031-06-02T11:00:00", "timeZone": "Europe/Paris"},
            **extra,
        }
        answer = self.http.post(f"{self.user}/events", json=body)
        assert answer.status_code == 201, answer.text
        created: dict[str, Any] = answer.json()
        return created

    def deliver(self, folder: str, mime: bytes, *categories: str) -> str:
        return self.emu.deliver(self.address, folder, mime, *categories)


@pytest.fixture
def graph(emulator: RunningEmulator) -> Iterator[Graph]:
    made = Graph(emulator)
    yield made
    made.http.close()
    emulator.admin("DELETE", "faults")


WINDOW = {"startDateTime": "2031-01-01T00:00:00Z", "endDateTime": "2032-01-01T00:00:00Z"}
DATA = pathlib.Path(__file__).parent / "data"


TYPES: dict[str, Any] = json.loads((DATA / "graph_types.json").read_text())
# OData annotations and delta markers ride along with every entity.
_ANNOTATIONS = {"@odata.etag", "@odata.type", "@odata.context", "@removed"}


def _properties(name: str) -> dict[str, str]:
    found: dict[str, str] = {}
    while name:
        entry = TYPES["interfaces"][name]
        found = {**entry["properties"], **found}
        name = entry["extends"] or ""
    return found


def check(value: Any, kind: str, path: str = "$") -> list[str]:
    """Where `value` does not fit the TypeScript type `kind`."""
    kind = kind.strip()
    nullable = re.fullmatch(r"NullableOption<(.+)>", kind)
    if nullable is not None:
        return [] if value is None else check(value, nullable.group(1), path)
    if kind.endswith("[]"):
        if not isinstance(value, list):
            return [f"{path}: {value!r} is not a list"]
        return [p for n, v in enumerate(value) for p in check(v, kind[:-2], f"{path}[{n}]")]
    simple: dict[str, type | tuple[type, ...]] = {
        "string": str,
        "boolean": bool,
        "number": (int, float),
    }
    if kind in simple:
        ok = isinstance(value, simple[kind]) and not (kind == "number" and isinstance(value, bool))
        return [] if ok else [f"{path}: {value!r} is not a {kind}"]
    if kind in TYPES["aliases"]:
        allowed = TYPES["aliases"][kind]
        return [] if value in allowed else [f"{path}: {value!r} is not one of {kind}"]
    if kind in TYPES["interfaces"]:
        if not isinstance(value, dict):
            return [f"{path}: {value!r} is not an object ({kind})"]
        props = _properties(kind)
        problems = []
        for key, item in value.items():
            if key in _ANNOTATIONS:
                continue
            if key not in props:
                problems.append(f"{path}.{key}: no such property on {kind}")
                continue
            problems += check(item, props[key], f"{path}.{key}")
        return problems
    return []  # a type the extract does not hold (any, unions of interfaces): not checked
