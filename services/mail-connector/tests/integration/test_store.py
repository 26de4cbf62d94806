from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from concord_mail_connector.adapters.store import SqlAccountStore
from concord_mail_connector.adapters.tables import mailbox_accounts, subscriptions, sync_cursors
from concord_mail_connector.domain.errors import AccountNotFound, EtagMismatch
from concord_mail_connector.domain.model import AccountUpdate, Cursor, Provider
from concord_secrets import SecretBox

pytestmark = pytest.mark.integration

SETTINGS = {"service_url": "https://mail.example.com/EWS/Exchange.asmx", "username": "svc"}


def update(**changes: object) -> AccountUpdate:
    fields: dict[str, object] = {
        "mailbox": "demo",
        "address": "ann@example.com",
        "provider": Provider.EXCHANGE_EWS,
        "settings": SETTINGS,
        "secret": b"hunter2",
    }
    return AccountUpdate(**(fields | changes))  # type: ignore[arg-type]


async def test_upsert_then_get_round_trips_without_the_secret(store: SqlAccountStore) -> None:
    written = await store.upsert(update())
    read = await store.get("demo")
    assert read == written
    assert read.provider == Provider.EXCHANGE_EWS
    assert read.settings == SETTINGS
    assert read.has_secret
    assert read.update_time.tzinfo is not None
    assert not hasattr(read, "secret")


async def test_secret_is_encrypted_at_rest(
    store: SqlAccountStore, engine: AsyncEngine, cipher: SecretBox
) -> None:
    await store.upsert(update())
    async with engine.connect() as conn:
        raw = (await conn.execute(select(mailbox_accounts.c.secret_ciphertext))).scalar_one()
    assert b"hunter2" not in raw
    assert cipher.open(raw) == b"hunter2"
    assert await store.secret("demo") == b"hunter2"


async def test_update_without_secret_keeps_the_stored_one(store: SqlAccountStore) -> None:
    first = await store.upsert(update())
    second = await store.upsert(update(secret=None, address="bob@example.com"))
    assert second.address == "bob@example.com"
    assert second.has_secret
    assert second.secret_update_time == first.secret_update_time
    assert second.etag != first.etag
    assert await store.secret("demo") == b"hunter2"


async def test_same_request_id_is_applied_once(store: SqlAccountStore) -> None:
    first = await store.upsert(update(request_id="r1"))
    retried = await store.upsert(update(request_id="r1", address="bob@example.com"))
    assert retried == first
    changed = await store.upsert(update(request_id="r2", address="bob@example.com"))
    assert changed.address == "bob@example.com"


async def test_stale_etag_is_refused(store: SqlAccountStore) -> None:
    first = await store.upsert(update())
    await store.upsert(update(expected_etag=first.etag, address="bob@example.com"))
    with pytest.raises(EtagMismatch):
        await store.upsert(update(expected_etag=first.etag))
    with pytest.raises(EtagMismatch):
        await store.delete("demo", first.etag)


async def test_delete_forgets_account_cursors_and_subscriptions(
    store: SqlAccountStore, engine: AsyncEngine
) -> None:
    await store.upsert(update())
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(
            insert(sync_cursors).values(
                mailbox="demo", collection="email", token="t", update_time=now
            )
        )
        await conn.execute(
            insert(subscriptions).values(
                mailbox="demo", subscription="s1", kind="email", collection="", create_time=now
            )
        )
    assert await store.cursor("demo", "email") == Cursor("email", "t")
    await store.delete("demo", None)
    assert await store.get("demo") is None
    async with engine.connect() as conn:
        for table in (sync_cursors, subscriptions):
            assert (await conn.execute(select(func.count()).select_from(table))).scalar() == 0
    with pytest.raises(AccountNotFound):
        await store.delete("demo", None)
