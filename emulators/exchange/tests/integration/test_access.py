"""Version probe, Basic credentials, impersonation and delegate access, as exchangelib uses them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from exchangelib import DELEGATE, IMPERSONATION, Account  # type: ignore[import-untyped]
from exchangelib.errors import (  # type: ignore[import-untyped]
    ErrorAccessDenied,
    ErrorImpersonateUserDenied,
    UnauthorizedError,
)
from exchangelib.version import EXCHANGE_2016  # type: ignore[import-untyped]

from concord_exchange_emulator.seed import (
    DELEGATE as ASSISTANT,
)
from concord_exchange_emulator.seed import (
    DELEGATE_PASSWORD,
    DEMO_MAILBOX,
    DEMO_PASSWORD,
    SERVICE_ACCOUNT,
    SERVICE_PASSWORD,
)
from concord_exchange_emulator.testing import RunningEmulator

pytestmark = pytest.mark.integration

MakeConfig = Callable[..., Any]


def test_without_a_version_exchangelib_probes_and_reads_server_version_info(
    emulator: RunningEmulator,
    make_config: MakeConfig,
) -> None:
    config = make_config(DEMO_MAILBOX, DEMO_PASSWORD, version=None)
    account = Account(DEMO_MAILBOX, config=config, autodiscover=False, access_type=DELEGATE)
    assert account.version.build.major_version == 15
    assert account.version.build.minor_version == 1
    assert account.version.build >= EXCHANGE_2016
    assert account.version.api_version == "Exchange2016"
    calls = emulator.admin("GET", "calls")
    assert calls.get("ConvertId", 0) >= 1


def test_wrong_password_is_rejected(emulator: RunningEmulator, make_config: MakeConfig) -> None:
    config = make_config(DEMO_MAILBOX, "not-the-password")
    account = Account(DEMO_MAILBOX, config=config, autodiscover=False, access_type=DELEGATE)
    with pytest.raises(UnauthorizedError):
        account.root.refresh()


def test_service_account_impersonates_the_demo_mailbox(
    emulator: RunningEmulator, make_config: MakeConfig
) -> None:
    config = make_config(SERVICE_ACCOUNT, SERVICE_PASSWORD)
    account = Account(DEMO_MAILBOX, config=config, autodiscover=False, access_type=IMPERSONATION)
    subjects = {i.subject for i in account.calendar.all()}
    assert "Quarterly review with Acme" in subjects


def test_an_account_without_the_right_cannot_impersonate(
    emulator: RunningEmulator,
    make_config: MakeConfig,
    new_user: Callable[..., tuple[str, str]],
) -> None:
    username, password = new_user()
    config = make_config(username, password)
    account = Account(DEMO_MAILBOX, config=config, autodiscover=False, access_type=IMPERSONATION)
    with pytest.raises(ErrorImpersonateUserDenied):
        list(account.calendar.all())


def test_a_delegate_opens_the_mailbox_it_was_granted(
    emulator: RunningEmulator, make_config: MakeConfig
) -> None:
    config = make_config(ASSISTANT, DELEGATE_PASSWORD)
    account = Account(DEMO_MAILBOX, config=config, autodiscover=False, access_type=DELEGATE)
    assert account.tasks.all().count() >= 2


def test_a_user_cannot_open_a_mailbox_it_was_not_granted(
    emulator: RunningEmulator,
    make_config: MakeConfig,
    new_user: Callable[..., tuple[str, str]],
) -> None:
    username, password = new_user()
    config = make_config(username, password)
    account = Account(DEMO_MAILBOX, config=config, autodiscover=False, access_type=DELEGATE)
    with pytest.raises(ErrorAccessDenied):
        list(account.tasks.all())


def test_ntlm_credentials_are_checked(make_config: MakeConfig) -> None:
    from exchangelib import NTLM

    good = make_config(DEMO_MAILBOX, DEMO_PASSWORD, auth_type=NTLM)
    account = Account(DEMO_MAILBOX, config=good, autodiscover=False, access_type=DELEGATE)
    assert account.calendar.all().count() >= 3
    assert account.tasks.all().count() >= 2
    bad = make_config(DEMO_MAILBOX, "wrong-password", auth_type=NTLM)
    refused = Account(DEMO_MAILBOX, config=bad, autodiscover=False, access_type=DELEGATE)
    with pytest.raises(UnauthorizedError):
        refused.root.refresh()
