"""gRPC plumbing shared by Concord services: errors, the error interceptor, servers, channels."""

from __future__ import annotations

from concord_rpc.client import (
    RETRYABLE_CODES,
    PeerCallError,
    RpcFailure,
    channel,
    error_info,
    from_rpc_error,
    rich_status,
)
from concord_rpc.errors import (
    Aborted,
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from concord_rpc.interceptor import DEPENDENCY_UNAVAILABLE, ErrorInterceptor
from concord_rpc.service import GrpcService, ReadinessCheck, ShutdownHook, run

__all__ = [
    "DEPENDENCY_UNAVAILABLE",
    "RETRYABLE_CODES",
    "Aborted",
    "AlreadyExists",
    "DomainError",
    "ErrorInterceptor",
    "FailedPrecondition",
    "GrpcService",
    "InvalidArgument",
    "NotFound",
    "PeerCallError",
    "PermissionDenied",
    "ReadinessCheck",
    "ResourceExhausted",
    "RpcFailure",
    "ShutdownHook",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "channel",
    "error_info",
    "from_rpc_error",
    "rich_status",
    "run",
]
