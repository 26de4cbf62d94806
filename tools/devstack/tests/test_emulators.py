"""Emulator discovery: the spec contract and the readiness check `make up` waits on."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from concord_devstack import emulators
from concord_devstack.emulators import EmulatorSpec


def _spec(var_dir: Path, port: int) -> dict[str, Any]:
    return {
        "argv": ["python", "-m", "x", "--port", port],
        "ready_url": f"http://127.0.0.1:{port}/__admin/health",
        "info": {"url": f"http://127.0.0.1:{port}/"},
    }


@pytest.mark.unit
def test_a_spec_is_read_with_its_argv_as_strings(tmp_path: Path) -> None:
    spec = emulators.spec_of("fake", _spec, tmp_path, 1234)
    assert spec.argv == ["python", "-m", "x", "--port", "1234"]
    assert spec.ca_cert is None
    assert spec.info == {"url": "http://127.0.0.1:1234/"}


@pytest.mark.unit
def test_a_malformed_spec_names_the_emulator(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'broken'"):
        emulators.spec_of("broken", lambda _dir, _port: {"argv": []}, tmp_path, 1)


@pytest.mark.unit
def test_known_emulators_keep_fixed_ports_and_others_get_their_own() -> None:
    ports = emulators.default_ports(["exchange", "imap", "salesforce", "zzz"])
    assert ports["salesforce"] == 50060
    assert ports["exchange"] == 50061
    assert len(set(ports.values())) == 4


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/__admin/health" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[int]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.integration
def test_ready_only_when_the_url_answers_200(health_server: int) -> None:
    base = f"http://127.0.0.1:{health_server}"
    ready = EmulatorSpec("fake", [], f"{base}/__admin/health", None, {})
    not_ready = EmulatorSpec("fake", [], f"{base}/starting", None, {})
    assert emulators.is_ready(ready)
    assert not emulators.is_ready(not_ready)


@pytest.mark.unit
def test_https_is_not_ready_before_the_emulator_wrote_its_ca(tmp_path: Path) -> None:
    spec = EmulatorSpec("fake", [], "https://127.0.0.1:1/", str(tmp_path / "ca.pem"), {})
    assert not emulators.is_ready(spec)
