"""The emulator in this process on a free port, over HTTPS (msal insists on an HTTPS
authority), for tests: this package's and the mail-connector's."""

from __future__ import annotations

import base64
import json
import pathlib
import socket
import ssl
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any

import uvicorn

from concord_devcerts import ensure_tls
from concord_graph_emulator.app import build_app
from concord_graph_emulator.store import Store

__all__ = ["AppCredentials", "RunningEmulator"]


@dataclass(frozen=True)
class AppCredentials:
    tenant_id: str
    client_id: str
    client_secret: str


class RunningEmulator:
    def __init__(self, data_dir: pathlib.Path, *, seed: bool = False) -> None:
        self.store = Store()
        if seed:
            from concord_graph_emulator.seed import seed_demo

            seed_demo(self.store)
        self.app = build_app(self.store)
        self.tls = ensure_tls(data_dir / "tls", "Concord Graph emulator")
        # Bound here, on port 0, and handed to uvicorn: no other process can take the port.
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.port = int(self.socket.getsockname()[1])
        self.base = f"https://127.0.0.1:{self.port}"
        self.graph_url = f"{self.base}/v1.0"
        self.ca_cert = str(self.tls.ca_cert)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="critical",
            timeout_graceful_shutdown=2,
            ssl_certfile=str(self.tls.cert),
            ssl_keyfile=str(self.tls.key),
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

    def start(self) -> RunningEmulator:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the emulator did not start within 10 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.socket.close()

    def token_url(self, tenant: str) -> str:
        return f"{self.base}/{tenant}/oauth2/v2.0/token"

    def authority(self, tenant: str) -> str:
        return f"{self.base}/{tenant}"

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.base}/__admin/{path}", data=data, method=method)
        req.add_header("content-type", "application/json")
        context = ssl.create_default_context(cafile=self.ca_cert)
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return json.loads(resp.read() or b"null")

    def new_app(self) -> AppCredentials:
        creds = AppCredentials(str(uuid.uuid4()), str(uuid.uuid4()), uuid.uuid4().hex)
        self.admin(
            "POST",
            "apps",
            {
                "tenant_id": creds.tenant_id,
                "client_id": creds.client_id,
                "client_secret": creds.client_secret,
            },
        )
        return creds

    def new_mailbox(self, prefix: str = "g") -> str:
        address = f"{prefix}-{uuid.uuid4().hex[:10]}@concord.test"
        self.admin("POST", "users", {"address": address})
        return address

    def deliver(self, address: str, folder: str, mime: bytes, *categories: str) -> str:
        body = {
            "folder": folder,
            "mime": base64.b64encode(mime).decode(),
            "categories": list(categories),
        }
        found: str = self.admin("POST", f"users/{address}/deliver", body)["id"]
        return found
