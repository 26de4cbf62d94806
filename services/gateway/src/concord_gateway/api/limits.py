"""Every public request checked against the API's size and content limits before its handler
(concord_rpc.limits.RequestLimits, which the reconciler installs too)."""

from __future__ import annotations

from concord_rpc.limits import RequestLimits

__all__ = ["RequestLimits"]
