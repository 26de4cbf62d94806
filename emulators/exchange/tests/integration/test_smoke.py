from __future__ import annotations

import pytest
from exchangelib import Account

pytestmark = pytest.mark.integration


def test_calendar_folder(account: Account) -> None:
    assert account.calendar.name == "Calendar"
