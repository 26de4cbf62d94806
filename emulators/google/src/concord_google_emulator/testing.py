"""The emulator in this process on a free port over HTTPS, for tests (this package's and its
clients'), with helpers that build the real google-api-python-client against it."""

from __future__ import annotations

import json
import pathlib
import socket
import ssl
import threading
import time
import urllib.request
from typing import Any

import google_auth_httplib2  # type: ignore[import-untyped]
import httplib2  # type: ignore[import-untyped]
import uvicorn
from google.oauth2 import service_account
from googleapiclient.discovery import build  # type: ignore[import-untyped]

from concord_google_emulator.app import Emulator, build_app
from concord_google_emulator.auth import ALL_SCOPES
from concord_google_emulator.tls import ensure_tls_files

__all__ = ["RunningEmulator", "build_service"]


class RunningEmulator:
    """uvicorn in a daemon thread: google-api-python-client blocks, so the server must not
    share the test's event loop."""

    def __init__(self, data_dir: pathlib.Path, *, emulator: Emulator | None = None) -> None:
        self.emulator = emulator or Emulator()
        self.app = build_app(self.emulator)
        # Bound here, on port 0, and handed to uvicorn: no other process can take the port.
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.port = int(self.socket.getsockname()[1])
        self.tls = ensure_tls_files(data_dir / "tls")
        self.base = f"https://127.0.0.1:{self.port}/"
        self.token_uri = f"{self.base}token"
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

    @property
    def ca_file(self) -> str:
        return str(self.tls.ca_cert)

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

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.base}__admin/{path}", data=data, method=method)
        req.add_header("content-type", "application/json")
        context = ssl.create_default_context(cafile=self.ca_file)
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return json.loads(resp.read() or b"null")

    def add_user(self, address: str) -> str:
        self.admin("POST", "users", {"email": address})
        return address.lower()

    def service_account(self, scopes: list[str] | None = None) -> dict[str, Any]:
        """A new service account's JSON key (domain-wide delegation of `scopes`, else all)."""
        key: dict[str, Any] = self.admin(
            "POST", "service-accounts", {} if scopes is None else {"scopes": scopes}
        )
        return key


API_PATHS = {"calendar": "calendar/v3/", "gmail": "", "people": "", "tasks": ""}
VERSIONS = {"calendar": "v3", "gmail": "v1", "people": "v1", "tasks": "v1"}


def build_service(
    emulator: RunningEmulator,
    key: dict[str, Any],
    api: str,
    subject: str,
    scopes: tuple[str, ...] = ALL_SCOPES,
) -> Any:
    """The real client for `api`, as a delegated service account acting as `subject`."""
    credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
        key, scopes=list(scopes), subject=subject
    )
    http = google_auth_httplib2.AuthorizedHttp(
        credentials, http=httplib2.Http(ca_certs=emulator.ca_file, timeout=10)
    )
    return build(
        api,
        VERSIONS[api],
        http=http,
        static_discovery=True,
        client_options={"api_endpoint": emulator.base + API_PATHS[api]},
    )
