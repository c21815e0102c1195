"""Many support IDs at once, each with one delivering destination (the benchmark, load tests)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import insert
from sqlalchemy.orm import Session

from core.notice_models import NoticeDestination, SupportAccount, SupportAccountProduct
from notices import rules

CHUNK = 5000


def make_destinations(
    session: Session,
    *,
    count: int,
    now: datetime,
    product: str = "hikari-denwa",
    domains: int = 7,
    prefix: str = "c",
) -> None:
    """``count`` active support IDs ``<prefix><n>@example.jp`` wanting ``product`` every day and hour,
    each with a delivering destination ``<prefix><n>@d<n % domains>.example.jp``."""
    for start in range(0, count, CHUNK):
        numbers = range(start + 1, min(count, start + CHUNK) + 1)
        accounts = [
            {
                "login_email": f"{prefix}{n}@example.jp",
                "state": "active",
                "name": "bulk",
                "birth_date": date(1980, 1, 1),
                "password_hash": "!",
                "credential_generation": 0,
                "delivery_days": rules.ALL_DAYS,
                "delivery_hours": rules.ALL_HOURS,
                "created_at": now,
            }
            for n in numbers
        ]
        ids = list(
            session.scalars(
                insert(SupportAccount).returning(SupportAccount.id, sort_by_parameter_order=True), accounts
            )
        )
        session.execute(insert(SupportAccountProduct), [{"account_id": i, "product": product} for i in ids])
        session.execute(
            insert(NoticeDestination),
            [
                {
                    "account_id": account_id,
                    "address": f"{prefix}{n}@d{n % domains}.example.jp",
                    "state": "delivering",
                    "consecutive_failures": 0,
                    "confirmed_at": now,
                    "created_at": now,
                }
                for account_id, n in zip(ids, numbers, strict=True)
            ],
        )
