"""ReconcilerService: one servicer joined from each room's (`api.mailboxes`, `api.sessions`,
`api.mirror`, `api.sharing`), all over the ports `app.build` hands them."""

from __future__ import annotations

from concord.reconciler.v1 import reconciler_service_pb2 as api
from concord.reconciler.v1 import reconciler_service_pb2_grpc as api_grpc
from concord_reconciler.api.mailboxes import MailboxesApi
from concord_reconciler.api.mirror import MirrorApi
from concord_reconciler.api.sessions import SessionsApi
from concord_reconciler.api.sharing import SharingApi

__all__ = ["SERVICE_NAME", "ReconcilerServicer"]

SERVICE_NAME: str = api.DESCRIPTOR.services_by_name["ReconcilerService"].full_name


class ReconcilerServicer(
    MailboxesApi, SessionsApi, MirrorApi, SharingApi, api_grpc.ReconcilerServiceServicer
):
    """Every method of ReconcilerService, each from the room that owns it."""
