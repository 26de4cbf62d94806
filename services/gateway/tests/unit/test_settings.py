"""Gateway settings: key configuration, rotation list, and the development key file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from concord_gateway.adapters.keys import dev_key_path, identity_key, verification_keys
from concord_gateway.settings import GatewaySettings
from concord_settings import SettingsError

pytestmark = pytest.mark.unit

A = "a" * 32
B = "b" * 40


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "GATEWAY_AUTH_HS256_KEY",
        "GATEWAY_AUTH_HS256_KEYS",
        "GATEWAY_AUTH_HS256_KEYSET",
        "GATEWAY_INTERNAL_IDENTITY_KEY",
        "GATEWAY_PORT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CONCORD_VAR_DIR", str(tmp_path / "var"))


def test_defaults() -> None:
    settings = GatewaySettings.from_env()
    assert settings.port == 50050
    assert (settings.auth_issuer, settings.auth_audience) == ("concord", "concord-gateway")
    assert settings.configured_keys() == []


def test_keys_from_the_environment_newest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_AUTH_HS256_KEYS", f"{B}, {A}")
    monkeypatch.setenv("GATEWAY_AUTH_HS256_KEY", A)
    assert GatewaySettings.from_env().configured_keys() == [B, A]


@pytest.mark.parametrize("variable", ["GATEWAY_AUTH_HS256_KEY", "GATEWAY_AUTH_HS256_KEYS"])
def test_a_short_key_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "short-secret")
    with pytest.raises(SettingsError) as raised:
        GatewaySettings.from_env()
    assert variable in str(raised.value)
    assert "short-secret" not in str(raised.value)


def test_an_empty_key_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_AUTH_HS256_KEY", "")
    monkeypatch.setenv("GATEWAY_AUTH_HS256_KEYS", " ")
    assert GatewaySettings.from_env().configured_keys() == []


def test_the_default_wait_may_not_exceed_the_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_SYNC_WAIT_DEFAULT_SECONDS", "600")
    with pytest.raises(SettingsError):
        GatewaySettings.from_env()


def test_without_keys_the_dev_key_is_created_once_private(tmp_path: Path) -> None:
    settings = GatewaySettings.from_env()
    path = dev_key_path(tmp_path)
    assert path == tmp_path / "secrets" / "gateway-auth.key"  # devstack's signing_key() file
    (key,) = verification_keys(settings, tmp_path)
    assert len(key) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert verification_keys(settings, tmp_path) == [key]


def test_an_existing_dev_key_is_used(tmp_path: Path) -> None:
    path = dev_key_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(B + "\n")
    assert verification_keys(GatewaySettings.from_env(), tmp_path) == [B]
    path.write_text("")
    with pytest.raises(RuntimeError, match="no usable key"):
        verification_keys(GatewaySettings.from_env(), tmp_path)


def test_configured_keys_win_over_the_dev_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GATEWAY_AUTH_HS256_KEY", A)
    assert verification_keys(GatewaySettings.from_env(), tmp_path) == [A]
    assert not dev_key_path(tmp_path).exists()


def test_a_keyset_names_each_key_by_kid(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GATEWAY_AUTH_HS256_KEYSET", f"2026-11:{B}, 2026-10:{A}:x")
    settings = GatewaySettings.from_env()
    # Split at the first colon: a key may hold one.
    assert settings.configured_keyset() == {"2026-11": B, "2026-10": f"{A}:x"}
    # A keyset alone means no unnamed key, not the dev key: every token must name its kid.
    assert verification_keys(settings, tmp_path) == []
    assert not dev_key_path(tmp_path).exists()


@pytest.mark.parametrize(
    "value", [f"{A}", f"bad kid:{A}", f"k1:{A},k1:{B}", "k1:short-secret"], ids=str
)
def test_a_bad_keyset_is_refused_without_echoing_a_key(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("GATEWAY_AUTH_HS256_KEYSET", value)
    with pytest.raises(SettingsError) as raised:
        GatewaySettings.from_env()
    assert "GATEWAY_AUTH_HS256_KEYSET" in str(raised.value)
    for secret in (A, B, "short-secret"):
        assert secret not in str(raised.value)


def test_the_identity_key_is_the_setting_else_a_shared_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    made = identity_key(GatewaySettings.from_env(), tmp_path)
    path = tmp_path / "secrets" / "internal-identity.key"
    assert path.read_text().strip() == made
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert identity_key(GatewaySettings.from_env(), tmp_path) == made  # made once
    monkeypatch.setenv("GATEWAY_INTERNAL_IDENTITY_KEY", B)
    assert identity_key(GatewaySettings.from_env(), tmp_path) == B
    monkeypatch.setenv("GATEWAY_INTERNAL_IDENTITY_KEY", "short-secret")
    with pytest.raises(SettingsError):
        GatewaySettings.from_env()
