"""structlog configuration: JSON lines for operators, console for humans.

Never log a secret: a processor drops values of keys that name one, as a last line of defence.

Cheap on the call path: loggers are cached on first use (a `structlog.get_logger()` proxy binds
once, not at every line), a disabled level is a no-op method of the filtering bound logger, every
logger shares one writer object, and the secret check is decided once per key name. Configuring
again (tests call `main()` in-process) keeps the processor list instance and the output target
that cached loggers hold, so they follow the new set-up (`structlog.testing.capture_logs` relies
on the same); only a changed level is not seen by loggers cached before.

On the daemon's event loop (`lines_batched_on`), a line is not written at once: the lines of one
loop iteration are joined and written with one ``write`` + flush at the start of the next, so 50
calls in flight cost one system call per iteration instead of one per line (a write per line was
the daemon's biggest cost per call after the call itself). A line waits at most one iteration; lines
of other threads are written at once; leaving the block writes what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from ivr.settings import Settings

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


class _CurrentStderrLogger:
    """Writes each line to the stream given to `configure_logging`, else to whatever
    ``sys.stderr`` is at that moment, not when logging was set up.

    A stream captured at set-up time may be closed later (a test harness's capture, a redirected
    stderr), and every later log line would then fail with "I/O operation on closed file".
    """

    _lock = threading.Lock()
    stream: Any = None  # set by configure_logging(stream=...); None: the current sys.stderr
    # set by lines_batched_on(loop): lines logged in that loop's thread wait for the iteration's end
    _loop: asyncio.AbstractEventLoop | None = None
    _loop_thread: int | None = None

    def __init__(self) -> None:
        self._batch: list[str] = []  # touched only by the loop's thread

    def msg(self, message: str) -> None:
        if self._loop_thread is not None and threading.get_ident() == self._loop_thread:
            batch = self._batch
            batch.append(message)
            if len(batch) == 1:
                assert self._loop is not None
                self._loop.call_soon(self.flush_batch)
            return
        self._write(message + "\n")

    def _write(self, text: str) -> None:
        with self._lock:
            stream = self.stream or sys.stderr
            stream.write(text)
            stream.flush()

    def flush_batch(self) -> None:
        """Write the lines the loop's thread has batched (call in that thread)."""
        batch = self._batch
        if batch:
            self._batch = []
            self._write("\n".join(batch) + "\n")

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
    writer._loop, writer._loop_thread = loop, threading.get_ident()
    try:
        yield
    finally:
        writer._loop_thread, writer._loop = None, None
        writer.flush_batch()


def configure_logging(settings: Settings, *, stream: Any = None) -> None:
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
