"""The gateway's peers, reconciler and linker, and how their failures reach our callers."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from concord.linker.v1 import linker_service_pb2, linker_service_pb2_grpc
from concord.reconciler.v1 import reconciler_service_pb2, reconciler_service_pb2_grpc
from concord_gateway.domain.errors import PeerUnavailable
from concord_rpc import AttachIdentity, IdentitySigner, PeerCallError, channel, error_info

__all__ = ["LINKER_SERVICE", "RECONCILER_SERVICE", "Peers", "ask"]

T = TypeVar("T")

RECONCILER_SERVICE = reconciler_service_pb2.DESCRIPTOR.services_by_name[
    "ReconcilerService"
].full_name
LINKER_SERVICE = linker_service_pb2.DESCRIPTOR.services_by_name["LinkerService"].full_name

_DEAD = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass
class Peers:
    reconciler: reconciler_service_pb2_grpc.ReconcilerServiceStub
    linker: linker_service_pb2_grpc.LinkerServiceStub
    _channels: tuple[grpc.aio.Channel, ...] = ()

    @classmethod
    def connect(
        cls,
        reconciler_addr: str,
        linker_addr: str,
        *,
        identity_key: str,
        longest_call_seconds: float = 0.0,
    ) -> Peers:
        # Retrying channels: every call the gateway makes is a read or carries a request_id
        # (the gateway mints one when the caller sent none), so a resend cannot do work twice.
        # Each call carries the caller it is made for, signed with the internal key. A retry
        # resends the same signed metadata, so it must outlive the longest call (a WaitSession)
        # plus the minute the signature is otherwise good for.
        signer = IdentitySigner(identity_key, ttl=60.0 + longest_call_seconds)
        attach = [AttachIdentity(signer)]
        # Each address may name several replicas (`ipv4:a:1,b:2`, or a headless Service's
        # `dns:///` name): calls are spread over those SERVING, so one dead or draining replica
        # costs no call while another serves (one connection to one replica would, as gRPC
        # keeps a single HTTP/2 connection behind a Service's one virtual address).
        reconciler = channel(
            reconciler_addr, retry=True, interceptors=attach, balance=RECONCILER_SERVICE
        )
        linker = channel(linker_addr, retry=True, interceptors=attach, balance=LINKER_SERVICE)
        return cls(
            reconciler=reconciler_service_pb2_grpc.ReconcilerServiceStub(reconciler),
            linker=linker_service_pb2_grpc.LinkerServiceStub(linker),
            _channels=(reconciler, linker),
        )

    async def close(self) -> None:
        for open_channel in self._channels:
            await open_channel.close()


async def ask(peer: str, call: Awaitable[T]) -> T:
    """Await a call to `peer`; a peer that is down becomes UNAVAILABLE naming it.

    Any other status the peer answered (NOT_FOUND, FAILED_PRECONDITION, ...) is raised as is,
    and concord_rpc's ErrorInterceptor forwards its code, message and details unchanged.
    """
    try:
        return await call
    except grpc.aio.AioRpcError as err:
        if err.code() not in _DEAD:
            raise
        raise _unavailable(peer, err) from None


def _unavailable(peer: str, err: grpc.aio.AioRpcError) -> PeerUnavailable:
    metadata = {"peer": peer, "peerCode": err.code().name}
    if isinstance(err, PeerCallError):
        metadata["peerMethod"] = err.method
    info = error_info(err)
    if info is not None:
        # The peer is up and said it cannot serve (its own dependency is down): say what it said.
        metadata |= {"peerReason": info.reason, "peerDomain": info.domain}
        return PeerUnavailable(f"{peer}: {err.details()}", metadata=metadata)
    # Transport-level failure; grpc's text names addresses, which callers need not see.
    if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return PeerUnavailable(f"{peer} did not answer in time", metadata=metadata)
    return PeerUnavailable(f"{peer} is unavailable", metadata=metadata)
