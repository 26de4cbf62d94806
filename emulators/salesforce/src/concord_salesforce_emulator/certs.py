"""The emulator's HTTPS files under `<data dir>/tls` (see concord_devcerts)."""

from __future__ import annotations

from pathlib import Path

from concord_devcerts import TlsFiles, server_context
from concord_devcerts import ensure_tls as _ensure_tls
from concord_devcerts import tls_files as _tls_files

__all__ = ["TlsFiles", "ensure_tls", "server_context", "tls_files"]


def tls_files(data_dir: Path) -> TlsFiles:
    return _tls_files(data_dir / "tls")


def ensure_tls(data_dir: Path) -> TlsFiles:
    return _ensure_tls(data_dir / "tls", "Concord Salesforce emulator")
