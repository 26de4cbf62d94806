from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import pytest

from concord_settings import (
    DEFAULT_NATS_URL,
    DEFAULT_PORTS,
    NATS_PORT,
    SecretStr,
    ServiceSettings,
    SettingsConfigDict,
    SettingsError,
    nats,
    peer,
    var_dir,
)

pytestmark = pytest.mark.unit


class MailConnectorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MAIL_CONNECTOR_")
    service_name: ClassVar[str] = "mail-connector"

    port: int = DEFAULT_PORTS["mail-connector"]
    linker_addr: str = peer("linker")
    crm_connector_addr: str = peer("crm-connector", default="crm.internal:443")
    nats_url: str = nats()
    imap_password: SecretStr = SecretStr("")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    # The developer's shell may export any of these; tests must see only what they set.
    for name in list(os.environ):
        if name.startswith(("MAIL_CONNECTOR_", "LINKER_", "CRM_CONNECTOR_", "NATS_", "CONCORD_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CONCORD_VAR_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def test_var_dir_defaults_to_var_in_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CONCORD_VAR_DIR")
    monkeypatch.chdir(tmp_path)
    assert var_dir() == Path("var")
    assert (tmp_path / "var").is_dir()


def test_var_dir_follows_concord_var_dir_and_creates_it(clean_env: Path) -> None:
    assert not clean_env.exists()
    assert var_dir() == clean_env
    assert clean_env.is_dir()


def test_defaults(clean_env: Path) -> None:
    settings = MailConnectorSettings.from_env()
    assert settings.host == "127.0.0.1"
    assert settings.port == 50052
    assert settings.address == "127.0.0.1:50052"
    assert settings.drain_seconds == 5
    assert settings.log_level == "INFO"
    assert settings.database_url == f"sqlite+aiosqlite:///{clean_env.resolve()}/mail-connector.db"
    assert settings.linker_addr == "127.0.0.1:50055"
    assert settings.crm_connector_addr == "crm.internal:443"
    assert settings.nats_url == DEFAULT_NATS_URL == "nats://127.0.0.1:4222"


def test_own_settings_are_read_with_the_service_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAIL_CONNECTOR_HOST", "0.0.0.0")
    monkeypatch.setenv("MAIL_CONNECTOR_PORT", "6000")
    monkeypatch.setenv("MAIL_CONNECTOR_DATABASE_URL", "postgresql://db/concord")
    monkeypatch.setenv("MAIL_CONNECTOR_DRAIN_SECONDS", "0.5")
    monkeypatch.setenv("MAIL_CONNECTOR_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("PORT", "1")  # an un-prefixed variable must not leak in
    settings = MailConnectorSettings.from_env()
    assert (settings.host, settings.port) == ("0.0.0.0", 6000)
    assert settings.database_url == "postgresql://db/concord"
    assert settings.drain_seconds == 0.5
    assert settings.log_level == "DEBUG"


def test_peers_and_nats_are_read_without_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINKER_ADDR", "linker:50055")
    monkeypatch.setenv("MAIL_CONNECTOR_CRM_CONNECTOR_ADDR", "wrong:1")
    monkeypatch.setenv("NATS_URL", "nats://nats:4222")
    settings = MailConnectorSettings.from_env()
    assert settings.linker_addr == "linker:50055"
    assert settings.crm_connector_addr == "crm.internal:443"
    assert settings.nats_url == "nats://nats:4222"


def test_fields_can_be_passed_by_name() -> None:
    settings = MailConnectorSettings.from_env(linker_addr="127.0.0.1:1", port=0)
    assert settings.linker_addr == "127.0.0.1:1"
    assert settings.port == 0


def test_secrets_are_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAIL_CONNECTOR_IMAP_PASSWORD", "hunter2")
    settings = MailConnectorSettings.from_env()
    assert settings.imap_password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.model_dump())


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MAIL_CONNECTOR_PORT", "http"),
        ("MAIL_CONNECTOR_PORT", "70000"),
        ("MAIL_CONNECTOR_DRAIN_SECONDS", "-1"),
        ("MAIL_CONNECTOR_LOG_LEVEL", "LOUD"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        MailConnectorSettings.from_env()
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"invalid setting {variable}: ")


def test_a_bad_secret_is_named_but_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    class TokenSettings(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="MAIL_CONNECTOR_")
        service_name: ClassVar[str] = "mail-connector"
        port: int = 1
        api_token: SecretStr = SecretStr("x")
        retries: int = 1

    monkeypatch.setenv("MAIL_CONNECTOR_RETRIES", "s3cr3t-token")
    with pytest.raises(SettingsError) as raised:
        TokenSettings.from_env()
    assert "MAIL_CONNECTOR_RETRIES" in str(raised.value)
    assert "s3cr3t" not in str(raised.value)


def test_default_port_table() -> None:
    assert dict(DEFAULT_PORTS) == {
        "gateway": 50050,
        "reconciler": 50051,
        "mail-connector": 50052,
        "crm-connector": 50053,
        "mapping": 50054,
        "linker": 50055,
    }
    assert NATS_PORT == 4222
    with pytest.raises(TypeError):
        DEFAULT_PORTS["gateway"] = 1  # type: ignore[index]
