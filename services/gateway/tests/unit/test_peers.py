"""Peer channels: the signed identity outlives the longest call, so a retry still verifies."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from concord_gateway.adapters import peers as peers_module
from concord_rpc import Identity, IdentitySigner

pytestmark = pytest.mark.unit

KEY = "k" * 40


async def test_the_identity_lasts_the_longest_call_plus_a_minute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[IdentitySigner] = []

    def signer(*args: Any, **kwargs: Any) -> IdentitySigner:
        made.append(IdentitySigner(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(peers_module, "IdentitySigner", signer)
    # Channels connect lazily: no socket is opened here.
    peers = peers_module.Peers.connect(
        "127.0.0.1:1", "127.0.0.1:2", identity_key=KEY, longest_call_seconds=310
    )
    await peers.close()
    ((_, payload), _) = made[0].metadata(Identity("ann", "acme", "user"), "/x/Y")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["exp"] - claims["iat"] == 370
