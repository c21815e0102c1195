"""`ivr web`: serve the web login and account pages (Starlette app under uvicorn)."""

from __future__ import annotations

import argparse
from typing import Any

from ivr.settings import Settings


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "web", help="serve the web login and account pages (Japanese) on WebSettings host/port"
    )
    parser.add_argument("--host", help="listen address (default: settings web.host)")
    parser.add_argument("--port", type=int, help="listen port (default: settings web.port)")
    parser.set_defaults(func=run_web)


def run_web(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from web_stub.app import create_app

    host = args.host or settings.web.host
    port = args.port or settings.web.port
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # structlog / logging is configured by the entry point
        access_log=False,  # the app logs what matters, without query strings (link tokens)
        proxy_headers=False,
        server_header=False,
    )
    uvicorn.Server(config).run()
    return 0
