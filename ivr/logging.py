"""structlog configuration: JSON lines for operators, console for humans.

Never log a secret: a processor drops values of keys that name one, as a last line of defence.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import MutableMapping
from typing import Any

import structlog

from ivr.settings import Settings

_SECRET_KEY_PARTS = ("password", "secret", "token", "code", "digits", "pin")
_ALLOWED_KEYS = {"exit_code", "sip_code", "status_code", "reason_code", "digit_count", "outcome_code"}


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        lowered = key.lower()
        if lowered in _ALLOWED_KEYS:
            continue
        if any(part in lowered for part in _SECRET_KEY_PARTS):
            event_dict[key] = "***"
    return event_dict


class _CurrentStderrLogger:
    """Writes each line to whatever ``sys.stderr`` is at that moment, not when logging was set up.

    A stream captured at set-up time may be closed later (a test harness's capture, a redirected
    stderr), and every later log line would then fail with "I/O operation on closed file".
    """

    _lock = threading.Lock()

    def msg(self, message: str) -> None:
        with self._lock:
            print(message, file=sys.stderr, flush=True)

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


def _current_stderr_logger(*_args: Any) -> _CurrentStderrLogger:
    return _CurrentStderrLogger()


def configure_logging(settings: Settings, *, stream: Any = None) -> None:
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    renderer: Any
    if settings.log_format == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer(ensure_ascii=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=(
            structlog.PrintLoggerFactory(file=stream) if stream is not None else _current_stderr_logger
        ),
        cache_logger_on_first_use=False,
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
