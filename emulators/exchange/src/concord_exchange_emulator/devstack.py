"""The `make up` hook: how concord-devstack starts this emulator and what it tells the stack."""

from __future__ import annotations

import pathlib
import sys
from typing import Any

from concord_exchange_emulator.seed import (
    DEMO_MAILBOX,
    DEMO_PASSWORD,
    SERVICE_ACCOUNT,
    SERVICE_PASSWORD,
)

DEFAULT_PORT = 50061
# Real messages for the demo mailbox, where the workspace has them (beside the repository).
REAL_MAIL = pathlib.Path(__file__).resolve().parents[4].parent / "shared/data/mail/lkml"


def spec(var_dir: pathlib.Path, port: int = DEFAULT_PORT) -> dict[str, Any]:
    real_mail = ["--mail-dir", str(REAL_MAIL)] if (REAL_MAIL / "cur").is_dir() else []
    return {
        "argv": [
            sys.executable,
            "-m",
            "concord_exchange_emulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(var_dir / "exchange"),
            "--seed",
            "demo",
            *real_mail,
        ],
        "ready_url": f"http://127.0.0.1:{port}/__admin/health",
        "ca_cert": None,
        "info": {
            "url": f"http://127.0.0.1:{port}/EWS/Exchange.asmx",
            "username": DEMO_MAILBOX,
            "password": DEMO_PASSWORD,
            "mailbox": DEMO_MAILBOX,
            "service_account": {"username": SERVICE_ACCOUNT, "password": SERVICE_PASSWORD},
        },
    }
