"""Contact lists (DistributionList items) as Exchange keeps them (#15): created in Contacts,
filed under their name, members keyed and answered with their status."""

from __future__ import annotations

from typing import Any

import pytest
from exchangelib import DistributionList, Mailbox  # type: ignore[import-untyped]
from exchangelib.properties import Member  # type: ignore[import-untyped]

pytestmark = pytest.mark.integration


def test_a_list_is_kept_with_its_members(account: Any) -> None:
    dl = DistributionList(account=account, folder=account.contacts, display_name="Buyers")
    dl.save()
    fresh = account.contacts.get(id=dl.id)
    assert isinstance(fresh, DistributionList)
    assert (fresh.display_name, fresh.file_as, fresh.members) == ("Buyers", "Buyers", None)
    dl.members = {
        Member(mailbox=Mailbox(email_address=address, mailbox_type="OneOff"))
        for address in ("ada@acme.example", "bob@globex.example")
    }
    dl.save()
    fresh = account.contacts.get(id=dl.id)
    assert {m.mailbox.email_address for m in fresh.members} == {
        "ada@acme.example",
        "bob@globex.example",
    }
    assert {m.status for m in fresh.members} == {"Normal"}
    dl.delete()
