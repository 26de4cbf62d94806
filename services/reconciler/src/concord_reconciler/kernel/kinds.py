"""The enumerations the reconciler passes around, typed as their proto enums (not bare `int`),
so that a kind can never be handed where a trigger or a side is meant."""

from __future__ import annotations

from typing import TypeAlias

from concord.common.v1 import resources_pb2 as res

__all__ = ["ErrorSide", "Kind", "Provider", "Trigger"]

# concord.common.v1.ObjectKind: calendar item, task, contact, email.
Kind: TypeAlias = res.ObjectKind.ValueType
# concord.common.v1.MailProvider.
Provider: TypeAlias = res.MailProvider.ValueType
# concord.common.v1.SessionTrigger.
Trigger: TypeAlias = res.SessionTrigger.ValueType
# concord.common.v1.SyncSide, as an item error records it.
ErrorSide: TypeAlias = res.SyncSide.ValueType
