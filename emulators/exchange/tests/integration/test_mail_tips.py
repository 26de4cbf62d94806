"""GetMailTips through exchangelib (its live test_mail_tips asks the account's own tips)."""

from __future__ import annotations

from typing import Any

import pytest
from exchangelib.properties import Mailbox, SendingAs  # type: ignore[import-untyped]
from exchangelib.services import GetMailTips  # type: ignore[import-untyped]

pytestmark = pytest.mark.integration


def test_mail_tips_tell_internal_unknown_and_external_recipients_apart(
    account: Any, new_user: Any
) -> None:
    own = account.mail_tips
    assert own.recipient_address.email_address == account.primary_smtp_address
    assert own.invalid_recipient is False
    assert own.external_member_count == 0
    assert own.max_message_size > 0
    colleague, _ = new_user()
    tips = list(
        GetMailTips(protocol=account.protocol).call(
            sending_as=SendingAs(email_address=account.primary_smtp_address),
            recipients=[
                Mailbox(email_address=colleague),
                Mailbox(email_address="nobody-here@concord.test"),
                Mailbox(email_address="ada@acme.example"),
            ],
            mail_tips_requested="All",
        )
    )
    assert [(t.invalid_recipient, t.external_member_count) for t in tips] == [
        (False, 0),
        (True, 0),
        (False, 1),
    ]
