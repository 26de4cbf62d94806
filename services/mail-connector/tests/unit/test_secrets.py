from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken

from concord_mail_connector.adapters.secrets import CredentialCipher, dev_key_path
from concord_mail_connector.settings import MailConnectorSettings
from concord_settings import SecretStr, SettingsError

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def var_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CONCORD_VAR_DIR", str(tmp_path))
    return tmp_path


def test_round_trip_and_ciphertext_hides_the_secret() -> None:
    cipher = CredentialCipher(Fernet.generate_key())
    token = cipher.encrypt(b"hunter2")
    assert b"hunter2" not in token
    assert cipher.decrypt(token) == b"hunter2"


def test_another_key_cannot_decrypt() -> None:
    token = CredentialCipher(Fernet.generate_key()).encrypt(b"hunter2")
    with pytest.raises(InvalidToken):
        CredentialCipher(Fernet.generate_key()).decrypt(token)


def test_dev_key_is_generated_once_with_mode_0600(var_dir: Path) -> None:
    first = CredentialCipher.from_settings(None, "mail-connector")
    path = dev_key_path("mail-connector")
    assert path == var_dir / "secrets" / "mail-connector.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = CredentialCipher.from_settings(None, "mail-connector")
    assert second.decrypt(first.encrypt(b"s")) == b"s"
    assert [p.name for p in path.parent.iterdir()] == ["mail-connector.key"]


def test_configured_key_wins_over_the_dev_key() -> None:
    key = Fernet.generate_key()
    cipher = CredentialCipher.from_settings(SecretStr(key.decode()), "mail-connector")
    assert Fernet(key).decrypt(cipher.encrypt(b"s")) == b"s"
    assert not dev_key_path("mail-connector").exists()


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
