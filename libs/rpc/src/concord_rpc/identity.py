"""Caller identity on internal calls: the gateway vouches for who called, peers check it.

Only the gateway authenticates people and backends (bearer JWTs). When it calls an internal
service on their behalf it attaches the caller, signed with a key shared by the internal
services only, so a peer can trust `who` without trusting the network: anything that can reach
the reconciler's port but does not hold the key cannot act as anyone.

Wire format (gRPC metadata, one pair per call):

- ``x-concord-identity``: base64url(JSON) of ``{"sub", "org", "role", "iat", "exp"}``;
- ``x-concord-identity-sig``: ``v1.`` + base64url(HMAC-SHA256(key, "v1\\n" + method + "\\n" +
  the identity value)).

The signature covers the full method name (`/concord.reconciler.v1.ReconcilerService/...`), so a
header seen on one call cannot be replayed against another method, and `exp` (a minute by
default) bounds how long a seen header is worth anything at all. HMAC and not an internal JWT:
the format is ours end to end, needs no JOSE header parsing (no algorithm to confuse), and
libs/rpc gains no dependency.

Keys rotate like the gateway's token keys: the signer uses one key, a verifier accepts any of
its list; add the new key to every verifier, then switch the signer, then drop the old key.

Calling side (the gateway)::

    signer = IdentitySigner(key)
    reconciler = channel(addr, retry=True, interceptors=[AttachIdentity(signer)])
    with acting_as(Identity(subject="ann", org="acme", role="user")):
        await ReconcilerServiceStub(reconciler).GetMailbox(...)

Serving side (every internal service, installed by concord_runtime from its settings)::

    server.add_interceptor(RequireIdentity(IdentityVerifier(keys)))
    ...
    caller = current_identity()  # inside a handler: the verified Identity

A call without a valid identity fails UNAUTHENTICATED (`IDENTITY_MISSING`,
`IDENTITY_INVALID`, `IDENTITY_EXPIRED`) before the handler runs; health and reflection stay
open for probes. In a service process the key comes from settings (e.g.
`RECONCILER_INTERNAL_IDENTITY_KEYS`), with `concord_secrets.key_file("internal-identity")` as
the embedded default, the file the gateway signs with when nothing is configured.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc

from concord_rpc.errors import PermissionDenied, Unauthenticated

__all__ = [
    "IDENTITY_KEY_FILE",
    "IDENTITY_METADATA",
    "MIN_IDENTITY_KEY_BYTES",
    "OPEN_SERVICES",
    "SIGNATURE_METADATA",
    "AttachIdentity",
    "CallerNotInOrg",
    "Identity",
    "IdentityExpired",
    "IdentityInvalid",
    "IdentityMissing",
    "IdentitySigner",
    "IdentityVerifier",
    "RequireIdentity",
    "acting_as",
    "current_identity",
    "require_org",
]

IDENTITY_METADATA = "x-concord-identity"
SIGNATURE_METADATA = "x-concord-identity-sig"
#: The `concord_secrets.key_file` name of the shared key in embedded (`make up`) deployments.
IDENTITY_KEY_FILE = "internal-identity"
#: As for HS256: a key shorter than the hash output weakens the MAC (RFC 2104 §3).
MIN_IDENTITY_KEY_BYTES = 32
#: Probes and tooling call these without an identity; they reveal nothing about anyone's data.
OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)

_VERSION = "v1"
_DEFAULT_TTL = 60.0
_DEFAULT_SKEW = 30.0

# Calling side: who the code running now acts for. Serving side: who the verified caller is.
_outgoing: ContextVar[Identity | None] = ContextVar("concord_rpc_outgoing_identity", default=None)
_incoming: ContextVar[Identity | None] = ContextVar("concord_rpc_incoming_identity", default=None)


class IdentityMissing(Unauthenticated):
    reason = "IDENTITY_MISSING"


class IdentityInvalid(Unauthenticated):
    reason = "IDENTITY_INVALID"


class IdentityExpired(Unauthenticated):
    reason = "IDENTITY_EXPIRED"


class CallerNotInOrg(PermissionDenied):
    reason = "CALLER_NOT_IN_ORG"


@dataclass(frozen=True)
class Identity:
    """The authenticated caller as the gateway saw them: user id, org id, role."""

    subject: str
    org: str
    role: str


def _check_key(key: str | bytes) -> bytes:
    raw = key.encode() if isinstance(key, str) else key
    # The message never contains the key: it may reach a settings error printed at start.
    if len(raw) < MIN_IDENTITY_KEY_BYTES:
        raise ValueError(f"an identity key must be at least {MIN_IDENTITY_KEY_BYTES} bytes")
    return raw


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, method: str, payload: str) -> bytes:
    message = f"{_VERSION}\n{method}\n{payload}".encode()
    return hmac.new(key, message, hashlib.sha256).digest()


class IdentitySigner:
    """Makes the metadata that vouches for an identity on one call to one method."""

    def __init__(
        self, key: str | bytes, *, ttl: float = _DEFAULT_TTL, clock: Callable[[], float] = time.time
    ) -> None:
        self._key = _check_key(key)
        self._ttl = ttl
        self._clock = clock
        # The metadata made within the current second, by identity and method: it is a function
        # of them and the second alone, and a session makes a dozen calls as one identity
        # within one (issue #18: CPU per sync session). Only the current second's are kept.
        self._second = -1
        self._made: dict[tuple[Identity, str], tuple[tuple[str, str], ...]] = {}

    def metadata(self, identity: Identity, method: str) -> tuple[tuple[str, str], ...]:
        now = int(self._clock())
        if now != self._second:
            self._second, self._made = now, {}
        made = self._made.get((identity, method))
        if made is None:
            made = self._made[(identity, method)] = self._sign(identity, method, now)
        return made

    def _sign(self, identity: Identity, method: str, now: int) -> tuple[tuple[str, str], ...]:
        claims = {
            "sub": identity.subject,
            "org": identity.org,
            "role": identity.role,
            "iat": now,
            "exp": now + int(self._ttl),
        }
        payload = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
        signature = f"{_VERSION}.{_b64(_mac(self._key, method, payload))}"
        return ((IDENTITY_METADATA, payload), (SIGNATURE_METADATA, signature))


class IdentityVerifier:
    """Checks the metadata of an incoming call; any of `keys` may have signed it (rotation)."""

    def __init__(
        self,
        keys: Sequence[str | bytes],
        *,
        skew: float = _DEFAULT_SKEW,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not keys:
            raise ValueError("at least one identity key is needed")
        self._keys = [_check_key(key) for key in keys]
        self._skew = skew
        self._clock = clock

    def verify(self, metadata: Sequence[tuple[str, str | bytes]] | None, method: str) -> Identity:
        values = {key: value for key, value in metadata or () if isinstance(value, str)}
        payload = values.get(IDENTITY_METADATA)
        signature = values.get(SIGNATURE_METADATA)
        if not payload or not signature:
            raise IdentityMissing("this service accepts calls from the gateway only")
        version, _, mac_text = signature.partition(".")
        try:
            given = _unb64(mac_text)
        except (binascii.Error, ValueError):
            raise IdentityInvalid("the caller identity's signature is malformed") from None
        # Every key is tried even after a match would be found: the time taken says nothing
        # about which key, if any, signed it.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(_mac(key, method, payload), given)
        if version != _VERSION or not matched:
            raise IdentityInvalid("the caller identity's signature does not verify")
        try:
            claims = json.loads(_unb64(payload))
        except (binascii.Error, ValueError):
            raise IdentityInvalid("the caller identity is malformed") from None
        return self._identity(claims)

    def _identity(self, claims: Any) -> Identity:
        if not isinstance(claims, dict):
            raise IdentityInvalid("the caller identity is malformed")
        text = {name: claims.get(name) for name in ("sub", "org", "role")}
        stamps = {name: claims.get(name) for name in ("iat", "exp")}
        if not all(isinstance(v, str) and v for v in text.values()) or not all(
            isinstance(v, int) for v in stamps.values()
        ):
            raise IdentityInvalid("the caller identity lacks sub, org, role, iat or exp")
        now = self._clock()
        issued, expires = int(str(stamps["iat"])), int(str(stamps["exp"]))
        if issued > now + self._skew:
            raise IdentityInvalid("the caller identity was issued in the future")
        if expires < now - self._skew:
            raise IdentityExpired("the caller identity has expired")
        return Identity(subject=str(text["sub"]), org=str(text["org"]), role=str(text["role"]))


@contextlib.contextmanager
def acting_as(identity: Identity) -> Iterator[Identity]:
    """Calls made in this block (and tasks started in it) carry `identity`."""
    token = _outgoing.set(identity)
    try:
        yield identity
    finally:
        _outgoing.reset(token)


def require_org(org_id: str) -> str:
    """`org_id`, if the verified caller acts for that org; CallerNotInOrg (PERMISSION_DENIED)
    otherwise, before anything of the org is read or written.

    The gateway authorises people; this keeps a vouched call for one org (a bug, a mixed-up
    mailbox) out of another org's data. Without a verified caller (the service runs without
    RequireIdentity: alone, or in a test) there is nobody to check.
    """
    caller = _incoming.get()
    if caller is not None and caller.org != org_id:
        raise CallerNotInOrg("the caller does not act for this org")
    return org_id


def current_identity() -> Identity | None:
    """Inside a handler behind :class:`RequireIdentity`: the verified caller."""
    return _incoming.get()


class AttachIdentity(grpc.aio.UnaryUnaryClientInterceptor):
    """Client interceptor: signs the identity of :func:`acting_as` into each call's metadata,
    else the identity the current handler was called with (propagation).

    A call made outside both goes out without one; a verifying server then refuses it, which
    is the safe way round for a call nobody vouched for.
    """

    def __init__(self, signer: IdentitySigner) -> None:
        self._signer = signer

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        # Work done for a caller goes on as that caller (the gateway's user, propagated through
        # every hop); `acting_as` names whom work nobody called for is done as.
        identity = _outgoing.get() or _incoming.get()
        if identity is not None:
            method = client_call_details.method
            name = method.decode() if isinstance(method, bytes) else str(method)
            metadata = [
                (key, value)
                for key, value in (client_call_details.metadata or ())
                if key not in (IDENTITY_METADATA, SIGNATURE_METADATA)
            ]
            metadata.extend(self._signer.metadata(identity, name))
            client_call_details = client_call_details._replace(
                metadata=grpc.aio.Metadata(*metadata)
            )
        return await continuation(client_call_details, request)


class RequireIdentity(grpc.aio.ServerInterceptor):
    """Server interceptor: refuses calls without a valid identity; exposes it to the handler.

    Put it behind concord_rpc's ErrorInterceptor (`GrpcService.add_interceptor` does), so a
    refusal becomes UNAUTHENTICATED with ErrorInfo. The check runs inside the wrapped handler,
    as only a handler can fail a call with a status.
    """

    def __init__(
        self, verifier: IdentityVerifier, *, open_services: frozenset[str] = OPEN_SERVICES
    ) -> None:
        self._verifier = verifier
        self._open = open_services

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.split("/")[1] in self._open:
            return handler
        codec = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method), **codec
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(handler.stream_unary, method), **codec
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, method), **codec
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                self._stream(handler.stream_stream, method), **codec
            )
        return handler

    def _verified(self, context: grpc.aio.ServicerContext[Any, Any], method: str) -> Identity:
        return self._verifier.verify(tuple(context.invocation_metadata() or ()), method)

    def _unary(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            token = _incoming.set(self._verified(context, method))
            try:
                return await behavior(request, context)
            finally:
                _incoming.reset(token)

        return unary

    def _stream(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            token = _incoming.set(self._verified(context, method))
            try:
                async for response in behavior(request, context):
                    yield response
            finally:
                _incoming.reset(token)

        return stream
