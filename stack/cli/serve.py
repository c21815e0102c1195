"""`ivr serve`: the FastAGI daemon and the AMI listener; `ivr agi`: one call as classic AGI.

Configuration comes from `stack.settings.Settings` (``IVR_AGI__PORT``, ``IVR_MENU__...``,
``IVR_AMI__...``, ``IVR_DATABASE_URL``; see docs/voice.md). SIGTERM / SIGINT stop accepting new
calls, let calls in progress finish (up to ``--grace`` seconds), then exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Mapping
from typing import Any

import structlog

from ivr.settings import SecretError, agi_secret, ami_secret
from stack.settings import Settings

SD_LISTEN_FDS_START = 3


def inherited_sockets(environ: Mapping[str, str]) -> list[socket.socket]:
    """Listening sockets handed over by systemd socket activation (``LISTEN_FDS``, ``LISTEN_PID``):
    systemd holds the privileged port even while the daemon restarts."""
    if environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = int(environ.get("LISTEN_FDS", "0") or 0)
    return [socket.socket(fileno=SD_LISTEN_FDS_START + i) for i in range(count)]


def drop_privileges(user: str) -> None:
    """After binding the privileged port as root, run as `user` (no way back)."""
    import pwd

    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    if os.getuid() == 0 and entry.pw_uid != 0:
        raise OSError("could not drop root privileges")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve", help="run the FastAGI daemon (temporary-password line) and the AMI listener"
    )
    parser.add_argument("--host", help="address to listen on (default: settings agi.host)")
    parser.add_argument("--port", type=int, help="FastAGI port (default: settings agi.port, 573)")
    parser.add_argument("--no-ami", action="store_true", help="do not connect to the Asterisk Manager")
    parser.add_argument(
        "--grace",
        type=float,
        default=None,
        help="seconds calls may finish on shutdown (default: settings agi.shutdown_grace_seconds, 15)",
    )
    parser.set_defaults(func=serve)

    agi: argparse.ArgumentParser = subparsers.add_parser(
        "agi", help="run one call as a classic AGI script over stdin/stdout (process per call)"
    )
    agi.set_defaults(func=classic_agi)


def _store(settings: Settings, engine: Any = None) -> Any:
    from core.db import make_engine, make_read_session_factory, make_session_factory, schema_is_current
    from ivr.flow.store import SqlCallStore

    engine = engine or make_engine(settings.effective_database_url)
    if not schema_is_current(engine):
        raise SystemExit("ivr: the database schema is not current; run `ivr db upgrade` first")
    # Lookups on read-only sessions; call records written at once here (classic `ivr agi`, stamped
    # with no node) until `_serve` attaches its batching writer.
    return SqlCallStore(make_session_factory(engine), read_session_factory=make_read_session_factory(engine))


def serve(args: argparse.Namespace, settings: Settings) -> int:
    agi_settings = settings.agi
    updates: dict[str, Any] = {}
    if args.host:
        updates["host"] = args.host
    if args.port:
        updates["port"] = args.port
    if updates:
        agi_settings = agi_settings.model_copy(update=updates)
    from core.db import make_engine
    from ivr.metrics import DaemonMetrics

    engine = make_engine(settings.effective_database_url)
    metrics = DaemonMetrics()
    metrics.count_database_errors(engine)
    store = _store(settings, engine)
    return asyncio.run(
        _serve(
            settings,
            agi_settings,
            store,
            engine=engine,
            metrics=metrics,
            ami=not args.no_ami and settings.ami.enabled,
            grace=agi_settings.shutdown_grace_seconds if args.grace is None else args.grace,
        )
    )


async def _serve(
    settings: Settings,
    agi_settings: Any,
    store: Any,
    *,
    engine: Any,
    metrics: Any,
    ami: bool,
    grace: float,
) -> int:
    from ivr.logging import lines_batched_on

    with lines_batched_on(asyncio.get_running_loop()):  # the loop hands its log lines to a writer thread
        return await _serve_batched(
            settings, agi_settings, store, engine=engine, metrics=metrics, ami=ami, grace=grace
        )


async def _serve_batched(
    settings: Settings,
    agi_settings: Any,
    store: Any,
    *,
    engine: Any,
    metrics: Any,
    ami: bool,
    grace: float,
) -> int:
    from core.db import database_readiness
    from ivr.ami.listener import AmiListener, LiveChannel
    from ivr.daemon.health import OpsServer, loop_alive, ops_app
    from ivr.daemon.server import FastAgiServer

    log = structlog.get_logger("ivr.daemon")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    from ivr.flow.records import attach_records_writer

    records = attach_records_writer(store, agi_settings)  # call records queued, one writer thread
    try:
        secret = agi_secret(settings)
    except (OSError, SecretError) as exc:
        log.error("fastagi_no_secret", error=str(exc))
        return 1
    server = FastAgiServer(
        agi_settings,
        settings.menu,
        store,
        secret=secret,
        sockets=inherited_sockets(os.environ),
        metrics=metrics,
    )

    def readiness() -> str | None:
        if not server.listening:
            return "stopping" if server.stopping else "not_listening"
        return database_readiness(engine)

    try:  # before listening: the first calls after a restart pay nothing extra
        await asyncio.to_thread(store.warm_up)
    except Exception as exc:  # the calls will say what is wrong with the database
        log.warning("warm_up_failed", error_type=type(exc).__name__)
    ops: OpsServer | None = None
    where = {"host": agi_settings.host, "port": agi_settings.port}
    try:
        await server.start()
        if agi_settings.metrics_port is not None:  # bound as root too, before dropping privileges
            where = {"host": agi_settings.metrics_host, "port": agi_settings.metrics_port, "what": "metrics"}
            app = ops_app(metrics.registry, alive=lambda: loop_alive(loop), readiness=readiness)
            ops = OpsServer(agi_settings.metrics_host, agi_settings.metrics_port, app)
        if agi_settings.run_as_user:
            drop_privileges(agi_settings.run_as_user)
    except OSError as exc:
        log.error("fastagi_cannot_listen", **where, error=str(exc))
        await server.stop(grace_seconds=0)
        if records is not None:
            await asyncio.to_thread(records.close)
        return 1
    if records is not None:  # listening proves no live daemon has our node id: close its leftovers
        await asyncio.to_thread(records.start)
    listener = None
    if ami:
        try:
            listener = AmiListener(
                settings.ami,
                secret=ami_secret(settings),
                own_calls=lambda: [
                    LiveChannel(uniqueid, channel="", caller=caller, exten=exten, state="Up")
                    for uniqueid, caller, exten in server.live_calls()
                ],
            )
        except (OSError, SecretError) as exc:
            log.error("ami_no_secret", error=str(exc))
            await server.stop(grace_seconds=0)
            if records is not None:
                await asyncio.to_thread(records.close)
            return 1
    if listener is not None:
        metrics.watch_ami(listener.connected.is_set)
        await listener.start()
    if ops is not None:
        ops.start()
    metrics.ready.set_function(lambda: 1.0 if server.listening else 0.0)
    log.info(
        "daemon_ready",
        max_concurrent_calls=agi_settings.max_concurrent_calls,
        ami=listener is not None,
        database=settings.effective_database_url.split("://", 1)[0],
    )
    await stop.wait()
    log.info("daemon_stopping", grace_seconds=grace)
    await server.stop(grace_seconds=grace)  # /readyz says "stopping" from its first moment
    if records is not None:
        await asyncio.to_thread(records.close)  # every queued call record written before exit
    if listener is not None:
        with contextlib.suppress(Exception):
            await listener.stop()
    if ops is not None:
        await asyncio.to_thread(ops.stop)
    engine.dispose()
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
