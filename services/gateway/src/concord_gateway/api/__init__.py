"""The gateway's gRPC surface: authentication interceptor and GatewayService servicer."""

from __future__ import annotations

from concord.gateway.v1 import gateway_service_pb2 as pb
from concord.gateway.v1 import gateway_service_pb2_grpc as pb_grpc
from concord_gateway.adapters.peers import Peers
from concord_gateway.api.authentication import Authenticator
from concord_gateway.api.limits import RequestLimits
from concord_gateway.api.servicer import GatewayServicer
from concord_gateway.domain.tokens import TokenVerifier
from concord_gateway.settings import GatewaySettings
from concord_rpc import GrpcService

__all__ = ["SERVICE_NAME", "install"]

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["GatewayService"].full_name


def install(
    server: GrpcService, settings: GatewaySettings, peers: Peers, verifier: TokenVerifier
) -> GatewayServicer:
    """Put authentication, the request limits and the servicer on `server` (the process and
    the tests alike)."""
    servicer = GatewayServicer(peers, settings)
    server.add_interceptor(Authenticator(verifier))
    server.add_interceptor(RequestLimits())
    server.add_service(
        SERVICE_NAME,
        lambda grpc_server: pb_grpc.add_GatewayServiceServicer_to_server(servicer, grpc_server),
    )
    return servicer
