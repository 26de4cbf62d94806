"""crm-connector settings, from `CRM_CONNECTOR_*` variables."""

from __future__ import annotations

from typing import ClassVar

from cryptography.fernet import Fernet
from pydantic import Field, field_validator

from concord_settings import DEFAULT_PORTS, SecretStr, ServiceSettings, SettingsConfigDict


class CrmConnectorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CRM_CONNECTOR_")
    service_name: ClassVar[str] = "crm-connector"

    port: int = DEFAULT_PORTS["crm-connector"]
    # Fernet key for org secrets. Unset: a key generated once into
    # <CONCORD_VAR_DIR>/secrets/crm-connector.key, so the embedded default needs no setup.
    encryption_key: SecretStr | None = None
    # The share of an org's daily API limit Concord allows itself; the rest is the org's.
    budget_share: float = Field(default=0.5, ge=0, le=1)

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
