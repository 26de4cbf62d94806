"""The linker's errors; the shared interceptor turns them into `google.rpc.Status`."""

from __future__ import annotations

from concord_rpc import FailedPrecondition, Unavailable

__all__ = ["CrmWriteRejected", "CrmWriteRetryable"]


class CrmWriteRejected(FailedPrecondition):
    """Salesforce refused an auto-created record (validation rule, duplicate rule, field)."""

    reason = "CRM_WRITE_REJECTED"


class CrmWriteRetryable(Unavailable):
    """Salesforce could not take the write now; the same call later creates nothing twice."""

    reason = "CRM_WRITE_RETRYABLE"
