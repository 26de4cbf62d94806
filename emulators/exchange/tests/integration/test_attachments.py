"""File and item attachments as Exchange keeps them (#15): given with a new item or added to a
saved one, listed by GetItem without content, fetched whole by GetAttachment, removed by
DeleteAttachment; an attachment id stops resolving once its attachment is gone."""

from __future__ import annotations

from typing import Any

import pytest
from exchangelib import Message, Version  # type: ignore[import-untyped]
from exchangelib.attachments import (  # type: ignore[import-untyped]
    AttachmentId,
    FileAttachment,
    ItemAttachment,
)
from exchangelib.errors import (  # type: ignore[import-untyped]
    ErrorInvalidAttachmentId,
    ErrorInvalidIdMalformed,
)
from exchangelib.version import EXCHANGE_2010_SP2  # type: ignore[import-untyped]

pytestmark = pytest.mark.integration


def test_a_file_given_with_the_item_is_listed_and_fetched_whole(account: Any) -> None:
    message = Message(account=account, folder=account.drafts, subject="quote")
    message.attach(FileAttachment(name="quote.pdf", content=b"%PDF-1.4 quote"))
    message.save()
    assert message.attachments[0].attachment_id is not None  # CreateItem named it
    fresh = account.drafts.get(id=message.id)
    assert fresh.has_attachments is True
    [listed] = fresh.attachments
    assert listed.name == "quote.pdf"
    assert listed.size == len(b"%PDF-1.4 quote")
    assert listed.content_type == "application/pdf"
    assert listed.is_inline is False
    assert listed.content == b"%PDF-1.4 quote"  # read through GetAttachment


def test_an_attachment_added_later_changes_the_item_and_can_be_removed(account: Any) -> None:
    message = Message(account=account, folder=account.drafts, subject="later").save()
    before = message.changekey
    attachment = FileAttachment(name="notes.txt", content=b"hello")
    message.attach(attachment)
    # The answer named the item's ChangeKey after the attachment was added.
    assert message.changekey != before
    fresh = account.drafts.get(id=message.id)
    assert fresh.changekey == message.changekey
    assert [a.name for a in fresh.attachments] == ["notes.txt"]
    gone = attachment.attachment_id.id
    message.detach(attachment)
    fresh = account.drafts.get(id=message.id)
    assert fresh.attachments == []
    assert fresh.has_attachments is False
    stale = FileAttachment(
        parent_item=fresh, attachment_id=AttachmentId(id=gone), name="notes.txt", content=b""
    )
    with pytest.raises(ErrorInvalidAttachmentId), stale.fp as fp:
        fp.read()
    malformed = FileAttachment(
        parent_item=fresh, attachment_id=AttachmentId(id="AAMk="), name="x", content=b""
    )
    with pytest.raises(ErrorInvalidIdMalformed), malformed.fp as fp:
        fp.read()


def test_an_item_attachment_carries_its_item(account: Any) -> None:
    inner = Message(account=account, subject="the original", body="forwarded text")
    message = Message(account=account, folder=account.drafts, subject="fwd").save()
    message.attach(ItemAttachment(name="the original", item=inner))
    fresh = account.drafts.get(id=message.id)
    [listed] = fresh.attachments
    assert isinstance(listed, ItemAttachment)
    assert listed.item.subject == "the original"  # fetched whole by GetAttachment
    assert listed.item.body == "forwarded text"


def test_a_message_with_a_file_is_sent_the_pre_2013_way(account: Any) -> None:
    # Before Exchange 2013, exchangelib saves the message, attaches, then sends it.
    message = Message(account=account, folder=account.inbox, subject="pre-2013", to_recipients=[])
    message.attach(FileAttachment(name="a.txt", content=b"a"))
    account.version = Version(EXCHANGE_2010_SP2)
    message.send(save_copy=False)
    assert message.id is None
    assert not list(account.inbox.filter(subject="pre-2013"))
