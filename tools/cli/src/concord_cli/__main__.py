"""`concord`: the Concord command line. `concord --help` lists the commands."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import grpc

from concord_cli import commands
from concord_cli.config import CliError, Target, resolve

__all__ = ["main"]

EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: the contract is `concord: <reason>`.
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("must be between 0 and 3600 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="concord",
        description="Talk to a running Concord: health, sync sessions, mailboxes.",
        epilog="The gateway address and token come from var/up.json, written by `make up`.",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument(
        "--up-file", help="the stack file (default: $CONCORD_UP_FILE or $CONCORD_VAR_DIR/up.json)"
    )
    parser.add_argument("--gateway", help="gateway host:port (default: $CONCORD_GATEWAY, up.json)")
    parser.add_argument("--token", help="bearer token (default: $CONCORD_TOKEN, up.json)")
    parser.add_argument(
        "--admin", action="store_true", help="use up.json's demo admin token, not the user's"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Also accepted after the command (`concord sync demo --json`).
    json_after = _Parser(add_help=False)
    json_after.add_argument("--json", action="store_true", default=argparse.SUPPRESS)

    sub.add_parser(
        "status",
        parents=[json_after],
        help="health of every service and NATS (exit 1 if any is down)",
    )
    p_sync = sub.add_parser("sync", parents=[json_after], help="run a session for a mailbox now")
    p_sync.add_argument("mailbox", help="`demo` or `mailboxes/demo`")
    p_sync.add_argument("--wait", action="store_true", help="wait for the session to end")
    p_sync.add_argument(
        "--timeout", type=_seconds, help="seconds to wait (implies --wait; default 30)"
    )
    p_sessions = sub.add_parser("sessions", parents=[json_after], help="a mailbox's last sessions")
    p_sessions.add_argument("mailbox", help="`demo` or `mailboxes/demo`")
    p_sessions.add_argument("--limit", type=_positive_int, default=10, help="how many (10)")
    sub.add_parser("mailboxes", parents=[json_after], help="the mailboxes you may see")
    return parser


async def _run(args: argparse.Namespace, target: Target) -> int:
    def out(text: str) -> None:
        print(text, flush=True)

    if args.command == "status":
        return await commands.status(target, args.json, out)
    if args.command == "sync":
        return await commands.sync(target, args.mailbox, args.wait, args.timeout, args.json, out)
    if args.command == "sessions":
        return await commands.sessions(target, args.mailbox, args.limit, args.json, out)
    return await commands.mailboxes(target, args.json, out)


def _nothing() -> None:
    pass


def _traced(command: str) -> tuple[Callable[[], None], Any]:
    """With an OTLP endpoint configured, trace this run so a session's trace starts here."""
    from concord_telemetry import exporters_from_env

    if not exporters_from_env(os.environ):
        return _nothing, None
    from concord_telemetry import setup

    telemetry = setup("concord-cli")
    span = telemetry.tracer("concord_cli").start_as_current_span(f"concord {command}")
    return telemetry.shutdown, span


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(f"concord: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    gateway = args.gateway or "the gateway"
    flush: Callable[[], None] = _nothing
    span: Any = None
    try:
        target = resolve(
            up_file=args.up_file, gateway=args.gateway, token=args.token, admin=args.admin
        )
        gateway = target.gateway
        flush, span = _traced(args.command)
        if span is None:
            return asyncio.run(_run(args, target))
        with span:
            return asyncio.run(_run(args, target))
    except CliError as exc:
        print(f"concord: {exc}", file=sys.stderr)
    except grpc.aio.AioRpcError as err:
        print(f"concord: {commands.describe_rpc_error(err, gateway)}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # never a traceback for the user; the type says where to look
        print(f"concord: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        flush()
    return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
