"""crm-connector settings, from `CRM_CONNECTOR_*` variables."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from concord_runtime.identity import CallerIdentitySettings
from concord_secrets import FernetKey
from concord_settings import (
    DEFAULT_PORTS,
    ServiceSettings,
    SettingsConfigDict,
    jetstream_replicas,
    nats,
)


class CrmConnectorSettings(ServiceSettings, CallerIdentitySettings):
    model_config = SettingsConfigDict(env_prefix="CRM_CONNECTOR_")
    service_name: ClassVar[str] = "crm-connector"

    port: int = DEFAULT_PORTS["crm-connector"]
    # Fernet key for org secrets. Unset: a key generated once into
    # <CONCORD_VAR_DIR>/secrets/crm-connector.key, so the embedded default needs no setup.
    encryption_key: FernetKey | None = None
    # The share of an org's daily API limit Concord allows itself; the rest is the org's.
    budget_share: float = Field(default=0.5, ge=0, le=1)
    # PEM bundle trusted for Salesforce (and login) TLS, for private CAs and the emulator.
    # Empty: the system's trust store. REQUESTS_CA_BUNDLE is ignored on purpose, so one
    # machine-wide variable cannot silently change whom Concord trusts.
    ca_bundle: str = ""
    # Used when a connection names none.
    api_version: str = "62.0"
    # simple-salesforce blocks; this many calls run at once, in threads.
    max_concurrent_calls: int = Field(default=8, ge=1, le=64)
    request_timeout_seconds: float = Field(default=60.0, gt=0)
    # Retries of retryable failures (5xx, lost connections, locked rows) per batch.
    retry_attempts: int = Field(default=4, ge=0, le=10)
    retry_base_seconds: float = Field(default=0.5, ge=0)
    retry_max_seconds: float = Field(default=8.0, ge=0)
    # Object describes change rarely; they are kept per org this long.
    describe_ttl_seconds: float = Field(default=3600.0, ge=0)

    # Change Data Capture (issue #19): each connected org's changes, streamed from Salesforce's
    # Pub/Sub API and sent as `concord.crm.changed.<org>` hints on NATS.
    change_streams: bool = True
    pubsub_endpoint: str = "api.pubsub.salesforce.com:7443"
    nats_url: str = nats()
    # Copies JetStream keeps of the streams and the lease bucket (`NATS_JETSTREAM_REPLICAS`).
    jetstream_replicas: int = jetstream_replicas()
    # How often connected orgs and their leases are looked at (below the leases' TTL).
    change_rescan_seconds: float = Field(default=10.0, gt=0)
