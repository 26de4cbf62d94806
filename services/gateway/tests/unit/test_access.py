"""The authorisation rules: claims -> what a caller may act on."""

from __future__ import annotations

import pytest

from concord_gateway.domain.access import (
    MailboxOwnership,
    authorize_mailbox,
    authorize_org_admin,
    may_see_mailbox,
    visible_org,
)
from concord_gateway.domain.errors import AdminRequired, MailboxAccessDenied, OrgAccessDenied
from concord_gateway.domain.principal import Principal, Role

pytestmark = pytest.mark.unit

ANN = Principal("ann", "acme", Role.USER)
BOB = Principal("bob", "acme", Role.USER)
ADMIN = Principal("root", "acme", Role.ADMIN)
SIDEBAR = Principal("sidebar", "acme", Role.SERVICE)
OTHER_ADMIN = Principal("eve", "globex", Role.ADMIN)
ANNS = MailboxOwnership("mailboxes/ann", "orgs/acme", "ann")


def test_a_user_acts_on_their_own_mailbox_only() -> None:
    authorize_mailbox(ANN, ANNS.name, ANNS)
    with pytest.raises(MailboxAccessDenied) as raised:
        authorize_mailbox(BOB, ANNS.name, ANNS)
    assert raised.value.code == "PERMISSION_DENIED"
    assert raised.value.reason == "MAILBOX_ACCESS_DENIED"


@pytest.mark.parametrize("principal", [ADMIN, SIDEBAR])
def test_admins_and_services_act_on_every_mailbox_of_their_org(principal: Principal) -> None:
    authorize_mailbox(principal, ANNS.name, ANNS)
    assert may_see_mailbox(principal, ANNS)


@pytest.mark.parametrize(
    "principal",
    [
        BOB,
        OTHER_ADMIN,
        Principal("ann", "globex", Role.USER),  # same user id, another org
        Principal("sidebar", "globex", Role.SERVICE),  # a service token of another org
    ],
)
def test_a_refusal_is_word_for_word_what_a_missing_mailbox_gives(principal: Principal) -> None:
    with pytest.raises(MailboxAccessDenied) as raised:
        authorize_mailbox(principal, ANNS.name, ANNS)
    with pytest.raises(MailboxAccessDenied) as missing:
        authorize_mailbox(principal, ANNS.name, None)
    assert (raised.value.message, raised.value.metadata) == (
        missing.value.message,
        missing.value.metadata,
    )
    assert raised.value.code == missing.value.code == "PERMISSION_DENIED"
    assert not may_see_mailbox(principal, ANNS)


def test_even_an_admin_cannot_tell_a_missing_mailbox_from_another_orgs() -> None:
    with pytest.raises(MailboxAccessDenied):
        authorize_mailbox(ADMIN, "mailboxes/nope", None)


def test_org_administration_needs_an_admin_of_that_org() -> None:
    authorize_org_admin(ADMIN, "orgs/acme")
    for caller in (ANN, SIDEBAR):
        with pytest.raises(AdminRequired):
            authorize_org_admin(caller, "orgs/acme")
    with pytest.raises(OrgAccessDenied):
        authorize_org_admin(OTHER_ADMIN, "orgs/acme")


def test_listings_cover_the_callers_org_only() -> None:
    assert visible_org(ANN, "") == "orgs/acme"
    assert visible_org(ADMIN, "orgs/acme") == "orgs/acme"
    with pytest.raises(OrgAccessDenied):
        visible_org(ADMIN, "orgs/globex")
