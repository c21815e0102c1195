"""Posting a notice queues it for exactly the matching destinations; the worker delivers it over
real SMTP (aiosmtpd on loopback), handles 550 and 452, counts failures and stops a destination
after three; 配信再開 restarts it; a slow domain does not hold up the others. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import email
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.policy import default as default_policy

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from core.db import write_lock_wait_stats
from core.notice_models import NoticeDelivery, NoticeDestination
from notices import queue, rules
from notices.queue import NoticeDraft
from notices.settings import NoticeSettings
from notices.worker import DeliveryWorker

from .conftest import SLOW_DOMAIN, TOKYO_FRIDAY_1030, Customer, MailServer, async_wait_for

CATALOG = NoticeSettings().products  # the products customers can choose (hikari-denwa, hikari-net…)


def draft(products: tuple[str, ...] = ("hikari-denwa",), **kw: object) -> NoticeDraft:
    values: dict[str, object] = {
        "kind": "outage",
        "status": "occurring",
        "title": "ひかり電話がご利用しづらい状況",
        "area": "東京都港区",
        "body": "現在、ひかり電話がご利用しづらい状況が発生しています。",
        "products": products,
        "starts_at": TOKYO_FRIDAY_1030 - timedelta(minutes=20),
    }
    values.update(kw)
    return NoticeDraft(**values)  # type: ignore[arg-type]


def post(sessions: sessionmaker[Session], notice: NoticeDraft, now: datetime = TOKYO_FRIDAY_1030) -> int:
    with sessions() as session, session.begin():
        return queue.post_notice(session, notice, posted_by="test", now=now, catalog=CATALOG).id


def states(sessions: sessionmaker[Session], notice_id: int) -> dict[str, str]:
    with sessions() as session:
        rows = session.execute(
            select(NoticeDelivery.address, NoticeDelivery.state).where(NoticeDelivery.notice_id == notice_id)
        )
        return {address: state for address, state in rows}


def destination(sessions: sessionmaker[Session], destination_id: int) -> NoticeDestination:
    with sessions() as session:
        dest = session.get(NoticeDestination, destination_id)
        assert dest is not None
        return dest


class Running:
    def __init__(self, worker: DeliveryWorker) -> None:
        self.worker, self.stop = worker, asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> DeliveryWorker:
        self.task = asyncio.create_task(self.worker.run(self.stop))
        return self.worker

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 15)


def all_final(sessions: sessionmaker[Session], notice_id: int) -> Callable[[], bool]:
    def check() -> bool:
        found = states(sessions, notice_id)
        return bool(found) and all(s not in ("queued", "sending") for s in found.values())

    return check


def test_a_notice_is_queued_for_exactly_the_matching_confirmed_destinations(
    db_sessions: sessionmaker[Session], customer: Customer
) -> None:
    friday, ten = rules.days_mask([4]), rules.hours_mask([10])
    customer("match@example.jp", ["match@example.jp", "match2@example.net"], days=friday, hours=ten)
    customer("other-product@example.jp", ["op@example.jp"], products=("hikari-net",))
    customer("both@example.jp", ["both@example.jp"], products=("hikari-denwa", "hikari-net"))
    customer("no-product@example.jp", ["np@example.jp"], products=())
    customer("wrong-day@example.jp", ["wd@example.jp"], days=rules.days_mask([0, 1, 2, 3, 5, 6]))
    customer("wrong-hour@example.jp", ["wh@example.jp"], hours=rules.ALL_HOURS & ~ten)
    customer("pending@example.jp", ["pending@example.jp"], state="pending")
    customer("stopped@example.jp", ["stopped@example.jp"], state="stopped")

    notice_id = post(db_sessions, draft(("hikari-denwa", "hikari-net")))
    assert set(states(db_sessions, notice_id)) == {
        "match@example.jp",
        "match2@example.net",
        "op@example.jp",
        "both@example.jp",
    }
    only_denwa = post(db_sessions, draft(("hikari-denwa",)))
    assert set(states(db_sessions, only_denwa)) == {
        "match@example.jp",
        "match2@example.net",
        "both@example.jp",
    }
    # posted at 11:00 Tokyo the same Friday: outside the first customer's band, inside "wrong-hour"'s
    later = post(db_sessions, draft(), now=TOKYO_FRIDAY_1030 + timedelta(minutes=30))
    assert set(states(db_sessions, later)) == {"both@example.jp", "wh@example.jp"}


async def test_a_notice_reaches_exactly_the_matching_destinations_by_real_mail(
    db_sessions: sessionmaker[Session],
    customer: Customer,
    mail_server: MailServer,
    notice_settings: NoticeSettings,
) -> None:
    friday, ten = rules.days_mask([4]), rules.hours_mask([10])
    customer("in@example.jp", ["in@example.jp", "in2@example.net"], days=friday, hours=ten)
    customer("no-product@example.jp", ["np@example.jp"], products=())
    customer("not-friday@example.jp", ["nf@example.jp"], days=rules.ALL_DAYS & ~friday)
    customer("not-ten@example.jp", ["nt@example.jp"], hours=rules.ALL_HOURS & ~ten)
    customer("pending@example.jp", ["pending@example.jp"], state="pending")

    def received(notice_id: int) -> set[str]:
        return {r.rcpt for r in mail_server.received if r.message_id.startswith(f"<notice-{notice_id}.")}

    async with Running(DeliveryWorker(sessions=db_sessions, settings=notice_settings, worker_id="w1")):
        inside = post(db_sessions, draft(title="金曜10時台"))  # Friday 10:30 Tokyo
        thursday = post(db_sessions, draft(title="木曜10時台"), now=TOKYO_FRIDAY_1030 - timedelta(days=1))
        await async_wait_for(lambda: all_final(db_sessions, inside)() and all_final(db_sessions, thursday)())
    assert received(inside) == {"in@example.jp", "in2@example.net"}
    assert received(thursday) == {"nf@example.jp"}  # outside Friday, outside 10:00-10:59 for "not-ten"
    assert mail_server.count() == 3


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "rumour"},
        {"status": "maybe"},
        {"title": " "},
        {"title": "工事\r\nBcc: everyone@example.jp"},  # no header injection through the subject
        {"body": ""},
        {"products": ()},
        {"products": ("hikari-dnwa",)},  # a typo: it would reach no one
        {"body": "あ" * 20_001},
        {"starts_at": datetime(2026, 12, 4, 10, 0)},
        {"ends_at": TOKYO_FRIDAY_1030 - timedelta(days=1)},
        {"follows_id": 999_999},
    ],
)
def test_a_bad_notice_is_refused_and_nothing_is_written(
    db_sessions: sessionmaker[Session], customer: Customer, bad: dict[str, object]
) -> None:
    customer("c@example.jp", ["c@example.jp"])
    with pytest.raises(queue.NoticeError), db_sessions() as session, session.begin():
        queue.post_notice(session, draft(**bad), posted_by="t", now=TOKYO_FRIDAY_1030, catalog=CATALOG)
    with db_sessions() as session:
        assert queue.delivery_counts(session) == {}


async def test_the_worker_delivers_to_a_real_smtp_server_with_the_headers_a_receiver_needs(
    db_sessions: sessionmaker[Session],
    customer: Customer,
    mail_server: MailServer,
    notice_settings: NoticeSettings,
) -> None:
    _, (dest_id,) = customer("taro@example.jp", ["taro@example.jp"])
    notice_id = post(db_sessions, draft())
    async with Running(DeliveryWorker(sessions=db_sessions, settings=notice_settings, worker_id="w1")):
        await async_wait_for(all_final(db_sessions, notice_id))
    assert states(db_sessions, notice_id) == {"taro@example.jp": "sent"}
    (got,) = mail_server.to("taro@example.jp")
    message = email.message_from_bytes(got.data, policy=default_policy)
    assert message["From"] == notice_settings.sender
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["List-Unsubscribe"] == f"<{notice_settings.base_url}/support/mymenu>"
    assert message["Date"] and message["Message-ID"] == got.message_id
    assert (
        got.message_id.endswith("@support.example.jp>") and f"notice-{notice_id}.{dest_id}." in got.message_id
    )
    assert "【故障情報】ひかり電話がご利用しづらい状況（発生中）" in str(message["Subject"])
    text = message.get_content()
    assert "東京都港区" in text and "2026年12月04日 10:10" in text  # start in Tokyo time
    assert "対象商品: ひかり電話" in text and "hikari-denwa" not in text  # the label, not the code
    secret = notice_settings.bounce_secret.get_secret_value().encode()
    with db_sessions() as session:
        delivery_id = session.scalars(
            select(NoticeDelivery.id).where(NoticeDelivery.notice_id == notice_id)
        ).one()
    assert (
        rules.delivery_of_return_path(got.mail_from, secret=secret, domain=notice_settings.return_path_domain)
        == delivery_id
    )


async def test_550_fails_452_retries_and_three_failures_stop_then_resume_restarts(
    db_sessions: sessionmaker[Session],
    customer: Customer,
    mail_server: MailServer,
    notice_settings: NoticeSettings,
) -> None:
    _, (good, bad) = customer("hanako@example.jp", ["hanako@example.jp", "reject-me@example.jp"])
    _, (full,) = customer("full@example.jp", ["full-box@example.jp"])
    clock = [TOKYO_FRIDAY_1030]
    worker = DeliveryWorker(
        sessions=db_sessions, settings=notice_settings, worker_id="w1", clock=lambda: clock[0]
    )
    async with Running(worker):
        notices = []
        for n in range(3):
            notices.append(post(db_sessions, draft(title=f"工事 {n}"), now=clock[0]))
            await async_wait_for(
                lambda nid=notices[-1]: (
                    states(db_sessions, nid)["reject-me@example.jp"] == "failed"
                    and states(db_sessions, nid)["hanako@example.jp"] == "sent"
                    and (
                        destination(db_sessions, full).consecutive_failures,
                        states(db_sessions, nid)["full-box@example.jp"],
                    )
                    == (0, "queued")
                )
            )
            assert destination(db_sessions, bad).consecutive_failures == n + 1
        assert destination(db_sessions, bad).state == "stopped"
        assert destination(db_sessions, good).state == "delivering"
        # the deferred mailbox: retried after the back-off, given up after an hour, counted once; its
        # later notices wait behind the first (posting order), then give up in turn
        clock[0] += timedelta(seconds=61)
        await async_wait_for(lambda: len(mail_server.refused) >= 3 + 2)
        assert [address for address, _ in mail_server.refused].count("full-box@example.jp") == 2
        clock[0] += timedelta(hours=2)
        await async_wait_for(lambda: all(all_final(db_sessions, nid)() for nid in notices))
        assert all(set(states(db_sessions, nid).values()) == {"sent", "failed"} for nid in notices)
        assert destination(db_sessions, full).consecutive_failures == 3  # the three notices gave up
        assert destination(db_sessions, full).state == "stopped"

        # a fourth notice does not go to the stopped destinations
        fourth = post(db_sessions, draft(title="工事 4"), now=clock[0])
        await async_wait_for(all_final(db_sessions, fourth))
        assert states(db_sessions, fourth) == {"hanako@example.jp": "sent"}

        # 配信再開
        with db_sessions() as session, session.begin():
            assert queue.resume_destination(session, destination_id=bad)
            assert not queue.resume_destination(session, destination_id=good)  # was not stopped
        assert (destination(db_sessions, bad).state, destination(db_sessions, bad).consecutive_failures) == (
            "delivering",
            0,
        )
        fifth = post(db_sessions, draft(title="工事 5"), now=clock[0])
        await async_wait_for(all_final(db_sessions, fifth))
        assert states(db_sessions, fifth) == {"hanako@example.jp": "sent", "reject-me@example.jp": "failed"}
    assert destination(db_sessions, bad).consecutive_failures == 1
    with db_sessions() as session:
        row = session.scalars(
            select(NoticeDelivery).where(
                NoticeDelivery.notice_id == fifth, NoticeDelivery.destination_id == bad
            )
        ).one()
    assert (row.last_code, row.last_status) == (550, "5.1.1")


async def test_a_delivered_mail_resets_the_failure_count(
    db_sessions: sessionmaker[Session],
    customer: Customer,
    mail_server: MailServer,
    notice_settings: NoticeSettings,
) -> None:
    _, (dest_id,) = customer("c@example.jp", ["c@example.jp"])
    with db_sessions() as session, session.begin():
        dest = session.get(NoticeDestination, dest_id)
        assert dest is not None
        dest.consecutive_failures = 2
    notice_id = post(db_sessions, draft())
    async with Running(DeliveryWorker(sessions=db_sessions, settings=notice_settings, worker_id="w1")):
        await async_wait_for(all_final(db_sessions, notice_id))
    assert destination(db_sessions, dest_id).consecutive_failures == 0


async def test_a_slow_domain_does_not_hold_up_the_others(
    db_sessions: sessionmaker[Session],
    customer: Customer,
    mail_server: MailServer,
    notice_settings: NoticeSettings,
) -> None:
    # 4 SMTP sessions, so at most 1 for one domain; 5 recipients of a domain whose RCPT hangs until
    # the test releases it. Without the per-domain cap all 4 sessions would sit on the slow domain.
    mail_server.slow_seconds = 30.0
    settings = notice_settings.model_copy(update={"smtp_connections": 4})
    for n in range(5):
        customer(f"s{n}@{SLOW_DOMAIN}", [f"s{n}@{SLOW_DOMAIN}"])  # queued first
    fast = [f"f{n}@example.jp" for n in range(60)]
    for address in fast:
        customer(address, [address])
    notice_id = post(db_sessions, draft())
    async with Running(DeliveryWorker(sessions=db_sessions, settings=settings, worker_id="w1")):
        await async_wait_for(lambda: sum(1 for a in fast if mail_server.to(a)) == len(fast), within=10)
        slow_done = sum(1 for r in list(mail_server.received) if r.rcpt.endswith(SLOW_DOMAIN))
        assert slow_done == 0  # every fast mail went while the first slow one was still in RCPT
        mail_server.slow_released.set()  # the slow domain recovers
        await async_wait_for(all_final(db_sessions, notice_id), within=40)
    assert set(states(db_sessions, notice_id).values()) == {"sent"}


def test_a_bounce_for_a_sent_mail_counts_once(db_sessions: sessionmaker[Session], customer: Customer) -> None:
    _, (dest_id,) = customer("c@example.jp", ["c@example.jp"])
    notice_id = post(db_sessions, draft())
    now = TOKYO_FRIDAY_1030
    with db_sessions() as session, session.begin():
        (claim,) = queue.claim(session, worker="w", now=now, limit=10, lease_seconds=60)
        queue.record(
            session,
            [queue.SendResult(claim, rules.ReplyClass.DELIVERED, 250)],
            worker="w",
            now=now,
            policy=queue.FailurePolicy(),
        )
    for _ in range(2):
        with db_sessions() as session, session.begin():
            queue.record_bounce(
                session,
                delivery_id=claim.delivery_id,
                status="5.2.2",
                detail="mailbox full",
                now=now,
                max_failures=3,
            )
    assert destination(db_sessions, dest_id).consecutive_failures == 1
    assert states(db_sessions, notice_id) == {"c@example.jp": "bounced"}


def test_claims_skip_locked_rows_and_leases_run_out(
    db_sessions: sessionmaker[Session], customer: Customer
) -> None:
    for n in range(10):
        customer(f"c{n}@example.jp", [f"c{n}@example.jp"])
    post(db_sessions, draft())
    now = TOKYO_FRIDAY_1030
    with db_sessions() as session, session.begin():
        first = queue.claim(session, worker="a", now=now, limit=4, lease_seconds=60)
    with db_sessions() as session, session.begin():
        second = queue.claim(session, worker="b", now=now, limit=100, lease_seconds=60)
    assert len(first) == 4 and len(second) == 6
    assert not {c.delivery_id for c in first} & {c.delivery_id for c in second}
    with db_sessions() as session, session.begin():
        assert queue.claim(session, worker="c", now=now, limit=100, lease_seconds=60) == []
        assert queue.release_leases(session, now=now + timedelta(seconds=59)) == 0
        assert queue.release_leases(session, now=now + timedelta(seconds=61)) == 10
    with db_sessions() as session, session.begin():
        again = queue.claim(session, worker="c", now=now + timedelta(seconds=61), limit=100, lease_seconds=60)
    assert len(again) == 10 and all(c.attempts == 2 for c in again)
    # a stale result of "a" (its lease ran out, "c" holds the row now) is not recorded
    with db_sessions() as session, session.begin():
        summary = queue.record(
            session,
            [queue.SendResult(first[0], rules.ReplyClass.PERMANENT, 550)],
            worker="a",
            now=now,
            policy=queue.FailurePolicy(),
        )
    assert summary.stale == 1 and summary.failed == 0


def test_per_domain_claims_leave_the_rest_queued(
    db_sessions: sessionmaker[Session], customer: Customer
) -> None:
    for n in range(5):
        customer(f"c{n}@busy.example", [f"c{n}@busy.example"])
    customer("x@calm.example", ["x@calm.example"])
    post(db_sessions, draft())
    with db_sessions() as session, session.begin():
        got = queue.claim(
            session,
            worker="a",
            now=TOKYO_FRIDAY_1030,
            limit=100,
            lease_seconds=60,
            inflight_by_domain={"busy.example": 1},
            per_domain=3,
        )
    assert sorted(c.domain for c in got) == ["busy.example", "busy.example", "calm.example"]
    with db_sessions() as session:
        assert queue.delivery_counts(session) == {"queued": 3, "sending": 3}


def test_purging_keeps_queued_and_recent_deliveries(
    db_sessions: sessionmaker[Session], customer: Customer
) -> None:
    for n in range(3):
        customer(f"c{n}@example.jp", [f"c{n}@example.jp"])
    old = post(db_sessions, draft(), now=TOKYO_FRIDAY_1030 - timedelta(days=100))
    with db_sessions() as session, session.begin():
        claims = queue.claim(session, worker="w", now=TOKYO_FRIDAY_1030, limit=2, lease_seconds=60)
        queue.record(
            session,
            [queue.SendResult(c, rules.ReplyClass.DELIVERED) for c in claims],
            worker="w",
            now=TOKYO_FRIDAY_1030,
            policy=queue.FailurePolicy(),
        )
    recent = post(db_sessions, draft())
    with db_sessions() as session, session.begin():
        assert queue.purge_deliveries(session, before=TOKYO_FRIDAY_1030 - timedelta(days=90), batch=1) == 1
        assert queue.purge_deliveries(session, before=TOKYO_FRIDAY_1030 - timedelta(days=90)) == 1
        assert queue.purge_deliveries(session, before=TOKYO_FRIDAY_1030 - timedelta(days=90)) == 0
    assert states(db_sessions, old) == {"c2@example.jp": "queued"}  # never a queued one
    assert len(states(db_sessions, recent)) == 3


def test_a_destination_stopped_after_queueing_is_skipped(
    db_sessions: sessionmaker[Session], customer: Customer
) -> None:
    _, (dest_id,) = customer("c@example.jp", ["c@example.jp"])
    notice_id = post(db_sessions, draft())
    with db_sessions() as session, session.begin():
        dest = session.get(NoticeDestination, dest_id)
        assert dest is not None
        dest.state = "stopped"
    with db_sessions() as session, session.begin():
        assert queue.claim(session, worker="a", now=datetime.now(UTC), limit=10, lease_seconds=60) == []
    assert states(db_sessions, notice_id) == {"c@example.jp": "skipped"}


async def test_the_worker_rides_out_a_database_that_is_away_for_a_moment(
    db_sessions: sessionmaker[Session],
    customer: Customer,
    mail_server: MailServer,
    notice_settings: NoticeSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sqlalchemy.exc import OperationalError

    for n in range(5):
        customer(f"c{n}@example.jp", [f"c{n}@example.jp"])
    notice_id = post(db_sessions, draft())
    real_record, failures = queue.record, [0]

    def flaky(*args: object, **kwargs: object) -> queue.RecordSummary:
        if failures[0] < 3:
            failures[0] += 1
            raise OperationalError("UPDATE", {}, Exception("server closed the connection"))
        return real_record(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(queue, "record", flaky)
    worker = DeliveryWorker(sessions=db_sessions, settings=notice_settings, worker_id="w1")
    async with Running(worker):
        await async_wait_for(all_final(db_sessions, notice_id))
    assert failures[0] == 3 and worker.totals["sent"] == 5
    assert set(states(db_sessions, notice_id).values()) == {"sent"}
    assert len(mail_server.message_ids()) == 5 and max(mail_server.message_ids().values()) == 1


async def test_an_idle_worker_polls_without_write_transactions(
    db_engine: Engine,
    db_sessions: sessionmaker[Session],
    customer: Customer,
    mail_server: MailServer,
    notice_settings: NoticeSettings,
) -> None:
    stats = write_lock_wait_stats(db_engine)
    customer("c@example.jp", ["c@example.jp"])
    worker = DeliveryWorker(sessions=db_sessions, settings=notice_settings, worker_id="w1")
    async with Running(worker):
        await asyncio.sleep(0.2)  # start-up: one release, one empty claim
        before = stats.snapshot().count
        await asyncio.sleep(0.6)  # ~12 polls at 0.05 s
        assert stats.snapshot().count == before
        notice_id = post(db_sessions, draft())  # and it still notices new work
        await async_wait_for(all_final(db_sessions, notice_id))
    assert states(db_sessions, notice_id) == {"c@example.jp": "sent"}


async def test_a_destination_gets_its_notices_in_the_order_they_were_posted(
    db_sessions: sessionmaker[Session],
    customer: Customer,
    mail_server: MailServer,
    notice_settings: NoticeSettings,
) -> None:
    """復旧 never arrives before its 発生中: while the first waits in back-off for a mailbox, the
    second waits behind it (for that mailbox only), then follows it as soon as it is delivered."""
    customer("taro@example.jp", ["taro@example.jp"])
    customer("hanako@example.jp", ["hanako@example.jp"])  # a mailbox that works: the witness
    mail_server.deferred.add("taro@example.jp")
    clock = [TOKYO_FRIDAY_1030]
    worker = DeliveryWorker(
        sessions=db_sessions, settings=notice_settings, worker_id="w1", clock=lambda: clock[0]
    )

    def notices_to(address: str) -> list[int]:
        return [int(r.message_id.split(".")[0].removeprefix("<notice-")) for r in mail_server.to(address)]

    async with Running(worker):
        occurring = post(db_sessions, draft(status="occurring"), now=clock[0])
        await async_wait_for(
            lambda: (
                states(db_sessions, occurring)["taro@example.jp"] == "queued"
                and ("taro@example.jp", 452) in mail_server.refused
            )
        )
        recovered = post(db_sessions, draft(status="recovered", follows_id=occurring), now=clock[0])
        await async_wait_for(lambda: notices_to("hanako@example.jp") == [occurring, recovered])
        assert notices_to("taro@example.jp") == []  # the 復旧 waits behind the 発生中
        assert states(db_sessions, recovered)["taro@example.jp"] == "queued"
        mail_server.deferred.clear()  # the mailbox has room again
        clock[0] += timedelta(seconds=61)  # the 発生中's back-off is over
        await async_wait_for(lambda: len(notices_to("taro@example.jp")) == 2)
    assert notices_to("taro@example.jp") == [occurring, recovered]


def test_a_later_notice_goes_once_the_earlier_is_given_up(
    db_sessions: sessionmaker[Session], customer: Customer
) -> None:
    _, (dest_id,) = customer("c@example.jp", ["c@example.jp"])
    first, second = post(db_sessions, draft()), post(db_sessions, draft(status="recovered"))
    now = TOKYO_FRIDAY_1030
    policy = queue.FailurePolicy(retry=rules.RetryPolicy((60,), give_up_after_seconds=3600))
    with db_sessions() as session, session.begin():
        (claim,) = queue.claim(session, worker="w", now=now, limit=10, lease_seconds=60)
        assert claim.notice_id == first  # only the oldest of the destination
        queue.record(
            session,
            [queue.SendResult(claim, rules.ReplyClass.TEMPORARY, 452)],
            worker="w",
            now=now,
            policy=policy,
        )
    later = now + timedelta(hours=2)
    with db_sessions() as session, session.begin():
        assert not queue.anything_due(session, now=now + timedelta(seconds=30))  # (first in back-off)
        (again,) = queue.claim(session, worker="w", now=later, limit=10, lease_seconds=60)
        assert again.notice_id == first
        queue.record(
            session,
            [queue.SendResult(again, rules.ReplyClass.TEMPORARY, 452)],
            worker="w",
            now=later,
            policy=policy,
        )  # given up: failed
    with db_sessions() as session, session.begin():
        (then,) = queue.claim(session, worker="w", now=later, limit=10, lease_seconds=60)
    assert then.notice_id == second and states(db_sessions, first) == {"c@example.jp": "failed"}
    assert destination(db_sessions, dest_id).consecutive_failures == 1
