"""Loopback ports for servers a test starts."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import tempfile
import time
from pathlib import Path

# Claims of ports handed out, shared by every test process on the machine (xdist workers, CI
# runs side by side), so two of them never get the same port.
CLAIMS = Path(tempfile.gettempdir()) / "concord-test-ports"
# Ports handed out lie below the kernel's ephemeral range: the local port of an outgoing
# connection comes from that range, and one could take ours between the check and the bind.
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_SPAN = 12000
_LOWEST = 10000


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free and that no other test process was given.

    The server still binds it later, so prefer servers that bind port 0 themselves and report
    the port (nats-server does, see `NatsServer`); this narrows the race to nearly nothing.
    """
    low = _ephemeral_low()
    candidates = range(max(_LOWEST, low - _SPAN), low)
    for _ in range(100 if len(candidates) > 1000 else 0):
        port = random.choice(candidates)
        if _bindable(port) and _claim(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _claim(port: int) -> bool:
    """Record that this process has `port`; False if a live process already has it."""
    CLAIMS.mkdir(mode=0o777, parents=True, exist_ok=True)
    path = CLAIMS / str(port)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            if not _stale(path):
                return False
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(fd, "w") as file:
            file.write(str(os.getpid()))
        return True
    return False


def _stale(path: Path) -> bool:
    """A claim whose process is gone, or older than a day (a reused pid), can be taken."""
    try:
        owner = int(path.read_text() or "0")
        age = time.time() - path.stat().st_mtime
    except (OSError, ValueError):
        return True
    if owner <= 0 or age > 24 * 3600:
        return True
    try:
        os.kill(owner, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """Whether a TCP connect to host:port succeeds before `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.01)
    return False
