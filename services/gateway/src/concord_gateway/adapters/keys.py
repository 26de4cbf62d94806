"""The token verification keys: from settings, else the development key file under var/."""

from __future__ import annotations

import secrets
from pathlib import Path

from concord_gateway.settings import MIN_KEY_BYTES, GatewaySettings
from concord_secrets import key_file, key_path

__all__ = ["dev_key_path", "verification_keys"]

# The same file tools/devstack (tokens.py, `signing_key`) mints the demo tokens with, so
# `make up` and a gateway started by hand agree on the key without configuration.
DEV_KEY_NAME = "gateway-auth"


def dev_key_path(base: Path | None = None) -> Path:
    return key_path(DEV_KEY_NAME, base)


def verification_keys(settings: GatewaySettings, base: Path | None = None) -> list[str]:
    """The configured keys, newest first; without any, the dev key, created once (0600)."""
    configured = settings.configured_keys()
    if configured:
        return configured
    # What devstack generates: 43 characters, 256 bits.
    key = key_file(DEV_KEY_NAME, var_dir=base, generate=lambda: secrets.token_urlsafe(32))
    if len(key.encode()) < MIN_KEY_BYTES:
        path = dev_key_path(base)
        raise RuntimeError(f"{path} holds no usable key (at least {MIN_KEY_BYTES} bytes needed)")
    return [key]
