"""`ivr notices`: maintenance and outage notices by mail (the support site of seed 000).

    ivr notices serve                  the delivery worker, the bounce listener and the support site
    ivr notices post --kind outage --status occurring --product hikari-denwa \\
        --title "ひかり電話がご利用しづらい状況" --area 東京都 --body-file notice.txt
                                       post a notice; it is queued for every matching destination
    ivr notices list                   the notices, newest first, with their delivery counts
    ivr notices show 12                one notice and its deliveries by state
    ivr notices deliveries --notice 12 --state failed
                                       delivery records (every attempt's last reply), newest first
    ivr notices destinations --state stopped
    ivr notices resume 34              配信再開 of a stopped destination
    ivr notices purge --older-than 90d delete finished delivery records (retention)
    ivr notices sample                 a sample support ID with one destination (for scripts/run)

Every listing takes --json (one JSON object per line). No mail body or password is ever printed
or logged by the delivery path; `show` prints the notice's own text (it is public information).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from stack.settings import Settings

SAMPLE_ID = "sample@support-customer.example.jp"
SAMPLE_PASSWORD = "Sample-Pass-2026"


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "notices",
        help="maintenance/outage notices by mail: post, list, deliveries, the delivery process",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="notices_command", required=True, metavar="SUBCOMMAND")

    serve = sub.add_parser("serve", help="run the delivery worker, the bounce listener and the support site")
    serve.add_argument("--no-web", action="store_true")
    serve.add_argument("--no-worker", action="store_true")
    serve.add_argument("--no-bounces", action="store_true")
    serve.add_argument("--worker-id", help="distinct for every live worker (default: settings or host name)")
    serve.set_defaults(func=cmd_serve)

    post = sub.add_parser("post", help="post a notice (queued for every matching destination)")
    post.add_argument("--kind", required=True, choices=["maintenance", "outage"])
    post.add_argument(
        "--status", required=True, help="scheduled, in_progress, completed, occurring, recovered, cancelled"
    )
    post.add_argument("--title", required=True)
    post.add_argument("--area", default="")
    post.add_argument("--product", action="append", required=True, help="a product code (repeat for several)")
    post.add_argument("--start", type=_when, help="ISO 8601 with offset, e.g. 2026-12-05T01:00+09:00")
    post.add_argument("--end", type=_when)
    post.add_argument("--members-only", action="store_true", help="shown to logged-in customers only")
    post.add_argument("--follows", type=int, help="the notice this one updates (e.g. 復旧)")
    body = post.add_mutually_exclusive_group(required=True)
    body.add_argument("--body")
    body.add_argument("--body-file", help="a UTF-8 text file, or - for standard input")
    post.add_argument("--json", action="store_true")
    post.set_defaults(func=cmd_post)

    listing = sub.add_parser("list", help="the notices, newest first")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)

    show = sub.add_parser("show", help="one notice and its deliveries by state")
    show.add_argument("notice_id", type=int)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)

    deliveries = sub.add_parser("deliveries", help="delivery records, newest first")
    deliveries.add_argument("--notice", type=int)
    deliveries.add_argument("--destination", type=int)
    deliveries.add_argument("--address")
    deliveries.add_argument("--state", choices=["queued", "sending", "sent", "failed", "bounced", "skipped"])
    deliveries.add_argument("--limit", type=int, default=100)
    deliveries.add_argument("--json", action="store_true")
    deliveries.set_defaults(func=cmd_deliveries)

    destinations = sub.add_parser("destinations", help="destinations and their states")
    destinations.add_argument("--account", help="a support ID (its login mail address)")
    destinations.add_argument("--state", choices=["pending", "delivering", "stopped"])
    destinations.add_argument("--limit", type=int, default=100)
    destinations.add_argument("--json", action="store_true")
    destinations.set_defaults(func=cmd_destinations)

    resume = sub.add_parser("resume", help="配信再開: a stopped destination delivers again")
    resume.add_argument("destination_id", type=int)
    resume.add_argument("--json", action="store_true")
    resume.set_defaults(func=cmd_resume)

    conflicts = sub.add_parser(
        "case-conflicts", help="support IDs that differ only by case (found by migration 0006)"
    )
    conflicts.add_argument("--json", action="store_true")
    conflicts.set_defaults(func=cmd_case_conflicts)
    resolve = sub.add_parser(
        "resolve-case-conflict",
        help="keep one support ID of an address that has several differing only by case; delete the others",
    )
    resolve.add_argument("--keep", type=int, required=True, help="the support ID to keep")
    resolve.add_argument("--json", action="store_true")
    resolve.set_defaults(func=cmd_resolve_case_conflict)

    purge = sub.add_parser("purge", help="delete finished delivery records older than a retention period")
    purge.add_argument(
        "--older-than", required=True, metavar="AGE", help="e.g. 90d, 12h (records created before)"
    )
    purge.add_argument("--json", action="store_true")
    purge.set_defaults(func=cmd_purge)

    sample = sub.add_parser("sample", help="a sample support ID with one delivering destination")
    sample.add_argument("--json", action="store_true")
    sample.set_defaults(func=cmd_sample)


def _when(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give the offset, e.g. {value}+09:00")
    return parsed


def _sessions(settings: Settings) -> Any:
    from core.db import make_engine, make_session_factory, schema_is_current

    engine = make_engine(settings.effective_database_url)
    if not schema_is_current(engine):
        print(
            "ivr notices: the database schema is missing or old; run `ivr db upgrade` first", file=sys.stderr
        )
        raise SystemExit(2)
    return make_session_factory(engine)


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment is not None else None


def _emit(rows: list[dict[str, Any]], as_json: bool, columns: list[str]) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return
    if not rows:
        print("(none)")
        return
    widths = {
        c: max(len(c), *(len(str(r.get(c) if r.get(c) is not None else "-")) for r in rows)) for c in columns
    }
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c) if row.get(c) is not None else "-").ljust(widths[c]) for c in columns))


def notice_dict(notice: Any, products: list[str], counts: dict[str, int] | None = None) -> dict[str, Any]:
    found = {
        "id": notice.id,
        "kind": notice.kind,
        "status": notice.status,
        "title": notice.title,
        "area": notice.area,
        "products": products,
        "starts_at": _iso(notice.starts_at),
        "ends_at": _iso(notice.ends_at),
        "public": notice.public,
        "follows": notice.follows_id,
        "posted_at": _iso(notice.posted_at),
        "posted_by": notice.posted_by,
        "recipients": notice.recipients,
    }
    if counts is not None:
        found["deliveries"] = counts
    return found


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    import structlog

    from notices.service import run_service
    from notices.settings import NoticeSettings, organisational_domain_of, sender_domain_problems
    from web_stub.settings import WebSettings

    log = structlog.get_logger("notices")
    problems = sender_domain_problems(settings.notices, organisational_domain_of())
    for problem in problems:
        print(f"ivr notices serve: {problem}", file=sys.stderr)
    if problems:
        return 2
    if settings.notices.bounce_secret.get_secret_value() == NoticeSettings().bounce_secret.get_secret_value():
        log.warning(
            "notices_bounce_secret_default", hint="set IVR_NOTICES__BOUNCE_SECRET to a long random value"
        )
    if (
        not args.no_web
        and settings.web.secret_key.get_secret_value() == WebSettings().secret_key.get_secret_value()
    ):
        log.warning("web_secret_key_default", hint="set IVR_WEB__SECRET_KEY to a long random value")
    sessions = _sessions(settings)
    asyncio.run(
        run_service(
            settings,
            sessions,
            worker=not args.no_worker,
            bounces=not args.no_bounces,
            web=not args.no_web,
            worker_id=args.worker_id,
        )
    )
    return 0


def cmd_post(args: argparse.Namespace, settings: Settings) -> int:
    import getpass

    from notices import queue

    if args.body_file:
        try:
            if args.body_file == "-":
                text = sys.stdin.read()
            else:
                with open(args.body_file, encoding="utf-8") as source:
                    text = source.read()
        except (OSError, UnicodeDecodeError) as exc:
            print(f"ivr notices post: cannot read the body: {type(exc).__name__}", file=sys.stderr)
            return 2
    else:
        text = args.body
    draft = queue.NoticeDraft(
        kind=args.kind,
        status=args.status,
        title=args.title,
        area=args.area,
        body=text,
        products=tuple(args.product),
        starts_at=args.start,
        ends_at=args.end,
        public=not args.members_only,
        follows_id=args.follows,
    )
    sessions = _sessions(settings)
    try:
        with sessions() as session, session.begin():
            notice = queue.post_notice(
                session,
                draft,
                posted_by=f"cli:{getpass.getuser()}",
                now=datetime.now(UTC),
                catalog=settings.notices.products,
            )
            row = notice_dict(notice, sorted(set(draft.products)))
    except queue.NoticeError as exc:
        print(f"ivr notices post: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(row, ensure_ascii=False))
    else:
        print(f"notice {row['id']} posted, queued for {row['recipients']} destination(s)")
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy import select

    from core.notice_models import Notice
    from notices import queue

    sessions = _sessions(settings)
    with sessions() as session:
        notices = list(session.scalars(select(Notice).order_by(Notice.id.desc()).limit(args.limit)))
        products = queue.products_of(session, [n.id for n in notices])
        rows = [
            notice_dict(n, products[n.id], queue.delivery_counts(session, notice_id=n.id)) for n in notices
        ]
    if not args.json:
        for row in rows:
            row["products"] = ",".join(row["products"])
            row["deliveries"] = " ".join(f"{k}={v}" for k, v in sorted(row["deliveries"].items()))
    _emit(
        rows,
        args.json,
        ["id", "posted_at", "kind", "status", "products", "title", "recipients", "deliveries"],
    )
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    from core.notice_models import Notice
    from notices import queue

    sessions = _sessions(settings)
    with sessions() as session:
        notice = session.get(Notice, args.notice_id)
        if notice is None:
            print(f"ivr notices show: no notice {args.notice_id}", file=sys.stderr)
            return 1
        row = notice_dict(
            notice,
            queue.products_of(session, [notice.id])[notice.id],
            queue.delivery_counts(session, notice_id=notice.id),
        )
        row["body"] = notice.body
    if args.json:
        print(json.dumps(row, ensure_ascii=False))
    else:
        for key, value in row.items():
            print(f"{key:>11}: {value}")
    return 0


def delivery_dict(d: Any) -> dict[str, Any]:
    return {
        "id": d.id,
        "notice_id": d.notice_id,
        "destination_id": d.destination_id,
        "address": d.address,
        "state": d.state,
        "attempts": d.attempts,
        "created_at": _iso(d.created_at),
        "next_attempt_at": _iso(d.next_attempt_at) if d.state == "queued" else None,
        "sent_at": _iso(d.sent_at),
        "finished_at": _iso(d.finished_at),
        "worker": d.worker,
        "code": d.last_code,
        "status": d.last_status,
        "detail": d.last_detail,
    }


def cmd_deliveries(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy import select

    from core.notice_models import NoticeDelivery

    query = select(NoticeDelivery).order_by(NoticeDelivery.id.desc()).limit(args.limit)
    if args.notice is not None:
        query = query.where(NoticeDelivery.notice_id == args.notice)
    if args.destination is not None:
        query = query.where(NoticeDelivery.destination_id == args.destination)
    if args.address:
        query = query.where(NoticeDelivery.address == args.address)
    if args.state:
        query = query.where(NoticeDelivery.state == args.state)
    sessions = _sessions(settings)
    with sessions() as session:
        rows = [delivery_dict(d) for d in session.scalars(query)]
    _emit(
        rows,
        args.json,
        ["id", "notice_id", "destination_id", "address", "state", "attempts", "code", "status", "detail"],
    )
    return 0


def destination_dict(d: Any, login: str) -> dict[str, Any]:
    return {
        "id": d.id,
        "account": login,
        "address": d.address,
        "state": d.state,
        "consecutive_failures": d.consecutive_failures,
        "confirmed_at": _iso(d.confirmed_at),
        "stopped_at": _iso(d.stopped_at),
    }


def cmd_destinations(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy import select

    from core.notice_models import NoticeDestination, SupportAccount
    from notices.rules import AddressError, normalize_address

    query = (
        select(NoticeDestination, SupportAccount.login_email)
        .join(SupportAccount, SupportAccount.id == NoticeDestination.account_id)
        .order_by(NoticeDestination.id)
        .limit(args.limit)
    )
    if args.account:
        try:
            query = query.where(SupportAccount.login_email == normalize_address(args.account))
        except AddressError:
            print("ivr notices destinations: not a mail address", file=sys.stderr)
            return 2
    if args.state:
        query = query.where(NoticeDestination.state == args.state)
    sessions = _sessions(settings)
    with sessions() as session:
        rows = [destination_dict(d, login) for d, login in session.execute(query)]
    _emit(rows, args.json, ["id", "account", "address", "state", "consecutive_failures", "stopped_at"])
    return 0


def cmd_resume(args: argparse.Namespace, settings: Settings) -> int:
    from notices import queue

    sessions = _sessions(settings)
    with sessions() as session, session.begin():
        resumed = queue.resume_destination(session, destination_id=args.destination_id)
    if args.json:
        print(json.dumps({"destination_id": args.destination_id, "resumed": resumed}))
    elif resumed:
        print(f"destination {args.destination_id} delivers again (配信再開)")
    else:
        print(f"destination {args.destination_id} is not stopped (or does not exist)")
    return 0 if resumed else 1


def cmd_case_conflicts(args: argparse.Namespace, settings: Settings) -> int:
    from notices import accounts

    sessions = _sessions(settings)
    with sessions() as session:
        groups = [
            [
                {
                    "id": a.id,
                    "login_email": a.login_email,
                    "state": a.state,
                    "created_at": a.created_at.isoformat(),
                    "destinations": len(accounts.destinations_of(session, a.id)),
                }
                for a in group
            ]
            for group in accounts.case_conflicts(session)
        ]
    if args.json:
        for group in groups:
            print(json.dumps(group, ensure_ascii=False))
        return 0
    if not groups:
        print("no support IDs differ only by case")
    for group in groups:
        print(
            " / ".join(
                f"{a['id']} {a['login_email']} ({a['state']}, {a['destinations']} destination(s))"
                for a in group
            )
        )
    return 0


def cmd_resolve_case_conflict(args: argparse.Namespace, settings: Settings) -> int:
    from notices import accounts

    sessions = _sessions(settings)
    with sessions() as session, session.begin():
        deleted = accounts.resolve_case_conflict(session, keep_id=args.keep)
    if deleted is None:
        print(
            f"ivr notices resolve-case-conflict: support ID {args.keep} is not in a case conflict",
            file=sys.stderr,
        )
        return 2
    if args.json:
        print(json.dumps({"kept": args.keep, "deleted": deleted}))
    else:
        print(f"support ID {args.keep} kept; deleted {', '.join(map(str, deleted)) or 'none'}")
    return 0


def cmd_purge(args: argparse.Namespace, settings: Settings) -> int:
    import re
    from datetime import timedelta

    from notices import queue

    found = re.fullmatch(r"([0-9]+)([dh])", args.older_than.strip())
    if not found:
        print("ivr notices purge: --older-than takes e.g. 90d or 12h", file=sys.stderr)
        return 2
    amount = int(found.group(1))
    age = timedelta(days=amount) if found.group(2) == "d" else timedelta(hours=amount)
    before = datetime.now(UTC) - age
    sessions = _sessions(settings)
    total = 0
    while True:
        with sessions() as session, session.begin():  # one short transaction per batch
            deleted = queue.purge_deliveries(session, before=before)
        total += deleted
        if not deleted:
            break
    if args.json:
        print(json.dumps({"deleted": total, "before": before.isoformat()}))
    else:
        print(f"deleted {total} finished delivery record(s) created before {before.isoformat()}")
    return 0


def cmd_sample(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import date

    from core.secrets import hash_secret
    from notices import accounts, rules

    sessions = _sessions(settings)
    password_hash = hash_secret(SAMPLE_PASSWORD)  # before the write transaction
    now = datetime.now(UTC)
    with sessions() as session, session.begin():
        account = accounts.account_by_email(session, SAMPLE_ID)
        created = account is None
        if account is None:
            account = accounts.create_active_account(
                session,
                email=SAMPLE_ID,
                name="サポート 花子",
                birth_date=date(1985, 4, 1),
                password_hash=password_hash,
                now=now,
            )
            accounts.set_notification_settings(
                session,
                account,
                products=["hikari-denwa", "hikari-net"],
                days=rules.ALL_DAYS,
                hours=rules.ALL_HOURS,
            )
            accounts.add_confirmed_destination(session, account_id=account.id, address=SAMPLE_ID, now=now)
    row = {
        "support_id": SAMPLE_ID,
        "password": SAMPLE_PASSWORD,
        "created": created,
        "products": ["hikari-denwa", "hikari-net"],
    }
    if args.json:
        print(json.dumps(row, ensure_ascii=False))
    else:
        state = "created" if created else "already there"
        print(
            f"sample support ID {SAMPLE_ID} ({state}), password {SAMPLE_PASSWORD}, "
            "products hikari-denwa, hikari-net"
        )
    return 0
