"""HTTPS with the emulator's own CA, trusted explicitly by exchangelib."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from exchangelib import (  # type: ignore[import-untyped]
    BASIC,
    DELEGATE,
    Account,
    Configuration,
    Credentials,
    FailFast,
    Version,
)
from exchangelib.protocol import BaseProtocol, close_connections  # type: ignore[import-untyped]
from exchangelib.version import EXCHANGE_2016  # type: ignore[import-untyped]

from concord_exchange_emulator.seed import DEMO_MAILBOX, DEMO_PASSWORD
from concord_exchange_emulator.testing import RunningEmulator

pytestmark = pytest.mark.integration


@pytest.fixture
def tls_emulator(tmp_path: pathlib.Path) -> Iterator[RunningEmulator]:
    emu = RunningEmulator(tmp_path, tls=True).start()
    yield emu
    # Open keep-alive connections would hold up the server's graceful shutdown.
    close_connections()
    emu.stop()


def test_exchangelib_over_https_trusting_the_emulator_ca(
    tls_emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tls_emulator.tls is not None
    ca = str(tls_emulator.tls.ca_cert)

    class TrustEmulatorCA(requests.adapters.HTTPAdapter):
        # REQUESTS_CA_BUNDLE on this machine would otherwise decide what is trusted.
        def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
            super().cert_verify(conn, url, ca, cert)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(BaseProtocol, "HTTP_ADAPTER_CLS", TrustEmulatorCA)
    assert tls_emulator.endpoint.startswith("https://")
    config = Configuration(
        service_endpoint=tls_emulator.endpoint,
        credentials=Credentials(DEMO_MAILBOX, DEMO_PASSWORD),
        auth_type=BASIC,
        version=Version(build=EXCHANGE_2016),
        retry_policy=FailFast(),
    )
    account = Account(DEMO_MAILBOX, config=config, autodiscover=False, access_type=DELEGATE)
    assert account.calendar.all().count() >= 3
    assert tls_emulator.admin("GET", "health")["status"] == "ok"
