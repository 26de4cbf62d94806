"""What Exchange 2016 does that a naive store would not (issue #15), kept without exchangelib's
external suite: all-day snapping, dated recurrence ranges, 255-character subjects and name
fields, list-field restrictions, sending, copying, junk, folder updates, subscriptions."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Callable
from typing import Any

import pytest
from exchangelib import (  # type: ignore[import-untyped]
    DELEGATE,
    Account,
    CalendarItem,
    Contact,
    EWSDate,
    Folder,
    Message,
    Task,
)
from exchangelib.errors import (  # type: ignore[import-untyped]
    ErrorCalendarIsOrganizerForAccept,
    ErrorCannotDeleteObject,
    ErrorDelegateNoUser,
    ErrorInvalidChangeKey,
    ErrorInvalidIdMalformed,
    ErrorInvalidOperation,
    ErrorInvalidRecipients,
    ErrorInvalidUserSid,
    ErrorItemNotFound,
    ErrorMissingInformationReferenceItemId,
    ErrorNotDelegate,
    ErrorObjectTypeChanged,
    ErrorPropertyUpdate,
)
from exchangelib.folders import Messages  # type: ignore[import-untyped]
from exchangelib.items import ASSOCIATED, AcceptItem  # type: ignore[import-untyped]
from exchangelib.properties import (  # type: ignore[import-untyped]
    Permission,
    PermissionSet,
    ReferenceItemId,
    UserId,
)
from exchangelib.recurrence import DailyPattern, NumberedPattern, Recurrence  # type: ignore[import-untyped]
from exchangelib.services import GetDelegate  # type: ignore[import-untyped]
from lxml import etree

from concord_exchange_emulator import ews, schema
from concord_exchange_emulator import items as it
from concord_exchange_emulator.store import new_id
from concord_exchange_emulator.testing import RunningEmulator
from concord_exchange_emulator.xmlns import M, T, sub, t

pytestmark = pytest.mark.integration

MakeConfig = Callable[..., Any]

COPENHAGEN = zoneinfo.ZoneInfo("Europe/Copenhagen")


def test_an_all_day_event_spans_whole_days_of_its_zone(account: Account) -> None:
    start = dt.datetime(2030, 3, 30, 15, 20, tzinfo=COPENHAGEN)
    end = dt.datetime(2030, 4, 2, 9, 5, tzinfo=COPENHAGEN)
    item = CalendarItem(
        account=account, folder=account.calendar, start=start, end=end, is_all_day=True
    ).save()
    fetched = account.calendar.get(id=item.id)
    # Start back to the midnight before, end forward to the midnight after (exchangelib then
    # reads the end as the last day): no day lost or added.
    assert (fetched.start, fetched.end) == (start.date(), end.date())


def test_a_recurrence_range_starts_on_a_date(account: Account) -> None:
    start = dt.datetime(2030, 1, 7, 9, tzinfo=COPENHAGEN)
    item = CalendarItem(
        account=account,
        folder=account.calendar,
        subject="daily",
        start=start,
        end=start + dt.timedelta(hours=1),
        recurrence=Recurrence(
            pattern=DailyPattern(interval=1), boundary=NumberedPattern(start=start.date(), number=4)
        ),
    ).save()
    master = account.calendar.get(id=item.id)
    assert master.recurrence.boundary.start == EWSDate(2030, 1, 7)
    assert master.is_recurring is False
    assert master.first_occurrence.start == start
    assert master.last_occurrence.start == start + dt.timedelta(days=3)


def test_subjects_are_cut_at_255_and_long_names_refused(
    account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    # exchangelib checks lengths itself: lift its limit, as its own live test does.
    for field in (
        Message.get_field_by_fieldname("subject"),
        Contact.get_field_by_fieldname("surname"),
    ):
        monkeypatch.setattr(field, "max_length", 4000)
    message = Message(account=account, folder=account.drafts, subject="x" * 4000).save()
    assert len(account.drafts.get(id=message.id).subject) == 255
    contact = Contact(
        account=account, folder=account.contacts, display_name="Ada", given_name="Ada"
    ).save()
    contact.surname = "y" * 4000
    with pytest.raises(ErrorPropertyUpdate):
        contact.save(update_fields=["surname"])


def test_restrictions_match_any_string_of_a_list_field(account: Account) -> None:
    Contact(
        account=account, folder=account.contacts, display_name="K", children=["Ann", "Bo"]
    ).save()
    Task(account=account, folder=account.tasks, subject="t", companies=["Acme"]).save()
    assert account.contacts.filter(children__in=["Bo"]).count() == 1
    assert account.tasks.filter(companies__in=["Acme"]).count() == 1


def test_a_calendar_view_takes_no_restriction_and_includes_what_ends_at_its_start(
    account: Account,
) -> None:
    start = dt.datetime(2030, 5, 1, 8, tzinfo=COPENHAGEN)
    CalendarItem(
        account=account,
        folder=account.calendar,
        subject="a",
        start=start,
        end=start + dt.timedelta(hours=2),
    ).save()
    view = account.calendar.view(
        start=start + dt.timedelta(hours=2), end=start + dt.timedelta(days=1)
    )
    assert [i.subject for i in view] == ["a"]
    with pytest.raises(ErrorInvalidOperation):
        view.filter(subject="a").count()


def test_sending_keeps_a_copy_in_sent_items_or_nothing(account: Account) -> None:
    Message(account=account, subject="no copy", to_recipients=["x@example.com"]).send(
        save_copy=False
    )
    kept = Message(account=account, folder=account.inbox, subject="keep")
    kept.send_and_save()
    assert kept.id is None
    draft = Message(account=account, folder=account.drafts, subject="draft").save()
    draft.send()
    assert account.sent.filter(subject="draft").count() == 1
    assert account.drafts.filter(subject="draft").count() == 0
    assert account.inbox.filter(subject="keep").count() == 1
    assert account.sent.filter(subject="no copy").count() == 0


def test_copy_and_mark_as_junk(account: Account) -> None:
    message = Message(account=account, folder=account.inbox, subject="spam?").save()
    message.copy(account.drafts)
    assert account.drafts.filter(subject="spam?").count() == 1
    message.mark_as_junk(is_junk=True, move_item=True)
    assert account.junk.filter(subject="spam?").count() == 1
    assert account.inbox.filter(subject="spam?").count() == 0


def test_folders_are_renamed_moved_emptied_and_system_ones_kept(account: Account) -> None:
    first = Messages(parent=account.inbox, name="first").save()
    second = Folder(parent=account.inbox, name="second").save()
    first.name = "renamed"
    first.save()
    first.refresh()
    assert first.name == "renamed"
    first.folder_class = "IPF.Other"
    with pytest.raises(ErrorObjectTypeChanged):
        first.save(update_fields=["folder_class"])
    first.folder_class = "IPF.Note"
    kept_id = first.id
    first.move(second)
    assert first.id == kept_id
    Message(account=account, folder=first, subject="in it").save()
    Folder(parent=first, name="child").save()
    first.empty(delete_sub_folders=True)
    first.refresh()
    assert (first.total_count, first.child_folder_count) == (0, 0)
    with pytest.raises(ErrorCannotDeleteObject):
        (account.root / "Common Views").delete()
    with pytest.raises(ErrorInvalidIdMalformed):
        Folder(root=account.root, id="XXX").refresh()


def test_a_subscription_to_all_folders_sees_every_folder(account: Account) -> None:
    with account.pull_subscription() as (subscription_id, watermark):
        Message(account=account, folder=account.drafts, subject="seen").save()
        Task(account=account, folder=account.tasks, subject="seen too").save()
        notifications = list(account.inbox.get_events(subscription_id, watermark))
    created = [e for n in notifications for e in n.events if type(e).__name__ == "CreatedEvent"]
    assert len(created) == 2
    with account.inbox.streaming_subscription():
        pass
    assert account.affinity_cookie


def test_sync_folder_hierarchy_reports_created_renamed_and_deleted_folders(
    account: Account,
) -> None:
    top = Folder(parent=account.inbox, name="top").save()
    assert list(top.sync_hierarchy()) == []
    child = Folder(parent=top, name="child").save()
    assert [(kind, f.id) for kind, f in top.sync_hierarchy()] == [("create", child.id)]
    child.name = "renamed"
    child.save(update_fields=["name"])
    assert [(kind, f.id) for kind, f in top.sync_hierarchy()] == [("update", child.id)]
    child_id = child.id
    child.delete()
    assert [(kind, f.id) for kind, f in top.sync_hierarchy()] == [("delete", child_id)]


def test_ids_and_change_keys_the_server_never_issued_are_malformed(account: Account) -> None:
    items = [Task(account=account, folder=account.tasks, subject=f"t{n}").save() for n in range(3)]
    items[1].changekey = "XXX"
    items[2].id = "AAAA=="
    results = account.bulk_delete(items)
    assert results[0] is True
    assert isinstance(results[1], ErrorInvalidChangeKey)
    assert isinstance(results[2], ErrorInvalidIdMalformed)
    # Associated (folder-associated) items: a fresh mailbox has none.
    assert account.tasks.all().depth(ASSOCIATED).count() == 0


def test_get_delegate_lists_the_mailbox_delegates(
    emulator: RunningEmulator, make_config: MakeConfig, new_user: Callable[..., tuple[str, str]]
) -> None:
    owner, password = new_user()
    helper, _ = new_user(delegate_of=[owner])
    stranger, _ = new_user()
    account = Account(
        owner, config=make_config(owner, password), autodiscover=False, access_type=DELEGATE
    )
    [delegate] = account.delegates
    assert delegate.user_id.primary_smtp_address == helper
    assert delegate.delegate_permissions.calendar_folder_permission_level == "Editor"
    service = GetDelegate(account=account)
    with pytest.raises(ErrorNotDelegate):
        list(service.call(user_ids=[stranger], include_permissions=False))
    with pytest.raises(ErrorDelegateNoUser):
        list(service.call(user_ids=["nobody@example.com"], include_permissions=False))
    with pytest.raises(ErrorInvalidUserSid):
        list(service.call(user_ids=[UserId(sid="XXX")], include_permissions=False))
    # The answer is valid against the delegate-management schema.
    ctx = ews.Context(emulator.store, owner, owner, impersonating=False)
    request = etree.fromstring(
        f'<m:GetDelegate xmlns:m="{M}" xmlns:t="{T}" IncludePermissions="true">'
        f"<m:Mailbox><t:EmailAddress>{owner}</t:EmailAddress></m:Mailbox></m:GetDelegate>"
    )
    assert schema.validation_errors(ews.get_delegate(ctx, request)) == []


def test_meeting_answers_and_cancellation(emulator: RunningEmulator, account: Account) -> None:
    start = dt.datetime(2030, 6, 3, 10, tzinfo=COPENHAGEN)
    # An invitation someone else organizes, as delivery would have filed it.
    node = etree.Element(t("CalendarItem"), nsmap={"t": T})
    sub(node, t("Subject"), "from someone else")
    sub(node, t("Start"), "2030-06-03T08:00:00Z")
    sub(node, t("End"), "2030-06-03T09:00:00Z")
    sub(sub(sub(node, t("Organizer")), t("Mailbox")), t("EmailAddress"), "boss@example.com")
    address = account.primary_smtp_address
    planted, _ = it.prepare_new(node, owner=address, owner_name=address)
    calendar = emulator.store.distinguished_folder(address, "calendar")
    assert calendar is not None
    invited = emulator.store.insert_item(
        new_id("AAMkI"), address, calendar.id, etree.tostring(planted)
    )
    AcceptItem(
        account=account,
        reference_item_id=ReferenceItemId(id=invited.id, changekey=invited.change_key),
    ).send()
    assert account.calendar.get(id=invited.id).my_response_type == "Accept"
    mine = CalendarItem(
        account=account,
        folder=account.calendar,
        subject="mine",
        start=start,
        end=start + dt.timedelta(hours=1),
        required_attendees=["colleague@example.com"],
    ).save(send_meeting_invitations="SendToAllAndSaveCopy")
    with pytest.raises(ErrorCalendarIsOrganizerForAccept):
        AcceptItem(
            account=account, reference_item_id=ReferenceItemId(id=mine.id, changekey=mine.changekey)
        ).send()
    with pytest.raises(ErrorMissingInformationReferenceItemId):
        AcceptItem(account=account).send()
    assert account.calendar.get(id=mine.id).meeting_request_was_sent is True
    result = mine.cancel()
    assert result.id
    assert account.sent.filter(subject="Canceled: mine").count() == 1
    with pytest.raises(ErrorItemNotFound):
        mine.cancel()


@pytest.mark.parametrize(
    ("attendees", "sent"),
    [(["colleague@example.com"], "SendToNone"), ([], "SendToAllAndSaveCopy")],
    ids=["never-invited", "no-attendees"],
)
def test_a_meeting_sent_to_no_one_cannot_be_cancelled(
    account: Account, attendees: list[str], sent: str
) -> None:
    """exchangelib's live test_cancel: a cancellation goes to those the meeting was sent to;
    with none, Exchange refuses to send it (ErrorInvalidRecipients) and the meeting stays."""
    start = dt.datetime(2030, 6, 4, 10, tzinfo=COPENHAGEN)
    kept = CalendarItem(
        account=account,
        folder=account.calendar,
        subject=f"unsent {sent}",
        start=start,
        end=start + dt.timedelta(hours=1),
        required_attendees=attendees or None,
    ).save(send_meeting_invitations=sent)
    assert account.calendar.get(id=kept.id).meeting_request_was_sent is False
    with pytest.raises(ErrorInvalidRecipients):
        kept.cancel()
    assert account.calendar.get(id=kept.id).subject == f"unsent {sent}"
    assert account.sent.filter(subject=f"Canceled: unsent {sent}").count() == 0
    # Sent later by an update, it has someone to cancel to.
    if attendees:
        kept.subject = "sent at last"
        kept.save(update_fields=["subject"], send_meeting_invitations="SendToAllAndSaveCopy")
        kept.cancel()
        with pytest.raises(ErrorItemNotFound):
            account.calendar.get(id=kept.id)


def test_aqs_query_strings_and_resolved_recipient_names(account: Account) -> None:
    Message(
        account=account,
        folder=account.inbox,
        subject="Quarterly numbers",
        body="see attached",
        to_recipients=["ada@example.com"],
    ).save()
    Message(account=account, folder=account.inbox, subject="Lunch").save()
    [found] = account.inbox.filter("Subject:quarterly AND To:ada@example.com")
    # A recipient given without a name is named by its address, as Exchange resolves it.
    assert found.to_recipients[0].name == "ada@example.com"
    assert account.inbox.filter("Subject:lunch OR Subject:quarterly").count() == 2
    assert account.inbox.filter("attached").count() == 1
    assert account.inbox.filter('Participants:"ada@example.com" AND Subject:lunch').count() == 0
    # A word with a colon that names no property is searched as text, not refused.
    Message(account=account, folder=account.inbox, subject="Ratio", body="odds ab:cd today").save()
    assert account.inbox.filter("Body:odds ab:cd").count() == 1
    assert account.inbox.filter("odds zz:yy").count() == 0


def test_a_folder_permission_set_is_answered_when_asked_and_kept_when_set(
    account: Account,
) -> None:
    folder = Folder(parent=account.inbox, name="shared with the team").save()
    folder.refresh()
    # Not asked for by name: not answered (exchangelib asks for it on refresh).
    default = folder.permission_set
    assert [p.user_id.distinguished_user for p in default.permissions] == ["Default", "Anonymous"]
    folder.permission_set = PermissionSet(
        permissions=[
            Permission(
                user_id=default.permissions[0].user_id,
                permission_level="Reviewer",
                read_items="FullDetails",
                is_folder_visible=True,
            )
        ]
    )
    folder.save(update_fields=["permission_set"])
    folder.refresh()
    assert [p.permission_level for p in folder.permission_set.permissions] == ["Reviewer"]
