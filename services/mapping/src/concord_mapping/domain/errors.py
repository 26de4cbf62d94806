"""Why one item or record cannot be mapped; the batch goes on, the reconciler quarantines it."""

from __future__ import annotations

__all__ = ["MappingFailure"]


class MappingFailure(Exception):
    """`reason` is machine-readable (e.g. UNKNOWN_TIME_ZONE); `message` never holds values."""

    def __init__(self, reason: str, message: str, field: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.field = field
