"""Encryption at rest of org secrets (Fernet: AES-128-CBC + HMAC-SHA256)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cryptography.fernet import Fernet

from concord_settings import SecretStr, var_dir

__all__ = ["CredentialCipher", "dev_key_path"]


def dev_key_path(service: str) -> Path:
    return var_dir() / "secrets" / f"{service}.key"


class CredentialCipher:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_settings(cls, key: SecretStr | None, service: str) -> CredentialCipher:
        """The configured key, else the dev key file, generated once (mode 0600) if missing."""
        if key is not None:
            return cls(key.get_secret_value().encode())
        return cls(_load_or_create(dev_key_path(service)))

    def encrypt(self, secret: bytes) -> bytes:
        return self._fernet.encrypt(secret)

    def decrypt(self, token: bytes) -> bytes:
        return self._fernet.decrypt(token)


def _load_or_create(path: Path) -> bytes:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        return path.read_bytes().strip()
    key = Fernet.generate_key()
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(key)
    try:
        # Link, not rename: if another process made the key first, its key wins and both
        # processes use the same one (secrets written with a lost key could never be read).
        os.link(tmp, path)
    except FileExistsError:
        key = path.read_bytes().strip()
    finally:
        tmp.unlink()
    return key
