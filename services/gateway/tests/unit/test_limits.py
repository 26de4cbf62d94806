"""The public API's limits: every field of every request has one, and it is enforced."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from concord.common.v1 import settings_pb2 as st
from concord.gateway.v1 import gateway_service_pb2 as pb
from concord_gateway.domain.errors import RequestTooLarge
from concord_gateway.domain.limits import BLACKLIST_ITEMS, check_request, limit_of

SERVICE = pb.DESCRIPTOR.services_by_name["GatewayService"]


def _paths(
    descriptor: Descriptor,
    prefix: tuple[FieldDescriptor, ...] = (),
    seen: frozenset[str] = frozenset(),
) -> Iterator[tuple[FieldDescriptor, ...]]:
    """Every bounded field reachable from a request message, as the chain of fields to it."""
    for field in descriptor.fields:
        chain = (*prefix, field)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            kind = field.message_type
            assert kind is not None
            if kind.full_name.startswith("google.protobuf.") or kind.full_name in seen:
                if field.is_repeated:
                    yield chain
                continue
            if field.is_repeated:
                yield chain
            else:
                yield from _paths(kind, chain, seen | {descriptor.full_name})
        elif field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES) or (
            field.is_repeated
        ):
            yield chain


def _fields() -> list[tuple[str, tuple[FieldDescriptor, ...]]]:
    found = []
    for method in SERVICE.methods:
        for chain in _paths(method.input_type):
            found.append((method.input_type.full_name, chain))
    return found


def _request(name: str, chain: tuple[FieldDescriptor, ...], size: int) -> Message:
    """A request whose field at `chain` is `size` long (characters, bytes or items)."""
    request = message_factory.GetMessageClass(pb.DESCRIPTOR.pool.FindMessageTypeByName(name))()
    target: Message = request
    for field in chain[:-1]:
        target = getattr(target, field.name)
    last = chain[-1]
    if last.is_repeated and last.type == FieldDescriptor.TYPE_MESSAGE:
        for _ in range(size):
            getattr(target, last.name).add()
    elif last.is_repeated:
        values = getattr(target, last.name)
        for _ in range(size):
            values.append(_scalar(last, 6))
    else:
        setattr(target, last.name, _scalar(last, size))
    return request


def _scalar(field: FieldDescriptor, size: int) -> object:
    if field.type == FieldDescriptor.TYPE_BYTES:
        return b"x" * size
    if field.type == FieldDescriptor.TYPE_STRING:
        # A valid blacklist entry at any length from 1 on, so only the length is tested.
        return ("x" * max(0, size - 2) + ".io")[-size:] if size >= 4 else "x" * size
    return 0


FIELDS = _fields()


def test_every_request_field_is_reached() -> None:
    names = {chain[-1].full_name for _, chain in FIELDS}
    assert "concord.gateway.v1.SuspendMailboxRequest.reason" in names
    assert "concord.common.v1.MailboxSettings.blacklist" in names
    assert len(FIELDS) > 80


@pytest.mark.parametrize(
    ("name", "chain"), FIELDS, ids=[f"{n}:{'.'.join(f.name for f in c)}" for n, c in FIELDS]
)
def test_every_field_is_refused_one_past_its_limit(
    name: str, chain: tuple[FieldDescriptor, ...]
) -> None:
    last = chain[-1]
    limit = limit_of(last)
    size = limit.items if last.is_repeated else limit.size
    check_request(_request(name, chain, size))
    with pytest.raises(RequestTooLarge) as refused:
        check_request(_request(name, chain, size + 1))
    path = ".".join(f.name for f in chain)
    assert [f for f, _ in refused.value.field_violations] == [path]


def test_a_20_mib_reason_and_a_nul_byte_are_refused() -> None:
    with pytest.raises(RequestTooLarge) as big:
        check_request(pb.SuspendMailboxRequest(mailbox="mailboxes/m", reason="x" * (20 << 20)))
    assert big.value.field_violations == [("reason", "at most 1000 characters")]
    with pytest.raises(RequestTooLarge) as nul:
        check_request(pb.SuspendMailboxRequest(mailbox="mailboxes/m", reason="on\x00holiday"))
    assert nul.value.field_violations[0][0] == "reason"
    check_request(pb.SuspendMailboxRequest(mailbox="mailboxes/m", reason="on holiday\nback soon"))


@pytest.mark.parametrize(
    "entry", ["", " ", "*", "*.", "@", "\x00", "a@b", "ann@", "x" * 300 + ".com", "exa mple.com"]
)
def test_a_blacklist_entry_that_names_no_address_or_domain_is_refused(entry: str) -> None:
    request = pb.UpdateUserSettingsRequest(settings=st.MailboxSettings(blacklist=[entry]))
    with pytest.raises(RequestTooLarge) as refused:
        check_request(request)
    assert refused.value.field_violations[0][0] == "settings.blacklist[0]"


@pytest.mark.parametrize(
    "entry", ["ann@example.com", "example.com", "@example.com", "*.example.com", "Sub.Example.COM"]
)
def test_the_forms_the_linker_matches_are_accepted(entry: str) -> None:
    check_request(pb.UpdateUserSettingsRequest(settings=st.MailboxSettings(blacklist=[entry])))


def test_a_blacklist_is_bounded() -> None:
    entries = [f"d{n}.example.com" for n in range(BLACKLIST_ITEMS + 1)]
    with pytest.raises(RequestTooLarge):
        check_request(pb.UpdateOrgSettingsRequest(settings=st.OrgSettings(blacklist=entries)))
