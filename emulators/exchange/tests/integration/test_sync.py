"""SyncFolderItems via exchangelib's sync_items, and pull subscriptions with GetEvents."""

from __future__ import annotations

from typing import Any

import pytest
from exchangelib import DELEGATE, Account, Message, Task  # type: ignore[import-untyped]
from exchangelib.errors import ErrorInvalidSyncStateData  # type: ignore[import-untyped]

pytestmark = pytest.mark.integration


def _changes(folder: Any, **kwargs: Any) -> list[tuple[str, str]]:
    found = []
    for change, item in folder.sync_items(**kwargs):
        if change == "read_flag_change":
            found.append((change, f"{item[0].id} read={item[1]}"))
        else:
            found.append((change, item.id if change == "delete" else item.subject))
    return found


def test_incremental_sync(account: Any) -> None:
    tasks = account.tasks
    first = Task(account=account, folder=tasks, subject="one")
    first.save()
    Task(account=account, folder=tasks, subject="two").save()
    assert sorted(_changes(tasks)) == [("create", "one"), ("create", "two")]
    state = tasks.item_sync_state
    assert _changes(tasks) == []
    assert tasks.item_sync_state
    # An update, a create, a delete, and an item both created and deleted in between.
    first.subject = "one, edited"
    first.save(update_fields=["subject"])
    third = Task(account=account, folder=tasks, subject="three")
    third.save()
    gone = Task(account=account, folder=tasks, subject="gone")
    gone.save()
    gone.delete()
    changes = _changes(tasks)
    assert changes == [("update", "one, edited"), ("create", "three")]
    third_id = third.id
    third.delete()
    assert _changes(tasks) == [("delete", third_id)]
    # An old state still works: it replays everything since then, collapsed per item.
    tasks.item_sync_state = state
    assert _changes(tasks) == [("update", "one, edited")]


def test_a_folder_state_moves_only_with_that_folders_changes(
    account: Any, make_config: Any, new_user: Any
) -> None:
    tasks, drafts = account.tasks, account.drafts
    Task(account=account, folder=tasks, subject="mine").save()
    assert _changes(tasks) == [("create", "mine")]
    assert _changes(drafts) == []
    tasks_state, drafts_state = tasks.item_sync_state, drafts.item_sync_state
    # Changes in another folder of the mailbox, and in another mailbox altogether.
    Message(account=account, folder=drafts, subject="elsewhere").save()
    address, password = new_user()
    other = Account(
        address, config=make_config(address, password), autodiscover=False, access_type=DELEGATE
    )
    Task(account=other, folder=other.tasks, subject="theirs").save()
    assert _changes(tasks) == []
    assert tasks.item_sync_state == tasks_state
    assert _changes(drafts) == [("create", "elsewhere")]
    assert drafts.item_sync_state != drafts_state
    # A folder's first sync stands at its own last change too.
    tasks.item_sync_state = None
    assert _changes(tasks) == [("create", "mine")]
    assert tasks.item_sync_state == tasks_state


def test_max_changes_returned_pages_the_changes(account: Any) -> None:
    tasks = account.tasks
    account.bulk_create(
        folder=tasks, items=[Task(account=account, subject=f"t{n}") for n in range(7)]
    )
    # exchangelib loops until IncludesLastItemInRange; the calls counter shows the pages.
    assert len(_changes(tasks, max_changes_returned=3)) == 7


def test_read_flag_change(account: Any) -> None:
    inbox = account.inbox
    message = Message(account=account, folder=inbox, subject="hello")
    message.save()
    _changes(inbox)
    message.is_read = True
    message.save(update_fields=["is_read"])
    assert _changes(inbox) == [("read_flag_change", f"{message.id} read=True")]


def test_an_invalid_sync_state_is_refused(account: Any) -> None:
    account.tasks.item_sync_state = "bm90IGEgc3RhdGU="
    with pytest.raises(ErrorInvalidSyncStateData):
        _changes(account.tasks)
    # A state from another folder is not valid here either.
    _changes(account.inbox)
    account.tasks.item_sync_state = account.inbox.item_sync_state
    with pytest.raises(ErrorInvalidSyncStateData):
        _changes(account.tasks)


def test_sync_states_invalidated_by_the_server(account: Any, emulator: Any) -> None:
    tasks = account.tasks
    Task(account=account, folder=tasks, subject="kept").save()
    assert _changes(tasks) == [("create", "kept")]
    emulator.admin("POST", "invalidate-sync-states")
    with pytest.raises(ErrorInvalidSyncStateData):
        _changes(tasks)
    # The way back is a full listing, from no state at all.
    tasks.item_sync_state = None
    assert _changes(tasks) == [("create", "kept")]
    assert _changes(tasks) == []


def _events(folder: Any, subscription_id: str, watermark: str) -> list[Any]:
    return [e for n in folder.get_events(subscription_id, watermark) for e in n.events]


def test_pull_subscription_and_get_events(account: Any) -> None:
    tasks = account.tasks
    subscription_id, watermark = tasks.subscribe_to_pull()
    assert [type(e).__name__ for e in _events(tasks, subscription_id, watermark)] == ["StatusEvent"]
    task = Task(account=account, folder=tasks, subject="watched")
    task.save()
    created = task.changekey
    task.subject = "watched, edited"
    task.save(update_fields=["subject"])
    events = _events(tasks, subscription_id, watermark)
    assert [type(e).__name__ for e in events] == ["CreatedEvent", "ModifiedEvent"]
    assert events[0].item_id.id == task.id
    # Each event names the ChangeKey its change left, as the write's answer did.
    assert [e.item_id.changekey for e in events] == [created, task.changekey]
    assert created != task.changekey
    last = events[-1].watermark
    edited = task.changekey
    task.delete()
    events = _events(tasks, subscription_id, last)
    assert [type(e).__name__ for e in events] == ["DeletedEvent"]
    assert events[0].item_id.changekey == edited
    tasks.unsubscribe(subscription_id)


def test_streaming_subscription_delivers_a_change_within_a_second(
    make_config: Any, new_user: Any
) -> None:
    import threading
    import time

    from exchangelib import DELEGATE, Account

    address, password = new_user()
    # The stream holds one pooled session; the writer needs another.
    config = make_config(address, password, max_connections=3)
    account = Account(address, config=config, autodiscover=False, access_type=DELEGATE)
    tasks = account.tasks
    subscription_id = tasks.subscribe_to_streaming()
    created: dict[str, float] = {}

    def change_soon() -> None:
        time.sleep(0.3)
        task = Task(account=account, folder=tasks, subject="streamed")
        task.save()
        created["at"] = time.monotonic()
        created_id.append(task.id)

    created_id: list[str] = []
    writer = threading.Thread(target=change_soon)
    writer.start()
    notifications = list(
        tasks.get_streaming_events(
            subscription_id, connection_timeout=1, max_notifications_returned=1
        )
    )
    received = time.monotonic()
    writer.join()
    events = [e for n in notifications for e in n.events]
    assert [type(e).__name__ for e in events] == ["CreatedEvent"]
    assert events[0].item_id.id == created_id[0]
    assert received - created["at"] < 1.0
    tasks.unsubscribe(subscription_id)


def test_an_idle_stream_sends_heartbeats(
    account: Any, emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import requests

    from concord_exchange_emulator import app
    from concord_exchange_emulator.xmlns import M, S, T

    monkeypatch.setattr(app, "STREAM_HEARTBEAT_SECONDS", 0.2)
    subscription_id = account.tasks.subscribe_to_streaming()
    body = (
        f'<s:Envelope xmlns:s="{S}" xmlns:m="{M}" xmlns:t="{T}"><s:Body>'
        f"<m:GetStreamingEvents><m:SubscriptionIds><t:SubscriptionId>{subscription_id}"
        "</t:SubscriptionId></m:SubscriptionIds><m:ConnectionTimeout>1</m:ConnectionTimeout>"
        "</m:GetStreamingEvents></s:Body></s:Envelope>"
    )
    credentials = account.protocol.credentials
    with requests.post(
        emulator.endpoint,
        data=body.encode(),
        auth=(credentials.username, credentials.password),
        headers={"Content-Type": "text/xml"},
        stream=True,
        timeout=5,
    ) as response:
        assert response.status_code == 200
        first = next(response.iter_content(chunk_size=None))
    assert b"<m:ConnectionStatus>OK</m:ConnectionStatus>" in first
    assert b"Notification" not in first
    account.tasks.unsubscribe(subscription_id)


def test_a_stream_naming_an_unknown_subscription_lists_it(account: Any) -> None:
    from exchangelib.errors import ErrorInvalidSubscription

    drafts = account.drafts
    with (
        drafts.streaming_subscription() as subscription_id,
        pytest.raises(ErrorInvalidSubscription) as refused,
    ):
        list(
            drafts.get_streaming_events(
                ("AAA-", subscription_id), connection_timeout=1, max_notifications_returned=1
            )
        )
    # exchangelib names the refused ids only when they come in m:, as Exchange sends them.
    assert refused.value.value == "Subscription is invalid. (subscription IDs: ['AAA-'])"
