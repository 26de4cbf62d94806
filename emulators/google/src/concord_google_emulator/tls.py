"""The emulator's HTTPS files (see concord_devcerts)."""

from __future__ import annotations

import pathlib

from concord_devcerts import TlsFiles, ensure_tls

__all__ = ["TlsFiles", "ensure_tls_files"]


def ensure_tls_files(directory: pathlib.Path) -> TlsFiles:
    """Reuse the files when present, so clients that trust the CA keep trusting it."""
    return ensure_tls(directory, "Concord Google emulator")
