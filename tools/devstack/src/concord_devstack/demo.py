"""Registers the demo mailbox through the gateway, as an admin would."""

from __future__ import annotations

import asyncio

import grpc

from concord.common.v1 import resources_pb2
from concord.gateway.v1 import gateway_service_pb2, gateway_service_pb2_grpc
from concord_devstack.tokens import DEMO_ADDRESS, DEMO_MAILBOX, DEMO_ORG, DEMO_USER


def register_demo_mailbox(gateway_address: str, admin_token: str) -> None:
    """Idempotent: a second `make up` finds the mailbox already there (same request_id)."""
    # The mailbox has no account yet: the Exchange emulator and provider arrive with issue #4.
    request = gateway_service_pb2.RegisterMailboxRequest(
        mailbox_id=DEMO_MAILBOX,
        mailbox=resources_pb2.Mailbox(
            org=f"orgs/{DEMO_ORG}",
            owner_user_id=DEMO_USER,
            crm_user_id="005000000000001AAA",
            address=DEMO_ADDRESS,
            provider=resources_pb2.MAIL_PROVIDER_EXCHANGE_EWS,
        ),
        request_id=f"devstack-register-{DEMO_MAILBOX}",
    )
    asyncio.run(_register(gateway_address, admin_token, request))


async def _register(
    address: str, token: str, request: gateway_service_pb2.RegisterMailboxRequest
) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
        try:
            await stub.RegisterMailbox(
                request, metadata=[("authorization", f"Bearer {token}")], timeout=10
            )
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise RuntimeError(f"registering the demo mailbox failed: {err.details()}") from err
