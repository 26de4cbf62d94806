"""Every public request checked against the API's size and content limits before its handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from concord_gateway.domain.limits import check_request

__all__ = ["RequestLimits"]


class RequestLimits(grpc.aio.ServerInterceptor):
    """Runs inside concord_rpc's ErrorInterceptor, so a request past a limit is
    INVALID_ARGUMENT with BadRequest field violations (a handler is the only place that can
    fail a call with a status, so the check is the first thing the wrapped handler does)."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        behavior: Callable[..., Any] = handler.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            check_request(request)
            return await behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
