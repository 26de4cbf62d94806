"""mail-connector settings, from `MAIL_CONNECTOR_*` variables and `NATS_URL`."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from concord_runtime.identity import CallerIdentitySettings
from concord_secrets import FernetKey
from concord_settings import DEFAULT_PORTS, ServiceSettings, SettingsConfigDict, nats


class MailConnectorSettings(ServiceSettings, CallerIdentitySettings):
    model_config = SettingsConfigDict(env_prefix="MAIL_CONNECTOR_")
    service_name: ClassVar[str] = "mail-connector"

    port: int = DEFAULT_PORTS["mail-connector"]
    # Fernet key for mailbox secrets. Unset: a key generated once into
    # <CONCORD_VAR_DIR>/secrets/mail-connector.key, so the embedded default needs no setup.
    encryption_key: FernetKey | None = None
    # EWS calls in flight at once for the whole process (exchangelib blocks a thread per call).
    ews_max_workers: int = 16
    # Longest ErrorServerBusy back-off waited out inside one call; longer ones (or ones past
    # the caller's deadline) answer RESOURCE_EXHAUSTED with RetryInfo instead.
    ews_max_back_off_seconds: float = 30.0
    # Seconds one EWS request may take before it counts as lost (UNAVAILABLE / RETRYABLE).
    ews_request_timeout_seconds: float = 30.0
    # Google calls in flight at once for the whole process (the client blocks a thread each).
    google_max_workers: int = 16
    # Longest quota back-off (403 rateLimitExceeded / 429, doubling per refusal) waited out
    # inside one call; longer ones answer RESOURCE_EXHAUSTED with RetryInfo instead.
    google_max_back_off_seconds: float = 30.0
    # Seconds one Google request may take before it counts as lost.
    google_request_timeout_seconds: float = 30.0
    # A CA bundle Google endpoints are also trusted by (the devstack's emulator); unset: the
    # system's only.
    google_ca_file: str | None = None
    # Google Calendar push: the HTTPS receiver watch channels POST to (port 0: none, Google
    # mailboxes are then polled). Its certificate is made once under
    # <CONCORD_VAR_DIR>/google-push/ (ca.pem is what the sender must trust).
    google_push_host: str = "127.0.0.1"
    google_push_port: int = Field(default=0, ge=0, le=65535)
    # The receiver's address as Google reaches it (behind a proxy); unset: host and port above.
    google_push_url: str | None = None
    # A channel's requested lifetime, and how long before its expiry it is replaced.
    google_channel_seconds: float = Field(default=24 * 3600, gt=0)
    google_channel_renew_margin_seconds: float = Field(default=600, gt=0)
    # How often each Google mailbox's Gmail history id is asked for (the email hint).
    google_gmail_poll_seconds: float = Field(default=30.0, gt=0)
    # Gmail push: the Pub/Sub topic `users.watch` publishes to (Gmail granted publish on it),
    # whose push subscription POSTs to the receiver's /google/gmail/pubsub?token=<token>.
    # Unset: Gmail is polled.
    google_pubsub_topic: str | None = None
    google_pubsub_token: str | None = None

    # Graph: the longest 429/503 Retry-After waited out inside one call (longer ones answer
    # RESOURCE_EXHAUSTED), one request's time limit, and a CA file to trust for Graph and its
    # login endpoint instead of the system's (an emulator's CA in the devstack).
    graph_max_back_off_seconds: float = 30.0
    graph_request_timeout_seconds: float = 30.0
    graph_ca_bundle: str | None = None
    # Graph push: the webhook receiver's public URL (what Graph POSTs to; behind the gateway's
    # ingress or its own Service in Kubernetes) and where it listens. Unset: Graph mailboxes are
    # not pushed, only synced on the schedule.
    graph_webhook_url: str | None = None
    graph_webhook_host: str = "0.0.0.0"
    graph_webhook_port: int = 50080
    # How long each Graph subscription is made for (Outlook resources: 7 days at most).
    graph_subscription_hours: float = Field(default=48.0, gt=0, le=168)

    # Push: EWS notifications become `concord.mail.changed.<mailbox>` hints on NATS.
    nats_url: str = nats()
    push_enabled: bool = True
    # At most one hint per mailbox per window; the first change after a quiet window goes at once.
    push_window_seconds: float = Field(default=0.2, gt=0)
    # How soon an added, changed or removed mailbox account is watched or let go.
    push_rescan_seconds: float = Field(default=10.0, gt=0)
    # While push cannot be kept up for a mailbox, a hint this often (the session is the poll).
    push_poll_seconds: float = Field(default=300.0, gt=0)
    # One streaming connection's length before it is renewed (EWS allows 1 to 30 minutes).
    push_stream_minutes: int = Field(default=30, ge=1, le=30)
    # How often a pull subscription (the fallback when streaming fails) is asked.
    push_pull_seconds: float = Field(default=2.0, gt=0)
    # Longest wait between attempts to re-create a lost subscription.
    push_max_back_off_seconds: float = Field(default=30.0, gt=0)
