"""An org's change stream as the dashboard sees it: the holding replica's last report, read by
whichever replica is asked."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from concord_crm_connector.changes.model import StreamReport, observed
from concord_crm_connector.changes.ports import StreamReports

__all__ = ["StreamStatus"]


class StreamStatus:
    def __init__(
        self,
        reports: StreamReports,
        *,
        enabled: bool,
        silent_after: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._reports = reports
        self._enabled = enabled
        self._silent_after = silent_after
        self._clock = clock

    async def of(self, org: str) -> StreamReport:
        report = await self._reports.get(org) if self._enabled else None
        return observed(
            report, self._clock(), enabled=self._enabled, silent_after=self._silent_after
        )
