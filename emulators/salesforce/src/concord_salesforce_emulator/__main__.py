"""`python -m concord_salesforce_emulator --host H --port N --data-dir DIR [--seed demo]`."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from concord_salesforce_emulator.app import start, stop_pubsub, stop_serving
from concord_salesforce_emulator.server import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="concord_salesforce_emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50060)
    # The Pub/Sub API (gRPC); default: the REST port + 1.
    parser.add_argument("--pubsub-port", type=int, default=None)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--seed", choices=["demo"], default=None)
    parser.add_argument("--daily-api-limit", type=int, default=Settings.daily_api_limit)
    parser.add_argument("--page-size", type=int, default=Settings.page_size)
    args = parser.parse_args(argv)
    # Calls are served on threads sharing one interpreter: a short call's thread waits for a
    # long one's to hand it over, by default every 5 ms; every 1 ms keeps a short call short.
    sys.setswitchinterval(0.001)
    settings = Settings(daily_api_limit=args.daily_api_limit, page_size=args.page_size)
    return asyncio.run(
        _serve(args.data_dir, args.host, args.port, settings, args.seed == "demo", args.pubsub_port)
    )


async def _serve(
    data_dir: Path, host: str, port: int, settings: Settings, demo: bool, pubsub_port: int | None
) -> int:
    runner, state = await start(data_dir, host, port, settings, demo, pubsub_port)
    print(
        f"salesforce emulator on {state.url}, Pub/Sub API on {state.pubsub_addr}"
        f" (CA {state.ca_cert})",
        file=sys.stderr,
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await stop_pubsub(state)
    await stop_serving(runner)
    state.emulator.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
