"""`--free-ports` gives every child of one run a port of its own."""

from __future__ import annotations

import socket
from pathlib import Path

from concord_devstack.stack import SERVICES, FreePorts, Layout


def test_a_run_never_hands_out_one_port_twice() -> None:
    # Released at once, the kernel's next pick may return the same port: a linker and the
    # Salesforce emulator were once both given 33495 and the stack did not come up.
    ports = FreePorts()
    try:
        picked = [ports.take() for _ in range(150)]
        paired = [ports.take(with_next=True) for _ in range(50)]
    finally:
        ports.release()
    everything = picked + paired + [port + 1 for port in paired]
    assert len(set(everything)) == len(everything)


def test_an_emulators_next_port_is_free_for_its_second_protocol(tmp_path: Path) -> None:
    ports = FreePorts()
    layout = Layout.create(tmp_path, free_ports=ports, emulator_names=["salesforce", "exchange"])
    ports.release()
    used = [*layout.ports.values(), layout.nats_port, *layout.emulator_ports.values()]
    used += [port + 1 for port in layout.emulator_ports.values()]
    assert len(set(used)) == len(used) == len(SERVICES) + 1 + 4
    for port in used:  # all bindable once released: the children can take them
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
