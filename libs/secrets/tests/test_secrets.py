from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken
from pydantic import BaseModel, SecretStr, ValidationError

from concord_secrets import FernetKey, InvalidKey, SecretBox, key_file, key_path

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def var_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CONCORD_VAR_DIR", str(tmp_path))
    return tmp_path


def test_round_trip_and_the_sealed_form_hides_the_secret() -> None:
    box = SecretBox(Fernet.generate_key())
    token = box.seal(b"hunter2")
    assert b"hunter2" not in token
    assert box.open(token) == b"hunter2"


def test_another_key_cannot_open() -> None:
    token = SecretBox(Fernet.generate_key()).seal(b"hunter2")
    with pytest.raises(InvalidToken):
        SecretBox(Fernet.generate_key()).open(token)


def test_a_bad_key_names_its_source_not_the_key() -> None:
    with pytest.raises(InvalidKey, match=r"^MAIL_CONNECTOR_ENCRYPTION_KEY must be") as raised:
        SecretBox.from_setting(
            SecretStr("not-a-key"), key_name="m", setting="MAIL_CONNECTOR_ENCRYPTION_KEY"
        )
    assert "not-a-key" not in str(raised.value)


def test_a_bad_dev_key_file_is_named(var_dir: Path) -> None:
    path = key_path("broken")
    path.parent.mkdir(parents=True)
    path.write_text("garbage\n")
    with pytest.raises(InvalidKey, match=str(path)):
        SecretBox.from_setting(None, key_name="broken")


def test_dev_key_is_generated_once_with_mode_0600(var_dir: Path) -> None:
    first = SecretBox.from_setting(None, key_name="mail-connector")
    path = key_path("mail-connector")
    assert path == var_dir / "secrets" / "mail-connector.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    second = SecretBox.from_setting(None, key_name="mail-connector")
    assert second.open(first.seal(b"s")) == b"s"
    assert [p.name for p in path.parent.iterdir()] == ["mail-connector.key"]


def test_configured_key_wins_over_the_dev_key() -> None:
    key = Fernet.generate_key()
    box = SecretBox.from_setting(SecretStr(key.decode()), key_name="mail-connector")
    assert Fernet(key).decrypt(box.seal(b"s")) == b"s"
    assert not key_path("mail-connector").exists()


def test_key_file_keeps_an_existing_key_and_takes_a_generator(tmp_path: Path) -> None:
    base = tmp_path / "elsewhere"
    made = key_file("gateway-auth", var_dir=base, generate=lambda: "x" * 43)
    assert made == "x" * 43
    (base / "secrets" / "gateway-auth.key").write_text("kept\n")
    assert key_file("gateway-auth", var_dir=base, generate=lambda: "other") == "kept"


def test_racing_processes_end_with_one_key(var_dir: Path) -> None:
    script = "from concord_secrets import key_file; print(key_file('race'))"
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    keys = {proc.communicate(timeout=30)[0].strip() for proc in procs}
    assert keys == {key_path("race").read_text().strip()}
    assert [p.name for p in key_path("race").parent.iterdir()] == ["race.key"]


def test_fernet_key_setting_refuses_a_bad_key_without_echoing_it() -> None:
    class Settings(BaseModel):
        key: FernetKey | None = None

    good = Fernet.generate_key().decode()
    assert Settings(key=SecretStr(good)).key == SecretStr(good)
    assert Settings().key is None
    with pytest.raises(ValidationError, match="32-byte Fernet key") as raised:
        Settings(key=SecretStr("not-a-key"))
    assert "not-a-key" not in str(raised.value)
