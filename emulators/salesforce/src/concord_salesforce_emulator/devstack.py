"""The `concord.emulators` entry point `make up` discovers: how to start this emulator."""

from __future__ import annotations

import pathlib
import sys
from typing import Any

from concord_salesforce_emulator.certs import tls_files
from concord_salesforce_emulator.server import Settings

DEFAULT_PORT = 50060


def spec(var_dir: pathlib.Path, port: int = DEFAULT_PORT) -> dict[str, Any]:
    data_dir = var_dir / "salesforce"
    url = f"https://127.0.0.1:{port}"
    ca_cert = str(tls_files(data_dir).ca_cert)
    settings = Settings()
    return {
        "argv": [
            sys.executable,
            "-m",
            "concord_salesforce_emulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--seed",
            "demo",
        ],
        "ready_url": f"{url}/__admin/health",
        "ca_cert": ca_cert,
        "info": {
            "url": url,
            "token_url": f"{url}/services/oauth2/token",
            "username": settings.username,
            "password": settings.password,
            "client_id": settings.client_id,
            "client_secret": settings.client_secret,
            "ca_cert": ca_cert,
            "admin_url": f"{url}/__admin",
            # Salesforce's Pub/Sub API (Change Data Capture), gRPC over TLS with `ca_cert`.
            "pubsub_addr": f"127.0.0.1:{port + 1}",
        },
    }
