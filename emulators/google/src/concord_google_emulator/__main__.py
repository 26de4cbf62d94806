"""`python -m concord_google_emulator --host H --port N --data-dir DIR [--seed demo]`.

Serves HTTPS with a certificate from a local CA (DATA_DIR/tls/ca.pem), and writes the demo
service account's JSON key to DATA_DIR/service-account.json (kept across runs, so a client's
copy stays valid; its token_uri names this emulator).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib

import uvicorn

from concord_google_emulator.app import Emulator, build_app
from concord_google_emulator.seed import seed_demo
from concord_google_emulator.tls import ensure_tls_files

KEY_FILE = "service-account.json"


def service_account_file(
    emulator: Emulator, data_dir: pathlib.Path, token_uri: str
) -> pathlib.Path:
    path = data_dir / KEY_FILE
    if path.exists():
        key = json.loads(path.read_text())
        emulator.issuer.load_account(key)
        if key.get("token_uri") == token_uri:
            return path
    else:
        key = emulator.issuer.create_account("concord-demo").key_file(token_uri)
    key["token_uri"] = token_uri
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(key, indent=2))
    os.chmod(temporary, 0o600)
    temporary.replace(path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="concord-google-emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50062)
    parser.add_argument("--data-dir", type=pathlib.Path, required=True)
    parser.add_argument("--seed", choices=["demo"], default=None)
    parser.add_argument(
        "--mail-dir",
        type=pathlib.Path,
        default=None,
        help="a maildir whose first messages the demo seed adds (real mail, e.g. shared/data)",
    )
    parser.add_argument(
        "--trust-ca",
        action="append",
        default=[],
        help="a CA file watch-channel receivers' certificates are also checked against",
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    emulator = Emulator()
    emulator.trusted_ca.extend(str(path) for path in args.trust_ca)
    tls = ensure_tls_files(args.data_dir / "tls")
    service_account_file(emulator, args.data_dir, f"https://{args.host}:{args.port}/token")
    if args.seed == "demo":
        seed_demo(emulator, args.mail_dir)
    uvicorn.run(
        build_app(emulator),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=2,
        ssl_certfile=str(tls.cert),
        ssl_keyfile=str(tls.key),
    )


if __name__ == "__main__":
    main()
