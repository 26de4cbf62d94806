"""Calls to internal services as a test: vouched for with a known key, as the gateway would.

Every internal service refuses calls without a signed caller identity (concord_rpc.identity).
A test that starts one as a process gives it :data:`TEST_IDENTITY_KEY` through
:func:`identity_env`, and calls it over a channel with the :func:`vouched` interceptors: each
call then carries :data:`TEST_CALLER` (or whom the interceptor was told to act as).
"""

from __future__ import annotations

from typing import Any

from concord_rpc.identity import AttachIdentity, Identity, IdentitySigner, acting_as

__all__ = ["INTERNAL_SERVICES", "TEST_CALLER", "TEST_IDENTITY_KEY", "identity_env", "vouched"]

TEST_IDENTITY_KEY = "concord-tests-internal-identity-key-0123456789"
TEST_CALLER = Identity(subject="test-admin", org="acme", role="admin")
INTERNAL_SERVICES = ("mail-connector", "crm-connector", "mapping", "linker", "reconciler")


def identity_env(key: str = TEST_IDENTITY_KEY) -> dict[str, str]:
    """The environment that makes every internal service verify (and sign) with `key`."""
    return {
        f"{name.upper().replace('-', '_')}_INTERNAL_IDENTITY_KEYS": key
        for name in INTERNAL_SERVICES
    }


class _ActingAs(AttachIdentity):
    """AttachIdentity that always signs one caller: tests need no `acting_as` around calls."""

    def __init__(self, key: str, caller: Identity) -> None:
        super().__init__(IdentitySigner(key))
        self._caller = caller

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        with acting_as(self._caller):
            return await super().intercept_unary_unary(continuation, client_call_details, request)


def vouched(key: str = TEST_IDENTITY_KEY, caller: Identity = TEST_CALLER) -> list[AttachIdentity]:
    """Client interceptors that sign `caller` into every call with `key`."""
    return [_ActingAs(key, caller)]
