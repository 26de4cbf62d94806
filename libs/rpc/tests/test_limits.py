"""Properties of the API's limits (concord_rpc.limits), over generated request fields."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from concord.common.v1 import settings_pb2 as st
from concord.gateway.v1 import gateway_service_pb2 as pb
from concord_rpc.limits import (
    BLACKLIST_ENTRY,
    BLACKLIST_ITEMS,
    DEFAULT_TEXT,
    RequestTooLarge,
    check_request,
)

# protobuf refuses lone surrogates itself; everything else a client can send is generated.
TEXT = hs.text(alphabet=hs.characters(exclude_categories=["Cs"]), max_size=DEFAULT_TEXT + 20)
# Control characters a text field may carry: tab, line feed, carriage return.
_REFUSED = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _accepted(request: object) -> bool:
    try:
        check_request(request)  # type: ignore[arg-type]
    except RequestTooLarge:
        return False
    return True


@given(reason=TEXT)
def test_a_reason_is_taken_exactly_when_short_and_free_of_control_characters(reason: str) -> None:
    request = pb.SuspendMailboxRequest(mailbox="mailboxes/m", reason=reason)
    assert _accepted(request) == (len(reason) <= DEFAULT_TEXT and not _REFUSED.search(reason))


@given(
    reason=hs.text(min_size=1, max_size=5),
    at=hs.integers(0, 5),
    cut=hs.sampled_from("\x00\x07\x1b\x7f"),
)
def test_a_nul_or_other_control_character_anywhere_is_refused(
    reason: str, at: int, cut: str
) -> None:
    text = reason[:at] + cut + reason[at:]
    assert not _accepted(pb.SuspendMailboxRequest(mailbox="mailboxes/m", reason=text))


ENTRY = hs.one_of(
    TEXT,
    hs.from_regex(r"\A[*@]?(\*\.)?[a-z0-9.-]{0,20}(@[a-z0-9.-]{0,20})?\Z"),
)


@settings(max_examples=300)
@given(entry=ENTRY)
def test_a_blacklist_entry_taken_names_an_address_or_a_domain(entry: str) -> None:
    request = pb.UpdateUserSettingsRequest(settings=st.MailboxSettings(blacklist=[entry]))
    if not _accepted(request):
        return
    text = entry.strip().lower()
    assert 0 < len(text) <= BLACKLIST_ENTRY
    assert not _REFUSED.search(text)
    domain = text.rpartition("@")[2].removeprefix("*.").rstrip(".")
    # Never a wildcard or a bare top-level label: it would hide every email of the org.
    assert "*" not in domain
    assert "." in domain
    assert not any(c.isspace() for c in text)


@given(count=hs.integers(0, BLACKLIST_ITEMS * 2))
def test_a_blacklist_is_taken_up_to_its_count(count: int) -> None:
    entries = [f"d{n}.example" for n in range(count)]
    request = pb.UpdateOrgSettingsRequest(settings=st.OrgSettings(blacklist=entries))
    assert _accepted(request) == (count <= BLACKLIST_ITEMS)


@pytest.mark.parametrize("size", [DEFAULT_TEXT, DEFAULT_TEXT + 1, 20 * 1024 * 1024])
def test_the_violation_names_the_field_and_its_limit(size: int) -> None:
    request = pb.SuspendMailboxRequest(mailbox="mailboxes/m", reason="x" * size)
    if size <= DEFAULT_TEXT:
        check_request(request)
        return
    with pytest.raises(RequestTooLarge) as refused:
        check_request(request)
    assert refused.value.field_violations == [("reason", f"at most {DEFAULT_TEXT} characters")]
