"""The delivery worker: claims due rows of the queue, sends them with aiosmtplib over a pool of
SMTP sessions, records the results in batches.

- In flight: at most ``window`` mails claimed and not yet recorded. Killed (SIGKILL) and restarted,
  the worker gives back the rows its previous incarnation held (same worker id) and sends them
  again with the same Message-ID: the only duplicates are mails that were accepted by the server
  but not yet recorded, at most ``window``. Another worker takes them after ``lease_seconds``.
- A slow or failing recipient domain holds up only itself: at most ``per_domain_window`` of the
  window and a quarter of the SMTP sessions go to one domain at a time; each mail's SMTP
  transaction has ``send_timeout_seconds`` (then it is a temporary failure, retried later).
- Replies: 2xx sent; 4xx retried with back-off (``retry_backoff_seconds``) until
  ``give_up_after_seconds``, then failed; 5xx failed. A failure counts toward stopping the
  destination (``notices.queue.record``).

Database calls run in threads (``asyncio.to_thread``), each one short write transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiosmtplib
import structlog
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core.db import read_session_factory_for
from core.notice_models import Notice
from notices import accounts, queue, rules
from notices.mail import NoticeContent, NoticeMail
from notices.metrics import NoticeMetrics
from notices.rules import ReplyClass, RetryPolicy

log = structlog.get_logger("notices.worker")

PROGRESS_SECONDS = 10.0
_ENHANCED = re.compile(r"^\s*([245]\.[0-9]{1,3}\.[0-9]{1,3})\b")


def utcnow() -> datetime:
    return datetime.now(UTC)


def default_worker_id() -> str:
    return socket.gethostname()


def enhanced_status(text: str | None) -> str | None:
    found = _ENHANCED.match(text or "")
    return found.group(1) if found else None


class SmtpPool:
    """Up to ``size`` open SMTP sessions to one server, reused mail after mail."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        size: int,
        timeout: float,
        start_tls: bool = False,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.host, self.port, self.size, self.timeout = host, port, size, timeout
        self.start_tls, self.username, self.password = start_tls, username, password
        self._idle: asyncio.LifoQueue[aiosmtplib.SMTP] = asyncio.LifoQueue()
        self._slots = asyncio.Semaphore(size)

    @contextlib.asynccontextmanager
    async def session(self) -> Any:
        async with self._slots:
            client = None
            while not self._idle.empty():
                candidate = self._idle.get_nowait()
                if candidate.is_connected:
                    client = candidate
                    break
            if client is None:
                client = await self._connect()
            healthy = False
            try:
                yield client
                healthy = True
            finally:
                if healthy and client.is_connected:
                    self._idle.put_nowait(client)
                else:
                    client.close()

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            timeout=self.timeout,
            start_tls=self.start_tls,
            username=self.username,
            password=self.password,
        )
        try:
            await client.connect()  # with STARTTLS and the login when configured
            await client.ehlo()
        except BaseException:
            client.close()
            raise
        return client

    async def probe(self, sender: str) -> None:
        """Whether the relay takes mail again: a new session (TLS and login included), MAIL FROM
        accepted, RSET; raises what went wrong. The good session joins the pool."""
        async with self._slots:
            client = await self._connect()
            try:
                await client.mail(sender)
                await client.rset()
            except BaseException:
                client.close()
                raise
            self._idle.put_nowait(client)

    def discard_idle(self) -> None:
        """The relay went away: the idle sessions are likely dead, do not hand them out."""
        while not self._idle.empty():
            self._idle.get_nowait().close()

    async def close(self) -> None:
        while not self._idle.empty():
            client = self._idle.get_nowait()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.quit(), 2)
            client.close()


@dataclass(frozen=True)
class Outcome:
    """What one mail's SMTP transaction came to (the reply class, code, enhanced status, text)."""

    reply: ReplyClass
    code: int = 0
    status: str | None = None
    detail: str = ""
    counts: bool = True  # False: not the mailbox's failure (the relay refused the content)


class _Answered(Exception):
    """The transaction ended with ``outcome``; the session is still good (the client sent RSET)."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


async def _reset(client: aiosmtplib.SMTP) -> None:
    """RSET after a refusal, so the session can carry the next mail (a failure here closes it)."""
    try:
        await client.rset()
    except (aiosmtplib.SMTPException, OSError):
        client.close()


def _reason(exc: BaseException) -> str:
    """A relay failure as a short word for logs and the outage record (never a reply text)."""
    code = getattr(exc, "code", None)
    return f"{type(exc).__name__} {code}" if isinstance(code, int) else type(exc).__name__


class DeliveryWorker:
    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        settings: Any,  # notices.settings.NoticeSettings
        worker_id: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        metrics: NoticeMetrics | None = None,
    ) -> None:
        self.sessions = sessions
        self.metrics = metrics or NoticeMetrics()
        self.s = settings
        self.worker_id = worker_id or settings.worker_id or default_worker_id()
        self.clock = clock
        self.policy = queue.FailurePolicy(
            max_failures=settings.max_failures,
            retry=RetryPolicy(tuple(settings.retry_backoff_seconds), settings.give_up_after_seconds),
            acceptance_is_delivery=settings.acceptance_is_delivery,
        )
        self.secret = settings.bounce_secret.get_secret_value().encode()
        self.settings_url = settings.base_url.rstrip("/") + "/support/mymenu"
        self.pool = SmtpPool(
            host=settings.smtp_host or "127.0.0.1",
            port=settings.smtp_port or 25,
            size=settings.smtp_connections,
            timeout=settings.send_timeout_seconds,
            start_tls=settings.smtp_start_tls,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        )
        self.per_domain_sessions = max(1, settings.smtp_connections // 4)
        self._inflight: dict[int, queue.Claim] = {}
        self._by_domain: Counter[str] = Counter()
        self._domain_slots: dict[str, asyncio.Semaphore] = {}
        self._results: list[queue.SendResult] = []
        self._mails: dict[int, NoticeMail] = {}
        self._wake = asyncio.Event()
        self._have_results = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.totals: Counter[str] = Counter()
        self.record_failures = 0
        self._idle = False
        # the relay: up, or down since (its outage row) with the reason and the probes so far
        self.relay_up = True
        self._relay_reason = ""
        self._relay_strikes = 0
        self._outage_id: int | None = None
        self._relay_down_since: datetime | None = None
        self.read_sessions = read_session_factory_for(sessions)

    # ------------------------------------------------------------------------------ database

    def _db(self, work: Callable[[Session], Any]) -> Any:
        with self.sessions() as session, session.begin():
            return work(session)

    async def db(self, work: Callable[[Session], Any]) -> Any:
        return await asyncio.to_thread(self._db, work)

    def _load_mails(self, session: Session, notice_ids: list[int]) -> dict[int, NoticeMail]:
        products = queue.products_of(session, notice_ids)
        found = {}
        for n in session.scalars(select(Notice).where(Notice.id.in_(notice_ids))):
            content = NoticeContent(
                notice_id=n.id,
                token=n.message_token,
                kind=n.kind,
                status=n.status,
                title=n.title,
                area=n.area,
                body=n.body,
                products=tuple(self.s.products.get(p, p) for p in products.get(n.id, [])),  # labels
                starts_at=n.starts_at,
                ends_at=n.ends_at,
                posted_at=n.posted_at,
            )
            found[n.id] = NoticeMail(content, sender=self.s.sender, settings_url=self.settings_url)
        return found

    # ------------------------------------------------------------------------------- sending

    async def _transaction(self, claim: queue.Claim, mail: NoticeMail, stage: list[str]) -> Outcome:
        """One mail's SMTP transaction, step by step so that a failure is blamed rightly: only the
        answer to RCPT TO is the recipient's; connecting, TLS, login, MAIL FROM, a 421 or DATA are
        our relay's (``ReplyClass.RELAY``), except a 5xx to DATA (the mail, not the mailbox)."""
        data = mail.for_recipient(address=claim.address, destination_id=claim.destination_id)
        sender = rules.return_path(
            delivery_id=claim.delivery_id, secret=self.secret, domain=self.s.return_path_domain
        )
        stage[0] = "connect"
        async with self.pool.session() as client:
            stage[0] = "mail"
            mail_options: list[str] = []
            rcpt_options: list[str] = []
            if client.supports_extension("size"):
                mail_options.append(f"SIZE={len(data)}")
            if client.supports_extension("dsn"):
                # a relay (postfix): bounces return headers only, never the body; when its acceptance
                # is not delivery, it reports the delivery too (that resets the failure count)
                mail_options.append("RET=HDRS")
                rcpt_options = [
                    "NOTIFY=FAILURE" if self.s.acceptance_is_delivery else "NOTIFY=SUCCESS,FAILURE"
                ]
            try:
                await client.mail(sender, options=mail_options)
            except aiosmtplib.SMTPResponseException as exc:
                if exc.code != 421:
                    await _reset(client)
                raise  # the relay's own refusal
            stage[0] = "rcpt"
            try:
                await client.rcpt(rules.smtp_mailbox(claim.address), options=rcpt_options)
            except aiosmtplib.SMTPResponseException as exc:
                if exc.code == 421:
                    raise  # the relay closes the session: not the recipient's answer
                await _reset(client)
                raise _Answered(
                    Outcome(
                        rules.classify_reply(exc.code), exc.code, enhanced_status(exc.message), exc.message
                    )
                ) from None
            stage[0] = "data"
            try:
                await client.data(data)
            except aiosmtplib.SMTPResponseException as exc:
                if exc.code == 421:
                    raise
                await _reset(client)
                if exc.code >= 500:  # the content refused: this mail fails, the mailbox is not blamed
                    raise _Answered(
                        Outcome(
                            ReplyClass.PERMANENT,
                            exc.code,
                            enhanced_status(exc.message),
                            exc.message,
                            counts=False,
                        )
                    ) from None
                raise  # 4xx to DATA: the relay's
        return Outcome(ReplyClass.DELIVERED, 250)

    async def _attempt(self, claim: queue.Claim, mail: NoticeMail) -> Outcome:
        stage = ["connect"]
        for may_retry in (True, False):
            try:
                async with asyncio.timeout(self.s.send_timeout_seconds):
                    return await self._transaction(claim, mail, stage)
            except _Answered as answered:
                return answered.outcome
            except aiosmtplib.SMTPServerDisconnected as exc:
                if may_retry and stage[0] == "mail":
                    # a pooled session the relay had closed while idle: once more on a new session
                    stage[0] = "connect"
                    continue
                return self._relay_failed(exc, stage[0])
            except TimeoutError as exc:
                if stage[0] == "rcpt":  # the recipient's server is slow to answer for it: retried later
                    return Outcome(ReplyClass.TEMPORARY, 0, None, "timed out")
                return self._relay_failed(exc, stage[0])
            except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
                return self._relay_failed(exc, stage[0])
        raise AssertionError("unreachable: the second try returns")

    def _relay_failed(self, exc: BaseException, stage: str) -> Outcome:
        reason = _reason(exc)
        if self.relay_up:
            self.relay_up = False
            self.metrics.relay_up.set(0)
            self._relay_reason = reason
            log.warning("notice_relay_down", worker=self.worker_id, reason=reason, stage=stage)
            self.pool.discard_idle()
            self._wake.set()
        code = getattr(exc, "code", 0)
        return Outcome(ReplyClass.RELAY, code if isinstance(code, int) else 0, None, f"relay: {reason}")

    async def _send(self, claim: queue.Claim) -> None:
        mail = self._mails[claim.notice_id]
        slot = self._domain_slots.setdefault(claim.domain, asyncio.Semaphore(self.per_domain_sessions))
        try:
            async with slot:
                if not self.relay_up:
                    outcome = Outcome(ReplyClass.RELAY, 0, None, f"relay: {self._relay_reason}")
                else:
                    outcome = await self._attempt(claim, mail)
        except asyncio.CancelledError:
            return  # shutting down: the row stays leased and goes again (same Message-ID)
        if outcome.reply in (ReplyClass.DELIVERED, ReplyClass.TEMPORARY, ReplyClass.PERMANENT):
            self._relay_strikes = 0  # the relay answered for a recipient: it works
        if outcome.reply not in (ReplyClass.DELIVERED, ReplyClass.RELAY):
            log.info(
                "notice_mail_not_delivered",
                delivery_id=claim.delivery_id,
                notice_id=claim.notice_id,
                destination_id=claim.destination_id,
                domain=claim.domain,
                outcome=outcome.reply.value,
                smtp_reply=outcome.code or None,
                status=outcome.status,
                attempt=claim.attempts,
                counted=outcome.counts,
            )
        self._results.append(
            queue.SendResult(
                claim,
                outcome.reply,
                outcome.code or None,
                outcome.status,
                outcome.detail or None,
                outcome.counts,
            )
        )
        self._have_results.set()

    # ---------------------------------------------------------------------------- the relay

    async def _wait_for_relay(self, stop: asyncio.Event) -> None:
        """The relay is down: claim nothing, probe it after the next pause of the back-off, and
        record the outage (every worker's outages stop the give-up clock of the waiting mails)."""
        if self._outage_id is None:
            started = self.clock()
            self._outage_id = await self.db(
                lambda s: queue.relay_outage_started(
                    s, worker=self.worker_id, now=started, reason=self._relay_reason
                )
            )
            self._relay_down_since = started
        steps = self.s.relay_backoff_seconds or [1.0]
        pause = steps[min(self._relay_strikes, len(steps) - 1)]
        self._relay_strikes += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), pause)
        if stop.is_set():
            return
        try:
            async with asyncio.timeout(self.s.send_timeout_seconds):
                await self.pool.probe(
                    rules.return_path(delivery_id=0, secret=self.secret, domain=self.s.return_path_domain)
                )
        except (TimeoutError, aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
            self._relay_reason = _reason(exc)
            outage_id, now = self._outage_id, self.clock()
            await self.db(lambda s: queue.relay_outage_checked(s, outage_id=outage_id, now=now, ended=False))
            log.info(
                "notice_relay_still_down",
                reason=self._relay_reason,
                next_probe_in=steps[min(self._relay_strikes, len(steps) - 1)],
            )
            return
        outage_id, now = self._outage_id, self.clock()
        await self.db(lambda s: queue.relay_outage_checked(s, outage_id=outage_id, now=now, ended=True))
        down = (now - self._relay_down_since).total_seconds() if self._relay_down_since else 0.0
        self._outage_id, self._relay_down_since = None, None
        self.relay_up = True
        self.metrics.relay_up.set(1)
        log.info("notice_relay_up", worker=self.worker_id, down_seconds=round(down, 1))

    # -------------------------------------------------------------------------------- loops

    async def _flush(self) -> None:
        batch, self._results = self._results, []
        self._have_results.clear()
        if not batch:
            return
        try:
            summary: queue.RecordSummary = await self.db(
                lambda s: queue.record(s, batch, worker=self.worker_id, now=self.clock(), policy=self.policy)
            )
        except SQLAlchemyError as exc:
            # the database is away: keep the results (at most the window) and try again; the rows stay
            # leased to us meanwhile (renewed when it is back; resent, same Message-ID, if we die)
            self._results = batch + self._results
            self._have_results.set()
            self.record_failures += 1
            log.warning("notice_record_failed", error_type=type(exc).__name__, pending=len(self._results))
            await asyncio.sleep(min(5.0, self.s.record_retry_seconds * self.record_failures))
            return
        self.record_failures = 0
        for result in batch:
            claim = result.claim
            if self._inflight.pop(claim.delivery_id, None) is not None:
                self._by_domain[claim.domain] -= 1
                if self._by_domain[claim.domain] <= 0:
                    del self._by_domain[claim.domain]
        self.totals.update(
            sent=summary.sent,
            retried=summary.retried,
            failed=summary.failed,
            stale=summary.stale,
            put_back=summary.put_back,
        )
        for result_name in ("sent", "retried", "failed", "put_back"):
            if getattr(summary, result_name):
                self.metrics.mails.labels(result_name).inc(getattr(summary, result_name))
        for destination_id in summary.stopped:
            log.warning(
                "notice_destination_stopped",
                destination_id=destination_id,
                max_failures=self.policy.max_failures,
            )
        self._wake.set()

    async def _flusher(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        give_up_at: float | None = None
        while not (stop.is_set() and not self._tasks and not self._results):
            if stop.is_set():
                give_up_at = give_up_at or loop.time() + self.s.send_timeout_seconds + 10
                if loop.time() > give_up_at:
                    log.warning("notice_results_not_recorded", pending=len(self._results))
                    return  # still leased: they go again (same Message-ID) after the lease
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._have_results.wait(), self.s.poll_seconds)
            await asyncio.sleep(self.s.flush_seconds)
            await self._flush()

    async def _claim_some(self) -> int:
        room = self.s.window - len(self._inflight)
        if room <= 0:
            return 0
        limit = min(room, self.s.claim_batch)
        busy = dict(self._by_domain)
        if self._idle and not await asyncio.to_thread(self._anything_due):
            return 0  # an idle worker polls with a read (no write lock on SQLite), not a claim
        claims: list[queue.Claim] = await self.db(
            lambda s: queue.claim(
                s,
                worker=self.worker_id,
                now=self.clock(),
                limit=limit,
                lease_seconds=self.s.lease_seconds,
                inflight_by_domain=busy,
                per_domain=self.s.per_domain_window,
            )
        )
        self._idle = not claims
        unknown = sorted({c.notice_id for c in claims} - self._mails.keys())
        if unknown:
            self._mails.update(await asyncio.to_thread(self._read_mails, unknown))
        for claim in claims:
            self._inflight[claim.delivery_id] = claim
            self._by_domain[claim.domain] += 1
            task = asyncio.create_task(self._send(claim))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(claims)

    def _anything_due(self) -> bool:
        with self.read_sessions() as session:
            return queue.anything_due(session, now=self.clock())

    def _read_mails(self, notice_ids: list[int]) -> dict[int, NoticeMail]:
        with self.sessions() as session:
            return self._load_mails(session, notice_ids)

    def _sweep(self, session: Session) -> None:
        now = self.clock()
        queue.renew_leases(session, worker=self.worker_id, now=now, lease_seconds=self.s.lease_seconds)
        queue.release_leases(session, now=now)
        accounts.sweep_expired(session, now=now)

    async def run(self, stop: asyncio.Event) -> None:
        released = await self.db(
            lambda s: queue.release_leases(s, now=self.clock(), own_worker=self.worker_id)
        )
        log.info("notice_worker_started", worker=self.worker_id, released=released, window=self.s.window)
        flusher = asyncio.create_task(self._flusher(stop))
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + self.s.lease_seconds / 4
        next_report, reported = loop.time() + PROGRESS_SECONDS, dict(self.totals)
        try:
            while not stop.is_set():
                if loop.time() >= next_report:
                    if dict(self.totals) != reported:  # a line every 10 s while there is work
                        reported = dict(self.totals)
                        log.info("notice_worker_progress", in_flight=len(self._inflight), **reported)
                    next_report = loop.time() + PROGRESS_SECONDS
                try:
                    if loop.time() >= next_sweep:
                        await self.db(self._sweep)
                        next_sweep = loop.time() + self.s.lease_seconds / 4
                    if not self.relay_up:
                        await self._wait_for_relay(stop)
                        continue
                    claimed = await self._claim_some()
                except SQLAlchemyError as exc:
                    log.warning("notice_claim_failed", error_type=type(exc).__name__)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 2.0)
                    continue
                if claimed and len(self._inflight) < self.s.window:
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_first(self._wake, stop), self.s.poll_seconds)
            # let the mails in flight finish (each within its send timeout), record them
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=self.s.send_timeout_seconds + 1)
            await flusher
        finally:
            for task in list(self._tasks):
                task.cancel()
            if not flusher.done():
                flusher.cancel()
            await self.pool.close()
            log.info("notice_worker_stopped", worker=self.worker_id, **dict(self.totals))


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
