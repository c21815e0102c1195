"""Entry point of the ``ivr`` console script.

Every command module exposes ``register(subparsers)`` and sets ``func(args, settings) -> int`` on
its parsers. Settings are built here, once, and passed down.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ivr.logging import configure_logging
from ivr.settings import Settings, load_settings

COMMAND_MODULES = (
    "ivr.cli.db",  # ivr db upgrade
    "ivr.cli.contracts",  # ivr contracts import/show
    "ivr.cli.lab",  # ivr lab build/up/down/status/logs/cli
    "ivr.cli.call",  # ivr call
    "ivr.cli.serve",  # ivr serve, ivr agi (classic AGI)
    "ivr.cli.calls",  # ivr calls
    "ivr.cli.web",  # ivr web
    "ivr.cli.run",  # ivr run (the whole stack)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ivr", description="Temporary-password IVR and web login")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings: Settings = load_settings()
    configure_logging(settings)
    result: int = args.func(args, settings)
    return result


if __name__ == "__main__":
    sys.exit(main())
