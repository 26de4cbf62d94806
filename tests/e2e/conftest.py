"""The stack as `make up` runs it, on free ports, exporting every span to an OTLP receiver."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from concord_testing import OtlpReceiver

BIN = Path(sys.executable).parent
START_SECONDS = 150
# PostgreSQL, three NATS nodes electing a leader and a second reconciler come up too.
PRODUCTION_START_SECONDS = 200


@dataclass
class RunningStack:
    var_dir: Path
    up_file: Path
    info: dict[str, Any]
    supervisor: subprocess.Popen[bytes]
    receiver: OtlpReceiver
    start_seconds: float

    def concord(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the `concord` CLI as a user would."""
        return subprocess.run(
            [str(BIN / "concord"), "--up-file", str(self.up_file), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_env(self.receiver),
            check=False,
        )

    def pids(self) -> list[int]:
        children = [
            self.info["nats"],
            *self.info["nats"].get("nodes", []),
            *([self.info["postgres"]] if "postgres" in self.info else []),
            *self.info.get("replicas", {}).values(),
            *self.info["services"].values(),
            *self.info["emulators"].values(),
        ]
        return [int(child["pid"]) for child in children]

    def stop_service(self, name: str) -> None:
        os.kill(int(self.info["services"][name]["pid"]), signal.SIGTERM)
        _wait_gone(int(self.info["services"][name]["pid"]), 15)

    def kill_service(self, name: str) -> None:
        """`kill -9` of one service: no shutdown hook runs (the supervisor starts it again)."""
        pid = int(self.info["services"][name]["pid"])
        os.kill(pid, signal.SIGKILL)
        assert _wait_gone(pid, 15), f"{name} survived SIGKILL"

    def wait_restarted(self, name: str, within: float = 30) -> int:
        """The pid of `name` once the supervisor has started it again (up.json is rewritten)."""
        before = int(self.info["services"][name]["pid"])
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                self.info = json.loads(self.up_file.read_text())
            pid = int(self.info["services"][name]["pid"])
            if pid != before and _alive(pid):
                return pid
            time.sleep(0.1)
        raise AssertionError(f"{name} was not restarted within {within} s")


def _env(receiver: OtlpReceiver, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ) | (extra or {})
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_EXPORTER_OTLP_INSECURE="true",
        # Export quickly so the test need not wait for the default 5 s batch.
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    env.pop("CONCORD_VAR_DIR", None)
    return env


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # A zombie is gone for our purposes: it holds no port and runs no code.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return False
    return True


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def start_stack(
    tmp: Path,
    receiver: OtlpReceiver,
    env: dict[str, str] | None = None,
    *,
    profile: str = "embedded",
) -> RunningStack:
    var_dir = tmp / "var"
    up_file = var_dir / "up.json"
    log = (tmp / "devstack.log").open("wb")
    started = time.monotonic()
    within = START_SECONDS if profile == "embedded" else PRODUCTION_START_SECONDS
    argv = [str(BIN / "concord-devstack"), "--var-dir", str(var_dir), "up", "--free-ports"]
    argv += ["--profile", profile, "--timeout", str(within - 10)]
    supervisor = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=_env(receiver, env),
    )
    log.close()
    # Below the modules' test timeouts, so a stack that does not come up fails with its logs.
    deadline = started + within
    while not up_file.exists():
        if supervisor.poll() is not None or time.monotonic() > deadline:
            supervisor.kill()
            supervisor.wait()
            pytest.fail(f"the stack did not come up in {within} s:\n{_log_tails(tmp)}")
        time.sleep(0.1)
    info = json.loads(up_file.read_text())
    return RunningStack(var_dir, up_file, info, supervisor, receiver, time.monotonic() - started)


def _log_tails(tmp: Path) -> str:
    """The supervisor's output and the end of every child's log, empty ones named too: a child
    that never wrote a line is often the one that hung."""
    parts = [f"== devstack\n{(tmp / 'devstack.log').read_text(errors='replace')[-3000:]}"]
    for log in sorted((tmp / "var" / "log").glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()[-8:]
        parts.append(f"== {log.name}" + ("\n" + "\n".join(lines) if lines else " (empty)"))
    return "\n".join(parts)


def stop_stack(stack: RunningStack) -> None:
    with contextlib.suppress(OSError, ValueError):
        stack.info = json.loads(stack.up_file.read_text())  # the pids of restarted children
    stack.supervisor.send_signal(signal.SIGTERM)
    try:
        stack.supervisor.wait(30)
    except subprocess.TimeoutExpired:
        stack.supervisor.kill()
    for pid in stack.pids():
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    # As root, the production profile's PostgreSQL lives outside the test's directory.
    data = Path(stack.info.get("postgres", {}).get("data_dir") or stack.var_dir)
    if not data.is_relative_to(stack.var_dir):
        shutil.rmtree(data.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with OtlpReceiver() as receiver:
        running = start_stack(tmp_path_factory.mktemp("stack"), receiver)
        try:
            yield running
        finally:
            stop_stack(running)


@pytest.fixture
def fresh_stack(tmp_path: Path) -> Iterator[RunningStack]:
    """A stack of its own, for tests that break it."""
    with OtlpReceiver() as receiver:
        running = start_stack(tmp_path, receiver)
        try:
            yield running
        finally:
            stop_stack(running)
