"""The server interceptor that authenticates every call, and the caller it found."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc

from concord_gateway.domain.errors import TokenInvalid
from concord_gateway.domain.principal import Principal
from concord_gateway.domain.tokens import TokenVerifier, bearer_token
from concord_rpc import DomainError, acting_as

__all__ = ["PUBLIC_SERVICES", "Authenticator", "current_principal"]

log = logging.getLogger(__name__)

# Probes and tooling call these without a token; they reveal nothing about mailboxes.
PUBLIC_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)

_principal: ContextVar[Principal] = ContextVar("concord_gateway_principal")


def current_principal() -> Principal:
    """The caller of the RPC being handled; only valid inside an authenticated handler."""
    try:
        return _principal.get()
    except LookupError:
        raise RuntimeError("no authenticated caller: handler not behind Authenticator") from None


class Authenticator(grpc.aio.ServerInterceptor):
    """Verifies the bearer token before the handler runs and exposes the caller to it.

    Runs inside concord_rpc's ErrorInterceptor (GrpcService.add_interceptor), so a refused token
    is an UNAUTHENTICATED status with ErrorInfo(TOKEN_MISSING | TOKEN_INVALID | TOKEN_EXPIRED).
    The check happens in the wrapped handler rather than here because only a handler can fail
    a call with a status; it is the first thing the handler does.
    """

    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.split("/")[1] in PUBLIC_SERVICES:
            return handler
        if handler.unary_unary is None:
            # Fail closed: a streaming method added later must get authentication written for it.
            raise TypeError(f"{method}: Authenticator handles unary methods only")
        return grpc.unary_unary_rpc_method_handler(
            self._authenticated(handler.unary_unary, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _authenticated(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            principal = self._authenticate(context, method)
            token = _principal.set(principal)
            try:
                # Peer calls made while handling it carry this caller, signed (Peers).
                with acting_as(principal.identity):
                    return await behavior(request, context)
            finally:
                _principal.reset(token)

        return unary

    def _authenticate(self, context: grpc.aio.ServicerContext[Any, Any], method: str) -> Principal:
        authorization = next(
            (str(v) for k, v in context.invocation_metadata() or () if k == "authorization"), None
        )
        try:
            return self._verifier.verify(bearer_token(authorization))
        except TokenInvalid as exc:
            # Why, for operators; never the metadata value, which is a credential.
            log.info("%s: caller refused (%s: %s)", method, exc.reason, exc.why)
            raise
        except DomainError as exc:
            log.info("%s: caller refused (%s)", method, exc.reason)
            raise
