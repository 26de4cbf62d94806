"""mapping settings, from `MAPPING_*` variables."""

from __future__ import annotations

from typing import ClassVar

from concord_settings import DEFAULT_PORTS, ServiceSettings, SettingsConfigDict


class MappingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MAPPING_")
    service_name: ClassVar[str] = "mapping"

    port: int = DEFAULT_PORTS["mapping"]
