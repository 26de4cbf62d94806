"""Sealing secrets at rest with Fernet (AES-128-CBC + HMAC-SHA256)."""

from __future__ import annotations

from typing import Annotated

from cryptography.fernet import Fernet
from pydantic import AfterValidator, SecretStr

from concord_secrets.files import key_file, key_path

__all__ = ["FernetKey", "InvalidKey", "SecretBox", "check_fernet_key"]

_KEY_SHAPE = "must be a url-safe base64-encoded 32-byte Fernet key"


class InvalidKey(ValueError):
    """A key that is not a Fernet key; the message names where it came from, never the key."""


def check_fernet_key(key: SecretStr | None) -> SecretStr | None:
    """A settings validator: raises ValueError (without the value) unless `key` is a Fernet key."""
    if key is not None:
        try:
            Fernet(key.get_secret_value())
        except ValueError:
            raise ValueError(_KEY_SHAPE) from None
    return key


# A setting holding a Fernet key, checked when settings load, so a bad key stops the process
# before it stores anything.
FernetKey = Annotated[SecretStr, AfterValidator(check_fernet_key)]


class SecretBox:
    """Seals secrets for storage and opens what it sealed."""

    def __init__(self, key: str | bytes, *, source: str = "the key") -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError:
            raise InvalidKey(f"{source} {_KEY_SHAPE}") from None

    @classmethod
    def from_setting(cls, key: SecretStr | None, *, key_name: str, setting: str = "") -> SecretBox:
        """The configured key (`setting` names it in errors), else the dev key file `key_name`."""
        if key is not None:
            return cls(key.get_secret_value(), source=setting or "the configured key")
        return cls(key_file(key_name), source=str(key_path(key_name)))

    def seal(self, secret: bytes) -> bytes:
        return self._fernet.encrypt(secret)

    def open(self, token: bytes) -> bytes:
        """The sealed secret; `cryptography.fernet.InvalidToken` if another key sealed it."""
        return self._fernet.decrypt(token)
