"""The demo seed, with real (and broken) mail from a maildir."""

from __future__ import annotations

import pathlib

import pytest
from lxml import etree

from concord_exchange_emulator.seed import DEMO_MAILBOX, seed_mailbox
from concord_exchange_emulator.store import Store
from concord_exchange_emulator.xmlns import t

pytestmark = pytest.mark.unit

GOOD = (
    b"From: Ada Lovelace <ada@acme.example>\r\nTo: demo@concord.test\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nMessage-ID: <real-1@acme.example>\r\n"
    b"Date: Tue, 01 Jan 2030 10:00:00 +0100\r\n\r\nHello\r\n"
)
BROKEN = (
    b"From: <<<\r\nDate: yesterday-ish\r\nSubject: broken\r\nContent-Type: multipart/mixed\r\n\r\n"
)


def test_seed_adds_maildir_messages_and_keeps_broken_ones(tmp_path: pathlib.Path) -> None:
    maildir = tmp_path / "mail"
    (maildir / "cur").mkdir(parents=True)
    (maildir / "cur" / "1").write_bytes(GOOD)
    (maildir / "cur" / "2").write_bytes(BROKEN)
    store = Store(tmp_path / "exchange.db")
    assert seed_mailbox(store, maildir) is True
    assert seed_mailbox(store, maildir) is False
    inbox = store.distinguished_folder(DEMO_MAILBOX, "inbox")
    assert inbox is not None
    root = store.distinguished_folder(DEMO_MAILBOX, "msgfolderroot")
    assert root is not None
    (emails,) = [f for f in store.child_folders(root.id) if f.display_name == "Salesforce Emails"]
    messages = [etree.fromstring(i.xml) for i in store.items_in(inbox.id)]
    messages += [etree.fromstring(i.xml) for i in store.items_in(emails.id)]
    by_subject = {m.findtext(t("Subject")): m for m in messages}
    good = by_subject["Grüße"]
    assert good.findtext(t("InternetMessageId")) == "<real-1@acme.example>"
    assert good.findtext(t("DateTimeSent")) == "2030-01-01T09:00:00Z"
    assert good.findtext(f"{t('From')}/{t('Mailbox')}/{t('EmailAddress')}") == "ada@acme.example"
    broken = by_subject["broken"]
    assert broken.findtext(t("MimeContent"))
    assert broken.find(t("DateTimeSent")) is None
    store.close()
