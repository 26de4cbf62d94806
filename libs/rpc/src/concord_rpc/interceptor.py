"""The one server interceptor that turns exceptions into gRPC statuses."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from concord_rpc.client import STATUS_DETAILS_KEY, PeerCallError
from concord_rpc.errors import DomainError

__all__ = ["DEPENDENCY_UNAVAILABLE", "ErrorInterceptor"]

log = logging.getLogger(__name__)

DEPENDENCY_UNAVAILABLE = "DEPENDENCY_UNAVAILABLE"
_DEAD_PEER_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps what a servicer raises to the status its client sees.

    - :class:`DomainError` -> its code and message, with ErrorInfo(reason,
      domain="<service>.concord.dev", metadata), plus BadRequest / PreconditionFailure /
      RetryInfo when the error carries them.
    - a peer's AioRpcError that says the peer is down (UNAVAILABLE, DEADLINE_EXCEEDED) ->
      UNAVAILABLE / DEPENDENCY_UNAVAILABLE naming the peer method; any other peer status is
      passed on unchanged, details included, so the client sees who decided.
    - anything else -> INTERNAL "internal error"; the exception is logged, never sent.
    """

    def __init__(self, service: str) -> None:
        self.domain = f"{service}.concord.dev"

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(handler.stream_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                self._wrap_stream(handler.stream_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _wrap_unary(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                return await behavior(request, context)
            except Exception as exc:
                await self._abort(context, exc, method)

        return unary

    def _wrap_stream(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        if not inspect.isasyncgenfunction(behavior):
            # A streaming handler written with `await context.write(...)` is a plain coroutine.
            return self._wrap_unary(behavior, method)

        async def stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            try:
                async for response in behavior(request, context):
                    yield response
            except Exception as exc:
                await self._abort(context, exc, method)

        return stream

    async def _abort(
        self, context: grpc.aio.ServicerContext[Any, Any], exc: Exception, method: str
    ) -> NoReturn:
        if isinstance(exc, grpc.aio.AbortError):
            raise exc  # the servicer aborted on purpose; its status stands
        if isinstance(exc, DomainError):
            await self._abort_with(context, self._domain_status(exc), exc.retry_after)
        if isinstance(exc, grpc.aio.AioRpcError):
            await self._abort_peer_error(context, exc, method)
        log.error("%s failed", method, exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        raise AssertionError("unreachable: context.abort raises")  # pragma: no cover

    async def _abort_peer_error(
        self, context: grpc.aio.ServicerContext[Any, Any], err: grpc.aio.AioRpcError, method: str
    ) -> None:
        peer_method = err.method if isinstance(err, PeerCallError) else ""
        log.warning("%s: peer %s answered %s", method, peer_method or "call", err.code().name)
        if err.code() in _DEAD_PEER_CODES:
            metadata = {"peerCode": err.code().name}
            if peer_method:
                metadata["peerMethod"] = peer_method
            status = self._status(
                grpc.StatusCode.UNAVAILABLE,
                "a dependency is unavailable",
                error_details_pb2.ErrorInfo(
                    reason=DEPENDENCY_UNAVAILABLE, domain=self.domain, metadata=metadata
                ),
            )
            await self._abort_with(context, status, retry_after=None)
        forwarded = tuple(
            (k, v) for k, v in err.trailing_metadata() or () if k == STATUS_DETAILS_KEY
        )
        await context.abort(err.code(), err.details() or "", trailing_metadata=forwarded)

    def _domain_status(self, exc: DomainError) -> status_pb2.Status:
        details: list[Any] = [
            error_details_pb2.ErrorInfo(
                reason=exc.reason, domain=self.domain, metadata=exc.metadata
            )
        ]
        if exc.field_violations:
            details.append(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                        for f, d in exc.field_violations
                    ]
                )
            )
        if exc.precondition_violations:
            details.append(
                error_details_pb2.PreconditionFailure(
                    violations=[
                        error_details_pb2.PreconditionFailure.Violation(
                            type=t, subject=s, description=d
                        )
                        for t, s, d in exc.precondition_violations
                    ]
                )
            )
        if exc.retry_after is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(exc.retry_after * 1e9))
            details.append(error_details_pb2.RetryInfo(retry_delay=delay))
        return self._status(grpc.StatusCode[exc.code], exc.message, *details)

    @staticmethod
    def _status(code: grpc.StatusCode, message: str, *details: Any) -> status_pb2.Status:
        status = status_pb2.Status(code=code.value[0], message=message)
        for detail in details:
            status.details.add().Pack(detail)
        return status

    @staticmethod
    async def _abort_with(
        context: grpc.aio.ServicerContext[Any, Any],
        status: status_pb2.Status,
        retry_after: float | None,
    ) -> NoReturn:
        grpc_status = rpc_status.to_status(status)
        trailers = tuple(grpc_status.trailing_metadata)
        if retry_after is not None:
            pushback = _pushback(retry_after, context.time_remaining())
            trailers += (("grpc-retry-pushback-ms", pushback),)
        await context.abort(grpc_status.code, grpc_status.details, trailing_metadata=trailers)
        raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


# The longest a retrying channel may wait on its own before resending. A caller's deadline is
# seconds; gRPC waits out any pushback even past the deadline, so a 10 s or 300 s retry-after
# (a throttled mailbox, a spent Salesforce allocation) would stall the caller into
# DEADLINE_EXCEEDED and lose the reason. Longer waits are the caller's to schedule: RetryInfo
# carries them.
CHANNEL_RETRY_MAX_WAIT_SECONDS = 1.0


def _pushback(retry_after: float, remaining: float | None = None) -> str:
    """The channel's retry policy reads pushback, not RetryInfo: a short wait is honoured there
    (without pushback a retrying client would come back after 0.1 s), a long one is "do not
    retry" (a negative value, gRFC A6), so the caller gets the error and its RetryInfo at once.
    So is any wait the caller's deadline (`remaining` seconds) would not outlive: waiting would
    only turn the reason into DEADLINE_EXCEEDED."""
    if retry_after > CHANNEL_RETRY_MAX_WAIT_SECONDS:
        return "-1"
    if remaining is not None and retry_after >= remaining:
        return "-1"
    return str(int(retry_after * 1000))
