"""`ivr web`: serve the web login and account pages (Starlette app under uvicorn)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any

from stack.settings import Settings


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "web", help="serve the web login and account pages (Japanese) on WebSettings host/port"
    )
    parser.add_argument("--host", help="listen address (default: settings web.host)")
    parser.add_argument("--port", type=int, help="listen port (default: settings web.port)")
    parser.set_defaults(func=run_web)


def _stopping_at_full_priority(server_class: Any) -> Any:
    """uvicorn's server, that on its stop signal gives up the niceness `ivr web` took, where the
    process may (root, CAP_SYS_NICE, RLIMIT_NICE): at nice 15 on a loaded machine the event loop
    gets a sliver of the CPU, and winding down waited for it (docs/deploy.md "Stopping on a busy
    machine")."""

    class Server(server_class):
        def handle_exit(self, sig: int, frame: Any) -> None:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, 0, 0)  # this thread: the event loop
            super().handle_exit(sig, frame)

    return Server


def run_web(args: argparse.Namespace, settings: Settings) -> int:
    import structlog
    import uvicorn
    from sqlalchemy.exc import SQLAlchemyError

    from core.db import make_engine, schema_is_current
    from web_stub.app import create_app

    log = structlog.get_logger("web")
    host = args.host or settings.web.host
    port = args.port or settings.web.port
    engine = make_engine(settings.effective_database_url)
    try:
        current = schema_is_current(engine)
    except SQLAlchemyError as exc:
        log.error("web_database_unreachable", error_type=type(exc).__name__)
        print(
            f"ivr web: cannot open the database ({type(exc).__name__}); check IVR_DATABASE_URL",
            file=sys.stderr,
        )
        return 2
    finally:
        engine.dispose()
    if not current:
        log.error("web_schema_not_current", hint="run `ivr db upgrade` first")
        print("ivr web: the database schema is missing or old; run `ivr db upgrade` first", file=sys.stderr)
        return 2
    from web_stub.settings import WebSettings

    if settings.web.secret_key.get_secret_value() == WebSettings().secret_key.get_secret_value():
        log.warning("web_secret_key_default", hint="set IVR_WEB__SECRET_KEY to a long random value")
    if not settings.web.cookie_secure:
        log.warning("web_cookie_not_secure", hint="behind HTTPS set IVR_WEB__COOKIE_SECURE=true")
    if settings.web.niceness:
        # On a machine shared with the FastAGI daemon the phone line comes first: a login flood
        # must not take the CPU the callers' password hashes need (the daemon hashes at nice 10).
        os.nice(settings.web.niceness)
    app = create_app(
        settings.web, settings.smtp, settings.credentials, database_url=settings.effective_database_url
    )
    log.info(
        "web_listening",
        url=f"http://{host}:{port}/login",
        idle_logout_seconds=settings.web.session_idle_timeout_seconds,
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # structlog / logging is configured by the entry point
        access_log=False,  # the app logs what matters, without query strings (link tokens)
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=settings.web.shutdown_grace_seconds,
    )
    # uvicorn stops on SIGTERM and SIGINT alike (graceful: requests in progress finish, for up to
    # web.shutdown_grace_seconds), then raises the signal again for its caller: that is us, and
    # stopping is what was asked.
    with contextlib.suppress(KeyboardInterrupt):
        _stopping_at_full_priority(uvicorn.Server)(config).run()
    log.info("web_stopped")
    return 0
