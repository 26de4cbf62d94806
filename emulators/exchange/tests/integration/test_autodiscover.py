"""SOAP Autodiscover: exchangelib's Autodiscovery finds a mailbox's EWS endpoint on the emulator
and hears that an address with no mailbox has none (exchangelib's live test_autodiscover_failure
asks exactly this of the server named as its autodiscover_server)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from exchangelib import BASIC, Configuration, Credentials, FailFast  # type: ignore[import-untyped]
from exchangelib.autodiscover import (  # type: ignore[import-untyped]
    Autodiscovery,
    clear_cache,
)
from exchangelib.autodiscover.cache import autodiscover_cache  # type: ignore[import-untyped]
from exchangelib.autodiscover.protocol import AutodiscoverProtocol  # type: ignore[import-untyped]
from exchangelib.errors import ErrorNonExistentMailbox  # type: ignore[import-untyped]

from concord_exchange_emulator import autodiscover
from concord_exchange_emulator.testing import RunningEmulator

pytestmark = pytest.mark.integration


@pytest.fixture
def primed(emulator: RunningEmulator) -> Iterator[Callable[[str, str], Credentials]]:
    """The domain's autodiscover server named up front, as exchangelib's live tests prime it
    (a test machine cannot resolve the domain's own autodiscover hosts)."""
    base = emulator.endpoint.rsplit("/EWS/", 1)[0]

    def prime(username: str, password: str) -> Credentials:
        credentials = Credentials(username, password)
        autodiscover_cache[("concord.test", credentials)] = AutodiscoverProtocol(
            config=Configuration(
                service_endpoint=f"{base}{autodiscover.PATH}",
                credentials=credentials,
                auth_type=BASIC,
                retry_policy=FailFast(),
            )
        )
        return credentials

    clear_cache()
    yield prime
    clear_cache()


def test_autodiscovery_finds_the_mailboxs_ews_endpoint(
    emulator: RunningEmulator, new_user: Any, primed: Any
) -> None:
    address, password = new_user(display_name="Ada Lovelace")
    credentials = primed(address, password)
    found, protocol = Autodiscovery(email=address, credentials=credentials).discover()
    assert found.autodiscover_smtp_address == address
    assert protocol.service_endpoint.lower() == emulator.endpoint.lower()
    assert found.user_settings["user_display_name"] == "Ada Lovelace"
    # The newest schema listed is the one the EWS endpoint itself reports.
    assert found.version.api_version == "Exchange2016"


def test_an_address_without_a_mailbox_is_a_non_existent_mailbox(new_user: Any, primed: Any) -> None:
    address, password = new_user()
    credentials = primed(address, password)
    with pytest.raises(ErrorNonExistentMailbox):
        Autodiscovery(email=f"XXX.{address}", credentials=credentials).discover()


def test_settings_the_emulator_does_not_keep_are_named_as_not_available(
    emulator: RunningEmulator, new_user: Any, primed: Any
) -> None:
    address, password = new_user()
    protocol = autodiscover_cache[("concord.test", primed(address, password))]
    # All of them, as exchangelib asks by default: the unknown ones do not fail the answer.
    answer = protocol.get_user_settings(user=address)
    assert answer.ews_url == emulator.endpoint
    assert answer.user_settings_errors["mapi_http_enabled"][0] == "SettingIsNotAvailable"
