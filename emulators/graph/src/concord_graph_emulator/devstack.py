"""The `make up` hook: how concord-devstack starts this emulator and what it tells the stack
(`emulators.graph` in var/up.json)."""

from __future__ import annotations

import pathlib
import sys
from typing import Any

from concord_devcerts import tls_files
from concord_graph_emulator.seed import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_MAILBOX,
    DEMO_TENANT,
)

DEFAULT_PORT = 50062


def spec(var_dir: pathlib.Path, port: int = DEFAULT_PORT) -> dict[str, Any]:
    data_dir = var_dir / "graph"
    base = f"https://127.0.0.1:{port}"
    return {
        "argv": [
            sys.executable,
            "-m",
            "concord_graph_emulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--seed",
            "demo",
        ],
        "ready_url": f"{base}/__admin/health",
        # Written by the emulator on its first start; the stack trusts it for this emulator.
        "ca_cert": str(tls_files(data_dir / "tls").ca_cert),
        "info": {
            "url": f"{base}/v1.0",
            "authority_url": base,
            "token_url": f"{base}/{DEMO_TENANT}/oauth2/v2.0/token",
            "tenant_id": DEMO_TENANT,
            "client_id": DEMO_CLIENT_ID,
            "client_secret": DEMO_CLIENT_SECRET,
            "mailbox": DEMO_MAILBOX,
        },
    }
