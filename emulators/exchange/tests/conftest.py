"""An in-process emulator on a free port, and exchangelib accounts that talk to it."""

from __future__ import annotations

import json
import pathlib
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn
from exchangelib import (
    BASIC,
    DELEGATE,
    IMPERSONATION,
    Account,
    Configuration,
    Credentials,
    FailFast,
    Version,
)
from exchangelib.protocol import BaseProtocol
from exchangelib.version import EXCHANGE_2016

from concord_exchange_emulator.app import build_app
from concord_exchange_emulator.seed import seed_mailbox
from concord_exchange_emulator.store import Store

# A dead emulator must fail a test in seconds, not after exchangelib's default 120 s.
BaseProtocol.TIMEOUT = 10


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Emulator:
    def __init__(self, data_dir: pathlib.Path) -> None:
        self.store = Store(data_dir / "exchange.db")
        seed_mailbox(self.store)
        self.app = build_app(self.store)
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.endpoint = f"{self.base}/EWS/Exchange.asmx"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="critical")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the emulator did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.store.close()

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.base}/__admin/{path}", data=data, method=method)
        req.add_header("content-type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def config(self, username: str, password: str, **kwargs: Any) -> Configuration:
        kwargs.setdefault("version", Version(build=EXCHANGE_2016))
        kwargs.setdefault("retry_policy", FailFast())
        return Configuration(
            service_endpoint=self.endpoint,
            credentials=Credentials(username, password),
            auth_type=BASIC,
            **kwargs,
        )


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    emu = Emulator(tmp_path_factory.mktemp("exchange"))
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture
def new_user(emulator: Emulator) -> Callable[..., tuple[str, str]]:
    """A fresh user with its own mailbox (one uuid per test keeps tests independent)."""

    def make(**extra: Any) -> tuple[str, str]:
        address = f"u-{uuid.uuid4().hex[:10]}@concord.test"
        password = uuid.uuid4().hex
        emulator.admin("POST", "users", {"username": address, "password": password, **extra})
        return address, password

    return make


@pytest.fixture
def account(emulator: Emulator, new_user: Callable[..., tuple[str, str]]) -> Account:
    address, password = new_user()
    return Account(
        address,
        config=emulator.config(address, password),
        autodiscover=False,
        access_type=DELEGATE,
    )


__all__ = ["IMPERSONATION", "Emulator"]
