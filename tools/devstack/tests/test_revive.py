"""The supervisor starts dead services and NATS again, backing off while they crash-loop, and
leaves dead emulators dead (they stand for the outside world)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from concord_devstack.emulators import EmulatorSpec
from concord_devstack.stack import RESTART_FIRST_SECONDS, Layout, Process, Stack

pytestmark = pytest.mark.integration


def _dying(name: str, tmp: Path) -> Process:
    return Process(name, [sys.executable, "-c", "raise SystemExit(3)"], {}, tmp / f"{name}.log")


def _wait_exit(process: Process) -> None:
    assert process.popen is not None
    process.popen.wait(10)


def test_a_dead_service_is_restarted_after_a_back_off_that_grows_while_it_crash_loops(
    tmp_path: Path,
) -> None:
    layout = Layout(tmp_path, {}, 0)
    service = _dying("linker", tmp_path)
    emulator = _dying("salesforce", tmp_path)
    spec = EmulatorSpec("salesforce", emulator.argv, ready_url="", ca_cert=None, info={})
    stack = Stack(layout, {}, emulators={"salesforce": spec})
    stack.processes = {"linker": service, "salesforce": emulator}
    service.start()
    emulator.start()
    first_pid = service.pid
    _wait_exit(service)
    _wait_exit(emulator)

    now = time.monotonic()
    said = stack.revive(now)
    assert said == [
        f"! linker exited (code 3); restarting in {RESTART_FIRST_SECONDS * 2:g} s "
        f"(see {tmp_path / 'linker.log'})"
    ]
    assert stack.revive(now + 0.1) == []  # not before its time
    said = stack.revive(now + RESTART_FIRST_SECONDS * 2)
    assert said == [f"~ linker restarted (pid {service.pid})"]
    assert service.pid != first_pid
    _wait_exit(service)
    # Died young again: the next wait doubles.
    again = stack.revive(time.monotonic())
    assert f"restarting in {RESTART_FIRST_SECONDS * 4:g} s" in again[0]
    # The emulator stays dead, whatever the time.
    assert emulator.exited() == 3
    assert all("salesforce" not in line for line in [*said, *again])
