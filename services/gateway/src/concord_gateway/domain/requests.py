"""Request ids of mutations: scoped to the caller before they go to the reconciler.

Idempotency lives in the reconciler, not here: it stores each mutation's first answer under
(method, request_id) in its own database, in the same transaction as the change where that
matters, so a replay is answered the same after a gateway restart and through any gateway
replica; a cache in the gateway would forget on restart, differ per replica, and still leave a
window between acting and remembering.

The reconciler's key has no caller in it, though, and clients choose request ids. Forwarded
as given, ann's `request_id=1` for SuspendMailbox would replay to bob sending the same id: bob
would get ann's answer (her mailbox) and his own mailbox would not be suspended. So the gateway
forwards a UUIDv5 of (caller, method, target, client id): the same caller replaying the same
mutation gets the same forwarded id, anyone else a different one.
"""

from __future__ import annotations

import json
import uuid

from concord_gateway.domain.errors import InvalidRequestId
from concord_gateway.domain.principal import Principal

__all__ = ["MAX_REQUEST_ID_LENGTH", "scoped_request_id"]

MAX_REQUEST_ID_LENGTH = 128
# Fixed for ever: changing it changes every forwarded id and so breaks replays in flight.
_NAMESPACE = uuid.UUID("6f1c6a1e-3d0b-5a55-9e2c-2f5f3c1d8a70")


def scoped_request_id(principal: Principal, method: str, target: str, given: str) -> str:
    """The request id to forward for `given` (the client's), `method` on `target`.

    Without one, a fresh id: the call is not idempotent across the client's own retries, but
    the gateway's retries to its peer still carry one id.
    """
    if not given:
        return str(uuid.uuid4())
    if len(given) > MAX_REQUEST_ID_LENGTH or not given.isprintable():
        description = f"at most {MAX_REQUEST_ID_LENGTH} printable characters (a UUID is best)"
        raise InvalidRequestId(
            f"request_id must be {description}",
            metadata={"field": "request_id"},
            field_violations=[("request_id", description)],
        )
    # JSON, so no choice of ids can make two different tuples serialise the same.
    scope = json.dumps(
        [principal.org, principal.role, principal.user_id, method, target, given],
        separators=(",", ":"),
    )
    return str(uuid.uuid5(_NAMESPACE, scope))
