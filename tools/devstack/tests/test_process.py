"""A child of the stack never outlives a supervisor that is killed outright."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

# A supervisor that starts one long-lived child the way the stack does, from a process that
# already runs gRPC threads (where a preexec_fn could deadlock), and prints the child's pid.
SUPERVISOR = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import grpc
    from concord_devstack.stack import Process

    channel = grpc.insecure_channel("127.0.0.1:1")  # starts gRPC's own threads
    child = Process("sleeper", [sys.executable, "-c", "import time; time.sleep(120)"],
                    {}, Path(sys.argv[1]))
    child.start()
    print(child.pid, flush=True)
    time.sleep(120)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def _argv0(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_text().split("\0")[0]


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux setpriv")
def test_a_child_is_terminated_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, str(tmp_path / "sleeper.log")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert supervisor.stdout is not None
        child_pid = int(supervisor.stdout.readline())
        # The child's pid is the command's own (setpriv execs it); once it runs the command,
        # the parent-death signal is set.
        deadline = time.monotonic() + 10
        while _argv0(child_pid) != sys.executable and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _argv0(child_pid) == sys.executable
    finally:
        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait()
        if supervisor.stdout is not None:
            supervisor.stdout.close()
    deadline = time.monotonic() + 10
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child_pid), "the child outlived its killed supervisor"
