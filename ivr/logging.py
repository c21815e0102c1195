"""structlog configuration: JSON lines for operators, console for humans.

Never log a secret: a processor drops values of keys that name one, as a last line of defence.

Cheap on the call path: loggers are cached on first use (a `structlog.get_logger()` proxy binds
once, not at every line), a disabled level is a no-op method of the filtering bound logger, every
logger shares one writer object, and the secret check is decided once per key name. Configuring
again (tests call `main()` in-process) keeps the processor list instance and the output target
that cached loggers hold, so they follow the new set-up (`structlog.testing.capture_logs` relies
on the same); only a changed level is not seen by loggers cached before.

On the daemon's event loop (`lines_batched_on`), no line is written by the loop itself: the lines
of up to `LOOP_FLUSH_SECONDS` (10 ms) are joined and handed to one writer thread, which writes them
with one ``write`` + flush. So 50 calls in flight cost one hand-over per 10 ms instead of one system
call per line (the write per line was the daemon's biggest cost per call after the call itself),
and a slow log sink (a full pipe, a stalled journald) holds up the writer thread, never the calls.
Lines of other threads go through the same thread, in order. Bounded: past `MAX_QUEUED_BYTES`
waiting to be written, lines are dropped and counted, and a ``log_lines_dropped`` line says how many
once the sink takes lines again. Leaving the block writes everything queued, then lines are written
at once again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import sys
import threading
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from ivr.settings import VoiceSettings

_SECRET_KEY_PARTS = ("password", "secret", "token", "code", "digits", "pin")
_ALLOWED_KEYS = {"exit_code", "sip_code", "status_code", "reason_code", "digit_count", "outcome_code"}


_SECRET_KEYS: dict[str, bool] = {}  # key name -> names a secret (decided once per name)
_SECRET_KEYS_MAX = 4096  # key names come from code; the bound only guards against generated ones


def _names_secret(key: str) -> bool:
    lowered = key.lower()
    return lowered not in _ALLOWED_KEYS and any(part in lowered for part in _SECRET_KEY_PARTS)


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    secret_keys = _SECRET_KEYS
    for key in list(event_dict):
        secret = secret_keys.get(key)
        if secret is None:
            secret = _names_secret(key)
            if len(secret_keys) < _SECRET_KEYS_MAX:
                secret_keys[key] = secret
        if secret:
            event_dict[key] = "***"
    return event_dict


MAX_QUEUED_BYTES = 8 * 1024 * 1024  # log text waiting for a slow sink before lines are dropped
LOOP_FLUSH_SECONDS = 0.01  # the longest a line of the loop's thread waits to be handed over


class _CurrentStderrLogger:
    """Writes each line to the stream given to `configure_logging`, else to whatever
    ``sys.stderr`` is at that moment, not when logging was set up.

    A stream captured at set-up time may be closed later (a test harness's capture, a redirected
    stderr), and every later log line would then fail with "I/O operation on closed file".
    """

    _lock = threading.Lock()
    stream: Any = None  # set by configure_logging(stream=...); None: the current sys.stderr

    def __init__(self) -> None:
        # set by lines_batched_on(loop): lines of that loop's thread wait for the iteration's end
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._batch: list[str] = []  # touched only by the loop's thread
        self._queue: queue.SimpleQueue[str | None] | None = None  # to the writer thread
        self._queued_lock = threading.Lock()
        self._queued_bytes = 0
        self.max_queued_bytes = MAX_QUEUED_BYTES
        self.stop_timeout = 10.0  # seconds leaving lines_batched_on waits for a stalled sink
        self.dropped_lines = 0  # dropped since the last report (a log_lines_dropped line)
        self._thread: threading.Thread | None = None

    def msg(self, message: str) -> None:
        if self._loop_thread is not None and threading.get_ident() == self._loop_thread:
            batch = self._batch
            batch.append(message)
            if len(batch) == 1:
                assert self._loop is not None
                self._loop.call_later(LOOP_FLUSH_SECONDS, self.flush_batch)
            return
        texts = self._queue  # read once: stop_writer may clear it meanwhile
        if texts is not None:
            self._hand_over(texts, message + "\n", 1)
        else:
            self._write(message + "\n")

    def _write(self, text: str) -> None:
        with self._lock:
            stream = self.stream or sys.stderr
            stream.write(text)
            stream.flush()

    def flush_batch(self) -> None:
        """Hand the lines the loop's thread has batched to the writer (call in that thread)."""
        batch = self._batch
        if not batch:
            return
        self._batch = []
        text = "\n".join(batch) + "\n"
        texts = self._queue
        if texts is not None:
            self._hand_over(texts, text, len(batch))
        else:
            self._write(text)

    def _hand_over(self, texts: queue.SimpleQueue[str | None], text: str, lines: int) -> None:
        with self._queued_lock:
            if self._queued_bytes + len(text) > self.max_queued_bytes:
                self.dropped_lines += lines
                return
            self._queued_bytes += len(text)
        texts.put(text)

    def _run_writer(self, texts: queue.SimpleQueue[str | None]) -> None:
        while (text := texts.get()) is not None:
            try:
                self._write(text)
                written = True
            except Exception:  # a closed or broken sink: the calls go on without their log
                written = False
            with self._queued_lock:
                self._queued_bytes -= len(text)
                if written:
                    dropped, self.dropped_lines = self.dropped_lines, 0
                else:
                    dropped = 0
                    self.dropped_lines += text.count("\n")
            if dropped:  # the sink takes lines again: say how many it missed
                self._report_dropped(dropped)

    def _report_dropped(self, count: int) -> None:
        line = json.dumps({"count": count, "event": "log_lines_dropped", "level": "warning"})
        with contextlib.suppress(Exception):
            self._write(line + "\n")

    def start_writer(self) -> None:
        if self._queue is None:
            texts: queue.SimpleQueue[str | None] = queue.SimpleQueue()
            self._queue = texts
            self._thread = threading.Thread(
                target=self._run_writer, args=(texts,), name="ivr_log_writer", daemon=True
            )
            self._thread.start()

    def stop_writer(self, timeout: float = 10.0) -> None:
        """Write everything queued, then stop the thread (lines are written at once again)."""
        texts = self._queue
        if texts is None:
            return
        self._queue = None
        texts.put(None)
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():  # the sink is stalled: what is still queued is lost, not waited for
                return
        # what another thread handed over while the writer was stopping: written here, in order
        leftovers: list[str] = []
        with contextlib.suppress(queue.Empty):
            while True:
                text = texts.get_nowait()
                if text is not None:
                    leftovers.append(text)
        if leftovers:
            with contextlib.suppress(Exception):
                self._write("".join(leftovers))
        with self._queued_lock:
            self._queued_bytes = 0
            dropped, self.dropped_lines = self.dropped_lines, 0
        if dropped:
            self._report_dropped(dropped)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class _CurrentStderrHandler(logging.Handler):
    """The standard-library counterpart of `_CurrentStderrLogger`."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


_WRITER = _CurrentStderrLogger()  # one for every logger: binding allocates no writer
_PROCESSORS: list[Any] = []  # one list instance for the process (see the module docstring)


def _writer(*_args: Any) -> _CurrentStderrLogger:
    return _WRITER


@contextlib.contextmanager
def lines_batched_on(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """Within the block, lines logged in `loop`'s thread (which must be this one) are written once
    per loop iteration; on leaving it, what is batched is written and lines go out at once again."""
    writer = _WRITER
    writer.flush_batch()
    writer.start_writer()
    writer._loop, writer._loop_thread = loop, threading.get_ident()
    try:
        yield
    finally:
        writer._loop_thread, writer._loop = None, None
        writer.flush_batch()
        writer.stop_writer(writer.stop_timeout)


def configure_logging(settings: VoiceSettings, *, stream: Any = None) -> None:
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    renderer: Any
    if settings.log_format == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer(ensure_ascii=False)
    _WRITER.stream = stream
    _PROCESSORS[:] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
        structlog.processors.format_exc_info,
        renderer,
    ]
    structlog.configure(
        processors=_PROCESSORS,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_writer,
        cache_logger_on_first_use=True,
    )
    handler: logging.Handler = (
        logging.StreamHandler(stream) if stream is not None else _CurrentStderrHandler()
    )
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    handler.set_name("ivr")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "ivr"]:
        root.removeHandler(old)  # configuring twice (tests call main() in-process) replaces ours only
    root.addHandler(handler)
    root.setLevel(level)
    # Schema migrations are reported by `ivr db upgrade` itself; alembic's step-by-step lines are noise.
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))
