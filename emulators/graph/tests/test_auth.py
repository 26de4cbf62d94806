"""Client credentials: tokens for a tenant's app, refusals an operator can act on."""

from __future__ import annotations

import ssl

import httpx
import pytest

from concord_graph_emulator.testing import RunningEmulator

from .conftest import Graph, token_for

pytestmark = pytest.mark.integration


def test_client_credentials_give_a_bearer_token(emulator: RunningEmulator) -> None:
    creds = emulator.new_app()
    got = token_for(emulator, creds)
    assert got["token_type"] == "Bearer"
    assert got["expires_in"] == 3600


def test_a_wrong_secret_is_invalid_client(emulator: RunningEmulator) -> None:
    got = token_for(emulator, emulator.new_app(), secret="wrong")
    assert got["error"] == "invalid_client"
    assert "AADSTS7000215" in got["error_description"]


def test_requests_without_a_valid_token_are_401(graph: Graph) -> None:
    answer = httpx.get(
        f"{graph.emu.graph_url}{graph.user}/events",
        headers={"Authorization": "Bearer forged"},
        verify=ssl.create_default_context(cafile=graph.emu.ca_cert),
    )
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_an_access_policy_refuses_a_mailbox(graph: Graph) -> None:
    graph.emu.admin("POST", f"users/{graph.address}/deny", {"client_id": graph.creds.client_id})
    answer = graph.http.get(f"{graph.user}/events")
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "ErrorAccessDenied"


def test_an_unknown_user_is_404(graph: Graph) -> None:
    answer = graph.http.get("/users/nobody@concord.test/events")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "ErrorInvalidUser"
