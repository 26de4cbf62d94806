"""crm-connector settings, from `CRM_CONNECTOR_*` variables."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from concord_secrets import FernetKey
from concord_settings import DEFAULT_PORTS, ServiceSettings, SettingsConfigDict


class CrmConnectorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CRM_CONNECTOR_")
    service_name: ClassVar[str] = "crm-connector"

    port: int = DEFAULT_PORTS["crm-connector"]
    # Fernet key for org secrets. Unset: a key generated once into
    # <CONCORD_VAR_DIR>/secrets/crm-connector.key, so the embedded default needs no setup.
    encryption_key: FernetKey | None = None
    # The share of an org's daily API limit Concord allows itself; the rest is the org's.
    budget_share: float = Field(default=0.5, ge=0, le=1)
