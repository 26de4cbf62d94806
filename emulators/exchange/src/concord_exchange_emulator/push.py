"""Push subscriptions: the server calls the client. Exchange POSTs a SendNotification request to
the subscription's URL with the new events (a status event every StatusFrequency minutes when
there are none); the client's SendNotificationResult says OK or Unsubscribe. A URL that keeps
failing ends the subscription, as Exchange gives up on an unreachable client."""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request

from lxml import etree

from concord_exchange_emulator import ews
from concord_exchange_emulator.store import Store
from concord_exchange_emulator.xmlns import M, T

log = logging.getLogger(__name__)

# How often the sender looks for new events (bounds the change → notification latency).
POLL_SECONDS = 0.2
# Consecutive failed deliveries after which the subscription ends.
MAX_FAILURES = 5
SEND_TIMEOUT_SECONDS = 5


class PushSender:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ews-push", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(SEND_TIMEOUT_SECONDS + 1)

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                self.deliver_due(time.time())
            except Exception:  # the sender must outlive one bad subscription or a closed store
                log.exception("push delivery failed")

    def deliver_due(self, now: float) -> None:
        """Send every notification that is due: new events, or a status event at the frequency;
        a failed one is retried after as many seconds as it failed in a row."""
        for sub_id, url, minutes, last_sent, failures in self.store.push_targets():
            found = self.store.subscription(sub_id)
            if found is None:
                self.store.drop_push(sub_id)
                continue
            mailbox, folder_ids, _, after = found
            has_events = bool(self.store.changes(folder_ids, after, mailbox))
            due = has_events or now - last_sent >= minutes * 60
            if not due or (failures and now - last_sent < failures):
                continue
            built = ews.push_notification(self.store, sub_id)
            if built is None:
                continue
            document, watermark = built
            status = self._post(url, document)
            if status is None:
                self.store.push_sent(sub_id, now, failed=True)
                if failures + 1 >= MAX_FAILURES:
                    self.store.drop_push(sub_id)
                continue
            self.store.set_watermark(sub_id, watermark)
            self.store.push_sent(sub_id, now, failed=False)
            if status == "Unsubscribe":
                self.store.drop_push(sub_id)

    @staticmethod
    def _post(url: str, document: etree._Element) -> str | None:
        """The client's SubscriptionStatus (OK or Unsubscribe); None when delivery failed."""
        body = etree.tostring(document, xml_declaration=True, encoding="utf-8")
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"content-type": "text/xml; charset=utf-8"}
        )
        try:
            with urllib.request.urlopen(request, timeout=SEND_TIMEOUT_SECONDS) as response:
                answer = etree.fromstring(response.read())
        except (OSError, urllib.error.URLError, etree.XMLSyntaxError):
            return None
        # m:SubscriptionStatus by the schema; some clients answer it in t:.
        for namespace in (M, T):
            status = answer.findtext(f".//{{{namespace}}}SubscriptionStatus")
            if status:
                return status.strip()
        return "OK"
