"""`ivr db`: the database schema (alembic migrations shipped in ``core/migrations``)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from sqlalchemy.engine import make_url

from stack.settings import Settings


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "db", help="database schema: upgrade to the latest migration, show the current revision"
    )
    commands = parser.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = commands.add_parser("upgrade", help="apply every pending migration (alembic upgrade head)")
    upgrade.add_argument("--revision", default="head", help="target revision (default: head)")
    upgrade.set_defaults(func=_upgrade)
    current = commands.add_parser("current", help="print the schema revision of the database")
    current.set_defaults(func=_current)


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from core.db import current_revision, make_engine, upgrade_database

    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    url = settings.effective_database_url
    try:
        upgrade_database(url, args.revision)
        engine = make_engine(url)
        try:
            revision = current_revision(engine)
        finally:
            engine.dispose()
    except Exception as exc:  # operators get one clear line, not a traceback
        print(f"ivr db upgrade: failed on {_shown(url)}: {type(exc).__name__}: {exc}")
        return 1
    print(f"database {_shown(url)} is at revision {revision}")
    return 0


def _current(args: argparse.Namespace, settings: Settings) -> int:
    from core.db import current_revision, head_revision, make_engine

    logging.getLogger("alembic").setLevel(logging.WARNING)
    url = settings.effective_database_url
    engine = make_engine(url)
    try:
        revision = current_revision(engine)
    finally:
        engine.dispose()
    head = head_revision()
    state = "up to date" if revision == head else f"behind (head is {head}); run `ivr db upgrade`"
    print(f"{_shown(url)}: revision {revision or '(none)'}, {state}")
    return 0 if revision == head else 1
