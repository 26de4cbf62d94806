from __future__ import annotations

import grpc
import pytest

from concord_rpc import (
    Aborted,
    DomainError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    Unimplemented,
)
from concord_rpc.errors import STATUS_NAMES

pytestmark = pytest.mark.unit


def test_a_reason_that_is_not_upper_snake_case_fails_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError, match="UPPER_SNAKE_CASE"):

        class MailboxGone(NotFound):
            reason = "mailbox-gone"


def test_service_errors_inherit_code_and_retryability() -> None:
    class QuotaSpent(ResourceExhausted):
        reason = "SALESFORCE_QUOTA_SPENT"

    err = QuotaSpent("daily API quota spent", metadata={"org": "00D1"})
    assert (err.code, err.reason, err.retryable) == (
        "RESOURCE_EXHAUSTED",
        "SALESFORCE_QUOTA_SPENT",
        True,
    )
    assert err.retry_after == 1.0
    assert QuotaSpent("x", retry_after=60).retry_after == 60
    assert not NotFound("x").retryable
    assert NotFound("x").retry_after is None
    assert Aborted("x").retryable
    assert Unavailable("x").retryable
    assert isinstance(err, DomainError)


def test_invalid_argument_carries_field_violations() -> None:
    err = InvalidArgument("bad request", field_violations=[("page_size", "must be positive")])
    assert err.field_violations == [("page_size", "must be positive")]
    assert str(err) == "bad request"


def test_unimplemented_names_the_issue() -> None:
    err = Unimplemented("Linker.ResolveParticipants", issue=42)
    assert str(err) == "Linker.ResolveParticipants is not implemented yet (issue #42)"
    assert err.metadata == {"issue": "42"}
    assert err.code == "UNIMPLEMENTED"


def test_every_status_name_is_one_grpc_knows() -> None:
    assert {grpc.StatusCode[name] for name in STATUS_NAMES} == set(grpc.StatusCode) - {
        grpc.StatusCode.OK
    }


def test_a_class_with_an_unknown_status_fails_at_definition() -> None:
    with pytest.raises(TypeError, match="gRPC status name"):

        class Wrong(DomainError):
            code = "NOT_A_STATUS"
            reason = "WRONG"
