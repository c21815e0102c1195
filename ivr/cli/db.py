"""`ivr db`: placeholder until its owner fills it in."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("db", help="(not yet implemented)")
    parser.set_defaults(func=_not_yet)


def _not_yet(args: argparse.Namespace, settings: Any) -> int:
    raise SystemExit("ivr db: not implemented yet")
