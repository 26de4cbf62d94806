"""`concord`: the Concord command line. `concord --help` lists the commands."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from contextvars import Token
from typing import Any, NoReturn

import grpc

from concord.common.v1 import resources_pb2 as res
from concord.gateway.v1 import gateway_service_pb2 as pb
from concord.mail.v1 import mail_connector_service_pb2 as mail_pb
from concord.reconciler.v1 import resources_pb2 as rres
from concord_cli import commands
from concord_cli.config import CliError, Target, UsageProblem, resolve
from concord_cli.exits import EXIT_FAILED, EXIT_USAGE, CommandFailed, exit_code_of

__all__ = ["main"]


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


_EPILOG = """\
The gateway address and token come from var/up.json, written by `make up` (--admin takes its
admin token). Mailboxes are `demo` or `mailboxes/demo`; items are `demo/<item error id>`.

exit codes: 0 done, 1 failed (a session failed, a service is down), 2 usage, 3 not
authenticated, 4 permission denied, 5 not found, 6 refused (invalid, locked, precondition),
7 gateway or a service unreachable, 8 the --wait ran out, 130 interrupted.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="concord",
        description="Talk to a running Concord through its gateway: health, sessions, "
        "mailboxes, item errors, settings.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    parser.add_argument(
        "--request-id",
        help="for changes: retry with the same id and the change is made once (default: new)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Also accepted after the command (`concord sync demo --json`).
    json_after = _Parser(add_help=False)
    json_after.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON"
    )

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        made: argparse.ArgumentParser = sub.add_parser(name, parents=[json_after], help=help_text)
        return made

    p_status = command(
        "status",
        "health of every service and NATS (exit 1 if any is down), then your mailboxes and "
        "their latest item error; with a mailbox, its dashboard",
    )
    p_status.add_argument("mailbox", nargs="?", help="show this mailbox's dashboard instead")

    p_health = command("health", "your org's health and Salesforce API budget (admin)")
    p_health.add_argument(
        "--org-id", default="", help="name the org; the gateway allows only your own"
    )

    p_sync = command("sync", "run a session for a mailbox now")
    p_sync.add_argument("mailbox", help="`demo` or `mailboxes/demo`")
    p_sync.add_argument(
        "--wait", action="store_true", help="follow the session to its end, showing its progress"
    )
    p_sync.add_argument(
        "--timeout", type=_seconds, help="seconds to wait (implies --wait; default 30)"
    )

    p_sessions = command("sessions", "a mailbox's last sessions")
    p_sessions.add_argument("mailbox", help="`demo` or `mailboxes/demo`")
    p_sessions.add_argument("--limit", type=_positive_int, default=10, help="how many (10)")

    p_errors = command("errors", "a mailbox's items in error, with their reasons")
    p_errors.add_argument("mailbox", help="`demo` or `mailboxes/demo`")
    p_errors.add_argument("--quarantined", action="store_true", help="only items sessions now skip")
    p_errors.add_argument("--limit", type=_positive_int, default=50, help="how many (50)")

    p_retry = command("retry", "release a quarantined item and sync it again")
    p_retry.add_argument("item", help="`demo/<item error>` or its full name")

    p_conflicts = command("conflicts", "a mailbox's conflicts waiting for your choice")
    p_conflicts.add_argument("mailbox", help="`demo` or `mailboxes/demo`")
    p_conflicts.add_argument("--limit", type=_positive_int, default=50, help="how many (50)")

    p_resolve = command("resolve", "choose the side a held conflict keeps; the next sync writes it")
    p_resolve.add_argument("conflict", help="`demo/<conflict>` or its full name")
    p_resolve.add_argument(
        "--take", required=True, help="`mail` or `crm`: the side every field keeps by default"
    )
    p_resolve.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="FIELD=mail|crm",
        help="the side one field keeps instead (repeatable)",
    )

    p_suspend = command("suspend", "stop syncing a mailbox until resumed")
    p_suspend.add_argument("mailbox", help="`demo` or `mailboxes/demo`")
    p_suspend.add_argument("--reason", default="", help="shown on the dashboard")

    p_resume = command("resume", "resume a suspended mailbox and sync it")
    p_resume.add_argument("mailbox", help="`demo` or `mailboxes/demo`")

    command("mailboxes", "the mailboxes you may see (same as `mailbox list`)")
    p_mailbox = command(
        "mailbox", "register, list or remove mailboxes (`add` and `remove` need --admin)"
    )
    mailbox_sub = p_mailbox.add_subparsers(dest="mailbox_command", required=True, metavar="ACTION")
    mailbox_sub.add_parser("list", parents=[json_after], help="the mailboxes you may see")
    p_add = mailbox_sub.add_parser(
        "add",
        parents=[json_after],
        help="register a mailbox in your org (admin); the account secret comes from "
        "$CONCORD_MAILBOX_SECRET, never the command line",
    )
    p_add.add_argument("mailbox", help="the new mailbox id (lowercase letters, digits, -)")
    p_add.add_argument("--owner", required=True, help="the owning user's id")
    p_add.add_argument("--crm-user", required=True, help="the owner's Salesforce User Id")
    p_add.add_argument("--address", required=True, help="the primary SMTP address")
    p_add.add_argument(
        "--provider", choices=sorted(_PROVIDERS), default="exchange-ews", help="(exchange-ews)"
    )
    p_add.add_argument("--ews-url", help="EWS endpoint; with --ews-username, connects the account")
    p_add.add_argument("--ews-username", help="EWS service account")
    p_add.add_argument("--ews-auth", default="basic", help="EWS auth type (basic)")

    p_remove = mailbox_sub.add_parser(
        "remove",
        parents=[json_after],
        help="disconnect a mailbox (admin): Concord forgets it; Salesforce records and "
        "mailbox items stay",
    )
    p_remove.add_argument("mailbox", help="`demo` or `mailboxes/demo`")

    p_settings = command("settings", "read or change user settings, or the org's with --org")
    settings_sub = p_settings.add_subparsers(
        dest="settings_command", required=True, metavar="ACTION"
    )
    for action, help_text in (
        ("get", "show settings (locked fields marked)"),
        ("set", "change settings: field=value ... (e.g. blacklist=spam.test sync_interval=15m)"),
    ):
        p_action = settings_sub.add_parser(
            action, parents=[json_after], help=help_text, description=_SETTINGS_HELP[action]
        )
        p_action.add_argument(
            "mailbox", nargs="?", help="the mailbox whose user settings (omit with --org)"
        )
        p_action.add_argument(
            "--org", action="store_true", help="your org's settings instead (admin)"
        )
        p_action.add_argument(
            "--org-id", help="name the org (implies --org); the gateway allows only your own"
        )
        if action == "set":
            p_action.add_argument("assignments", nargs="*", metavar="field=value")
    return parser


_SETTINGS_HELP = {
    "get": "Show a mailbox's user settings (fields the org locked are marked), or with --org "
    "the org's settings (admin).",
    "set": "Change the named fields only. Values: enums by short name (conflict_policy="
    "crm_wins), durations as 90s/30m/12h/7d (sync_interval=15m), lists comma-separated "
    "(blacklist=spam.test,ann@x.test; empty for none), true/false, and JSON for nested "
    'fields (auto_resolve=\'{"unknownAddressAction": "UNKNOWN_ADDRESS_ACTION_CREATE_LEAD"}\'). '
    "An admin locks user fields to the org's value with --org locked_user_fields=sharing,"
    "blacklist.",
}

_PROVIDERS = {
    "exchange-ews": res.MAIL_PROVIDER_EXCHANGE_EWS,
    "graph": res.MAIL_PROVIDER_GRAPH,
    "google": res.MAIL_PROVIDER_GOOGLE,
    "dav": res.MAIL_PROVIDER_DAV,
}


def _register_request(args: argparse.Namespace) -> pb.RegisterMailboxRequest:
    provider = _PROVIDERS[args.provider]
    request = pb.RegisterMailboxRequest(
        mailbox_id=args.mailbox,
        mailbox=rres.Mailbox(
            owner_user_id=args.owner,
            crm_user_id=args.crm_user,
            address=args.address,
            provider=provider,
        ),
    )
    if bool(args.ews_url) != bool(args.ews_username):
        raise UsageProblem("--ews-url and --ews-username go together")
    if args.ews_url:
        if provider != res.MAIL_PROVIDER_EXCHANGE_EWS:
            raise UsageProblem("--ews-url needs --provider exchange-ews")
        request.account.CopyFrom(
            mail_pb.MailboxAccount(
                address=args.address,
                provider=provider,
                ews=mail_pb.EwsSettings(
                    service_url=args.ews_url, username=args.ews_username, auth_type=args.ews_auth
                ),
                # From the environment: a command line is visible to every user of the machine.
                secret=os.environ.get("CONCORD_MAILBOX_SECRET", "").encode(),
            )
        )
    return request


async def _run(args: argparse.Namespace, target: Target) -> int:
    def out(text: str) -> None:
        print(text, flush=True)

    as_json: bool = args.json
    command: str = args.command
    if command == "status":
        if args.mailbox:
            return await commands.mailbox_status(target, args.mailbox, as_json, out)
        return await commands.status(target, as_json, out)
    if command == "health":
        return await commands.org_health(target, args.org_id, as_json, out)
    if command == "sync":
        return await commands.sync(target, args.mailbox, args.wait, args.timeout, as_json, out)
    if command == "sessions":
        return await commands.sessions(target, args.mailbox, args.limit, as_json, out)
    if command == "errors":
        return await commands.errors(
            target, args.mailbox, args.quarantined, args.limit, as_json, out
        )
    if command == "retry":
        return await commands.retry(target, args.item, as_json, out)
    if command == "conflicts":
        return await commands.conflicts(target, args.mailbox, args.limit, as_json, out)
    if command == "resolve":
        return await commands.resolve(target, args.conflict, args.take, args.field, as_json, out)
    if command == "suspend":
        return await commands.suspend(target, args.mailbox, args.reason, as_json, out)
    if command == "resume":
        return await commands.resume(target, args.mailbox, as_json, out)
    if command == "mailbox" and args.mailbox_command == "remove":
        return await commands.remove_mailbox(target, args.mailbox, as_json, out)
    if command == "mailbox" and args.mailbox_command == "add":
        return await commands.add_mailbox(target, _register_request(args), as_json, out)
    if command in ("mailboxes", "mailbox"):
        return await commands.mailboxes(target, as_json, out)
    # None: the mailbox's settings; "": the org the token is for.
    org: str | None = args.org_id or ("" if args.org else None)
    if args.settings_command == "get":
        return await commands.get_settings(target, args.mailbox, org, as_json, out)
    mailbox, assignments = args.mailbox, list(args.assignments)
    if mailbox and "=" in mailbox:
        # `settings set --org a=b`: argparse hands the first assignment to the optional
        # mailbox; a mailbox id never holds '='.
        mailbox, assignments = None, [mailbox, *assignments]
    return await commands.set_settings(target, mailbox, org, assignments, as_json, out)


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
    request_id: Token[str | None] | None = None
    try:
        target = resolve(
            up_file=args.up_file, gateway=args.gateway, token=args.token, admin=args.admin
        )
        gateway = target.gateway
        # Set for this run only: main() may run again in this thread (tests, embedding).
        request_id = commands.REQUEST_ID.set(args.request_id or None)
        flush, span = _traced(args.command)
        if span is None:
            return asyncio.run(_run(args, target))
        with span:
            return asyncio.run(_run(args, target))
    except UsageProblem as exc:
        print(f"concord: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CommandFailed as exc:
        print(f"concord: {exc}", file=sys.stderr)
        return exc.exit_code
    except CliError as exc:
        print(f"concord: {exc}", file=sys.stderr)
    except grpc.aio.AioRpcError as err:
        print(f"concord: {commands.describe_rpc_error(err, gateway)}", file=sys.stderr)
        return exit_code_of(err.code())
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # never a traceback for the user; the type says where to look
        print(f"concord: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        if request_id is not None:
            commands.REQUEST_ID.reset(request_id)
        flush()
    return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
