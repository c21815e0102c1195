"""`ivr serve`: the FastAGI daemon and the AMI listener; `ivr agi`: one call as classic AGI.

Configuration comes from `ivr.settings.Settings` (``IVR_AGI__PORT``, ``IVR_MENU__...``,
``IVR_AMI__...``, ``IVR_DATABASE_URL``; see docs/voice.md). SIGTERM / SIGINT stop accepting new
calls, let calls in progress finish (up to ``--grace`` seconds), then exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

import structlog

from ivr.settings import Settings


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve", help="run the FastAGI daemon (temporary-password line) and the AMI listener"
    )
    parser.add_argument("--host", help="address to listen on (default: settings agi.host)")
    parser.add_argument("--port", type=int, help="FastAGI port (default: settings agi.port, 4573)")
    parser.add_argument("--no-ami", action="store_true", help="do not connect to the Asterisk Manager")
    parser.add_argument("--grace", type=float, default=15.0, help="seconds calls may finish on shutdown")
    parser.set_defaults(func=serve)

    agi: argparse.ArgumentParser = subparsers.add_parser(
        "agi", help="run one call as a classic AGI script over stdin/stdout (process per call)"
    )
    agi.set_defaults(func=classic_agi)


def _store(settings: Settings) -> Any:
    from core.db import make_engine, make_session_factory, schema_is_current
    from ivr.flow.store import SqlCallStore

    engine = make_engine(settings.effective_database_url)
    if not schema_is_current(engine):
        raise SystemExit("ivr: the database schema is not current; run `ivr db upgrade` first")
    return SqlCallStore(make_session_factory(engine))


def serve(args: argparse.Namespace, settings: Settings) -> int:
    agi_settings = settings.agi
    updates: dict[str, Any] = {}
    if args.host:
        updates["host"] = args.host
    if args.port:
        updates["port"] = args.port
    if updates:
        agi_settings = agi_settings.model_copy(update=updates)
    store = _store(settings)
    return asyncio.run(
        _serve(settings, agi_settings, store, ami=not args.no_ami and settings.ami.enabled, grace=args.grace)
    )


async def _serve(settings: Settings, agi_settings: Any, store: Any, *, ami: bool, grace: float) -> int:
    from ivr.ami.listener import AmiListener
    from ivr.daemon.server import FastAgiServer

    log = structlog.get_logger("ivr.daemon")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    server = FastAgiServer(agi_settings, settings.menu, store)
    try:
        await server.start()
    except OSError as exc:
        log.error("fastagi_cannot_listen", host=agi_settings.host, port=agi_settings.port, error=str(exc))
        return 1
    listener = AmiListener(settings.ami) if ami else None
    if listener is not None:
        await listener.start()
    log.info(
        "daemon_ready",
        max_concurrent_calls=agi_settings.max_concurrent_calls,
        ami=listener is not None,
        database=settings.effective_database_url.split("://", 1)[0],
    )
    await stop.wait()
    log.info("daemon_stopping")
    await server.stop(grace_seconds=grace)
    if listener is not None:
        with contextlib.suppress(Exception):
            await listener.stop()
    return 0


def classic_agi(args: argparse.Namespace, settings: Settings) -> int:
    """One call: Asterisk runs this process with the AGI environment on stdin."""
    from ivr.daemon.classic import ClassicAgiChannel
    from ivr.flow.temporary_password import temporary_password_call

    store = _store(settings)
    channel = ClassicAgiChannel.from_stdio()
    asyncio.run(temporary_password_call(channel, store=store, menu=settings.menu))
    sys.stdout.flush()
    return 0
