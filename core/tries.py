"""Reserve a try against a failure counter, atomically in the database.

Password logins (``credentials.failures``) and one-time codes (``otp_login_attempts.failures``)
both count a try *before* checking it, with one conditional ``UPDATE … RETURNING``: only a try
that got a reservation may run the check, so concurrent tries never pass the limit (SQLite
serialises writers, PostgreSQL locks the row).
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, update
from sqlalchemy.orm import InstrumentedAttribute, Session


def reserve_try(
    session: Session, failures: InstrumentedAttribute[int], *where: ColumnElement[bool], limit: int
) -> int | None:
    """``failures = failures + 1`` on the row ``where`` selects, only while ``failures < limit``.

    Returns the count this try holds (1..limit); None: no try left (or no such row). Does not
    touch the ORM objects in the session (expire them if they are read again)."""
    reserved = session.execute(
        update(failures.class_)
        .where(*where, failures < limit)
        .values({failures: failures + 1})
        .returning(failures)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    return None if reserved is None else int(reserved)
