"""The `make up` hook and sync-state encoding."""

from __future__ import annotations

import pathlib
import sys
from importlib.metadata import entry_points

import pytest

from concord_exchange_emulator import devstack, ews

pytestmark = pytest.mark.unit


def test_spec(tmp_path: pathlib.Path) -> None:
    spec = devstack.spec(tmp_path, 50061)
    assert spec["argv"][:3] == [sys.executable, "-m", "concord_exchange_emulator"]
    assert "--seed" in spec["argv"]
    assert spec["ready_url"] == "http://127.0.0.1:50061/__admin/health"
    assert spec["ca_cert"] is None
    assert spec["info"]["url"] == "http://127.0.0.1:50061/EWS/Exchange.asmx"
    assert spec["info"]["mailbox"] == "demo@concord.test"
    assert spec["info"]["service_account"]["username"]


def test_the_entry_point_is_registered() -> None:
    (found,) = [e for e in entry_points(group="concord.emulators") if e.name == "exchange"]
    assert found.load() is devstack.spec


@pytest.mark.parametrize(
    "state",
    [
        "",
        "garbage",
        ews._encode_state("other", 1),
        ews._encode_state("folder", 1, generation=1),
    ],
)
def test_a_foreign_or_corrupt_sync_state_is_invalid(state: str) -> None:
    with pytest.raises(ews.EwsError) as caught:
        ews._decode_state(state, "folder")
    assert caught.value.code == "ErrorInvalidSyncStateData"


def test_a_sync_state_round_trips() -> None:
    assert ews._decode_state(ews._encode_state("folder", 42), "folder") == 42
