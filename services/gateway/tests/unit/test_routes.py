"""The route table covers the whole service, names real request fields, and governs every method."""

from __future__ import annotations

import ast
import inspect
import textwrap

import pytest
from google.protobuf.descriptor import FieldDescriptor

from concord.gateway.v1 import gateway_service_pb2 as pb
from concord_gateway.api.servicer import GatewayServicer
from concord_gateway.domain.errors import InvalidName
from concord_gateway.domain.routes import ROUTES, Route, Scope, target_of

pytestmark = pytest.mark.unit

SERVICE = pb.DESCRIPTOR.services_by_name["GatewayService"]


def test_every_method_of_the_service_has_exactly_one_route() -> None:
    assert set(ROUTES) == {m.name for m in SERVICE.methods}


@pytest.mark.parametrize("method", sorted(ROUTES))
def test_each_route_names_a_string_field_of_its_request(method: str) -> None:
    route = ROUTES[method]
    if route.scope is Scope.CALLER:
        assert route.field == ""
        return
    descriptor = SERVICE.methods_by_name[method].input_type
    *parents, leaf = route.field.split(".")
    for part in parents:
        nested = descriptor.fields_by_name[part].message_type
        assert nested is not None, part
        descriptor = nested
    assert descriptor.fields_by_name[leaf].type == FieldDescriptor.TYPE_STRING


@pytest.mark.parametrize("method", sorted(m for m in ROUTES if ROUTES[m].scope is not Scope.CALLER))
def test_each_servicer_method_starts_by_taking_its_own_route(method: str) -> None:
    source = textwrap.dedent(inspect.getsource(getattr(GatewayServicer, method)))
    function = ast.parse(source).body[0]
    assert isinstance(function, ast.AsyncFunctionDef)
    calls = [
        node
        for statement in function.body[:2]
        for node in ast.walk(statement)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("_route", "_routed_mailbox")
    ]
    assert calls, f"{method} does not begin with self._route(...)"
    (first,) = calls[:1]
    assert isinstance(first.args[0], ast.Constant)
    assert first.args[0].value == method


def test_targets_are_checked_and_an_optional_org_may_be_left_out() -> None:
    sync = pb.SyncMailboxRequest(mailbox="mailboxes/demo")
    assert target_of(ROUTES["SyncMailbox"], sync) == "mailboxes/demo"
    with pytest.raises(InvalidName):
        target_of(ROUTES["SyncMailbox"], pb.SyncMailboxRequest(mailbox="orgs/acme"))
    with pytest.raises(InvalidName):
        target_of(ROUTES["SyncMailbox"], pb.SyncMailboxRequest())
    assert target_of(ROUTES["RegisterMailbox"], pb.RegisterMailboxRequest()) == ""
    session = pb.GetSessionRequest(name="mailboxes/demo/sessions/s1")
    assert target_of(ROUTES["GetSession"], session) == "mailboxes/demo"
    assert isinstance(ROUTES["GetSession"], Route)
