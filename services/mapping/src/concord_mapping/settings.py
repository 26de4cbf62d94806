"""mapping settings, from `MAPPING_*` variables and the crm-connector's `CRM_CONNECTOR_ADDR`."""

from __future__ import annotations

from typing import ClassVar

from concord_runtime.identity import CallerIdentitySettings
from concord_settings import DEFAULT_PORTS, ServiceSettings, SettingsConfigDict, peer


class MappingSettings(ServiceSettings, CallerIdentitySettings):
    model_config = SettingsConfigDict(env_prefix="MAPPING_")
    service_name: ClassVar[str] = "mapping"

    port: int = DEFAULT_PORTS["mapping"]
    # UpdateMappingTable checks a table against the org's live describe (DescribeObject);
    # nothing else calls it, so it is no readiness condition.
    # A gRPC target: `host:port`, or every replica (`ipv4:127.0.0.1:50053,127.0.0.1:50063`,
    # `dns:///crm-connector-headless:50053`), over which calls are spread (__main__.py).
    crm_connector_addr: str = peer("crm-connector")
    # Deadline of each call to crm-connector.
    peer_timeout_seconds: float = 10.0
