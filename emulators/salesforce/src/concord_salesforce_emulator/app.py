"""Starting the emulator: in the foreground (`__main__`) or in a background thread (tests)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from aiohttp import web
from eventbus.v1 import pubsub_api_pb2_grpc as pubsub_grpc

from concord_salesforce_emulator import certs, seed
from concord_salesforce_emulator.pubsub import PubSubServicer
from concord_salesforce_emulator.server import Emulator, Settings, build_app


@dataclass
class Running:
    emulator: Emulator
    url: str
    ca_cert: Path
    port: int
    # The Pub/Sub API (gRPC over TLS, same certificate), `host:port`.
    pubsub_addr: str = ""
    pubsub_server: grpc.aio.Server | None = None


async def start(
    data_dir: Path,
    host: str,
    port: int,
    settings: Settings | None = None,
    demo: bool = False,
    pubsub_port: int | None = None,
) -> tuple[web.AppRunner, Running]:
    """The REST API on `port`, the Pub/Sub API on `pubsub_port` (port + 1 by default; 0 for
    any free one when `port` is 0)."""
    files = certs.ensure_tls(data_dir)
    emulator = Emulator(data_dir, settings)
    if demo:
        seed.demo(emulator.org, emulator.admin_user_id)
    # A short shutdown: clients with idle keep-alive connections must not hold a stop up.
    runner = web.AppRunner(build_app(emulator), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    actual = sock.getsockname()[1]
    site = web.SockSite(runner, sock, ssl_context=certs.server_context(files))
    await site.start()
    shown = f"[{host}]" if ":" in host else host
    emulator.base_url = f"https://{shown}:{actual}"
    pubsub = grpc.aio.server()
    pubsub_grpc.add_PubSubServicer_to_server(
        PubSubServicer(emulator.changes, emulator.valid_token, lambda: emulator.base_url), pubsub
    )
    wanted = pubsub_port if pubsub_port is not None else (actual + 1 if port else 0)
    credentials = grpc.ssl_server_credentials([(files.key.read_bytes(), files.cert.read_bytes())])
    bound = pubsub.add_secure_port(f"{shown}:{wanted}", credentials)
    await pubsub.start()
    running = Running(emulator, emulator.base_url, files.ca_cert, actual)
    running.pubsub_addr = f"{shown}:{bound}"
    running.pubsub_server = pubsub
    return runner, running


async def stop_pubsub(running: Running) -> None:
    if running.pubsub_server is not None:
        running.emulator.changes.close_streams()
        await running.pubsub_server.stop(0.5)


async def stop_serving(runner: web.AppRunner) -> None:
    """Stops accepting, then closes every connection now.

    A closing TLS connection otherwise waits for the peer's close_notify (up to 30 s), which
    would outlive the loop and leak its socket.
    """
    server = runner.server
    transports = list(server._connections.values()) if server is not None else []
    await runner.cleanup()
    for transport in transports:
        transport.abort()
    await asyncio.sleep(0)


@contextmanager
def running_in_thread(
    data_dir: Path, settings: Settings | None = None, demo: bool = False
) -> Iterator[Running]:
    """An emulator on a free port of 127.0.0.1, served from its own loop in a thread."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()
    holder: dict[str, object] = {}

    async def main() -> None:
        try:
            runner, state = await start(data_dir, "127.0.0.1", 0, settings, demo)
        except BaseException as error:
            holder["error"] = error
            ready.set()
            raise
        holder["state"] = state
        ready.set()
        await stop.wait()
        await stop_pubsub(state)
        await stop_serving(runner)
        state.emulator.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    ready.wait(timeout=30)
    failure = holder.get("error")
    if isinstance(failure, BaseException):
        raise RuntimeError("emulator failed to start") from failure
    state = holder["state"]
    assert isinstance(state, Running)
    try:
        yield state
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()
