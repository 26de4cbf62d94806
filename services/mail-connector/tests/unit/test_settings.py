from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from concord_mail_connector.settings import MailConnectorSettings
from concord_settings import SettingsError

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def var_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CONCORD_VAR_DIR", str(tmp_path))
    return tmp_path


def test_settings_read_the_prefixed_key_and_reject_a_bad_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("MAIL_CONNECTOR_ENCRYPTION_KEY", key)
    settings = MailConnectorSettings.from_env()
    assert settings.encryption_key is not None
    assert settings.encryption_key.get_secret_value() == key
    assert settings.port == 50052
    monkeypatch.setenv("MAIL_CONNECTOR_ENCRYPTION_KEY", "not-a-key")
    with pytest.raises(SettingsError, match="MAIL_CONNECTOR_ENCRYPTION_KEY") as caught:
        MailConnectorSettings.from_env()
    assert "not-a-key" not in str(caught.value)


def test_ews_knobs_have_working_defaults_and_read_the_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = MailConnectorSettings.from_env()
    assert (defaults.ews_max_workers, defaults.ews_max_back_off_seconds) == (16, 30.0)
    monkeypatch.setenv("MAIL_CONNECTOR_EWS_MAX_WORKERS", "4")
    monkeypatch.setenv("MAIL_CONNECTOR_EWS_REQUEST_TIMEOUT_SECONDS", "5")
    settings = MailConnectorSettings.from_env()
    assert settings.ews_max_workers == 4
    assert settings.ews_request_timeout_seconds == 5.0
