"""gRPC plumbing shared by Concord services: errors, the error interceptor, servers, channels,
and the gateway-signed caller identity on internal calls (opt-in, `concord_rpc.identity`)."""

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
from concord_rpc.identity import (
    AttachIdentity,
    Identity,
    IdentitySigner,
    IdentityVerifier,
    RequireIdentity,
    acting_as,
    current_identity,
)
from concord_rpc.interceptor import DEPENDENCY_UNAVAILABLE, ErrorInterceptor
from concord_rpc.service import GrpcService, ReadinessCheck, ShutdownHook, run

__all__ = [
    "DEPENDENCY_UNAVAILABLE",
    "RETRYABLE_CODES",
    "Aborted",
    "AlreadyExists",
    "AttachIdentity",
    "DomainError",
    "ErrorInterceptor",
    "FailedPrecondition",
    "GrpcService",
    "Identity",
    "IdentitySigner",
    "IdentityVerifier",
    "InvalidArgument",
    "NotFound",
    "PeerCallError",
    "PermissionDenied",
    "ReadinessCheck",
    "RequireIdentity",
    "ResourceExhausted",
    "RpcFailure",
    "ShutdownHook",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "acting_as",
    "channel",
    "current_identity",
    "error_info",
    "from_rpc_error",
    "rich_status",
    "run",
]
