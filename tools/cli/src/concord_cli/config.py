"""Where the gateway is and who we are: flags, then environment, then `make up`'s var/up.json."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from concord_settings import DEFAULT_NATS_URL, DEFAULT_PORTS, default_addr

__all__ = [
    "CliError",
    "Target",
    "UsageProblem",
    "conflict_name",
    "default_up_file",
    "item_error_name",
    "mailbox_name",
    "org_name",
    "resolve",
]


class CliError(Exception):
    """A failure to report as one line, `concord: <message>`, with exit code 1."""


class UsageProblem(CliError):
    """Arguments that cannot work together, or something missing (a token): exit code 2."""


def default_up_file(env: Mapping[str, str]) -> Path:
    """`$CONCORD_UP_FILE`, else `up.json` in `$CONCORD_VAR_DIR` (default `var`), like devstack."""
    if env.get("CONCORD_UP_FILE"):
        return Path(env["CONCORD_UP_FILE"])
    return Path(env.get("CONCORD_VAR_DIR") or "var") / "up.json"


@dataclass(frozen=True)
class Target:
    gateway: str
    token: str | None
    # service name -> address; from up.json, else the default addresses.
    services: dict[str, str] = field(default_factory=dict)
    nats_url: str = DEFAULT_NATS_URL
    up_file: Path | None = None

    def require_token(self) -> str:
        if not self.token:
            raise UsageProblem(
                "no token: pass --token, set CONCORD_TOKEN, or start the stack with `make up`"
            )
        return self.token


def resolve(
    *,
    up_file: str | None,
    gateway: str | None,
    token: str | None,
    admin: bool,
    env: Mapping[str, str] | None = None,
) -> Target:
    env = os.environ if env is None else env
    path = Path(up_file) if up_file else default_up_file(env)
    info = _read_up_file(path, explicit=bool(up_file or env.get("CONCORD_UP_FILE")))
    services = {
        name: str(svc["address"])
        for name, svc in (info.get("services") or {}).items()
        if isinstance(svc, dict) and "address" in svc
    } or {name: default_addr(name) for name in DEFAULT_PORTS}
    demo = info.get("demo") or {}
    up_token = demo.get("admin_token" if admin else "token")
    return Target(
        gateway=gateway
        or env.get("CONCORD_GATEWAY")
        or services.get("gateway")
        or default_addr("gateway"),
        token=token or env.get("CONCORD_TOKEN") or up_token,
        services=services,
        nats_url=str((info.get("nats") or {}).get("url") or DEFAULT_NATS_URL),
        up_file=path if info else None,
    )


def _read_up_file(path: Path, *, explicit: bool) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        if explicit:
            raise CliError(
                f"{path} does not exist (is the stack up? `make up` writes it)"
            ) from None
        return {}
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise CliError(f"{path} is not valid JSON") from None
    if not isinstance(data, dict):
        raise CliError(f"{path} is not a JSON object")
    return data


def mailbox_name(argument: str) -> str:
    """`demo` -> `mailboxes/demo`; a full name passes as is (the gateway validates it)."""
    return argument if "/" in argument else f"mailboxes/{argument}"


def _child_name(argument: str, collection: str, what: tuple[str, str]) -> str:
    if argument.startswith("mailboxes/"):
        return argument
    mailbox, slash, child = argument.partition("/")
    if not slash or not mailbox or not child or "/" in child:
        raise UsageProblem(
            f"{what[0]} is '<mailbox>/<{what[1]}>' or 'mailboxes/<m>/{collection}/<id>', "
            f"got {argument!r}"
        )
    return f"mailboxes/{mailbox}/{collection}/{child}"


def item_error_name(argument: str) -> str:
    """`demo/e1` -> `mailboxes/demo/itemErrors/e1`; a full name passes as is."""
    return _child_name(argument, "itemErrors", ("an item", "item error"))


def conflict_name(argument: str) -> str:
    """`demo/<id>` -> `mailboxes/demo/conflicts/<id>`; a full name passes as is."""
    return _child_name(argument, "conflicts", ("a conflict", "conflict"))


def org_name(target: Target, org: str = "") -> str:
    """`orgs/{org}`: the one given, else the org the token is for.

    The token is read, not verified: it only picks the name to ask for; the gateway decides
    whether the caller may.
    """
    if org:
        return org if org.startswith("orgs/") else f"orgs/{org}"
    parts = target.require_token().split(".")
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
        claim = claims["org"]
    except (IndexError, ValueError, KeyError, TypeError):
        raise UsageProblem("the token names no org: give one with --org <org>") from None
    if not isinstance(claim, str) or not claim:
        raise UsageProblem("the token names no org: give one with --org <org>")
    return f"orgs/{claim}"
