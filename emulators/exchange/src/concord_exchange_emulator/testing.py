"""The emulator in this process on a free port, for tests (this package's and its clients')."""

from __future__ import annotations

import base64
import json
import pathlib
import socket
import ssl
import threading
import time
import urllib.request
from typing import Any

import uvicorn
from lxml import etree

from concord_exchange_emulator.app import IDLE_CONNECTION_SECONDS, build_app
from concord_exchange_emulator.seed import seed_mailbox
from concord_exchange_emulator.store import Store
from concord_exchange_emulator.tls import ensure_tls_files
from concord_exchange_emulator.xmlns import M, T


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RunningEmulator:
    """uvicorn in a daemon thread: exchangelib blocks, so the server must not share its loop."""

    def __init__(self, data_dir: pathlib.Path, *, seed: bool = True, tls: bool = False) -> None:
        self.store = Store(data_dir / "exchange.db")
        if seed:
            seed_mailbox(self.store)
        self.app = build_app(self.store)
        # Bound here, on port 0, and handed to uvicorn: no other process can take the port
        # between choosing it and serving on it.
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.port = int(self.socket.getsockname()[1])
        self.tls = ensure_tls_files(data_dir / "tls") if tls else None
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.endpoint = f"{self.base}/EWS/Exchange.asmx"
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="critical",
            timeout_graceful_shutdown=2,
            # IIS keeps an idle connection for 120 s; clients reuse theirs within that.
            timeout_keep_alive=IDLE_CONNECTION_SECONDS,
            ssl_certfile=str(self.tls.cert) if self.tls else None,
            ssl_keyfile=str(self.tls.key) if self.tls else None,
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
        self.store.close()

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.base}/__admin/{path}", data=data, method=method)
        req.add_header("content-type", "application/json")
        context = ssl.create_default_context(cafile=str(self.tls.ca_cert)) if self.tls else None
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return json.loads(resp.read() or b"null")

    def slow(self, operation: str, mailbox: str, *, latency_ms: int) -> None:
        """Answer `mailbox`'s `operation` calls `latency_ms` late, until the faults are cleared
        (a slow mailbox, to show it holds no other)."""
        fault = {"operation": operation, "mailbox": mailbox, "latency_ms": latency_ms}
        self.admin("POST", "faults", {"kind": "latency", **fault})

    def create_raw(
        self, address: str, password: str, item_xml: str, folder: str = "calendar"
    ) -> str:
        """CreateItem as some other client sends it, past exchangelib and its checks (e.g. an
        all-day item in a zone no Windows table knows): the new item's id. `item_xml` is one
        item element with the `t:` prefix (EWS types)."""
        envelope = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"'
            f' xmlns:t="{T}" xmlns:m="{M}">'
            '<soap:Header><t:RequestServerVersion Version="Exchange2016"/></soap:Header>'
            '<soap:Body><m:CreateItem SendMeetingInvitations="SendToNone">'
            f'<m:SavedItemFolderId><t:DistinguishedFolderId Id="{folder}"/></m:SavedItemFolderId>'
            f"<m:Items>{item_xml}</m:Items></m:CreateItem></soap:Body></soap:Envelope>"
        )
        req = urllib.request.Request(self.endpoint, data=envelope.encode(), method="POST")
        req.add_header("content-type", "text/xml; charset=utf-8")
        basic = base64.b64encode(f"{address}:{password}".encode()).decode()
        req.add_header("authorization", f"Basic {basic}")
        context = ssl.create_default_context(cafile=str(self.tls.ca_cert)) if self.tls else None
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            answer = etree.fromstring(resp.read())
        ids = answer.xpath("//t:ItemId/@Id", namespaces={"t": T})
        if not isinstance(ids, list) or len(ids) != 1:
            raise RuntimeError("CreateItem answered no item")
        return str(ids[0])
