"""The `concord.emulators` entry point: its contract, and that its command really serves."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import requests
from simple_salesforce.api import Salesforce

from concord_salesforce_emulator import devstack


@pytest.mark.unit
def test_entry_point_is_registered() -> None:
    found = [e for e in entry_points(group="concord.emulators") if e.name == "salesforce"]
    assert len(found) == 1
    assert found[0].load() is devstack.spec


@pytest.mark.unit
def test_spec_contract(tmp_path: Path) -> None:
    spec = devstack.spec(tmp_path, 50060)
    assert set(spec) == {"argv", "ready_url", "ca_cert", "info"}
    assert spec["argv"][:3] == [sys.executable, "-m", "concord_salesforce_emulator"]
    assert spec["ready_url"] == "https://127.0.0.1:50060/__admin/health"
    assert spec["ca_cert"].startswith(str(tmp_path))
    info = spec["info"]
    assert {"url", "username", "password", "client_id", "client_secret", "ca_cert"} <= set(info)
    assert info["url"] == "https://127.0.0.1:50060"
    assert info["ca_cert"] == spec["ca_cert"]
    assert devstack.spec(tmp_path)["info"]["url"] == "https://127.0.0.1:50060"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.integration
def test_the_command_serves_a_seeded_org_and_stops_on_sigterm(tmp_path: Path) -> None:
    spec = devstack.spec(tmp_path, _free_port())
    process = subprocess.Popen(spec["argv"], stderr=subprocess.PIPE)
    try:
        session = requests.Session()
        session.trust_env = False
        deadline = time.monotonic() + 20
        while True:
            try:
                if Path(spec["ca_cert"]).exists():
                    session.verify = spec["ca_cert"]
                    if session.get(spec["ready_url"], timeout=2).status_code == 200:
                        break
            except requests.exceptions.ConnectionError:
                pass
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "emulator did not become ready"
            time.sleep(0.1)
        info = spec["info"]
        token = session.post(
            f"{info['url']}/services/oauth2/token",
            data={
                "grant_type": "password",
                "client_id": info["client_id"],
                "client_secret": info["client_secret"],
                "username": info["username"],
                "password": info["password"],
            },
        ).json()
        sf = Salesforce(
            instance_url=token["instance_url"],
            session_id=token["access_token"],
            session=session,
            version="62.0",
        )
        assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == 3
        session.close()
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
        if process.stderr:
            process.stderr.close()
