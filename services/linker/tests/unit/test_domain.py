from __future__ import annotations

import pytest

from concord_linker.domain.model import InvalidRequest, Participant, Resolution, parse_org_name
from concord_linker.domain.service import Linker
from concord_linker.settings import LinkerSettings
from concord_rpc import Unimplemented

pytestmark = pytest.mark.unit


class CountingStore:
    def __init__(self) -> None:
        self.reads = 0

    async def blacklist(self, org: str, user_id: str) -> frozenset[str]:
        self.reads += 1
        return frozenset()


async def test_no_participants_resolve_to_nothing_without_reading_anything() -> None:
    store = CountingStore()
    assert await Linker(store).resolve("demo", "005x", []) == Resolution()
    assert store.reads == 0


async def test_participants_wait_for_issue_7() -> None:
    with pytest.raises(Unimplemented) as caught:
        await Linker(CountingStore()).resolve("demo", "005x", [Participant("ann@example.com")])
    assert caught.value.issue == 7


def test_org_names() -> None:
    assert parse_org_name("orgs/demo") == "demo"
    with pytest.raises(InvalidRequest):
        parse_org_name("orgs/")


def test_crm_connector_address_is_the_shared_peer_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert LinkerSettings.from_env().crm_connector_addr == "127.0.0.1:50053"
    monkeypatch.setenv("CRM_CONNECTOR_ADDR", "crm:7000")
    monkeypatch.setenv("LINKER_PORT", "7001")
    settings = LinkerSettings.from_env()
    assert (settings.crm_connector_addr, settings.port) == ("crm:7000", 7001)
