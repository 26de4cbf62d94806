"""Development key files: created once, private (0600), the same key for racing processes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from cryptography.fernet import Fernet

from concord_settings import var_dir as default_var_dir

__all__ = ["key_file", "key_path"]


def _fernet_key() -> str:
    return Fernet.generate_key().decode()


def key_path(name: str, var_dir: Path | None = None) -> Path:
    """`<var_dir>/secrets/<name>.key`; `var_dir` defaults to `CONCORD_VAR_DIR`."""
    return (var_dir if var_dir is not None else default_var_dir()) / "secrets" / f"{name}.key"


def key_file(
    name: str,
    *,
    var_dir: Path | None = None,
    generate: Callable[[], str] = _fernet_key,
) -> str:
    """The key in `key_path(name, var_dir)`, stripped; made with `generate` if the file is missing.

    The default `generate` makes a Fernet key, usable by :class:`SecretBox`.
    """
    path = key_path(name, var_dir)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().strip()
    key = generate()
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(key)
    try:
        # Link, not rename: if another process made the key first, its key wins and both
        # processes use the same one (secrets sealed with a lost key could never be opened).
        os.link(tmp, path)
    except FileExistsError:
        key = path.read_text().strip()
    finally:
        tmp.unlink()
    return key
