"""Caller identity for internal services: who may call them, and who they say they call as.

Every internal service (not the gateway, which authenticates people) mixes
:class:`CallerIdentitySettings` into its settings. `serve_main` then refuses any call without a
caller identity signed with one of :func:`identity_keys` (concord_rpc.identity), and the
service's own calls to its peers carry one, signed by :func:`identity_signer`: the identity it
was called with, or the one it acts as (`acting_as`) for work nobody called it for, such as a
scheduled session.

Rotation: add the new key to the end of every service's list; move it to the front (the
first key is the one a service signs with); then drop the old key.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from pydantic import BaseModel, SecretStr, field_validator

from concord_rpc.identity import IDENTITY_KEY_FILE, IdentitySigner, IdentityVerifier
from concord_secrets import key_file

__all__ = ["CallerIdentitySettings", "identity_keys", "identity_signer", "shared_identity_key"]


class CallerIdentitySettings(BaseModel):
    """Settings of a service that only accepts calls vouched for with the internal key."""

    # Keys a caller identity may be signed with, comma-separated; the first also signs this
    # service's own calls. Unset: <CONCORD_VAR_DIR>/secrets/internal-identity.key, the file the
    # gateway signs with by default, so an embedded stack needs no configuration.
    internal_identity_keys: SecretStr | None = None
    # Off only to run the service alone: then anyone reaching the port can act as anyone.
    require_caller_identity: bool = True

    @field_validator("internal_identity_keys", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("internal_identity_keys")
    @classmethod
    def _keys_usable(cls, keys: SecretStr | None) -> SecretStr | None:
        if keys is not None:
            # Refuses an empty list or a short key, without showing any key.
            IdentityVerifier(_split(keys.get_secret_value()))
        return keys

    def configured_identity_keys(self) -> list[str]:
        """The keys the environment gives; empty when none is set."""
        if self.internal_identity_keys is None:
            return []
        return list(dict.fromkeys(_split(self.internal_identity_keys.get_secret_value())))


def shared_identity_key(var_dir: Path | None = None) -> str:
    """The embedded stack's internal identity key: `<var_dir>/secrets/internal-identity.key`,
    created if missing. Whichever process (gateway, a peer, devstack) writes it first, they all
    read the same key."""
    return key_file(IDENTITY_KEY_FILE, var_dir=var_dir, generate=lambda: secrets.token_urlsafe(32))


def identity_keys(settings: CallerIdentitySettings) -> list[str]:
    """The keys a caller identity may be signed with: configured, else the shared key file."""
    return settings.configured_identity_keys() or [shared_identity_key()]


def identity_signer(
    settings: CallerIdentitySettings, *, longest_call_seconds: float
) -> IdentitySigner:
    """Signs the caller identity on this service's calls to its peers, with its first key.

    A channel retry resends the same signed metadata, so a signature stays good for a minute
    beyond the longest call the service makes.
    """
    return IdentitySigner(identity_keys(settings)[0], ttl=60.0 + longest_call_seconds)


def _split(keys: str) -> list[str]:
    return [key.strip() for key in keys.split(",") if key.strip()]
