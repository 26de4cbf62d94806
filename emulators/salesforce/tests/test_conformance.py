"""Replays the recorded Salesforce interactions that apply and compares status and body shape.

The cassettes (vcrpy YAML from CumulusCI 4.10.1, BSD-3-Clause, in
tests/reference/salesforce-recordings) were recorded against a real org. Each applicable
cassette is replayed in order against an empty emulator; ids the org minted are mapped to the
ones the emulator mints, so later requests refer to the right records. Compared: the status
code, and the shape of the body (dict keys, value types where both sides are non-null, list
elements pairwise).
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from concord_salesforce_emulator.app import Running
from concord_salesforce_emulator.server import Settings

from .conftest import REFERENCE, VERSION, bearer
from .shapes import shape_mismatches

pytestmark = pytest.mark.integration


@pytest.fixture
def settings() -> Settings:
    # Salesforce's own page size: the recordings were made with it.
    return Settings()


RECORDINGS = REFERENCE / "salesforce-recordings"

# What the emulator implements; the rest (tooling, Bulk API 1.0, Organization, connect) is not.
_SUPPORTED = re.compile(r"^/services/data/v(xx|\d\d)\.0/(query|queryAll|composite|limits|sobjects)")
# Recorded in API v49 through composite requests whose describes and headers the emulator does
# not reproduce.
_OLD_VERSION = re.compile(r"/services/data/v4\d\.0/")
_ID = re.compile(r"^[a-zA-Z0-9]{3}[a-zA-Z0-9]{12}[A-Z0-5]{3}$")


@functools.cache
def _interactions(path: Path) -> list[dict[str, Any]]:
    # libyaml's loader: the pure-Python one takes seconds on the recorded describes.
    data = yaml.load(path.read_text(), Loader=yaml.CSafeLoader) or {}
    out: list[dict[str, Any]] = []
    for item in data.get("interactions") or []:
        if "include_file" in item:
            out.extend(
                _interactions(RECORDINGS / f"tests__shared_cassettes__{item['include_file']}")
            )
        elif "request" in item:
            out.append(item)
    return out


def _applies(item: dict[str, Any]) -> bool:
    request = item["request"]
    uri = re.sub(r"^https://[^/]+", "", request["uri"])
    body = request.get("body") or ""
    if not _SUPPORTED.match(uri) or _OLD_VERSION.search(uri + str(body)):
        return False
    # The recording org's own Organization row, custom object and record types are not this
    # org's.
    return not ("/sobjects/Organization" in uri or "Custom__c" in uri or "+RecordType+" in uri)


def _cassettes() -> list[Path]:
    found = []
    for path in sorted(RECORDINGS.glob("*.yaml")):
        if path.name.startswith("tests__shared_cassettes__"):
            continue
        items = _interactions(path)
        if items and any(_applies(i) for i in items):
            found.append(path)
    return found


def _learn_ids(recorded: Any, ours: Any, mapping: dict[str, str]) -> None:
    if isinstance(recorded, str) and isinstance(ours, str):
        if _ID.match(recorded) and _ID.match(ours) and recorded[:3] == ours[:3]:
            mapping[recorded] = ours
    elif isinstance(recorded, dict) and isinstance(ours, dict):
        for key in set(recorded) & set(ours):
            _learn_ids(recorded[key], ours[key], mapping)
    elif isinstance(recorded, list) and isinstance(ours, list):
        for left, right in zip(recorded, ours, strict=False):
            _learn_ids(left, right, mapping)


def _translate(text: str, mapping: dict[str, str]) -> str:
    text = text.replace("vxx.0", f"v{VERSION}")
    for recorded, ours in mapping.items():
        text = text.replace(recorded, ours)
    return text


@pytest.mark.parametrize("cassette", _cassettes(), ids=lambda p: p.stem.split("__")[-1])
def test_replay(
    cassette: Path, emulator: Running, http: requests.Session, token: dict[str, Any]
) -> None:
    mapping: dict[str, str] = {}
    replayed = 0
    hand_edited = "ManualEdit" in cassette.name
    if "network_errors" in cassette.name:
        # Recorded as a server failure: the emulator's fault injection reproduces it.
        fault = {"kind": "error", "status": 500, "count": 1}
        http.post(f"{emulator.url}/__admin/faults", json=fault).raise_for_status()
    for item in _interactions(cassette):
        if not _applies(item):
            continue
        request, response = item["request"], item["response"]
        uri = _translate(re.sub(r"^https://[^/]+", "", request["uri"]), mapping)
        uri = re.sub(r"/services/data/v\d\d\.0/", f"/services/data/v{VERSION}/", uri)
        body = request.get("body")
        data = _translate(body, mapping).encode() if isinstance(body, str) else None
        ours = http.request(
            request["method"],
            emulator.url + uri,
            data=data,
            headers={**bearer(token), "Content-Type": "application/json"},
        )
        expected_status = response["status"]["code"]
        assert ours.status_code == expected_status, (request["method"], uri, ours.text[:500])
        recorded_text = response["body"]["string"]
        if recorded_text:
            recorded_body = json.loads(recorded_text)
            our_body = ours.json()
            problems = shape_mismatches(recorded_body, our_body, hand_edited=hand_edited)
            assert problems == [], (request["method"], uri, problems[:10], ours.text[:300])
            _learn_ids(recorded_body, our_body, mapping)
        replayed += 1
    assert replayed > 0
