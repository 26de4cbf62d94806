"""Secrets at rest for Concord services.

A key comes from a setting when one is configured; otherwise from a development key file under
`<CONCORD_VAR_DIR>/secrets/<name>.key`, generated once (mode 0600) so the embedded default needs
no setup::

    class MailConnectorSettings(ServiceSettings):
        encryption_key: FernetKey | None = None

    box = SecretBox.from_setting(settings.encryption_key, key_name="mail-connector")
    token = box.seal(b"hunter2")
"""

from __future__ import annotations

from concord_secrets.box import FernetKey, InvalidKey, SecretBox, check_fernet_key
from concord_secrets.files import key_file, key_path

__all__ = ["FernetKey", "InvalidKey", "SecretBox", "check_fernet_key", "key_file", "key_path"]
