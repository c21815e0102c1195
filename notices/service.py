"""The notices process (`ivr notices serve`): the delivery worker, the bounce listener and the
support site in one asyncio loop; SIGTERM or SIGINT stops it (mails in flight finish and are
recorded first, each within its send timeout)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

import structlog
from sqlalchemy.orm import Session, sessionmaker

from notices.bounces import BounceHandler, start_bounce_listener
from notices.metrics import NoticeMetrics
from notices.settings import organisational_domain_of, sender_domain_problems
from notices.worker import DeliveryWorker

log = structlog.get_logger("notices")


class NoticeConfigError(ValueError):
    """The notices' settings do not fit together; the message names the settings to change."""


def _quiet_server_class() -> Any:
    import uvicorn

    class QuietServer(uvicorn.Server):
        """uvicorn without its own signal handling: this process's stop event ends it."""

        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            yield

    return QuietServer


async def run_service(
    settings: Any,  # stack.settings.Settings
    sessions: sessionmaker[Session],
    *,
    worker: bool = True,
    bounces: bool = True,
    web: bool = True,
    worker_id: str | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    s = settings.notices
    problems = sender_domain_problems(s, organisational_domain_of())
    if problems:
        raise NoticeConfigError("; ".join(problems))
    if s.smtp_host is None:  # default: the one outgoing SMTP server, with its TLS and login
        smtp = settings.smtp
        s = s.model_copy(
            update={
                "smtp_host": smtp.host,
                "smtp_port": s.smtp_port or smtp.port,
                "smtp_start_tls": smtp.start_tls,
                "smtp_username": smtp.username,
                "smtp_password": smtp.password,
            }
        )
    elif s.smtp_port is None:
        s = s.model_copy(update={"smtp_port": 25})
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    metrics = NoticeMetrics()  # the worker's and the site's /metrics (notices.metrics)
    tasks: list[asyncio.Task[Any]] = []
    server = None
    web_server: Any = None
    try:
        if bounces:
            handler = BounceHandler(
                sessions=sessions,
                secret=s.bounce_secret.get_secret_value().encode(),
                domain=s.return_path_domain,
                max_failures=s.max_failures,
            )
            server = await start_bounce_listener(handler, host=s.bounce_host, port=s.bounce_port)
            log.info("bounce_listener_listening", host=s.bounce_host, port=s.bounce_port)
        if web:
            import uvicorn

            from notices.web import create_support_app

            _QuietServer = _quiet_server_class()

            app = create_support_app(settings, sessions, metrics=metrics)
            config = uvicorn.Config(
                app,
                host=s.web_host,
                port=s.web_port,
                log_config=None,
                access_log=False,
                proxy_headers=False,
                server_header=False,
            )
            web_server = _QuietServer(config)
            tasks.append(asyncio.create_task(web_server.serve()))
            log.info("support_site_listening", url=f"{s.base_url}/support/")
        if worker:
            tasks.append(
                asyncio.create_task(
                    DeliveryWorker(sessions=sessions, settings=s, worker_id=worker_id, metrics=metrics).run(
                        stop
                    )
                )
            )
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not waiter and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        stop.set()
        if web_server is not None:
            web_server.should_exit = True
        await asyncio.gather(*tasks)
        waiter.cancel()
    finally:
        for task in tasks:
            task.cancel()
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)
