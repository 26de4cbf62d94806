"""Keys: token verification and internal identity, from settings, else key files under var/."""

from __future__ import annotations

import secrets
from pathlib import Path

from concord_gateway.settings import MIN_KEY_BYTES, GatewaySettings
from concord_runtime.identity import shared_identity_key
from concord_secrets import key_file, key_path

__all__ = ["dev_key_path", "identity_key", "verification_keys"]

# The same file tools/devstack (tokens.py, `signing_key`) mints the demo tokens with, so
# `make up` and a gateway started by hand agree on the key without configuration.
DEV_KEY_NAME = "gateway-auth"


def dev_key_path(base: Path | None = None) -> Path:
    return key_path(DEV_KEY_NAME, base)


def verification_keys(settings: GatewaySettings, base: Path | None = None) -> list[str]:
    """The unnamed keys (tokens without `kid`), newest first.

    Without any key configured (unnamed or keyset), the dev key, created once (0600); with only
    a keyset, none: every token must then name its kid.
    """
    configured = settings.configured_keys()
    if configured or settings.auth_hs256_keyset is not None:
        return configured
    # What devstack generates: 43 characters, 256 bits.
    key = key_file(DEV_KEY_NAME, var_dir=base, generate=lambda: secrets.token_urlsafe(32))
    if len(key.encode()) < MIN_KEY_BYTES:
        path = dev_key_path(base)
        raise RuntimeError(f"{path} holds no usable key (at least {MIN_KEY_BYTES} bytes needed)")
    return [key]


def identity_key(settings: GatewaySettings, base: Path | None = None) -> str:
    """The key that signs the caller's identity on internal calls; shared with the peers.

    Unset, a file under var/secrets/ that every service of an embedded stack can read, so the
    peers' verifying side (concord_rpc.RequireIdentity) works without configuration.
    """
    if settings.internal_identity_key is not None:
        return settings.internal_identity_key.get_secret_value()
    return shared_identity_key(base)
