"""Settings for Concord processes, read from the environment.

Each service subclasses :class:`ServiceSettings`::

    class ReconcilerSettings(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="RECONCILER_")
        service_name: ClassVar[str] = "reconciler"

        port: int = DEFAULT_PORTS["reconciler"]
        mail_connector_addr: str = peer("mail-connector")
        nats_url: str = nats()

    settings = ReconcilerSettings.from_env()
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Final, Literal, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "DEFAULT_NATS_URL",
    "DEFAULT_PORTS",
    "NATS_PORT",
    "SecretStr",
    "ServiceSettings",
    "SettingsConfigDict",
    "SettingsError",
    "default_addr",
    "jetstream_replicas",
    "nats",
    "peer",
    "sqlite_url",
    "var_dir",
]

# The one table of default ports; services, the CLI, devstack and deploy read it from here.
DEFAULT_PORTS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "gateway": 50050,
        "reconciler": 50051,
        "mail-connector": 50052,
        "crm-connector": 50053,
        "mapping": 50054,
        "linker": 50055,
    }
)
NATS_PORT: Final = 4222
DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_NATS_URL: Final = f"nats://{DEFAULT_HOST}:{NATS_PORT}"

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class SettingsError(ValueError):
    """The environment holds a value a setting cannot take; the message is one line."""


def var_dir() -> Path:
    """Where embedded state lives (`CONCORD_VAR_DIR`, default `./var`), created if missing."""
    path = Path(os.environ.get("CONCORD_VAR_DIR") or "var")
    path.mkdir(parents=True, exist_ok=True)
    return path


def sqlite_url(path: Path) -> str:
    # Absolute, so the URL means the same file whatever the working directory is later.
    return f"sqlite+aiosqlite:///{path.resolve()}"


def default_addr(service: str) -> str:
    """`host:port` where `service` listens by default."""
    return f"{DEFAULT_HOST}:{DEFAULT_PORTS[service]}"


def peer_env(service: str) -> str:
    """The variable naming a peer's address: `mail-connector` -> `MAIL_CONNECTOR_ADDR`."""
    return service.upper().replace("-", "_") + "_ADDR"


def peer(service: str, *, default: str | None = None) -> Any:
    """A field holding a peer's `host:port`, read from the un-prefixed `<PEER>_ADDR`.

    Peers are shared across services (every caller of the linker reads `LINKER_ADDR`), so the
    variable deliberately escapes the service's own prefix: an alias overrides `env_prefix`.
    """
    if default is None:
        default = default_addr(service)
    return Field(default=default, validation_alias=peer_env(service))


def nats() -> Any:
    """A field holding the NATS server URL, read from the un-prefixed `NATS_URL`."""
    return Field(default=DEFAULT_NATS_URL, validation_alias="NATS_URL")


def jetstream_replicas() -> Any:
    """A field holding how many copies JetStream keeps of Concord's streams and buckets, read
    from the un-prefixed `NATS_JETSTREAM_REPLICAS`: 1 (one server, the embedded default) up to
    5, JetStream's limit; 3 on a 3-node cluster. Every service creating them reads the same."""
    return Field(default=1, ge=1, le=5, validation_alias="NATS_JETSTREAM_REPLICAS")


class ServiceSettings(BaseSettings):
    """Settings every service has; subclasses add an `env_prefix`, `service_name` and `port`."""

    service_name: ClassVar[str]

    host: str = DEFAULT_HOST
    port: int
    # Empty means "the service's SQLite file under var_dir()", filled in after validation
    # because it depends on the class's service name and on CONCORD_VAR_DIR at load time.
    database_url: str = ""
    drain_seconds: float = Field(default=5.0, ge=0)
    log_level: LogLevel = "INFO"

    # A validator rather than Field(ge=, le=) so the range still holds when a subclass
    # redeclares `port` with its own default.
    @field_validator("port")
    @classmethod
    def _port_in_range(cls, port: int) -> int:
        if not 0 <= port <= 65535:
            raise ValueError("port must be between 0 and 65535")
        return port

    @model_validator(mode="after")
    def _default_database_url(self) -> Self:
        if not self.database_url:
            self.database_url = sqlite_url(var_dir() / f"{self.service_name}.db")
        return self

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """Load from the environment; a bad value raises :class:`SettingsError` naming it.

        `overrides` are keyed by field name (`linker_addr=...`), peers included. Populating
        by name is not switched on in the model because pydantic-settings would then also read
        `<PREFIX><PEER>_ADDR`, a second, undocumented spelling of each peer variable.
        """
        by_alias = {_alias(cls, name) or name: value for name, value in overrides.items()}
        try:
            return cls(**by_alias)
        except ValidationError as exc:
            raise SettingsError(_describe(cls, exc)) from None


def _alias(cls: type[ServiceSettings], field: str) -> str | None:
    info = cls.model_fields.get(field)
    return info.validation_alias if info and isinstance(info.validation_alias, str) else None


def _env_name(cls: type[ServiceSettings], key: str) -> str:
    if key not in cls.model_fields:
        return key  # errors on aliased fields are keyed by the alias, already the variable
    prefix = cls.model_config.get("env_prefix", "")
    return _alias(cls, key) or f"{prefix}{key}".upper()


def _describe(cls: type[ServiceSettings], exc: ValidationError) -> str:
    # The offending value is not echoed: it may be a secret.
    problems = [
        f"{_env_name(cls, str(err['loc'][0])) if err['loc'] else cls.__name__}: {err['msg']}"
        for err in exc.errors()
    ]
    return "invalid setting " + "; ".join(problems)
