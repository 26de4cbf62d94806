"""The reconciler's settings, from `RECONCILER_*`, the peers' `<PEER>_ADDR` and `NATS_URL`."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from concord_runtime.identity import CallerIdentitySettings
from concord_settings import (
    DEFAULT_PORTS,
    ServiceSettings,
    SettingsConfigDict,
    jetstream_replicas,
    nats,
    peer,
)

__all__ = ["ReconcilerSettings"]


class ReconcilerSettings(ServiceSettings, CallerIdentitySettings):
    model_config = SettingsConfigDict(env_prefix="RECONCILER_")
    service_name: ClassVar[str] = "reconciler"

    port: int = DEFAULT_PORTS["reconciler"]
    # Each a gRPC target: `host:port`, or every replica (`ipv4:127.0.0.1:50055,127.0.0.1:50057`,
    # `dns:///linker-headless:50055`), over which calls are spread (mirror/adapters/peers.py).
    mail_connector_addr: str = peer("mail-connector")
    crm_connector_addr: str = peer("crm-connector")
    mapping_addr: str = peer("mapping")
    linker_addr: str = peer("linker")
    nats_url: str = nats()
    # Copies JetStream keeps of the streams and the lease bucket (`NATS_JETSTREAM_REPLICAS`).
    jetstream_replicas: int = jetstream_replicas()
    # What this process runs (`app.py`): `all`; `api`, the API and the scheduler; or `worker`,
    # the sessions only, so that scaling workers out does not scale the API.
    role: Literal["all", "api", "worker"] = "all"

    # A replica that dies mid-session frees its mailbox after this long.
    lease_ttl_seconds: float = Field(default=60.0, gt=0)
    # How soon a session whose mailbox is busy with another session asks again.
    lease_busy_retry_seconds: float = Field(default=1.0, gt=0)
    # A session running longer than this fails (and frees the mailbox for the next one).
    session_deadline_seconds: float = Field(default=600.0, gt=0)
    # Deadline of each call to a peer, retries included.
    peer_timeout_seconds: float = Field(default=10.0, gt=0)
    # A session request a dead replica held is redelivered after this long.
    session_ack_wait_seconds: float = Field(default=30.0, ge=1)
    # Sessions one replica runs at once (of different mailboxes: the lease serialises one mailbox).
    session_concurrency: int = Field(default=4, ge=1)
    # A session running longer than this (a first sync) gives its slot to the next request,
    # so other mailboxes are not held back; as many may run long at once as there are slots.
    session_long_after_seconds: float = Field(default=2.0, gt=0)
    # The longest WaitSession waits, whatever the client asks.
    wait_session_max_seconds: float = Field(default=60.0, gt=0)

    # The scheduler (one replica leads): how often it re-reads the schedule at most...
    schedule_tick_seconds: float = Field(default=5.0, gt=0)
    # ...the interval of mailboxes whose org set none...
    default_sync_interval_seconds: float = Field(default=1800.0, ge=60)
    # ...after this many failed sessions in a row a mailbox backs off...
    back_off_after_failures: int = Field(default=3, ge=1)
    # ...retrying after base, 2 x base, ... up to max.
    back_off_base_seconds: float = Field(default=60.0, gt=0)
    back_off_max_seconds: float = Field(default=6 * 3600.0, gt=0)
    # A session still QUEUED after this long is re-published (its message was lost).
    requeue_after_seconds: float = Field(default=120.0, gt=0)
    # The answer to a mutation is kept this long for a retry carrying the same request id, then
    # pruned by the leading scheduler (every ten minutes): clients retry within minutes, and a
    # day covers one that was down a while without the table growing for ever.
    request_answer_retention_seconds: float = Field(default=86400.0, ge=60)
    # Finished sessions (completed, failed, cancelled) are kept this long, then pruned by the
    # leading scheduler (every ten minutes), except each mailbox's newest 25 (the schedule's
    # back-off reads them; `concord sessions` and the dashboard show them): the schedule's
    # reads grow with the history. At least a day: health counts the failures of the last 24 h.
    session_retention_seconds: float = Field(default=7 * 86400.0, ge=86400)
