"""`python -m concord_exchange_emulator` as `make up` starts it; state survives a restart."""

from __future__ import annotations

import http.client
import json
import pathlib
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from concord_exchange_emulator import devstack
from concord_exchange_emulator.testing import RunningEmulator, free_port

pytestmark = pytest.mark.integration


@contextmanager
def _running(var_dir: pathlib.Path, port: int) -> Iterator[dict[str, object]]:
    spec = devstack.spec(var_dir, port)
    proc = subprocess.Popen(spec["argv"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(str(spec["ready_url"]), timeout=1) as resp:
                    assert json.loads(resp.read())["status"] == "ok"
                    break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
                assert time.monotonic() < deadline, "the emulator did not become ready"
                time.sleep(0.1)
        yield spec
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


def _calendar_subjects(spec: dict[str, object]) -> list[str]:
    from exchangelib import (  # type: ignore[import-untyped]
        BASIC,
        DELEGATE,
        Account,
        Configuration,
        Credentials,
        FailFast,
        Version,
    )
    from exchangelib.version import EXCHANGE_2016  # type: ignore[import-untyped]

    info = spec["info"]
    assert isinstance(info, dict)
    config = Configuration(
        service_endpoint=info["url"],
        credentials=Credentials(info["username"], info["password"]),
        auth_type=BASIC,
        version=Version(build=EXCHANGE_2016),
        retry_policy=FailFast(),
    )
    account = Account(info["mailbox"], config=config, autodiscover=False, access_type=DELEGATE)
    return sorted(i.subject for i in account.calendar.all())


def test_the_devstack_command_serves_the_seeded_mailbox_across_restarts(
    tmp_path: pathlib.Path,
) -> None:
    port = free_port()
    with _running(tmp_path, port) as spec:
        subjects = _calendar_subjects(spec)
        assert "Quarterly review with Acme" in subjects
    with _running(tmp_path, port) as spec:
        # Seeding again is a no-op: the same items, not twice as many.
        assert _calendar_subjects(spec) == subjects


def test_an_idle_connection_stays_open_as_iis_keeps_it(emulator: RunningEmulator) -> None:
    """Clients (exchangelib's pooled sessions) reuse a connection after pauses of many seconds;
    a server that drops it after a few seconds of idleness fails their next request."""
    connection = http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=10)
    try:
        for pause in (0.0, 6.0):
            time.sleep(pause)
            connection.request("GET", "/__admin/health")
            response = connection.getresponse()
            response.read()
            assert response.status == 200
    finally:
        connection.close()
