from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue
from grpc_health.v1 import health_pb2, health_pb2_grpc

from concord_rpc import (
    DEPENDENCY_UNAVAILABLE,
    Aborted,
    FailedPrecondition,
    GrpcService,
    InvalidArgument,
    NotFound,
    ReadinessCheck,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    channel,
    error_info,
    from_rpc_error,
    run,
)
from concord_rpc.service import LIVENESS

pytestmark = pytest.mark.integration

SERVICE = "test.v1.Echo"

# The context is Any: grpc.aio.ServicerContext is generic only in the stubs, and these aliases
# are evaluated at run time.
Unary = Callable[[StringValue, Any], Awaitable[StringValue]]
Stream = Callable[[StringValue, Any], AsyncIterator[StringValue]]

_CODEC: dict[str, Any] = {
    "request_deserializer": StringValue.FromString,
    "response_serializer": StringValue.SerializeToString,
}


def register(unary: Mapping[str, Unary], stream: Mapping[str, Stream]) -> Callable[[Any], None]:
    """A servicer made of plain functions over StringValue, so no Concord protos are needed."""

    def add(server: grpc.aio.Server) -> None:
        handlers = {n: grpc.unary_unary_rpc_method_handler(f, **_CODEC) for n, f in unary.items()}
        handlers |= {
            n: grpc.unary_stream_rpc_method_handler(f, **_CODEC) for n, f in stream.items()
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))

    return add


@contextlib.asynccontextmanager
async def running(
    unary: Mapping[str, Unary] | None = None,
    stream: Mapping[str, Stream] | None = None,
    *,
    name: str = "test",
    checks: Sequence[ReadinessCheck] = (),
    drain_seconds: float = 5.0,
) -> AsyncIterator[GrpcService]:
    service = GrpcService(name, port=0, drain_seconds=drain_seconds, readiness_checks=checks)
    service.add_service(SERVICE, register(unary or {}, stream or {}))
    await service.start()
    try:
        yield service
    finally:
        await service.shutdown()


async def call(addr: str, method: str, value: str = "", *, retry: bool = False) -> str:
    async with channel(addr, retry=retry) as ch:
        stub = ch.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=StringValue.SerializeToString,
            response_deserializer=StringValue.FromString,
        )
        response: StringValue = await stub(StringValue(value=value), timeout=10)
        return response.value


async def call_error(addr: str, method: str, value: str = "", *, retry: bool = False) -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(addr, method, value, retry=retry)
    return raised.value


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class MailboxNameInvalid(InvalidArgument):
    reason = "MAILBOX_NAME_INVALID"


class MailboxNotFound(NotFound):
    reason = "MAILBOX_NOT_FOUND"


async def health(addr: str, service: str = "") -> int:
    async with channel(addr, retry=False) as ch:
        response = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
        status: int = response.status
        return status


async def eventually(predicate: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(5):
        # Polling on purpose: the conditions are observed over the network (health checks).
        while not await predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_health_is_not_serving_until_the_readiness_checks_pass() -> None:
    attempts = 0
    migrated = asyncio.Event()

    async def database_migrated() -> None:
        nonlocal attempts
        attempts += 1
        if not migrated.is_set():
            raise RuntimeError("not migrated yet")

    async with running(checks=[database_migrated]) as service:
        ready = asyncio.create_task(service.become_ready())

        async def checked_twice() -> bool:
            return attempts >= 2

        await eventually(checked_twice)
        assert await health(service.address) == NOT_SERVING
        assert await health(service.address, SERVICE) == NOT_SERVING
        # Alive while waiting for dependencies: a liveness probe must not restart it.
        assert await health(service.address, LIVENESS) == SERVING

        migrated.set()
        await asyncio.wait_for(ready, 5)
        assert await health(service.address) == SERVING
        assert await health(service.address, SERVICE) == SERVING


async def test_reflection_lists_the_services() -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async with running() as service, channel(service.address, retry=False) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for response in stub.ServerReflectionInfo(iter([request])):
            names = {s.name for s in response.list_services_response.service}
            break
    assert {SERVICE, "grpc.health.v1.Health"} <= names


async def test_a_domain_error_becomes_a_status_with_error_info_and_bad_request() -> None:
    async def rename(request: StringValue, context: object) -> StringValue:
        raise MailboxNameInvalid(
            "mailbox name is invalid",
            metadata={"mailbox": request.value},
            field_violations=[("name", "must not contain '/'")],
        )

    async with running({"Rename": rename}, name="reconciler") as service:
        err = await call_error(service.address, "Rename", "a/b")

    failure = from_rpc_error(err)
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.message == "mailbox name is invalid"
    assert failure.reason == "MAILBOX_NAME_INVALID"
    assert failure.domain == "reconciler.concord.dev"
    assert failure.metadata == {"mailbox": "a/b"}
    assert failure.field_violations == [("name", "must not contain '/'")]
    assert failure.retry_after is None
    info = error_info(err)
    assert info is not None
    assert info.reason == "MAILBOX_NAME_INVALID"


class _Denied(Unauthenticated):
    reason = "TOKEN_MISSING"


class _RefuseAll(grpc.aio.ServerInterceptor):
    """Replaces every handler with one that raises a DomainError, as an auth interceptor does."""

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)

        async def refuse(request: Any, context: Any) -> Any:
            raise _Denied("a bearer token is required")

        return grpc.unary_unary_rpc_method_handler(
            refuse,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


async def test_an_added_interceptor_runs_inside_the_error_interceptor() -> None:
    async def echo(request: StringValue, context: object) -> StringValue:
        return request

    service = GrpcService("gateway", port=0)
    service.add_service(SERVICE, register({"Echo": echo}, {}))
    service.add_interceptor(_RefuseAll())
    await service.start()
    try:
        with pytest.raises(RuntimeError, match="before start"):
            service.add_interceptor(_RefuseAll())
        err = await call_error(service.address, "Echo", "hi")
    finally:
        await service.shutdown()
    failure = from_rpc_error(err)
    assert failure.code == grpc.StatusCode.UNAUTHENTICATED
    assert (failure.reason, failure.domain) == ("TOKEN_MISSING", "gateway.concord.dev")


async def test_a_retryable_error_carries_retry_info() -> None:
    async def sync(request: StringValue, context: object) -> StringValue:
        raise ResourceExhausted("Salesforce API budget spent", retry_after=30)

    async with running({"Sync": sync}) as service:
        err = await call_error(service.address, "Sync")
    failure = from_rpc_error(err)
    assert failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert failure.retry_after == 30


async def test_a_long_retry_after_reaches_a_retrying_caller_at_once_not_at_its_deadline() -> None:
    attempts = 0

    async def sync(request: StringValue, context: object) -> StringValue:
        nonlocal attempts
        attempts += 1
        raise ResourceExhausted("Salesforce API budget spent", retry_after=300)

    async with running({"Sync": sync}) as service:
        started = time.monotonic()
        err = await call_error(service.address, "Sync", retry=True)
        waited = time.monotonic() - started
    failure = from_rpc_error(err)
    assert failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED, failure
    assert failure.retry_after == 300
    assert attempts == 1
    assert waited < 5, f"the channel waited {waited:.1f} s of the caller's 10 s deadline"


async def test_a_retry_after_past_the_callers_deadline_is_not_waited_out() -> None:
    """Issue #17: never wait past a deadline: a short pushback the caller's remaining time
    cannot cover comes back at once, with its reason, not as DEADLINE_EXCEEDED."""
    attempts = 0

    async def sync(request: StringValue, context: object) -> StringValue:
        nonlocal attempts
        attempts += 1
        raise ResourceExhausted("busy", retry_after=0.9)

    async with running({"Sync": sync}) as service, channel(service.address, retry=True) as ch:
        stub = ch.unary_unary(
            f"/{SERVICE}/Sync",
            request_serializer=StringValue.SerializeToString,
            response_deserializer=StringValue.FromString,
        )
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub(StringValue(value=""), timeout=0.6)
        waited = time.monotonic() - started
    failure = from_rpc_error(raised.value)
    assert failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED, failure
    assert failure.retry_after == 0.9
    assert attempts == 1
    assert waited < 0.5


async def test_a_short_retry_after_is_waited_out_by_the_retrying_channel() -> None:
    attempts = 0

    async def sync(request: StringValue, context: object) -> StringValue:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ResourceExhausted("busy", retry_after=0.3)
        return StringValue(value="done")

    async with running({"Sync": sync}) as service:
        started = time.monotonic()
        assert await call(service.address, "Sync", retry=True) == "done"
        waited = time.monotonic() - started
    assert attempts == 2
    # The server's pushback, not the channel's 0.1 s initial back-off.
    assert waited >= 0.3


async def test_a_precondition_failure_is_detailed() -> None:
    from google.rpc import error_details_pb2

    from concord_rpc import rich_status

    async def write(request: StringValue, context: object) -> StringValue:
        raise FailedPrecondition(
            "mailbox is suspended", precondition_violations=[("STATE", "mailbox/demo", "x")]
        )

    async with running({"Write": write}) as service:
        err = await call_error(service.address, "Write")
    status = rich_status(err)
    assert status is not None
    failure = error_details_pb2.PreconditionFailure()
    assert any(d.Unpack(failure) for d in status.details)
    assert [(v.type, v.subject) for v in failure.violations] == [("STATE", "mailbox/demo")]


async def test_an_unknown_exception_is_internal_and_leaks_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def boom(request: StringValue, context: object) -> StringValue:
        raise KeyError("password=hunter2")

    with caplog.at_level(logging.ERROR):
        async with running({"Boom": boom}) as service:
            err = await call_error(service.address, "Boom")

    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == "internal error"
    assert "hunter2" not in repr(tuple(err.trailing_metadata()))
    assert error_info(err) is None
    # ... but the operator gets the stack.
    assert any(r.exc_info and "hunter2" in str(r.exc_info[1]) for r in caplog.records)


async def test_unimplemented_names_the_issue() -> None:
    async def later(request: StringValue, context: object) -> StringValue:
        raise Unimplemented("Reconciler.Merge", issue=17)

    async with running({"Merge": later}) as service:
        err = await call_error(service.address, "Merge")
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED
    assert err.details() == "Reconciler.Merge is not implemented yet (issue #17)"
    assert from_rpc_error(err).reason == "NOT_IMPLEMENTED_YET"


async def test_a_domain_error_in_a_stream_is_mapped_after_the_items_already_sent() -> None:
    async def items(request: StringValue, context: object) -> AsyncIterator[StringValue]:
        yield StringValue(value="first")
        raise MailboxNotFound("mailbox demo is gone")

    async with (
        running(stream={"List": items}) as service,
        channel(service.address, retry=False) as ch,
    ):
        stub = ch.unary_stream(
            f"/{SERVICE}/List",
            request_serializer=StringValue.SerializeToString,
            response_deserializer=StringValue.FromString,
        )
        received: list[str] = []

        async def consume() -> None:
            async for item in stub(StringValue()):
                received.append(item.value)

        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await consume()
    assert received == ["first"]
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert from_rpc_error(raised.value).reason == "MAILBOX_NOT_FOUND"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_a_dead_peer_makes_the_caller_unavailable_naming_the_peer_method() -> None:
    dead = f"127.0.0.1:{free_port()}"

    async def resolve(request: StringValue, context: object) -> StringValue:
        return StringValue(value=await call(dead, "Lookup"))

    async with running({"Resolve": resolve}, name="linker") as service:
        err = await call_error(service.address, "Resolve")
    failure = from_rpc_error(err)
    assert failure.code == grpc.StatusCode.UNAVAILABLE
    assert failure.reason == DEPENDENCY_UNAVAILABLE
    assert failure.domain == "linker.concord.dev"
    assert failure.metadata == {"peerMethod": f"/{SERVICE}/Lookup", "peerCode": "UNAVAILABLE"}


async def test_a_peer_error_passes_through_with_the_peer_details() -> None:
    async def lookup(request: StringValue, context: object) -> StringValue:
        raise MailboxNotFound("no such mailbox", metadata={"mailbox": "demo"})

    async with running({"Lookup": lookup}, name="crm-connector") as peer:

        async def resolve(request: StringValue, context: object) -> StringValue:
            return StringValue(value=await call(peer.address, "Lookup"))

        async with running({"Resolve": resolve}, name="linker") as service:
            err = await call_error(service.address, "Resolve")

    failure = from_rpc_error(err)
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.message == "no such mailbox"
    assert (failure.reason, failure.domain) == ("MAILBOX_NOT_FOUND", "crm-connector.concord.dev")
    assert failure.metadata == {"mailbox": "demo"}


async def test_sigterm_drains_in_flight_calls_refuses_new_ones_then_runs_hooks() -> None:
    entered = asyncio.Event()
    closed: list[str] = []

    async def slow(request: StringValue, context: object) -> StringValue:
        entered.set()
        await asyncio.sleep(0.5)
        return StringValue(value="done")

    async def quick(request: StringValue, context: object) -> StringValue:
        return StringValue(value="quick")

    service = GrpcService("test", port=0, drain_seconds=5)
    service.add_service(SERVICE, register({"Slow": slow, "Quick": quick}, {}))

    async def close(name: str) -> None:
        closed.append(name)

    service.on_shutdown(lambda: close("database"))
    service.on_shutdown(lambda: close("telemetry"))
    serving = asyncio.create_task(service.serve())

    async def bound() -> bool:
        return service.port != 0

    await eventually(bound)
    addr = service.address
    await eventually(lambda: health_is(addr, SERVING))

    in_flight = asyncio.create_task(call(addr, "Slow"))
    await asyncio.wait_for(entered.wait(), 5)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.sleep(0.1)

    refused = await call_error(addr, "Quick")
    assert refused.code() == grpc.StatusCode.UNAVAILABLE
    assert not in_flight.done()
    assert await in_flight == "done"
    await asyncio.wait_for(serving, 5)
    assert closed == ["telemetry", "database"]


async def health_is(addr: str, status: int) -> bool:
    try:
        return await health(addr) == status
    except grpc.aio.AioRpcError:
        return False


async def test_a_failing_shutdown_hook_does_not_stop_the_others() -> None:
    closed: list[str] = []

    async def broken() -> None:
        raise RuntimeError("nats already closed")

    async def flush() -> None:
        closed.append("telemetry")

    async with running() as service:
        service.on_shutdown(flush)
        service.on_shutdown(broken)
    assert closed == ["telemetry"]


async def test_the_retrying_channel_retries_unavailable() -> None:
    attempts = 0

    async def flaky(request: StringValue, context: object) -> StringValue:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise Unavailable("warming up", retry_after=0.01)
        return StringValue(value="ok")

    async with running({"Flaky": flaky}) as service:
        assert await call(service.address, "Flaky", retry=True) == "ok"
        assert attempts == 3

        attempts = 0
        err = await call_error(service.address, "Flaky", retry=False)
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert attempts == 1


@pytest.mark.parametrize("error", [FailedPrecondition("suspended"), Aborted("etag changed")])
async def test_the_retrying_channel_does_not_retry_other_codes(error: Exception) -> None:
    attempts = 0

    async def failing(request: StringValue, context: object) -> StringValue:
        nonlocal attempts
        attempts += 1
        raise error

    async with running({"Failing": failing}) as service:
        await call_error(service.address, "Failing", retry=True)
    assert attempts == 1


async def test_retries_wait_as_long_as_the_server_asks() -> None:
    attempts: list[float] = []

    async def limited(request: StringValue, context: object) -> StringValue:
        attempts.append(time.monotonic())
        if len(attempts) < 2:
            raise ResourceExhausted("slow down", retry_after=0.4)
        return StringValue(value="ok")

    async with running({"Limited": limited}) as service:
        assert await call(service.address, "Limited", retry=True) == "ok"
    assert attempts[1] - attempts[0] >= 0.35  # the policy's own back-off starts at 0.1 s


def _named(name: str) -> Mapping[str, Unary]:
    async def who(request: StringValue, context: object) -> StringValue:
        return StringValue(value=name)

    return {"Who": who}


async def test_a_balanced_channel_spreads_calls_over_the_replicas_that_serve() -> None:
    async with (
        running(_named("a"), name="a", drain_seconds=0) as a,
        running(_named("b"), name="b", drain_seconds=0) as b,
    ):
        await a.become_ready()
        await b.become_ready()
        target = f"ipv4:{a.address},{b.address}"
        async with channel(target, retry=True, balance=SERVICE) as ch:
            who = ch.unary_unary(
                f"/{SERVICE}/Who",
                request_serializer=StringValue.SerializeToString,
                response_deserializer=StringValue.FromString,
            )

            async def answers(count: int) -> list[str]:
                return [(await who(StringValue(), timeout=5)).value for _ in range(count)]

            # Round robin: both replicas answer (pick_first would send every call to `a`).
            async def both_answer() -> bool:
                return set(await answers(4)) == {"a", "b"}

            await eventually(both_answer)

            # A replica not SERVING its service (starting, draining) gets no calls.
            await b.health.set(SERVICE, NOT_SERVING)

            async def only_a() -> bool:
                return set(await answers(4)) == {"a"}

            await eventually(only_a)
            assert set(await answers(20)) == {"a"}

            # One replica gone: every call is answered by the other, none fails.
            await b.health.set(SERVICE, SERVING)
            await eventually(both_answer)
            await a.shutdown()
            assert set(await answers(20)) == {"b"}


async def test_a_channel_with_affinity_keeps_each_key_on_one_replica_while_it_serves() -> None:
    names = ("a", "b", "c")
    async with (
        running(_named("a"), name="a", drain_seconds=0) as a,
        running(_named("b"), name="b", drain_seconds=0) as b,
        running(_named("c"), name="c", drain_seconds=0) as c,
    ):
        replicas = dict(zip(names, (a, b, c), strict=True))
        for replica in replicas.values():
            await replica.become_ready()
        target = "ipv4:" + ",".join(r.address for r in replicas.values())
        async with channel(target, retry=True, balance=SERVICE, affinity="x-key") as ch:
            who = ch.unary_unary(
                f"/{SERVICE}/Who",
                request_serializer=StringValue.SerializeToString,
                response_deserializer=StringValue.FromString,
            )

            async def answered(key: str) -> str:
                reply = await who(StringValue(), metadata=[("x-key", key)], timeout=5)
                return str(reply.value)

            keys = [f"mailbox-{n}" for n in range(24)]

            async def placed() -> dict[str, str]:
                """Each key's replica, asked four times over: always the same one."""
                where: dict[str, set[str]] = {}
                for _ in range(4):
                    for key in keys:
                        where.setdefault(key, set()).add(await answered(key))
                assert all(len(replicas_of) == 1 for replicas_of in where.values()), where
                return {key: replicas_of.pop() for key, replicas_of in where.items()}

            before = await placed()
            # Spread over the replicas (round robin would not keep a key on one; pick_first
            # would send every key to the first).
            assert set(before.values()) == set(names)

            # A replica that stops serving hands its keys on; every other key stays put.
            leaving = before[keys[0]]
            await replicas[leaving].health.set(SERVICE, NOT_SERVING)

            async def moved() -> bool:
                return await answered(keys[0]) != leaving

            await eventually(moved)
            after = await placed()
            assert leaving not in after.values()
            assert {k: r for k, r in after.items() if before[k] != leaving} == {
                k: r for k, r in before.items() if r != leaving
            }

            # A call without the header still reaches a replica that serves.
            reply = await who(StringValue(), timeout=5)
            assert reply.value in set(names) - {leaving}


async def test_a_balanced_channel_to_one_address_calls_its_peer_as_soon_as_it_is_back() -> None:
    """`make up` gives every peer one `host:port`: after that peer restarts, the next call
    reaches it, even when calls failed while it was down (the channel's reconnect back-off
    had grown to seconds and failed the call)."""
    async with running(_named("before"), drain_seconds=0) as before:
        await before.become_ready()
        address = before.address
        async with channel(address, retry=True, balance=SERVICE) as ch:
            who = ch.unary_unary(
                f"/{SERVICE}/Who",
                request_serializer=StringValue.SerializeToString,
                response_deserializer=StringValue.FromString,
            )
            assert (await who(StringValue(), timeout=5)).value == "before"
            await before.shutdown()
            # Down for a few seconds (a restart), called meanwhile (other mailboxes' sessions):
            # those calls fail, and gRPC's own reconnect back-off (1 s, then 1.6 times longer
            # each time) would have grown to seconds by the time the peer is back.
            down_until = time.monotonic() + 6
            while time.monotonic() < down_until:
                with pytest.raises(grpc.aio.AioRpcError):
                    await who(StringValue(), timeout=1)
                await asyncio.sleep(0.25)
            after = GrpcService("test", port=int(address.rsplit(":", 1)[1]), drain_seconds=0)
            after.add_service(SERVICE, register(_named("after"), {}))
            await after.start()
            try:
                await after.become_ready()
                assert (await who(StringValue(), timeout=5)).value == "after"
            finally:
                await after.shutdown()


async def test_a_connection_is_renewed_after_its_maximum_age() -> None:
    # So a balanced client resolves its target again and finds replicas added since.
    async def peer(request: StringValue, context: Any) -> StringValue:
        return StringValue(value=str(context.peer()))

    service = GrpcService("test", port=0, drain_seconds=0, max_connection_age_seconds=0.2)
    service.add_service(SERVICE, register({"Peer": peer}, {}))
    await service.start()
    try:
        async with channel(service.address, retry=True) as ch:
            ask = ch.unary_unary(
                f"/{SERVICE}/Peer",
                request_serializer=StringValue.SerializeToString,
                response_deserializer=StringValue.FromString,
            )
            seen: set[str] = set()

            async def reconnected() -> bool:
                seen.add((await ask(StringValue(), timeout=5)).value)
                return len(seen) > 1

            await eventually(reconnected)
    finally:
        await service.shutdown()


def test_run_returns_the_exit_code() -> None:
    async def ok() -> None:
        pass

    async def fails() -> None:
        raise RuntimeError("cannot bind")

    assert run(ok()) == 0
    assert run(fails()) == 1


async def test_a_large_batch_crosses_between_our_services() -> None:
    # 10 MB each way: past gRPC's 4 MiB default, within what our channels and servers accept.
    async def echo(request: StringValue, context: Any) -> StringValue:
        return StringValue(value=request.value)

    big = "界" * (10 * 1024 * 1024 // 3)
    async with running({"Echo": echo}) as service:
        assert await call(service.address, "Echo", big) == big
