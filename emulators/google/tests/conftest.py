"""The emulator over HTTPS and the real google-api-python-client, unmodified, built from the
discovery documents it ships, with a delegated service account's credentials."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from concord_google_emulator.auth import ALL_SCOPES
from concord_google_emulator.testing import RunningEmulator, build_service

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    emu = RunningEmulator(tmp_path_factory.mktemp("google")).start()
    yield emu
    emu.stop()


@pytest.fixture(autouse=True)
def no_violations(emulator: RunningEmulator) -> Iterator[None]:
    """Every request a test's client sends is one the discovery documents allow, and every
    response conforms to its schema; tests that send bad requests on purpose clear the list."""
    emulator.admin("DELETE", "violations")
    yield
    emulator.admin("DELETE", "faults")
    emulator.admin("DELETE", "quota")
    assert emulator.admin("DELETE", "violations") == []


@pytest.fixture
def user(emulator: RunningEmulator) -> str:
    return emulator.add_user(f"u-{uuid.uuid4().hex[:10]}@concord.test")


@pytest.fixture(scope="module")
def key(emulator: RunningEmulator) -> dict[str, Any]:
    return emulator.service_account()


Builder = Callable[..., Any]


@pytest.fixture
def client(emulator: RunningEmulator, key: dict[str, Any], user: str) -> Iterator[Builder]:
    """`client("calendar")`: that API's service, acting as `user` through delegation."""
    made: list[Any] = []

    def make(
        api: str,
        *,
        subject: str | None = None,
        scopes: tuple[str, ...] = ALL_SCOPES,
        key_info: dict[str, Any] | None = None,
    ) -> Any:
        service = build_service(emulator, key_info or key, api, subject or user, scopes)
        made.append(service)
        return service

    yield make
    for service in made:
        service.close()
