"""Resolving participants to Salesforce records; the resolution itself arrives with issue #7."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from concord_linker.domain.model import LINKER_ISSUE, Participant, Resolution
from concord_rpc import Unimplemented

__all__ = ["Linker", "LinkerStore"]


class LinkerStore(Protocol):
    async def blacklist(self, org: str, user_id: str) -> frozenset[str]:
        """The org's and the user's blacklisted addresses and domains, lowercased."""


class Linker:
    def __init__(self, store: LinkerStore) -> None:
        self._store = store

    async def resolve(
        self, org: str, user_id: str, participants: Sequence[Participant]
    ) -> Resolution:
        if not participants:
            # Nobody to link: no Salesforce call, no blacklist read.
            return Resolution()
        raise Unimplemented("resolving participants", issue=LINKER_ISSUE)
