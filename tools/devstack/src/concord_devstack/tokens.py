"""Development credentials for the local stack: the gateway's signing key and demo tokens.

The gateway verifies HS256 bearer tokens (issuer, audience, expiry, signature); here we hold the
key on disk under var/ so that `concord` and the tests can act as the demo user or an admin.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import jwt

from concord_secrets import key_file

ISSUER = "concord"
AUDIENCE = "concord-gateway"
DEMO_ORG = "demo"
DEMO_USER = "demo-user"
DEMO_MAILBOX = "demo"
# The demo mailbox's data served by the Graph emulator, registered beside it (issue #13).
DEMO_GRAPH_MAILBOX = "demo-graph"
DEMO_ADDRESS = "demo@concord.test"
_LIFETIME_SECONDS = 30 * 24 * 3600


def signing_key(var_dir: Path) -> str:
    """The stack's gateway key, created once and kept so tokens survive restarts.

    The gateway reads the same file (`concord_gateway.adapters.keys`) when no key is configured.
    """
    return key_file("gateway-auth", var_dir=var_dir, generate=lambda: secrets.token_urlsafe(32))


def mint(key: str, *, subject: str, org: str, role: str) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "org": org,
        "role": role,
        "iat": now,
        "exp": now + _LIFETIME_SECONDS,
    }
    return jwt.encode(claims, key, algorithm="HS256")
