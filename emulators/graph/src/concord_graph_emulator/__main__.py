"""`python -m concord_graph_emulator --port N --data-dir DIR [--seed demo]` (always HTTPS)."""

from __future__ import annotations

import argparse
import pathlib

import uvicorn

from concord_devcerts import ensure_tls
from concord_graph_emulator.app import build_app
from concord_graph_emulator.store import Store


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="concord-graph-emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50062)
    parser.add_argument("--data-dir", type=pathlib.Path, required=True)
    parser.add_argument("--seed", choices=["demo"], default=None)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store()
    if args.seed == "demo":
        from concord_graph_emulator.seed import seed_demo

        seed_demo(store)
    tls = ensure_tls(args.data_dir / "tls", "Concord Graph emulator")
    uvicorn.run(
        build_app(store),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=2,
        ssl_certfile=str(tls.cert),
        ssl_keyfile=str(tls.key),
    )


if __name__ == "__main__":
    main()
