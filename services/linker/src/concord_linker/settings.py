"""linker settings, from `LINKER_*` variables and the crm-connector's `CRM_CONNECTOR_ADDR`."""

from __future__ import annotations

from typing import ClassVar

from concord_runtime.identity import CallerIdentitySettings
from concord_settings import DEFAULT_PORTS, ServiceSettings, SettingsConfigDict, peer


class LinkerSettings(ServiceSettings, CallerIdentitySettings):
    model_config = SettingsConfigDict(env_prefix="LINKER_")
    service_name: ClassVar[str] = "linker"

    port: int = DEFAULT_PORTS["linker"]
    # Called per resolution (issue #7), never a readiness condition: with crm-connector down
    # the linker still answers what needs no Salesforce and says UNAVAILABLE for the rest.
    # A gRPC target: `host:port`, or every replica (`ipv4:127.0.0.1:50053,127.0.0.1:50063`,
    # `dns:///crm-connector-headless:50053`), over which calls are spread (__main__.py).
    crm_connector_addr: str = peer("crm-connector")
    # How long CRM answers (people by address, Accounts by domain, open Opportunities) are
    # reused. Salesforce API calls are the scarce resource; 0 disables the cache.
    crm_cache_seconds: float = 600.0
    # Deadline of each call to crm-connector.
    peer_timeout_seconds: float = 10.0
