"""Gateway-signed caller identity: what verifies, what is refused, and the two interceptors."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue
from grpc_health.v1 import health_pb2, health_pb2_grpc

import concord_rpc.identity as identity_module
from concord_rpc import (
    AttachIdentity,
    GrpcService,
    Identity,
    IdentitySigner,
    IdentityVerifier,
    RequireIdentity,
    acting_as,
    channel,
    current_identity,
    from_rpc_error,
)
from concord_rpc.identity import (
    IDENTITY_METADATA,
    SIGNATURE_METADATA,
    IdentityExpired,
    IdentityInvalid,
    IdentityMissing,
    require_org,
)

KEY = "k" * 32
OTHER_KEY = "o" * 32
METHOD = "/concord.reconciler.v1.ReconcilerService/GetMailbox"
ANN = Identity(subject="ann", org="acme", role="user")
NOW = 1_800_000_000.0


def signed(
    identity: Identity = ANN, *, key: str = KEY, method: str = METHOD, at: float = NOW
) -> Any:
    return IdentitySigner(key, clock=lambda: at).metadata(identity, method)


def verifier(*keys: str, at: float = NOW) -> IdentityVerifier:
    return IdentityVerifier(keys or (KEY,), clock=lambda: at)


@pytest.mark.unit
def test_a_signed_identity_verifies() -> None:
    assert verifier().verify(signed(), METHOD) == ANN


@pytest.mark.unit
def test_any_listed_key_verifies_so_keys_can_rotate() -> None:
    assert verifier(OTHER_KEY, KEY).verify(signed(), METHOD) == ANN
    with pytest.raises(IdentityInvalid):
        verifier(OTHER_KEY).verify(signed(), METHOD)


@pytest.mark.unit
def test_missing_metadata_is_identity_missing() -> None:
    with pytest.raises(IdentityMissing):
        verifier().verify([], METHOD)
    ((name, payload), _) = signed()
    with pytest.raises(IdentityMissing):
        verifier().verify([(name, payload)], METHOD)


@pytest.mark.unit
def test_a_header_seen_on_one_method_does_not_work_on_another() -> None:
    with pytest.raises(IdentityInvalid):
        verifier().verify(signed(), "/concord.reconciler.v1.ReconcilerService/DeleteMailbox")


@pytest.mark.unit
def test_a_changed_identity_does_not_verify() -> None:
    ((_, payload), signature) = signed()
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(IdentityInvalid):
        verifier().verify([(IDENTITY_METADATA, forged), signature], METHOD)


@pytest.mark.unit
@pytest.mark.parametrize("signature", ["v1.", "v1.!!!", "v2.abc", "garbage", "v1.AAAA"])
def test_a_malformed_signature_is_invalid(signature: str) -> None:
    ((_, payload), _) = signed()
    with pytest.raises(IdentityInvalid):
        verifier().verify([(IDENTITY_METADATA, payload), (SIGNATURE_METADATA, signature)], METHOD)


@pytest.mark.unit
def test_an_old_identity_has_expired_and_a_future_one_is_invalid() -> None:
    with pytest.raises(IdentityExpired):
        verifier(at=NOW + 600).verify(signed(), METHOD)
    assert verifier(at=NOW + 60).verify(signed(), METHOD) == ANN  # within ttl
    with pytest.raises(IdentityInvalid):
        verifier(at=NOW - 600).verify(signed(), METHOD)


@pytest.mark.unit
def test_the_same_identity_and_method_within_a_second_are_signed_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [NOW]
    signer = IdentitySigner(KEY, clock=lambda: clock[0])
    macs: list[str] = []
    real = identity_module._mac

    def counted(key: bytes, method: str, payload: str) -> bytes:
        macs.append(method)
        return real(key, method, payload)

    monkeypatch.setattr(identity_module, "_mac", counted)
    first = signer.metadata(ANN, METHOD)
    clock[0] = NOW + 0.9
    assert signer.metadata(ANN, METHOD) == first
    assert macs == [METHOD]
    # Another method, another identity, the next second: each signed afresh.
    other_method = "/concord.reconciler.v1.ReconcilerService/ListMailboxes"
    bob = Identity(subject="bob", org="acme", role="user")
    for_other_method = signer.metadata(ANN, other_method)
    for_bob = signer.metadata(bob, METHOD)
    clock[0] = NOW + 1
    later = signer.metadata(ANN, METHOD)
    assert macs == [METHOD, other_method, METHOD, METHOD]
    assert later != first
    monkeypatch.undo()
    assert verifier().verify(for_other_method, other_method) == ANN
    assert verifier().verify(for_bob, METHOD) == bob
    assert verifier(at=NOW + 1).verify(later, METHOD) == ANN


@pytest.mark.unit
def test_short_keys_are_refused_without_showing_them() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes") as raised:
        IdentitySigner("short-secret")
    assert "short-secret" not in str(raised.value)
    with pytest.raises(ValueError, match="at least one"):
        IdentityVerifier([])


# -- over the wire ------------------------------------------------------------------------------

SERVICE = "test.v1.Whoami"
_CODEC: dict[str, Any] = {
    "request_deserializer": StringValue.FromString,
    "response_serializer": StringValue.SerializeToString,
}


async def whoami(request: StringValue, context: Any) -> StringValue:
    caller = current_identity()
    assert caller is not None
    return StringValue(value=f"{caller.subject}@{caller.org}/{caller.role}")


async def whoami_stream(request: StringValue, context: Any) -> AsyncIterator[StringValue]:
    yield await whoami(request, context)


@contextlib.asynccontextmanager
async def _verifying(name: str, handlers: dict[str, Any]) -> AsyncIterator[GrpcService]:
    """A server for SERVICE's `handlers` behind RequireIdentity with KEY."""
    service = GrpcService(name, port=0, drain_seconds=0)
    service.add_interceptor(RequireIdentity(IdentityVerifier([KEY])))

    def register(grpc_server: grpc.aio.Server) -> None:
        grpc_server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )

    service.add_service(SERVICE, register)
    await service.start()
    await service.become_ready()
    try:
        yield service
    finally:
        await service.shutdown()


@pytest.fixture
async def server() -> AsyncIterator[GrpcService]:
    handlers = {
        "Get": grpc.unary_unary_rpc_method_handler(whoami, **_CODEC),
        "Stream": grpc.unary_stream_rpc_method_handler(whoami_stream, **_CODEC),
    }
    async with _verifying("whoami", handlers) as service:
        yield service


async def ask(address: str, key: str = KEY) -> str:
    async with channel(
        address, retry=False, interceptors=[AttachIdentity(IdentitySigner(key))]
    ) as ch:
        stub = ch.unary_unary(
            f"/{SERVICE}/Get",
            request_serializer=StringValue.SerializeToString,
            response_deserializer=StringValue.FromString,
        )
        response: StringValue = await stub(StringValue(), timeout=5)
        return response.value


@pytest.mark.integration
async def test_the_handler_sees_the_identity_the_caller_acted_as(server: GrpcService) -> None:
    async def as_(identity: Identity) -> str:
        with acting_as(identity):
            return await ask(server.address)

    # Concurrent calls for different callers each carry their own.
    answers = await asyncio.gather(
        as_(ANN), as_(Identity("root", "acme", "admin")), as_(Identity("side", "globex", "service"))
    )
    assert list(answers) == ["ann@acme/user", "root@acme/admin", "side@globex/service"]


@pytest.mark.integration
async def test_a_call_without_an_identity_is_unauthenticated(server: GrpcService) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await ask(server.address)
    failure = from_rpc_error(raised.value)
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "IDENTITY_MISSING")


@pytest.mark.integration
async def test_a_call_signed_with_another_key_is_unauthenticated(server: GrpcService) -> None:
    with acting_as(ANN), pytest.raises(grpc.aio.AioRpcError) as raised:
        await ask(server.address, key=OTHER_KEY)
    failure = from_rpc_error(raised.value)
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "IDENTITY_INVALID")


@pytest.mark.integration
async def test_streams_are_checked_and_health_stays_open(server: GrpcService) -> None:
    async with grpc.aio.insecure_channel(server.address) as ch:
        stream = ch.unary_stream(
            f"/{SERVICE}/Stream",
            request_serializer=StringValue.SerializeToString,
            response_deserializer=StringValue.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in stream(StringValue(), timeout=5):
                pass
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        answer = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
async def relay(server: GrpcService) -> AsyncIterator[GrpcService]:
    """A service behind RequireIdentity whose handler calls `server` (as linker calls
    crm-connector): its outgoing call carries no `acting_as` of its own."""
    onward = channel(
        server.address, retry=False, interceptors=[AttachIdentity(IdentitySigner(KEY))]
    )
    stub = onward.unary_unary(
        f"/{SERVICE}/Get",
        request_serializer=StringValue.SerializeToString,
        response_deserializer=StringValue.FromString,
    )

    async def forward(request: StringValue, context: Any) -> StringValue:
        answer: StringValue = await stub(StringValue(), timeout=5)
        return answer

    handlers = {"Get": grpc.unary_unary_rpc_method_handler(forward, **_CODEC)}
    async with _verifying("relay", handlers) as service:
        try:
            yield service
        finally:
            await onward.close()


@pytest.mark.integration
async def test_a_handler_calls_its_peers_as_the_caller_it_serves(relay: GrpcService) -> None:
    with acting_as(ANN):
        assert await ask(relay.address) == "ann@acme/user"
    # Outside any call and any acting_as, nothing is vouched for: the relay refuses.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await ask(relay.address)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.integration
async def test_a_caller_for_one_org_is_refused_another_orgs_data() -> None:
    async def org_bound(request: StringValue, context: Any) -> StringValue:
        return StringValue(value=require_org(request.value))

    handlers = {"Get": grpc.unary_unary_rpc_method_handler(org_bound, **_CODEC)}
    async with (
        _verifying("org-bound", handlers) as service,
        channel(
            service.address, retry=False, interceptors=[AttachIdentity(IdentitySigner(KEY))]
        ) as ch,
    ):
        stub = ch.unary_unary(
            f"/{SERVICE}/Get",
            request_serializer=StringValue.SerializeToString,
            response_deserializer=StringValue.FromString,
        )
        with acting_as(ANN):  # ann acts for acme
            answer: StringValue = await stub(StringValue(value="acme"), timeout=5)
            assert answer.value == "acme"
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub(StringValue(value="globex"), timeout=5)
    failure = from_rpc_error(raised.value)
    assert (failure.code, failure.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "CALLER_NOT_IN_ORG",
    )
    assert "globex" not in failure.message
