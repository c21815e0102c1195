"""Entry point of the ``ivr`` console script.

Every command module exposes ``register(subparsers)`` and sets ``func(args, settings) -> int`` on
its parsers. Settings are built here, once, and passed down.

Only the module of the command being run is imported (`COMMANDS`): ``ivr agi`` runs once per call
as a classic AGI script, and must not pay for the lab, SIPp, the web app or alembic. A command line
without a known command (``ivr``, ``ivr --help``, a typo) imports every module for the full usage.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
from collections.abc import Sequence

#: command -> the module that registers it
COMMANDS = {
    "db": "stack.cli.db",  # ivr db upgrade
    "contracts": "stack.cli.contracts",  # ivr contracts import/show
    "lab": "stack.cli.lab",  # ivr lab build/up/down/status/logs/cli
    "call": "stack.cli.call",  # ivr call
    "serve": "stack.cli.serve",  # ivr serve
    "agi": "stack.cli.serve",  # ivr agi (classic AGI)
    "calls": "stack.cli.calls",  # ivr calls
    "web": "stack.cli.web",  # ivr web
    "notices": "stack.cli.notices",  # ivr notices serve/post/list/show/deliveries/destinations/resume
    "run": "stack.cli.run",  # ivr run (the whole stack)
}
COMMAND_MODULES = tuple(dict.fromkeys(COMMANDS.values()))


def _command_of(argv: Sequence[str]) -> str | None:
    """The command named on the command line (the first word not starting with "-")."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with `argv`, only the named command's module is imported."""
    parser = argparse.ArgumentParser(prog="ivr", description="Temporary-password IVR and web login")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    command = _command_of(argv) if argv is not None else None
    for name in (COMMANDS[command],) if command else COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
    args = parser.parse_args(argv)

    from ivr.logging import configure_logging
    from stack.processes import exit_status, stop_on_sigterm
    from stack.settings import load_settings

    stop_on_sigterm()  # a supervisor's stop cleans up exactly as Ctrl-C does
    settings = load_settings()
    configure_logging(settings)
    try:
        result: int = args.func(args, settings)
    except KeyboardInterrupt as interrupt:  # a command without cleanup of its own: no traceback
        return exit_status(interrupt)
    return result


def program() -> int:
    """The ``ivr`` console script (and ``python -m stack.cli.main``): `main`, then an exit that
    does not tidy the heap away object by object.

    Python's teardown at exit collects every tracked object, several times over: 0.4 s of CPU for
    `ivr web`, `ivr serve` or `ivr notices serve`, against 0.02 s for the whole stop before it. At
    load 6 on 2 cores (and `ivr web` runs at nice 15) that took 20 to 40 s of wall time, beyond a
    supervisor's patience. Freezing the objects (`gc.freeze`) moves them out of the collector's
    reach; the kernel takes the memory back at once. Exit handlers, thread joins and the flushing
    of files still run. Not in `main`: a test calling it in-process goes on collecting."""
    code = main()
    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(program())
