"""gateway settings, from `GATEWAY_*` variables (peers from `RECONCILER_ADDR`, `LINKER_ADDR`)."""

from __future__ import annotations

import re
from typing import ClassVar, Self

from pydantic import Field, field_validator, model_validator

from concord_settings import DEFAULT_PORTS, SecretStr, ServiceSettings, SettingsConfigDict, peer

# HS256 keys shorter than the hash output weaken the signature (RFC 7518 §3.2), and PyJWT
# warns on every call with one; refusing them at start is clearer than a log full of warnings.
MIN_KEY_BYTES = 32


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_")
    service_name: ClassVar[str] = "gateway"

    port: int = DEFAULT_PORTS["gateway"]
    # A gRPC target: `host:port`, or every replica (`ipv4:127.0.0.1:50051,127.0.0.1:50056`,
    # `dns:///reconciler-headless:50051`), over which calls are spread (adapters/peers.py).
    reconciler_addr: str = peer("reconciler")
    linker_addr: str = peer("linker")

    # The key bearer tokens are signed with. Unset (and no AUTH_HS256_KEYS): a key generated
    # once into <CONCORD_VAR_DIR>/secrets/gateway-auth.key, the file `make up` mints tokens from.
    auth_hs256_key: SecretStr | None = None
    # Rotation: a comma-separated list, newest first; tokens signed with any of them verify.
    # Added to AUTH_HS256_KEY when both are set, so a rollout can add the new key first.
    auth_hs256_keys: SecretStr | None = None
    # Keys by id, for tokens whose header names a `kid`: `kid:key,kid:key` (a kid is letters,
    # digits, `.`, `_`, `-`). Rotation without trying every key: a token names its key.
    auth_hs256_keyset: SecretStr | None = None
    auth_issuer: str = Field(default="concord", min_length=1)
    auth_audience: str = Field(default="concord-gateway", min_length=1)
    # Clock skew allowed between the token issuer and this process on exp/nbf/iat.
    auth_leeway_seconds: float = Field(default=30.0, ge=0, le=300)

    # Signs the caller's identity on calls to the reconciler and linker (concord_rpc.identity);
    # they share it. Unset: <CONCORD_VAR_DIR>/secrets/internal-identity.key, created once.
    internal_identity_key: SecretStr | None = None

    # SyncMailbox with `wait`: the wait when the request names none, and its ceiling.
    sync_wait_default_seconds: float = Field(default=30.0, gt=0)
    sync_wait_max_seconds: float = Field(default=300.0, gt=0)
    # Deadline of one call to a peer (the caller's own deadline, when shorter, wins).
    peer_timeout_seconds: float = Field(default=10.0, gt=0)

    @field_validator(
        "auth_hs256_key",
        "auth_hs256_keys",
        "auth_hs256_keyset",
        "internal_identity_key",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `GATEWAY_AUTH_HS256_KEY=` in a compose file or manifest means "none", not a bad key.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("auth_hs256_key")
    @classmethod
    def _key_long_enough(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None:
            _check_key(key.get_secret_value())
        return key

    @field_validator("auth_hs256_keys")
    @classmethod
    def _keys_long_enough(cls, keys: SecretStr | None) -> SecretStr | None:
        if keys is not None:
            parts = _split(keys.get_secret_value())
            if not parts:
                raise ValueError("must list at least one key")
            for part in parts:
                _check_key(part)
        return keys

    @field_validator("auth_hs256_keyset")
    @classmethod
    def _keyset_well_formed(cls, keyset: SecretStr | None) -> SecretStr | None:
        if keyset is not None:
            _parse_keyset(keyset.get_secret_value())
        return keyset

    @field_validator("internal_identity_key")
    @classmethod
    def _identity_key_long_enough(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None:
            _check_key(key.get_secret_value())
        return key

    @model_validator(mode="after")
    def _wait_within_ceiling(self) -> Self:
        if self.sync_wait_default_seconds > self.sync_wait_max_seconds:
            raise ValueError("GATEWAY_SYNC_WAIT_DEFAULT_SECONDS exceeds ..._MAX_SECONDS")
        return self

    def configured_keys(self) -> list[str]:
        """The verification keys the environment gives, newest first; empty when none is set."""
        keys = _split(self.auth_hs256_keys.get_secret_value()) if self.auth_hs256_keys else []
        if self.auth_hs256_key is not None:
            keys.append(self.auth_hs256_key.get_secret_value())
        return list(dict.fromkeys(keys))

    def configured_keyset(self) -> dict[str, str]:
        """kid -> key, from AUTH_HS256_KEYSET; empty when unset."""
        if self.auth_hs256_keyset is None:
            return {}
        return _parse_keyset(self.auth_hs256_keyset.get_secret_value())


_KID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _parse_keyset(text: str) -> dict[str, str]:
    keyset: dict[str, str] = {}
    for entry in _split(text):
        # Split at the first colon only: a kid has none, a key may.
        kid, colon, key = entry.partition(":")
        if not colon or not _KID.fullmatch(kid.strip()):
            # Named by position, never shown: the entry holds a key.
            raise ValueError(f"entry {len(keyset) + 1} must be 'kid:key'")
        if kid.strip() in keyset:
            raise ValueError(f"kid {kid.strip()!r} is listed twice")
        _check_key(key.strip())
        keyset[kid.strip()] = key.strip()
    if not keyset:
        raise ValueError("must list at least one kid:key")
    return keyset


def _split(keys: str) -> list[str]:
    return [key.strip() for key in keys.split(",") if key.strip()]


def _check_key(key: str) -> None:
    # The message never contains the key: settings errors are printed.
    if len(key.encode()) < MIN_KEY_BYTES:
        raise ValueError(f"an HS256 key must be at least {MIN_KEY_BYTES} bytes")
