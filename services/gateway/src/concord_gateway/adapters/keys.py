"""The token verification keys: from settings, else the development key file under var/."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from concord_gateway.settings import MIN_KEY_BYTES, GatewaySettings
from concord_settings import var_dir

__all__ = ["dev_key_path", "verification_keys"]


def dev_key_path(base: Path | None = None) -> Path:
    # The same file tools/devstack (tokens.py, `signing_key`) mints the demo tokens with, so
    # `make up` and a gateway started by hand agree on the key without configuration.
    return (base if base is not None else var_dir()) / "secrets" / "gateway-auth.key"


def verification_keys(settings: GatewaySettings, base: Path | None = None) -> list[str]:
    """The configured keys, newest first; without any, the dev key, created once (0600)."""
    return settings.configured_keys() or [_load_or_create(dev_key_path(base))]


def _load_or_create(path: Path) -> str:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        return _checked(path, path.read_text().strip())
    key = secrets.token_urlsafe(32)  # what devstack generates: 43 characters, 256 bits
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(key)
    try:
        # Link, not rename: if devstack or another gateway made the key first, theirs wins, so
        # every process verifies with the key the tokens were minted with.
        os.link(tmp, path)
    except FileExistsError:
        key = _checked(path, path.read_text().strip())
    finally:
        tmp.unlink()
    return key


def _checked(path: Path, key: str) -> str:
    if len(key.encode()) < MIN_KEY_BYTES:
        raise RuntimeError(f"{path} holds no usable key (at least {MIN_KEY_BYTES} bytes needed)")
    return key
