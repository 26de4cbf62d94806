"""mail-connector settings, from `MAIL_CONNECTOR_*` variables."""

from __future__ import annotations

from typing import ClassVar

from concord_secrets import FernetKey
from concord_settings import DEFAULT_PORTS, ServiceSettings, SettingsConfigDict


class MailConnectorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MAIL_CONNECTOR_")
    service_name: ClassVar[str] = "mail-connector"

    port: int = DEFAULT_PORTS["mail-connector"]
    # Fernet key for mailbox secrets. Unset: a key generated once into
    # <CONCORD_VAR_DIR>/secrets/mail-connector.key, so the embedded default needs no setup.
    encryption_key: FernetKey | None = None
    # EWS calls in flight at once for the whole process (exchangelib blocks a thread per call).
    ews_max_workers: int = 16
    # Longest ErrorServerBusy back-off waited out inside one call; longer ones (or ones past
    # the caller's deadline) answer RESOURCE_EXHAUSTED with RetryInfo instead.
    ews_max_back_off_seconds: float = 30.0
    # Seconds one EWS request may take before it counts as lost (UNAVAILABLE / RETRYABLE).
    ews_request_timeout_seconds: float = 30.0
