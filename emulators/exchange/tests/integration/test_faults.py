"""The admin API: health, call counters, and injected faults as exchangelib experiences them."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from exchangelib import DELEGATE, Account, FaultTolerance, Task  # type: ignore[import-untyped]
from exchangelib.errors import (  # type: ignore[import-untyped]
    ErrorServerBusy,
    ErrorTimeoutExpired,
    TransportError,
)

from concord_exchange_emulator.testing import RunningEmulator

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _no_leftover_faults(emulator: RunningEmulator) -> Any:
    yield None
    emulator.admin("DELETE", "faults")


def test_health(emulator: RunningEmulator) -> None:
    assert emulator.admin("GET", "health")["status"] == "ok"


def test_calls_are_counted_per_operation_and_reset(emulator: RunningEmulator, account: Any) -> None:
    emulator.admin("DELETE", "calls")
    list(account.tasks.all())
    calls = emulator.admin("GET", "calls")
    assert calls["FindItem"] == 1
    assert calls["GetFolder"] >= 1
    emulator.admin("DELETE", "calls")
    assert emulator.admin("GET", "calls") == {}


def test_server_busy_fails_fast_with_the_back_off(emulator: RunningEmulator, account: Any) -> None:
    tasks = account.tasks
    emulator.admin(
        "POST", "faults", {"kind": "server_busy", "operation": "FindItem", "back_off_ms": 1500}
    )
    with pytest.raises(ErrorServerBusy) as caught:
        list(tasks.all())
    assert caught.value.back_off == 1.5
    assert list(tasks.all()) == []


def test_server_busy_is_honoured_by_exchangelibs_retry(
    emulator: RunningEmulator, make_config: Any, new_user: Any
) -> None:
    address, password = new_user()
    config = make_config(address, password, retry_policy=FaultTolerance(max_wait=10))
    account = Account(address, config=config, autodiscover=False, access_type=DELEGATE)
    tasks = account.tasks
    Task(account=account, folder=tasks, subject="survives").save()
    emulator.admin("DELETE", "calls")
    emulator.admin(
        "POST",
        "faults",
        {"kind": "server_busy", "operation": "FindItem", "back_off_ms": 300, "times": 2},
    )
    started = time.monotonic()
    assert [t.subject for t in tasks.all()] == ["survives"]
    assert time.monotonic() - started >= 0.6
    assert emulator.admin("GET", "calls")["FindItem"] == 3


def test_http_error(emulator: RunningEmulator, account: Any) -> None:
    tasks = account.tasks
    emulator.admin("POST", "faults", {"kind": "http_error", "status": 503, "operation": "FindItem"})
    with pytest.raises(TransportError):
        list(tasks.all())
    assert list(tasks.all()) == []


def test_latency(emulator: RunningEmulator, account: Any) -> None:
    tasks = account.tasks
    emulator.admin(
        "POST", "faults", {"kind": "latency", "latency_ms": 400, "operation": "FindItem"}
    )
    started = time.monotonic()
    assert list(tasks.all()) == []
    assert time.monotonic() - started >= 0.4


def test_a_dropped_response_after_commit(emulator: RunningEmulator, account: Any) -> None:
    tasks = account.tasks
    emulator.admin("POST", "faults", {"kind": "drop_response", "operation": "CreateItem"})
    with pytest.raises(ErrorTimeoutExpired):
        Task(account=account, folder=tasks, subject="written anyway").save()
    assert [t.subject for t in tasks.all()] == ["written anyway"]


def test_a_bad_fault_is_refused(emulator: RunningEmulator) -> None:
    req = urllib.request.Request(
        f"{emulator.base}/__admin/faults",
        data=json.dumps({"kind": "meteor"}).encode(),
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(req, timeout=5)
    assert caught.value.code == 400


def test_a_fault_for_one_mailbox_leaves_the_others_alone(
    emulator: RunningEmulator, account: Any, make_config: Any, new_user: Any
) -> None:
    other_address, other_password = new_user()
    other = Account(
        other_address,
        config=make_config(other_address, other_password),
        autodiscover=False,
        access_type=DELEGATE,
    )
    tasks, other_tasks = account.tasks, other.tasks
    emulator.admin(
        "POST",
        "faults",
        {"kind": "server_busy", "operation": "FindItem", "mailbox": other_address},
    )
    assert list(tasks.all()) == []
    with pytest.raises(ErrorServerBusy):
        list(other_tasks.all())
