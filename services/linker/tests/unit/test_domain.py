from __future__ import annotations

import pytest

from concord_linker.adapters.domain_rules import PublicSuffixRules
from concord_linker.adapters.memory import InMemoryCrm, InMemoryLinkerStore
from concord_linker.domain.model import InvalidRequest, Resolution, parse_org_name
from concord_linker.domain.service import Linker, clean_display_name, split_name
from concord_linker.settings import LinkerSettings

pytestmark = pytest.mark.unit


async def test_no_participants_resolve_to_nothing_without_reading_anything() -> None:
    store = InMemoryLinkerStore()
    crm = InMemoryCrm(PublicSuffixRules())
    assert await Linker(store, crm, crm.rules).resolve("demo", "005x", []) == Resolution()
    assert (store.blacklist_reads, crm.total_calls) == (0, 0)


def test_names_from_display_names() -> None:
    assert split_name("Ann Marie Smith") == ("Ann Marie", "Smith")
    assert split_name("Smith, Ann") == ("Ann", "Smith")
    assert split_name("Cher") == ("", "Cher")
    assert clean_display_name('"Ann\x00 Smith\r\n" (ACME)') == "Ann Smith"
    assert clean_display_name("ann@example.com") == ""
    assert len(clean_display_name("x" * 1000)) == 80


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
