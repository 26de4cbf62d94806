from __future__ import annotations

import asyncio

import pytest

from concord_events import EventBus, LeaseLost

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

# The `bus` fixture's LEASES bucket has a 1 s TTL.


async def test_second_owner_cannot_acquire_a_held_lease(bus: EventBus) -> None:
    leases = await bus.leases()
    first = await leases.acquire("mailbox.demo", "replica-a")
    assert first is not None
    assert await leases.acquire("mailbox.demo", "replica-b") is None
    assert await leases.acquire("mailbox.other", "replica-b") is not None
    assert await leases.holder("mailbox.demo") == "replica-a"


async def test_a_restarted_owner_reclaims_its_own_lease_at_once_and_nobody_elses(
    bus: EventBus,
) -> None:
    leases = await bus.leases()
    died_holding = await leases.acquire("change-streams.acme", "pod-1")
    assert died_holding is not None
    # Without reclaim, even its own name waits out the TTL (two tasks of one process must not
    # both hold a key).
    assert await leases.acquire("change-streams.acme", "pod-1") is None
    again = await leases.acquire("change-streams.acme", "pod-1", reclaim=True)
    assert again is not None
    assert await leases.acquire("change-streams.acme", "pod-2", reclaim=True) is None
    # The new run's lease is the one that renews; the dead run's revision is stale.
    await again.renew()
    with pytest.raises(LeaseLost):
        await died_holding.renew()


async def test_release_lets_the_next_owner_in_at_once(bus: EventBus) -> None:
    leases = await bus.leases()
    first = await leases.acquire("mailbox.demo", "replica-a")
    assert first is not None
    await first.release()
    assert await leases.holder("mailbox.demo") is None
    assert await leases.acquire("mailbox.demo", "replica-b") is not None


async def test_unrenewed_lease_expires_and_renewing_it_then_fails(bus: EventBus) -> None:
    leases = await bus.leases()
    stale = await leases.acquire("mailbox.demo", "replica-a")
    assert stale is not None
    await asyncio.sleep(1.6)
    taken = await leases.acquire("mailbox.demo", "replica-b")
    assert taken is not None
    with pytest.raises(LeaseLost):
        await stale.renew()
    # The stale holder's release must not delete the new owner's lease.
    await stale.release()
    assert await leases.holder("mailbox.demo") == "replica-b"


async def test_renew_keeps_the_lease_past_its_ttl(bus: EventBus) -> None:
    leases = await bus.leases()
    lease = await leases.acquire("mailbox.demo", "replica-a")
    assert lease is not None
    for _ in range(4):
        await asyncio.sleep(0.4)
        await lease.renew()
    assert await leases.acquire("mailbox.demo", "replica-b") is None


async def test_held_lease_renews_in_the_background_and_releases_on_exit(bus: EventBus) -> None:
    leases = await bus.leases()
    lease = await leases.acquire("mailbox.demo", "replica-a")
    assert lease is not None
    async with lease:
        await asyncio.sleep(2.0)  # two TTLs: only background renewal keeps it
        assert await leases.acquire("mailbox.demo", "replica-b") is None
    assert await leases.acquire("mailbox.demo", "replica-b") is not None


async def test_losing_the_lease_cancels_the_body(bus: EventBus) -> None:
    leases = await bus.leases()
    lease = await leases.acquire("mailbox.demo", "replica-a")
    assert lease is not None
    finished = False

    async def work() -> None:
        nonlocal finished
        async with lease:
            # Someone else overwrites the key, as if our lease had expired and been retaken.
            await bus.js.publish("$KV.LEASES.mailbox.demo", b"replica-b")
            await asyncio.sleep(5)
            finished = True

    with pytest.raises(LeaseLost):
        await work()
    assert not finished
    assert await leases.holder("mailbox.demo") == "replica-b"


async def test_external_cancellation_is_not_mistaken_for_lease_loss(bus: EventBus) -> None:
    leases = await bus.leases()
    lease = await leases.acquire("mailbox.demo", "replica-a")
    assert lease is not None

    async def hold() -> None:
        async with lease:
            await asyncio.sleep(5)

    task = asyncio.create_task(hold())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await leases.holder("mailbox.demo") is None  # released on the way out
