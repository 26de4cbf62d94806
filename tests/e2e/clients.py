"""Talking to a running stack's emulators as their users do: exchangelib to the demo mailbox,
simple-salesforce to the demo org. For end-to-end tests and benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from exchangelib import (  # type: ignore[import-untyped]
    BASIC,
    DELEGATE,
    Account,
    Configuration,
    Credentials,
)
from simple_salesforce.api import Salesforce

from tests.e2e.conftest import RunningStack

T = TypeVar("T")


def demo_mailbox(stack: RunningStack) -> Account:
    """The demo mailbox, opened by its owner (plain HTTP on the emulator: no TLS to trust)."""
    exchange = stack.info["emulators"]["exchange"]
    config = Configuration(
        service_endpoint=exchange["url"],
        credentials=Credentials(exchange["username"], exchange["password"]),
        auth_type=BASIC,
    )
    return Account(exchange["mailbox"], config=config, autodiscover=False, access_type=DELEGATE)


def demo_org(stack: RunningStack) -> Salesforce:
    """The demo org over its REST API, as an integration user would call it."""
    org = stack.info["emulators"]["salesforce"]
    http = requests.Session()
    http.trust_env = False
    http.verify = org["ca_cert"]
    token = http.post(
        org["token_url"],
        data={
            "grant_type": "password",
            "client_id": org["client_id"],
            "client_secret": org["client_secret"],
            "username": org["username"],
            "password": org["password"],
        },
        timeout=10,
    ).json()
    return Salesforce(
        instance_url=token["instance_url"],
        session_id=token["access_token"],
        session=http,
        version="62.0",
    )


def eventually(check: Callable[[], T | None], within: float, every: float = 0.1) -> T:
    """The first truthy result of `check`, or AssertionError after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:g} s")
        time.sleep(every)


def records(sf: Salesforce, soql: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = sf.query_all(soql)["records"]
    return found
