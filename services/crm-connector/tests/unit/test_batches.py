"""The batch loop of the Salesforce adapter over a scripted client: no sockets, no threads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from concord_crm_connector.adapters.salesforce import (
    SalesforceOptions,
    SalesforceOrgs,
    token_request,
)
from concord_crm_connector.domain.errors import LoginFailed
from concord_crm_connector.domain.model import (
    AuthFlow,
    Budget,
    OrgConnection,
    RecordWrite,
    WriteOperation,
    WriteStatus,
)

pytestmark = pytest.mark.unit

T = TypeVar("T")
CONNECTION = OrgConnection(
    "demo",
    "https://login.example",
    AuthFlow.PASSWORD,
    "cid",
    "u",
    "62.0",
    True,
    datetime(2026, 1, 1, tzinfo=UTC),
    "e",
)
LOCKED = {"statusCode": "UNABLE_TO_LOCK_ROW", "message": "unable to obtain exclusive access"}


class Store:
    def __init__(self, budget: Budget | None = None) -> None:
        self.stored = budget

    async def secret(self, org: str) -> bytes | None:
        return b"s"

    async def budget(self, org: str) -> Budget | None:
        return self.stored

    async def record_usage(self, org: str, used: int, limit: int, calls: int) -> Budget:
        return Budget(used, limit, calls)

    async def record_login(self, org: str, instance_url: str, organization_id: str) -> None:
        return None


class ScriptedClient:
    """Answers each Collections request with the next scripted result list."""

    sf_version = "62.0"

    def __init__(self, answers: list[list[dict[str, Any]]]) -> None:
        self.answers = answers
        self.sent: list[list[str]] = []

    def restful(self, path: str, method: str = "GET", **options: Any) -> Any:
        self.sent.append([r["Concord_Link_Id__c"] for r in options["json"]["records"]])
        return self.answers.pop(0)


class Scripted(SalesforceOrgs):
    def __init__(self, client: ScriptedClient, store: Store) -> None:
        super().__init__(store, SalesforceOptions(retry_attempts=3), sleep=self._no_sleep)
        self.client = client
        self.delays: list[float] = []

    async def _no_sleep(self, seconds: float) -> None:
        self.delays.append(seconds)

    async def _call(self, connection: OrgConnection, work: Callable[[Any], T]) -> T:
        return work(self.client)


def writes(*links: str) -> list[RecordWrite]:
    return [RecordWrite(WriteOperation.UPSERT, "Event", link_id=link) for link in links]


async def test_only_the_locked_records_go_again_after_a_back_off() -> None:
    client = ScriptedClient(
        [
            [
                {"success": False, "errors": [LOCKED]},
                {"success": True, "id": "00U2", "created": True, "errors": []},
            ],
            [{"success": True, "id": "00U1", "created": True, "errors": []}],
        ]
    )
    adapter = Scripted(client, Store())
    try:
        outcomes = await adapter.apply_batch(CONNECTION, writes("a", "b"), all_or_none=False)
    finally:
        adapter.close()
    assert [(o.status, o.id) for o in outcomes] == [
        (WriteStatus.OK, "00U1"),
        (WriteStatus.OK, "00U2"),
    ]
    assert client.sent == [["a", "b"], ["a"]]
    assert len(adapter.delays) == 1


async def test_no_retry_once_concords_share_of_the_budget_is_spent() -> None:
    client = ScriptedClient([[{"success": False, "errors": [LOCKED]}]])
    spent = Budget(used=600, limit=1000, concord_used=500)
    adapter = Scripted(client, Store(spent))
    try:
        outcomes = await adapter.apply_batch(CONNECTION, writes("a"), all_or_none=False)
    finally:
        adapter.close()
    assert outcomes[0].status is WriteStatus.RETRYABLE
    assert outcomes[0].errors[0].code == "UNABLE_TO_LOCK_ROW"
    assert client.sent == [["a"]]
    assert adapter.delays == []


def test_token_requests_per_flow() -> None:
    password = token_request(CONNECTION, b'{"client_secret": "cs", "password": "pw"}')
    assert password == {
        "client_id": "cid",
        "grant_type": "password",
        "username": "u",
        "password": "pw",
        "client_secret": "cs",
    }
    plain = token_request(replace(CONNECTION, auth_flow=AuthFlow.CLIENT_CREDENTIALS), b"cs")
    assert plain == {"client_id": "cid", "grant_type": "client_credentials", "client_secret": "cs"}
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    signed = token_request(replace(CONNECTION, auth_flow=AuthFlow.JWT_BEARER), pem)
    assert signed["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    claims = jwt.decode(
        signed["assertion"],
        key.public_key(),
        algorithms=["RS256"],
        audience="https://login.example",
    )
    assert (claims["iss"], claims["sub"]) == ("cid", "u")
    with pytest.raises(LoginFailed):
        token_request(replace(CONNECTION, auth_flow=AuthFlow.JWT_BEARER), b"not a key")
