"""`python -m concord_exchange_emulator --host H --port N --data-dir DIR [--seed demo]`."""

from __future__ import annotations

import argparse
import pathlib

import uvicorn

from concord_exchange_emulator.app import IDLE_CONNECTION_SECONDS, build_app
from concord_exchange_emulator.seed import seed_mailbox
from concord_exchange_emulator.store import Store
from concord_exchange_emulator.tls import ensure_tls_files


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="concord-exchange-emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50061)
    parser.add_argument("--data-dir", type=pathlib.Path, required=True)
    parser.add_argument("--seed", choices=["demo"], default=None)
    parser.add_argument(
        "--mail-dir",
        type=pathlib.Path,
        default=None,
        help="a maildir whose first messages the demo seed adds (real mail, e.g. shared/data)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS with a certificate from a local CA (DATA_DIR/tls/ca.pem)",
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(args.data_dir / "exchange.db")
    if args.seed == "demo":
        seed_mailbox(store, args.mail_dir)
    tls = ensure_tls_files(args.data_dir / "tls") if args.tls else None
    uvicorn.run(
        build_app(store),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        # Open GetStreamingEvents responses last up to 30 min: don't wait for them on SIGTERM.
        timeout_graceful_shutdown=2,
        # IIS keeps an idle connection for 120 s; clients reuse theirs within that.
        timeout_keep_alive=IDLE_CONNECTION_SECONDS,
        ssl_certfile=str(tls.cert) if tls else None,
        ssl_keyfile=str(tls.key) if tls else None,
    )


if __name__ == "__main__":
    main()
