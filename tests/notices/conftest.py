"""Fixtures of the notices area: a real SMTP server on loopback (aiosmtpd) that accepts, rejects
(550) and defers (452) chosen recipients and is slow for one domain; support IDs with destinations."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy.orm import Session, sessionmaker

from notices import accounts, rules
from notices.settings import NoticeSettings
from tests.support import free_port, recording_controller

_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)
SLOW_DOMAIN = "slow.example"


@dataclass
class Received:
    mail_from: str
    rcpt: str
    message_id: str
    data: bytes


@dataclass
class MailServer:
    """What the SMTP server saw. Local parts decide the reply: ``reject…`` 550, ``full…`` 452 (and
    the addresses in ``deferred``, for as long as they are there).
    A RCPT of the slow domain takes ``slow_seconds``, or until ``slow_released`` is set."""

    host: str
    port: int
    slow_seconds: float = 2.0
    slow_released: threading.Event = field(default_factory=threading.Event)
    data_delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    refused: list[tuple[str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    controller: Controller | None = None
    raw_rcpt: list[str] = field(default_factory=list)  # RCPT TO arguments as they came on the wire
    deferred: set[str] = field(default_factory=set)  # these answer 452 too, until removed

    def listen(self) -> None:
        """Start listening (again, on the same port)."""
        self.controller = recording_controller(self, hostname=self.host, port=self.port, ready_timeout=10)
        self.controller.start()

    def go_away(self) -> None:
        """Stop listening: connections are refused until :meth:`listen`."""
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        local, _, domain = address.rpartition("@")
        if domain.lower() == SLOW_DOMAIN:
            await asyncio.to_thread(self.slow_released.wait, self.slow_seconds)
        if local.startswith("reject"):
            with self.lock:
                self.refused.append((address, 550))
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if address in self.deferred or local.startswith("full"):
            with self.lock:
                self.refused.append((address, 452))
            return "452 4.2.2 Mailbox full"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        data: bytes = envelope.content
        found = _MESSAGE_ID.search(data)
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.received.append(
                    Received(envelope.mail_from, rcpt, found.group(1).decode() if found else "", data)
                )
        return "250 2.0.0 OK queued"

    def message_ids(self) -> Counter[str]:
        with self.lock:
            return Counter(r.message_id for r in self.received)

    def to(self, address: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.rcpt == address]

    def count(self) -> int:
        with self.lock:
            return len(self.received)


@pytest.fixture
def mail_server() -> Iterator[MailServer]:
    server = MailServer("127.0.0.1", free_port())
    server.listen()
    try:
        yield server
    finally:
        server.slow_released.set()  # no RCPT left hanging
        server.go_away()


@pytest.fixture
def notice_settings(mail_server: MailServer) -> NoticeSettings:
    return NoticeSettings(
        smtp_host=mail_server.host,
        smtp_port=mail_server.port,
        smtp_connections=8,
        poll_seconds=0.05,
        flush_seconds=0.01,
        record_retry_seconds=0.01,
        send_timeout_seconds=10,
        retry_backoff_seconds=[60],
        give_up_after_seconds=3600,
        bounce_port=free_port(),
        operator_token="operator-test-token-0123456789",
    )


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


async def async_wait_for(condition: Callable[[], bool], within: float = 20.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


#: Friday 2026-12-04 10:30 in Tokyo (01:30 UTC)
TOKYO_FRIDAY_1030 = datetime(2026, 12, 4, 1, 30, tzinfo=UTC)


Customer = Callable[..., tuple[int, list[int]]]


@pytest.fixture
def customer(db_sessions: sessionmaker[Session]) -> Customer:
    """``customer(email, addresses, products=("hikari",), days=ALL, hours=ALL, state="delivering")``:
    an active support ID with destinations; returns (account id, destination ids)."""

    serial = [0]

    def make(
        email: str,
        addresses: list[str],
        *,
        products: tuple[str, ...] = ("hikari-denwa",),
        days: int = rules.ALL_DAYS,
        hours: int = rules.ALL_HOURS,
        state: str = "delivering",
        now: datetime = TOKYO_FRIDAY_1030,
    ) -> tuple[int, list[int]]:
        serial[0] += 1
        with db_sessions() as session, session.begin():
            account = accounts.create_active_account(
                session,
                email=email,
                name=f"顧客{serial[0]}",
                birth_date=date(1980, 1, 1),
                password_hash="x",
                now=now,
            )
            accounts.set_notification_settings(session, account, products=products, days=days, hours=hours)
            ids = []
            for address in addresses:
                dest = accounts.add_confirmed_destination(
                    session, account_id=account.id, address=address, now=now
                )
                dest.state = state
                ids.append(dest.id)
            return account.id, ids

    return make
