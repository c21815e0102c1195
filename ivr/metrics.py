"""The FastAGI daemon's Prometheus metrics (docs/deploy.md "Metrics").

One `DaemonMetrics` is built by the entry point (`ivr serve`) on its own registry and handed to the
server, the flow and the AMI listener; nothing here is global. On the call path a hook is one
counter increment or one histogram observation: values the daemon keeps anyway (calls in progress,
the hash queue, rejected connections, the AMI state) are read only when Prometheus scrapes.

No label carries a phone number, a password, a mail address or a call id: labels are outcomes,
steps, AGI command names and rejection reasons, all from fixed sets in the code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

#: outcomes of a call (ivr.flow.temporary_password.Outcome), created at 0 so rate() sees the first one
CALL_OUTCOMES = (
    "completed",
    "too_many_wrong_unit",
    "too_many_wrong_number",
    "too_many_wrong_password",
    "caller_hung_up",
    "caller_id_withheld",
    "caller_not_eligible",
    "system_error",
    "busy",
)
ENTRY_STEPS = ("unit", "number", "password", "confirm")
#: AGI commands whose second word says what they do (GET DATA, EXEC Playback ...)
TWO_WORD_COMMANDS = frozenset({"GET", "SET", "EXEC", "CHANNEL", "STREAM", "DATABASE", "SAY", "WAIT"})

# seconds: a prompt's playback or a caller's entry takes seconds, a hash tens of milliseconds
STEP_BUCKETS = (0.5, 1, 2, 4, 6, 8, 10, 15, 20, 30, 45, 60, 90)
AGI_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
HASH_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2, 5)
CALL_BUCKETS = (5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600)


def agi_command_label(words: tuple[str, ...]) -> str:
    """The command's name without its arguments: ``GET DATA``, ``EXEC Background``, ``ANSWER``."""
    if not words:
        return "none"
    first = words[0].upper()
    if first in TWO_WORD_COMMANDS and len(words) > 1:
        return f"{first} {words[1]}"[:40]
    return first[:40]


class _CountsCollector(Collector):
    """A counter whose value the daemon keeps anyway (a `collections.Counter`), read at scrape."""

    def __init__(self, name: str, documentation: str, label: str) -> None:
        self.name, self.documentation, self.label = name, documentation, label
        self.source: Callable[[], Mapping[str, int]] = dict

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, count in sorted(self.source().items()):
            family.add_metric([value[:60]], count)
        yield family


class DaemonMetrics:
    """Everything the daemon exports, on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.calls = Counter("ivr_calls", "Calls ended, by outcome", ["outcome"], registry=r)
        for outcome in CALL_OUTCOMES:
            self.calls.labels(outcome)
        self.calls_in_progress = Gauge("ivr_calls_in_progress", "Calls being served now", registry=r)
        self.call_duration = Histogram(
            "ivr_call_duration_seconds", "Length of a call in the daemon", buckets=CALL_BUCKETS, registry=r
        )
        self.step_duration = Histogram(
            "ivr_step_duration_seconds",
            "Time from a step's prompt to the end of the caller's entry, by step",
            ["step"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.wrong_entries = Counter(
            "ivr_wrong_entries", "Entries refused (wrong, or nothing typed), by step", ["step"], registry=r
        )
        # the children of labelled series, looked up once: `labels()` takes a lock and builds a key
        self._step_children = {step: self.step_duration.labels(step) for step in ENTRY_STEPS}
        self._wrong_children = {step: self.wrong_entries.labels(step) for step in ENTRY_STEPS}
        self._call_children = {outcome: self.calls.labels(outcome) for outcome in CALL_OUTCOMES}
        self.agi_command = Histogram(
            "ivr_agi_command_seconds",
            "AGI command round trip (sent to reply), by command; playback and key entry included",
            ["command"],
            buckets=AGI_BUCKETS,
            registry=r,
        )
        self._agi_children: dict[str, Any] = {}
        self.hash_queue = Gauge(
            "ivr_password_hash_queue", "Password hashes waiting for a hashing thread", registry=r
        )
        self.hash_duration = Histogram(
            "ivr_password_hash_seconds", "Time to hash a temporary password", buckets=HASH_BUCKETS, registry=r
        )
        self.progress_sounds = Counter(
            "ivr_progress_sounds",
            "Waits long enough for the caller to hear the progress sound, by step",
            ["step"],
            registry=r,
        )
        self.waits_too_long = Counter(
            "ivr_waits_too_long",
            "Waits past the menu's max_wait_seconds (the caller heard the apology), by step",
            ["step"],
            registry=r,
        )
        self.database_errors = Counter(
            "ivr_database_errors", "Errors raised by the database driver (connection lost, ...)", registry=r
        )
        self.ami_connected = Gauge(
            "ivr_ami_connected", "1 while logged in to the Asterisk Manager Interface", registry=r
        )
        self.ready = Gauge("ivr_daemon_ready", "1 while the daemon takes calls (0 once it stops)", registry=r)
        self.rejected = _CountsCollector(
            "ivr_agi_connections_rejected",
            "FastAGI connections closed before a call ran, by reason",
            "reason",
        )
        r.register(self.rejected)

    # ------------------------------------------------------------------ hooks (one line each)
    def call_ended(self, outcome: str | None, seconds: float) -> None:
        outcome = outcome or "system_error"
        (self._call_children.get(outcome) or self.calls.labels(outcome)).inc()
        self.call_duration.observe(seconds)

    def entry(self, step: str, accepted: bool, seconds: float) -> None:
        (self._step_children.get(step) or self.step_duration.labels(step)).observe(seconds)
        if not accepted:
            (self._wrong_children.get(step) or self.wrong_entries.labels(step)).inc()

    def hashed(self, seconds: float) -> None:
        self.hash_duration.observe(seconds)

    def progress_sound(self, step: str) -> None:
        self.progress_sounds.labels(step).inc()

    def wait_too_long(self, step: str) -> None:
        self.waits_too_long.labels(step).inc()

    def agi_round_trip(self, words: tuple[str, ...], seconds: float) -> None:
        key = words[0] + (words[1] if len(words) > 1 and words[0] in TWO_WORD_COMMANDS else "")
        child = self._agi_children.get(key)
        if child is None:
            child = self._agi_children[key] = self.agi_command.labels(agi_command_label(words))
        child.observe(seconds)

    # ------------------------------------------------------------------ values read at scrape
    def watch_server(
        self,
        *,
        calls_in_progress: Callable[[], float],
        hash_queue: Callable[[], float],
        rejected: Callable[[], Mapping[str, int]],
    ) -> None:
        self.calls_in_progress.set_function(calls_in_progress)
        self.hash_queue.set_function(hash_queue)
        self.rejected.source = rejected

    def watch_ami(self, connected: Callable[[], bool]) -> None:
        self.ami_connected.set_function(lambda: 1.0 if connected() else 0.0)

    def count_database_errors(self, engine: Any) -> None:
        """Every error the driver raises on ``engine``'s connections (SQLAlchemy's handle_error)."""
        from sqlalchemy import event

        event.listen(engine, "handle_error", lambda _context: self.database_errors.inc())
