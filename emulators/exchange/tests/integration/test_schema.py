"""Every response the emulator gave during a representative session validates against the XSDs."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from exchangelib import (  # type: ignore[import-untyped]
    DELEGATE,
    Account,
    Attendee,
    CalendarItem,
    Contact,
    DistributionList,
    EWSDateTime,
    EWSTimeZone,
    ExtendedProperty,
    Folder,
    Mailbox,
    Message,
    Task,
)
from exchangelib.attachments import FileAttachment, ItemAttachment  # type: ignore[import-untyped]
from exchangelib.errors import (  # type: ignore[import-untyped]
    ErrorFolderExists,
    ErrorInvalidIdMalformed,
    ErrorInvalidSyncStateData,
    ErrorIrresolvableConflict,
    ErrorItemNotFound,
)
from exchangelib.folders import SingleFolderQuerySet  # type: ignore[import-untyped]
from exchangelib.properties import (  # type: ignore[import-untyped]
    ENTRY_ID,
    EWS_ID,
    AlternateId,
    Member,
)
from exchangelib.recurrence import (  # type: ignore[import-untyped]
    DailyPattern,
    DailyRegeneration,
    Recurrence,
    TaskRecurrence,
)
from lxml import etree

from concord_exchange_emulator import ews, schema
from concord_exchange_emulator.testing import RunningEmulator
from concord_exchange_emulator.xmlns import M, S, T, local

pytestmark = pytest.mark.integration


@pytest.fixture
def responses(monkeypatch: pytest.MonkeyPatch) -> list[etree._Element]:
    seen: list[etree._Element] = []
    original = ews.handle

    def recording(ctx: ews.Context, operation: str, request: etree._Element) -> etree._Element:
        env = original(ctx, operation, request)
        seen.append(env)
        return env

    # The server runs in this process, so its module attribute can be wrapped.
    monkeypatch.setattr(ews, "handle", recording)
    return seen


_REPLY = (
    b"From: Ada <ada@acme.example>\r\nTo: Rep <rep@concord.test>, b@globex.example\r\n"
    b"Cc: c@initech.example\r\nSubject: Re: Quote\r\nMessage-ID: <r2@acme.example>\r\n"
    b"In-Reply-To: <r1@acme.example>\r\nReferences: <r0@acme.example> <r1@acme.example>\r\n"
    b"Date: Mon, 02 Jun 2031 08:00:00 +0000\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    b"--b\r\nContent-Type: text/html\r\n\r\n<p>Yes</p>\r\n--b\r\nContent-Type: text/plain\r\n"
    b"Content-Disposition: attachment; filename=q.txt\r\n\r\nquote\r\n--b--\r\n"
)


def _session(account: Any) -> None:
    # ConvertId is exchangelib's version probe: a known id converts, "DUMMY" is malformed.
    probe = Task(account=account, folder=account.tasks, subject="probe")
    probe.save()
    ids = [
        AlternateId(id=probe.id, format=EWS_ID, mailbox=account.primary_smtp_address),
        AlternateId(id="DUMMY", format=EWS_ID, mailbox="DUMMY"),
    ]
    converted = list(account.protocol.convert_ids(ids, destination_format=ENTRY_ID))
    assert converted[0].id == probe.id
    assert isinstance(converted[1], ErrorInvalidIdMalformed)
    folder = Folder(parent=account.msg_folder_root, name="Salesforce Emails")
    folder.save()
    list(account.root.walk())
    scratch = Folder(parent=account.msg_folder_root, name="scratch")
    scratch.save()
    scratch.delete()
    tz = EWSTimeZone("Europe/Berlin")
    start = EWSDateTime(2030, 1, 1, 9, tzinfo=tz)
    meeting = CalendarItem(
        account=account,
        folder=account.calendar,
        subject="m",
        start=start,
        end=start + dt.timedelta(hours=1),
        categories=["Salesforce"],
        required_attendees=[Attendee(mailbox=Mailbox(email_address="a@b.example"))],
    )
    meeting.save(send_meeting_invitations="SendToNone")
    account.calendar.get(id=meeting.id)
    list(
        account.calendar.view(start=start - dt.timedelta(days=1), end=start + dt.timedelta(days=1))
    )
    list(account.calendar.filter(categories__contains=["Salesforce"]))
    stale = account.calendar.get(id=meeting.id)
    meeting.subject = "m2"
    meeting.save(update_fields=["subject"], conflict_resolution="NeverOverwrite")
    stale.subject = "m3"
    with pytest.raises(ErrorIrresolvableConflict):
        stale.save(update_fields=["subject"], conflict_resolution="NeverOverwrite")
    series = CalendarItem(
        account=account,
        folder=account.calendar,
        subject="series",
        start=start,
        end=start + dt.timedelta(hours=1),
        recurrence=Recurrence(pattern=DailyPattern(interval=1), start=start.date(), number=3),
    )
    series.save(send_meeting_invitations="SendToNone")
    second = series.occurrence(index=2)
    second.refresh()
    second.subject = "moved"
    second.save(update_fields=["subject"])
    third = series.occurrence(index=3)
    third.refresh()
    third.delete()
    account.calendar.get(id=series.id)
    list(
        account.calendar.view(start=start - dt.timedelta(days=1), end=start + dt.timedelta(days=5))
    )
    task = Task(account=account, folder=account.tasks, subject="t", due_date=dt.date(2030, 1, 1))
    task.save()
    account.tasks.get(id=task.id)
    contact = Contact(account=account, folder=account.contacts, display_name="C", given_name="C")
    contact.save()
    account.contacts.get(id=contact.id)
    message = Message(account=account, folder=folder, subject="e", body="b")
    message.save()
    folder.get(id=message.id)
    # A message stored from its MIME: recipients, body, thread fields derived from it.
    reply = Message(account=account, folder=folder, mime_content=_REPLY)
    reply.save()
    folder.get(id=reply.id)
    list(account.tasks.sync_items())
    task.subject = "t2"
    task.save(update_fields=["subject"])
    list(account.tasks.sync_items())
    account.tasks.item_sync_state = "garbage"
    with pytest.raises(ErrorInvalidSyncStateData):
        list(account.tasks.sync_items())
    subscription, watermark = account.tasks.subscribe_to_pull()
    list(account.tasks.get_events(subscription, watermark))
    task.move(account.inbox)
    list(account.tasks.get_events(subscription, watermark))
    account.tasks.unsubscribe(subscription)
    gone = message.id
    message.delete()
    with pytest.raises(ErrorItemNotFound):
        folder.get(id=gone)


def test_responses_validate_against_the_ews_schemas(
    account: Any, responses: list[etree._Element]
) -> None:
    _session(account)
    operations = set()
    for env in responses:
        header = env.find(f"{{{S}}}Header")
        assert header is not None
        version = header.find(f"{{{T}}}ServerVersionInfo")
        assert version is not None
        assert schema.validation_errors(version) == []
        body = env.find(f"{{{S}}}Body")
        assert body is not None
        answer = body[0]
        operations.add(local(answer.tag))
        assert schema.validation_errors(answer) == [], etree.tostring(answer).decode()
    assert {
        "ConvertIdResponse",
        "GetFolderResponse",
        "FindFolderResponse",
        "CreateFolderResponse",
        "DeleteFolderResponse",
        "CreateItemResponse",
        "GetItemResponse",
        "FindItemResponse",
        "UpdateItemResponse",
        "DeleteItemResponse",
        "MoveItemResponse",
        "SyncFolderItemsResponse",
        "SubscribeResponse",
        "GetEventsResponse",
        "UnsubscribeResponse",
    } <= operations


def test_a_fault_carries_the_version_header_and_the_back_off() -> None:
    env = ews.fault("ErrorServerBusy", "busy", back_off_ms=250)
    version = env.find(f"{{{S}}}Header/{{{T}}}ServerVersionInfo")
    assert version is not None
    assert schema.validation_errors(version) == []
    value = env.find(f".//{{{T}}}Value")
    assert value is not None
    assert (value.get("Name"), value.text) == ("BackOffMilliseconds", "250")


def test_streaming_documents_validate(emulator: RunningEmulator, account: Any) -> None:
    subscription = account.tasks.subscribe_to_streaming()
    Task(account=account, folder=account.tasks, subject="s").save()
    with_events = ews.streaming_envelope(emulator.store, [subscription], "OK")
    closing = ews.streaming_envelope(emulator.store, [subscription], "Closed")
    heartbeat = ews.streaming_status("OK")
    assert with_events is not None
    assert closing is not None
    for doc in (with_events.find(f"{{{S}}}Body"), closing.find(f"{{{S}}}Body")):
        assert doc is not None
        assert schema.validation_errors(doc[0]) == [], etree.tostring(doc[0]).decode()
    assert schema.validation_errors(heartbeat) == []
    assert with_events.find(f".//{{{T}}}CreatedEvent") is not None
    account.tasks.unsubscribe(subscription)


def _session_of_issue_15(account: Any) -> None:
    """The operations and answers added for Exchange 2016 fidelity (#15)."""
    first = Folder(parent=account.inbox, name="first").save()
    second = Folder(parent=account.inbox, name="second").save()
    list(account.inbox.sync_hierarchy())
    first.name = "renamed"
    first.save()
    first.refresh()  # asks for the PermissionSet too
    first.move(second)
    list(account.inbox.sync_hierarchy())
    list(SingleFolderQuerySet(account=account, folder=account.inbox).only("name").all())
    with pytest.raises(ErrorFolderExists):
        Folder(parent=account.inbox, name="SECOND").save()
    message = Message(account=account, folder=first, subject="m").save()
    message.copy(account.drafts)
    message.mark_as_junk(is_junk=True, move_item=True)
    Message(account=account, folder=account.inbox, subject="sent").send_and_save()
    draft = Message(account=account, folder=account.drafts, subject="draft").save()
    draft.send()
    first.empty(delete_sub_folders=True)
    start = EWSDateTime(2030, 1, 1, 9, tzinfo=EWSTimeZone("Europe/Berlin"))
    CalendarItem(
        account=account,
        folder=account.calendar,
        subject="daily",
        start=start,
        end=start + dt.timedelta(hours=1),
        recurrence=Recurrence(pattern=DailyPattern(interval=1), start=start.date(), number=3),
    ).save()
    list(account.calendar.all())
    CalendarItem(
        account=account,
        folder=account.calendar,
        subject="called off",
        start=start,
        end=start + dt.timedelta(hours=1),
        required_attendees=["colleague@example.com"],
    ).save(send_meeting_invitations="SendToAllAndSaveCopy").cancel()
    with account.pull_subscription() as (subscription, watermark):
        list(account.inbox.get_events(subscription, watermark))
    chore = Task(
        account=account,
        folder=account.tasks,
        subject="chore",
        recurrence=TaskRecurrence(
            pattern=DailyRegeneration(interval=1), start=start.date(), number=2
        ),
    ).save()
    chore.status = Task.COMPLETED
    chore.save()  # splits the occurrence off: the answer names a new one-off task
    chore.refresh()
    with_file = Message(account=account, folder=account.drafts, subject="attached")
    with_file.attach(FileAttachment(name="a.txt", content=b"a"))
    with_file.save()
    later = FileAttachment(name="b.txt", content=b"b")
    with_file.attach(later)
    with_file.attach(ItemAttachment(name="inner", item=Message(account=account, subject="inner")))
    for attachment in account.drafts.get(id=with_file.id).attachments:
        fetched = attachment.content if isinstance(attachment, FileAttachment) else attachment.item
        assert fetched  # fetched by GetAttachment
    with_file.detach(later)
    buyers = DistributionList(account=account, folder=account.contacts, display_name="Buyers")
    buyers.members = {Member(mailbox=Mailbox(email_address="ada@acme.example"))}
    buyers.save()
    buyers.refresh()


def test_the_answers_added_for_exchange_2016_fidelity_validate(
    account: Any, responses: list[etree._Element]
) -> None:
    _session_of_issue_15(account)
    operations = set()
    for env in responses:
        body = env.find(f"{{{S}}}Body")
        assert body is not None
        operations.add(local(body[0].tag))
        assert schema.validation_errors(body[0]) == [], etree.tostring(body[0]).decode()
    assert {
        "SyncFolderHierarchyResponse",
        "UpdateFolderResponse",
        "MoveFolderResponse",
        "EmptyFolderResponse",
        "CopyItemResponse",
        "MarkAsJunkResponse",
        "SendItemResponse",
        "CreateAttachmentResponse",
        "GetAttachmentResponse",
        "DeleteAttachmentResponse",
    } <= operations
    invalid = ews.invalid_subscriptions(["AAA-"]).find(f"{{{S}}}Body")
    assert invalid is not None
    # Exchange lists the refused ids in m: where the schema has t: (see invalid_subscriptions):
    # the rest of the answer is checked with them in the schema's namespace.
    listed = invalid[0].findall(f".//{{{M}}}ErrorSubscriptionIds/{{{M}}}SubscriptionId")
    assert [node.text for node in listed] == ["AAA-"]
    for node in listed:
        node.tag = f"{{{T}}}SubscriptionId"
    assert schema.validation_errors(invalid[0]) == [], etree.tostring(invalid[0]).decode()


def test_user_configuration_answers_validate(account: Any, responses: list[etree._Element]) -> None:
    folder = Folder(parent=account.inbox, name="configured").save()
    folder.create_user_configuration(name="Concord.Sync", dictionary={"on": True}, xml_data=b"<a/>")
    folder.get_user_configuration(name="Concord.Sync")
    folder.update_user_configuration(name="Concord.Sync", binary_data=b"\x01")
    with pytest.raises(ErrorItemNotFound):
        account.inbox.get_user_configuration(name="Concord.Sync")
    folder.delete_user_configuration(name="Concord.Sync")
    answers: dict[str, list[Any]] = {}
    for env in responses:
        body = env.find(f"{{{S}}}Body")
        assert body is not None
        answers.setdefault(local(body[0].tag), []).append(body[0])
    for name in ("Create", "Update", "Delete"):
        for answer in answers[f"{name}UserConfigurationResponse"]:
            assert schema.validation_errors(answer) == [], etree.tostring(answer).decode()
    # MS-OXWSUSRCFG's XSD gives GetUserConfigurationResponse the type of one response message,
    # while Exchange (and every client) wraps messages in ResponseMessages, as the EWS reference
    # documents the element: each message is checked against that message type instead.
    for answer in answers["GetUserConfigurationResponse"]:
        [message] = answer.iter(f"{{{M}}}GetUserConfigurationResponseMessage")
        as_root = etree.Element(f"{{{M}}}GetUserConfigurationResponse", attrib=message.attrib)
        as_root.extend(etree.fromstring(etree.tostring(message)))
        assert schema.validation_errors(as_root) == [], etree.tostring(answer).decode()


def test_folder_size_and_archive_answers_validate(
    make_config: Any, new_user: Any, responses: list[etree._Element]
) -> None:
    address, password = new_user(archive=True)
    account = Account(
        address, config=make_config(address, password), autodiscover=False, access_type=DELEGATE
    )

    class FolderSize(ExtendedProperty):  # type: ignore[misc]
        property_tag = 0x0E08
        property_type = "Long"

    Folder.register("size", FolderSize)
    try:
        Message(account=account, folder=account.inbox, subject="weighed").save()
        account.inbox.refresh()  # GetFolder
        list(account.msg_folder_root.children)  # FindFolder
    finally:
        Folder.deregister("size")
    account.inbox.filter(subject="weighed").archive(to_folder=account.trash)
    answers: dict[str, list[Any]] = {}
    for env in responses:
        body = env.find(f"{{{S}}}Body")
        assert body is not None
        answers.setdefault(local(body[0].tag), []).append(body[0])
    for name in ("GetFolderResponse", "FindFolderResponse"):
        for answer in answers[name]:
            assert schema.validation_errors(answer) == [], etree.tostring(answer).decode()
    assert any(
        a.find(f".//{{{T}}}ExtendedProperty") is not None for a in answers["GetFolderResponse"]
    )
    # MS-OXWSARCH (ArchiveItemResponse) is not vendored; its messages are of MoveItem's type,
    # ItemInfoResponseMessageType, and are checked as MoveItem's.
    [archived] = answers["ArchiveItemResponse"]
    as_move = etree.fromstring(etree.tostring(archived))
    as_move.tag = f"{{{M}}}MoveItemResponse"
    for message in as_move.iter(f"{{{M}}}ArchiveItemResponseMessage"):
        message.tag = f"{{{M}}}MoveItemResponseMessage"
    assert schema.validation_errors(as_move) == [], etree.tostring(archived).decode()
