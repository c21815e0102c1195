"""The daemon's operations port: ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz``.

A small threaded WSGI server (the one `prometheus_client` serves with) on `AgiSettings.metrics_host`
and `metrics_port`, in its own threads: a scrape or a probe never runs on the event loop that answers
the calls, and a busy event loop cannot hide the metrics.

- ``/healthz`` (alive): 200 when the event loop runs a callback within a second; 503 when it is stuck.
- ``/readyz`` (ready to take calls): 200 while the daemon listens, is not stopping, reaches the
  database and finds its schema current (one SELECT of the alembic revision); 503 with the reason.
- ``/metrics``: the registry of `ivr.metrics.DaemonMetrics`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import structlog
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

LOOP_ALIVE_SECONDS = 1.0

#: None: ready; else the reason it is not (a word, for the probe's body and the log)
Readiness = Callable[[], str | None]
StartResponse = Callable[..., Any]


#: an idle connection on the operations port is closed after this (its thread ends with it)
IDLE_SECONDS = 10.0
#: connections served at once; more are closed at once (a scraper needs one)
MAX_CONNECTIONS = 64


class _QuietHandler(WSGIRequestHandler):
    timeout = IDLE_SECONDS  # StreamRequestHandler: the socket's timeout, so an idle read ends

    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds: not one log line each."""


def loop_alive(loop: asyncio.AbstractEventLoop, timeout: float = LOOP_ALIVE_SECONDS) -> bool:
    """Whether ``loop`` runs a callback within ``timeout`` seconds (called from another thread)."""
    done = threading.Event()
    try:
        loop.call_soon_threadsafe(done.set)
    except RuntimeError:  # the loop is closed
        return False
    return done.wait(timeout)


def _json(start_response: StartResponse, status: str, body: dict[str, str]) -> Iterable[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status,
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [data]


def ops_app(registry: CollectorRegistry, *, alive: Callable[[], bool], readiness: Readiness) -> Any:
    """The WSGI app of the operations port."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _json(start_response, "405 Method Not Allowed", {"error": "method_not_allowed"})
        if path == "/metrics":
            result: Iterable[bytes] = metrics(environ, start_response)
            return result
        if path == "/healthz":
            if alive():
                return _json(start_response, "200 OK", {"status": "ok"})
            return _json(start_response, "503 Service Unavailable", {"status": "stuck"})
        if path == "/readyz":
            reason = readiness()
            if reason is None:
                return _json(start_response, "200 OK", {"status": "ready"})
            return _json(start_response, "503 Service Unavailable", {"status": "not_ready", "reason": reason})
        return _json(start_response, "404 Not Found", {"error": "not_found"})

    return app


class OpsServer:
    """The operations port, served by its own threads until `stop`."""

    def __init__(self, host: str, port: int, app: Any) -> None:
        slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

        class _Server(ThreadingWSGIServer):
            """A thread per connection, at most `MAX_CONNECTIONS` of them, each ending with its
            connection or `IDLE_SECONDS` of silence (connections held open and idle kept a thread
            each, forever)."""

            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            request_queue_size = MAX_CONNECTIONS  # socketserver's 5 drops SYNs of a small burst

            def process_request(self, request: Any, client_address: Any) -> None:
                if not slots.acquire(blocking=False):
                    self.shutdown_request(request)
                    return
                super().process_request(request, client_address)

            def process_request_thread(self, request: Any, client_address: Any) -> None:
                try:
                    super().process_request_thread(request, client_address)
                finally:
                    slots.release()

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # an idle connection timed out, a peer reset: nothing to print to stderr

        self._httpd = make_server(host, port, app, _Server, handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="ivr-ops-http", daemon=True)
        self.log = structlog.get_logger("ivr.daemon")

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        self._thread.start()
        self.log.info("ops_http_listening", port=self.port, paths=["/metrics", "/healthz", "/readyz"])

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
