"""An in-process emulator on a free port, and exchangelib accounts that talk to it."""

from __future__ import annotations

import gc
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from exchangelib import (  # type: ignore[import-untyped]
    BASIC,
    DELEGATE,
    Account,
    Configuration,
    Credentials,
    FailFast,
    Version,
)
from exchangelib.protocol import BaseProtocol, close_connections  # type: ignore[import-untyped]
from exchangelib.version import EXCHANGE_2016  # type: ignore[import-untyped]

from concord_exchange_emulator.testing import RunningEmulator

# A dead emulator must fail a test in seconds, not after exchangelib's default 120 s.
BaseProtocol.TIMEOUT = 10

MakeConfig = Callable[..., Any]


@pytest.fixture(autouse=True)
def _close_exchangelib_sessions() -> Iterator[None]:
    """exchangelib keeps pooled sessions per endpoint and drops some without closing them after an
    error (401, a SOAP fault); collect them here so their ResourceWarning cannot surface, as an
    unraisable-exception error, in whichever later test the garbage collector happens to run."""
    yield
    close_connections()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    emu = RunningEmulator(tmp_path_factory.mktemp("exchange")).start()
    yield emu
    emu.stop()


@pytest.fixture
def make_config(emulator: RunningEmulator) -> MakeConfig:
    """exchangelib's Configuration for a user: Basic auth, Exchange 2016, fail fast by default."""

    def make(username: str, password: str, **kwargs: Any) -> Any:
        kwargs.setdefault("version", Version(build=EXCHANGE_2016))
        kwargs.setdefault("retry_policy", FailFast())
        kwargs.setdefault("auth_type", BASIC)
        return Configuration(
            service_endpoint=emulator.endpoint,
            credentials=Credentials(username, password),
            **kwargs,
        )

    return make


@pytest.fixture
def new_user(emulator: RunningEmulator) -> Callable[..., tuple[str, str]]:
    """A fresh user with its own mailbox (one uuid per test keeps tests independent)."""

    def make(**extra: Any) -> tuple[str, str]:
        address = f"u-{uuid.uuid4().hex[:10]}@concord.test"
        password = uuid.uuid4().hex
        emulator.admin("POST", "users", {"username": address, "password": password, **extra})
        return address, password

    return make


@pytest.fixture
def account(make_config: MakeConfig, new_user: Callable[..., tuple[str, str]]) -> Any:
    address, password = new_user()
    return Account(
        address,
        config=make_config(address, password),
        autodiscover=False,
        access_type=DELEGATE,
    )
