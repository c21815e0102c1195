"""structlog configuration: JSON lines for operators, console for humans.

Never log a secret: a processor drops values of keys that name one, as a last line of defence.
"""

from __future__ import annotations

import logging
import sys
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
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=level, stream=stream or sys.stderr, format="%(levelname)s %(name)s %(message)s")
    # Schema migrations are reported by `ivr db upgrade` itself; alembic's step-by-step lines are noise.
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))
