"""An emulator per test on a free port, and clients that trust its CA (never the machine's)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from simple_salesforce.api import Salesforce, SFType
from simple_salesforce.exceptions import SalesforceError

from concord_salesforce_emulator.app import Running, running_in_thread
from concord_salesforce_emulator.server import Settings

VERSION = "62.0"
# Recorded Salesforce material (sources and licences in reference/README.md).
REFERENCE = Path(__file__).resolve().parent / "reference"


class TypedSalesforce(Salesforce):
    """simple-salesforce, unchanged on the wire, with `sf.Contact` typed as the `SFType` it is.

    The library types every attribute as `SFType | SFBulkHandler | SFBulk2Handler`: only `bulk`
    and `bulk2` are handlers, and these tests use neither.
    """

    def __getattr__(self, name: str) -> SFType:
        handle = super().__getattr__(name)
        assert isinstance(handle, SFType), f"{name} is a bulk handler, not an sObject"
        return handle


def error_body(error: SalesforceError) -> Any:
    """The JSON body a simple-salesforce error carries.

    `content` is typed `bytes`, but the library raises with `response.json()` (the text only
    when the body is not JSON).
    """
    body: object = error.content
    return body


@pytest.fixture
def settings() -> Settings:
    return Settings(page_size=5)


@pytest.fixture
def emulator(tmp_path: Path, settings: Settings) -> Iterator[Running]:
    with running_in_thread(tmp_path / "salesforce", settings) as running:
        yield running


@pytest.fixture
def http(emulator: Running) -> Iterator[requests.Session]:
    session = requests.Session()
    # This machine sets REQUESTS_CA_BUNDLE, which would override `verify` otherwise.
    session.trust_env = False
    session.verify = str(emulator.ca_cert)
    yield session
    session.close()


@pytest.fixture
def token(emulator: Running, http: requests.Session) -> dict[str, Any]:
    settings = emulator.emulator.settings
    response = http.post(
        f"{emulator.url}/services/oauth2/token",
        data={
            "grant_type": "password",
            "client_id": settings.client_id,
            "client_secret": settings.client_secret,
            "username": settings.username,
            "password": settings.password,
        },
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def sf(token: dict[str, Any], http: requests.Session) -> TypedSalesforce:
    return TypedSalesforce(
        instance_url=token["instance_url"],
        session_id=token["access_token"],
        session=http,
        version=VERSION,
    )


def api(emulator: Running, path: str) -> str:
    return f"{emulator.url}/services/data/v{VERSION}/{path}"


def bearer(token: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token['access_token']}"}
