"""mail-connector settings, from `MAIL_CONNECTOR_*` variables."""

from __future__ import annotations

from typing import ClassVar

from cryptography.fernet import Fernet
from pydantic import field_validator

from concord_settings import DEFAULT_PORTS, SecretStr, ServiceSettings, SettingsConfigDict


class MailConnectorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MAIL_CONNECTOR_")
    service_name: ClassVar[str] = "mail-connector"

    port: int = DEFAULT_PORTS["mail-connector"]
    # Fernet key for mailbox secrets. Unset: a key generated once into
    # <CONCORD_VAR_DIR>/secrets/mail-connector.key, so the embedded default needs no setup.
    encryption_key: SecretStr | None = None

    @field_validator("encryption_key")
    @classmethod
    def _is_fernet_key(cls, key: SecretStr | None) -> SecretStr | None:
        # Checked at start, so a bad key stops the process before it stores anything.
        if key is not None:
            try:
                Fernet(key.get_secret_value())
            except ValueError:
                raise ValueError("must be a url-safe base64-encoded 32-byte Fernet key") from None
        return key
