"""What operators watch on the notices process (`ivr notices serve`): ``/metrics`` on the support
site's port, behind ``IVR_NOTICES__METRICS_TOKEN`` (404 without one), like the web's.

- ``ivr_notices_relay_up``: 1 while the worker's SMTP relay answers, 0 while it is down (the queue
  waits, nothing counts against a destination; ops/prometheus/alerts.yml ``NoticeRelayDown``);
- ``ivr_notices_mails_total{result}``: mails by result (sent, retried, failed, put_back).

No label carries a mail address.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

RESULTS = ("sent", "retried", "failed", "put_back")


class NoticeMetrics:
    """Everything the notices process exports, on its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.relay_up = Gauge(
            "ivr_notices_relay_up",
            "1 while the notice worker's SMTP relay answers; 0 while it is down and the queue waits",
            registry=r,
        )
        self.relay_up.set(1)
        self.mails = Counter("ivr_notices_mails", "Notice mails by result", ["result"], registry=r)
        for result in RESULTS:
            self.mails.labels(result)
