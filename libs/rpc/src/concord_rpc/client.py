"""Client side: channels to peers and reading the error details peers send."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "RETRYABLE_CODES",
    "PeerCallError",
    "RpcFailure",
    "channel",
    "error_info",
    "from_rpc_error",
    "rich_status",
]

STATUS_DETAILS_KEY = "grpc-status-details-bin"

# gRPC's ring_hash policy hashes a request header only with this switch on (gRFC A76, still
# experimental in grpcio 1.85): without it, ring_hash outside xDS fails every call ("hash
# attribute not present"). gRPC reads it when it first makes a channel or server, after this
# module is imported by any service.
os.environ.setdefault("GRPC_EXPERIMENTAL_RING_HASH_SET_REQUEST_HASH_KEY", "true")

# ABORTED is deliberately absent: resending the same request after a conflict conflicts again;
# the caller has to re-read and retry the whole operation.
RETRYABLE_CODES = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")

_RETRY_POLICY: dict[str, Any] = {
    "name": [{}],  # every method of every service on this channel
    "retryPolicy": {
        "maxAttempts": 4,
        "initialBackoff": "0.1s",
        "maxBackoff": "2s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": list(RETRYABLE_CODES),
    },
}


# Pings only while calls are open, every 30 s, so a peer that vanished without closing the
# connection (a killed pod) fails the calls within ~40 s instead of hanging. Servers built with
# GrpcService accept pings this often.
KEEPALIVE_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
)


# A channel tries a peer it could not reach again at least this often (gRPC's own back-off
# grows to two minutes): once a restarted peer serves, the next call's retries reach it, where
# calls made while it was down had put the channel seconds into its back-off (a session a
# restarted mail-connector's catch-up push started failed, and waited a minute for its retry).
MAX_RECONNECT_BACKOFF_MS = 250


# What one message between our services may weigh, each way (gRPC's default receive limit is
# 4 MiB). Listings are paged well under 4 MiB, but a batch of writes is cut by count: 100
# Events with 32,000-character descriptions in a 3-byte script are ~10 MB, and a refused batch
# would fail its session every time.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
MESSAGE_SIZE_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)


class PeerCallError(grpc.aio.AioRpcError):
    """An AioRpcError that remembers which method failed, so errors can name the dependency."""

    def __init__(self, err: grpc.aio.AioRpcError, method: str) -> None:
        super().__init__(
            err.code(),
            err.initial_metadata(),
            err.trailing_metadata(),
            err.details(),
            err.debug_error_string(),
        )
        self.method = method


class _NameFailedMethod(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        call = await continuation(client_call_details, request)
        try:
            await call
        except grpc.aio.AioRpcError as err:
            method = client_call_details.method
            name = method.decode() if isinstance(method, bytes) else str(method)
            raise PeerCallError(err, name) from None
        return call


def channel(
    addr: str,
    *,
    retry: bool,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    options: Sequence[tuple[str, Any]] = (),
    balance: str | None = None,
    affinity: str | None = None,
) -> grpc.aio.Channel:
    """An insecure channel to a peer at `addr`: `host:port`, or any gRPC target
    (`ipv4:127.0.0.1:50051,127.0.0.1:50056`, `dns:///reconciler-headless:50051`).

    With `retry=True`, every call that fails with UNAVAILABLE or RESOURCE_EXHAUSTED is resent
    up to 4 attempts in all, with exponential back-off (or the server's pushback). Use it only for
    idempotent calls (reads, or mutations carrying a `request_id`): the server may have done the
    work before answering UNAVAILABLE. Keep a second channel with `retry=False` for the rest.

    With `balance` (the full name of the service every address serves), a target that can name
    several replicas (a list, or a `dns:` name) has its calls go round-robin over every address
    it resolves to that reports that service SERVING on its health service (gRPC's
    `round_robin` policy with client-side health checks): a dead, starting or draining replica
    gets no calls while another serves. A plain `host:port` names one replica, with nothing to
    balance: it keeps gRPC's default `pick_first`, as does a channel without `balance`. Either
    way a peer that could not be reached is tried again at least every 250 ms, so calls made
    while it was down do not keep the channel failing after it is back.

    With `affinity` too (a request header's name), a balanced channel sends the calls that carry
    one value of that header to one replica, the same while it serves (gRPC's `ring_hash` over
    the header's value): what a replica keeps in memory for that value (a mailbox's throttling,
    its provider's session) is then used by all its calls. A replica that stops serving hands
    its values to the next ones on the ring; the others stay where they were. A call without
    the header goes to a replica picked at random.

    Failed unary calls raise :class:`PeerCallError`, an AioRpcError that knows its method.
    """
    all_options: list[tuple[str, Any]] = [
        *KEEPALIVE_OPTIONS,
        *MESSAGE_SIZE_OPTIONS,
        ("grpc.initial_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
    ]
    config: dict[str, Any] = {}
    if retry:
        all_options += [("grpc.enable_retries", 1)]
        config["methodConfig"] = [_RETRY_POLICY]
    else:
        all_options += [("grpc.enable_retries", 0)]
    if balance is not None and _names_several(addr):
        policy = (
            {"ring_hash_experimental": {"requestHashHeader": affinity}}
            if affinity
            else {"round_robin": {}}
        )
        config["loadBalancingConfig"] = [policy]
        config["healthCheckConfig"] = {"serviceName": balance}
    if config:
        all_options += [("grpc.service_config", json.dumps(config))]
    all_options += options
    return grpc.aio.insecure_channel(
        addr, options=all_options, interceptors=[_NameFailedMethod(), *interceptors]
    )


def _names_several(addr: str) -> bool:
    """`ipv4:a:1,b:2` or `dns:///reconciler-headless:50051`; not `localhost:50051`."""
    return "," in addr or addr.startswith("dns:")


def rich_status(err: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    """The `google.rpc.Status` a server attached to the error, if any."""
    for key, value in err.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY:
            return status_pb2.Status.FromString(value)
    return None


def _unpack(status: status_pb2.Status | None, message_type: type[Any]) -> Any:
    for detail in status.details if status else ():
        if detail.Is(message_type.DESCRIPTOR):
            unpacked = message_type()
            detail.Unpack(unpacked)
            return unpacked
    return None


def error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    info: error_details_pb2.ErrorInfo | None = _unpack(
        rich_status(err), error_details_pb2.ErrorInfo
    )
    return info


@dataclass(frozen=True)
class RpcFailure:
    """What a failed call said, flattened; `reason` is empty when the server sent no ErrorInfo."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    retry_after: float | None = None
    field_violations: list[tuple[str, str]] = field(default_factory=list)


def from_rpc_error(err: grpc.aio.AioRpcError) -> RpcFailure:
    status = rich_status(err)
    info: error_details_pb2.ErrorInfo | None = _unpack(status, error_details_pb2.ErrorInfo)
    retry: error_details_pb2.RetryInfo | None = _unpack(status, error_details_pb2.RetryInfo)
    bad: error_details_pb2.BadRequest | None = _unpack(status, error_details_pb2.BadRequest)
    return RpcFailure(
        code=err.code(),
        message=err.details() or "",
        reason=info.reason if info else "",
        domain=info.domain if info else "",
        metadata=dict(info.metadata) if info else {},
        retry_after=retry.retry_delay.ToTimedelta().total_seconds() if retry else None,
        field_violations=[(v.field, v.description) for v in bad.field_violations] if bad else [],
    )
