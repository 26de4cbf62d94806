"""The `make up` hook: how concord-devstack starts this emulator and what it tells the stack."""

from __future__ import annotations

import pathlib
import sys
from typing import Any

from concord_devcerts import tls_files
from concord_google_emulator.__main__ import KEY_FILE
from concord_google_emulator.seed import DEMO_USER

DEFAULT_PORT = 50062
# Real messages for the demo user, where the workspace has them (beside the repository).
REAL_MAIL = pathlib.Path(__file__).resolve().parents[4].parent / "shared/data/mail/lkml"
# Where the mail-connector keeps its push receiver's CA (<CONCORD_VAR_DIR>/google-push).
RECEIVER_CA = pathlib.Path("google-push") / "ca.pem"


def spec(var_dir: pathlib.Path, port: int = DEFAULT_PORT) -> dict[str, Any]:
    data_dir = var_dir / "google"
    url = f"https://127.0.0.1:{port}/"
    ca_cert = str(tls_files(data_dir / "tls").ca_cert)
    real_mail = ["--mail-dir", str(REAL_MAIL)] if (REAL_MAIL / "cur").is_dir() else []
    return {
        "argv": [
            sys.executable,
            "-m",
            "concord_google_emulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--seed",
            "demo",
            "--trust-ca",
            str(var_dir / RECEIVER_CA),
            *real_mail,
        ],
        "ready_url": f"{url}__admin/health",
        "ca_cert": ca_cert,
        "info": {
            # The API root a client's `api_endpoint` takes (Calendar's is url + "calendar/v3/").
            "url": url,
            "token_uri": f"{url}token",
            "service_account_file": str(data_dir / KEY_FILE),
            "user": DEMO_USER,
            "ca_cert": ca_cert,
            "admin_url": f"{url}__admin",
        },
    }
