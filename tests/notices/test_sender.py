"""The envelope sender follows the sender (issue 20, item 4): the return path must be in the
sender's organisational domain (public suffix list), or `ivr notices serve` refuses to start and
says which two settings to change; when they fit, the mails' envelope senders are in it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from notices.settings import NoticeSettings, organisational_domain_of, sender_domain_problems
from notices.worker import DeliveryWorker

from .conftest import Customer, MailServer, async_wait_for
from .test_delivery import Running, all_final, draft, post


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url  # a check of the settings: one backend is enough


@pytest.mark.parametrize(
    ("sender", "return_path_domain", "fits"),
    [
        ("notice@support.example.jp", "bounce.support.example.jp", True),  # the defaults
        ("notice@support.ntt.com", "bounce.ntt.com", True),
        ("notice@support.ntt.com", "bounce.support.example.jp", False),  # the sender changed alone
        ("notice@a.example.co.jp", "bounce.example.co.jp", True),
        ("notice@example.co.jp", "bounce.other.co.jp", False),  # co.jp is a public suffix
        ("notice@one.github.io", "two.github.io", False),  # so is github.io (private section)
        ("notice@Support.NTT.com", "BOUNCE.ntt.com.", True),
    ],
)
def test_the_return_path_must_be_in_the_senders_organisational_domain(
    sender: str, return_path_domain: str, fits: bool
) -> None:
    settings = NoticeSettings(sender=sender, return_path_domain=return_path_domain)
    problems = sender_domain_problems(settings, organisational_domain_of())
    assert (problems == []) is fits
    if not fits:
        assert "IVR_NOTICES__SENDER" in problems[0] and "IVR_NOTICES__RETURN_PATH_DOMAIN" in problems[0]


def test_ivr_notices_serve_refuses_to_start_when_only_the_sender_changed(db_url: str, tmp_path: Path) -> None:
    env = dict(
        os.environ,
        IVR_DATABASE_URL=db_url,
        IVR_DATA_DIR=str(tmp_path),
        IVR_NOTICES__SENDER="notice@support.ntt.com",
    )
    started = subprocess.run(
        [sys.executable, "-m", "stack.cli.main", "notices", "serve", "--no-web", "--no-bounces"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 2
    assert "IVR_NOTICES__SENDER (notice@support.ntt.com: ntt.com)" in started.stderr
    assert "IVR_NOTICES__RETURN_PATH_DOMAIN (bounce.support.example.jp" in started.stderr
    assert "notice_worker_started" not in started.stdout + started.stderr


async def test_the_envelope_sender_is_in_the_senders_domain(
    db_sessions: sessionmaker[Session],
    customer: Customer,
    mail_server: MailServer,
    notice_settings: NoticeSettings,
) -> None:
    settings = notice_settings.model_copy(
        update={"sender": "notice@support.ntt.com", "return_path_domain": "bounce.ntt.com"}
    )
    assert sender_domain_problems(settings, organisational_domain_of()) == []
    customer("c@example.jp", ["c@example.jp"])
    notice_id = post(db_sessions, draft())
    async with Running(DeliveryWorker(sessions=db_sessions, settings=settings, worker_id="w1")):
        await async_wait_for(all_final(db_sessions, notice_id))
    (got,) = mail_server.to("c@example.jp")
    assert got.mail_from.endswith("@bounce.ntt.com") and b"From: notice@support.ntt.com" in got.data
