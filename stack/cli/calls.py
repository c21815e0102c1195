"""`ivr calls`: the call log for operators, from the call records (finished and in progress).

    ivr calls                         the last 50 calls, newest last
    ivr calls --since 2h              calls started in the last two hours (also 30m, 1d, 45s, or ISO
                                      8601 such as 2026-11-22T09:00 in local time)
    ivr calls --number 0300001111     calls from, or setting a password for, that number
    ivr calls --outcome too_many_wrong_unit
    ivr calls --json                  one JSON object per line
    ivr calls --follow                keep printing calls as they start and end (Ctrl-C stops)

Nothing secret is in a call record: no digit a caller typed for a password.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from stack.settings import Settings

OUTCOMES = (
    "completed",
    "too_many_wrong_unit",
    "too_many_wrong_number",
    "too_many_wrong_password",
    "caller_hung_up",
    "caller_id_withheld",
    "caller_not_eligible",
    "system_error",
    "busy",
)
_RELATIVE = re.compile(r"(?P<amount>[0-9]+)\s*(?P<unit>[smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
LIVE_WINDOW = timedelta(hours=2)  # calls still in progress are looked for this far back


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "calls",
        help="show the call log (finished and live calls)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing calls as they happen")
    parser.add_argument("--since", type=parse_since, metavar="T", help="30m, 2h, 1d or an ISO 8601 time")
    parser.add_argument("--number", metavar="N", help="caller or target number")
    parser.add_argument("--outcome", choices=OUTCOMES, metavar="O", help=f"one of: {', '.join(OUTCOMES)}")
    parser.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    parser.add_argument("--limit", type=int, default=50, help="at most this many calls (default 50)")
    parser.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.set_defaults(func=calls)


def parse_since(value: str, *, now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    relative = _RELATIVE.fullmatch(value.strip())
    if relative:
        return now - timedelta(**{_UNITS[relative["unit"]]: int(relative["amount"])})
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {value!r} (use 30m, 2h, 1d or ISO 8601)") from None
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()  # local time
    return parsed.astimezone(UTC)


def record_dict(record: Any) -> dict[str, Any]:
    duration = record.duration_seconds
    return {
        "call_id": record.call_id,
        "started_at": _iso(record.started_at),
        "ended_at": _iso(record.ended_at),
        "duration_s": round(duration, 1) if duration is not None else None,
        "caller": record.caller,
        "service_number": record.service_number,
        "unit": record.unit,
        "target_number": record.target_number,
        "outcome": record.outcome,
        "last_step": record.last_step,
        "wrong_entries": record.wrong_entries,
        "status": "finished" if record.outcome is not None else "in_progress",
    }


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone().isoformat(timespec="seconds")


HEADER = (
    f"{'started':<25} {'dur':>6} {'caller':<14} {'unit':<10} {'target':<11} {'outcome':<24} "
    f"{'step':<9} wr call_id"
)


def format_row(row: dict[str, Any]) -> str:
    duration = "" if row["duration_s"] is None else f"{row['duration_s']:.1f}s"
    outcome = row["outcome"] or "(in progress)"
    return (
        f"{row['started_at'] or '':<25} {duration:>6} {row['caller'] or '-':<14} {row['unit'] or '-':<10} "
        f"{row['target_number'] or '-':<11} {outcome:<24} {row['last_step'] or '-':<9} "
        f"{row['wrong_entries']:>2} {row['call_id']}"
    )


def _emit(row: dict[str, Any], *, as_json: bool, out: TextIO) -> None:
    out.write((json.dumps(row, ensure_ascii=False) if as_json else format_row(row)) + "\n")
    out.flush()


def calls(args: argparse.Namespace, settings: Settings, *, out: TextIO | None = None) -> int:
    from core.db import make_engine, make_session_factory
    from core.phone_line import list_call_records

    out = out or sys.stdout
    engine = make_engine(settings.effective_database_url)
    sessions = make_session_factory(engine)

    def fetch(since: datetime | None, outcome: str | None, limit: int) -> list[dict[str, Any]]:
        with sessions() as session:
            records = list_call_records(
                session, since=since, number=args.number, outcome=outcome, limit=limit
            )
            return [record_dict(r) for r in reversed(records)]  # oldest first

    try:
        rows = fetch(args.since, args.outcome, args.limit)
    except Exception as exc:  # no database yet, schema missing...
        print(f"ivr calls: cannot read the call records: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if not args.json:
        out.write(HEADER + "\n")
    for row in rows:
        _emit(row, as_json=args.json, out=out)
    if not args.follow:
        return 0

    seen: dict[str, str | None] = {row["call_id"]: row["outcome"] for row in rows}
    started_following = datetime.now(UTC)
    try:
        while True:
            time.sleep(args.interval)
            window = started_following - LIVE_WINDOW
            if args.since is not None and args.since > window:
                window = args.since
            for row in fetch(window, None, 1000):
                if args.outcome is not None and row["outcome"] != args.outcome:
                    continue
                if row["call_id"] in seen and seen[row["call_id"]] == row["outcome"]:
                    continue
                seen[row["call_id"]] = row["outcome"]
                _emit(row, as_json=args.json, out=out)
    except KeyboardInterrupt:
        return 0
    finally:
        engine.dispose()
