"""The notice mail: built once per notice, the per-recipient headers added per mail (fast enough for
thousands a second), with what a receiving system needs: Message-ID (the same on every attempt),
Date, Auto-Submitted, List-Unsubscribe (the notification settings page), a per-mail return path."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formatdate

from notices import rules


def _fold_base64(data: bytes) -> bytes:
    encoded = base64.b64encode(data)
    return b"\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))


def _tokyo(moment: datetime | None) -> str:
    if moment is None:
        return "未定"
    return moment.astimezone(rules.TOKYO).strftime("%Y年%m月%d日 %H:%M")


@dataclass(frozen=True)
class NoticeContent:
    notice_id: int
    token: str
    kind: str
    status: str
    title: str
    area: str
    body: str
    products: tuple[str, ...]
    starts_at: datetime | None
    ends_at: datetime | None
    posted_at: datetime


def notice_text(content: NoticeContent, *, settings_url: str) -> str:
    kind = rules.KINDS.get(content.kind, content.kind)
    status = rules.STATUSES.get(content.status, content.status)
    return (
        f"【{kind}】{content.title}（{status}）\n\n"
        f"対象商品: {'、'.join(content.products)}\n"
        f"対象地域: {content.area or '-'}\n"
        f"開始日時: {_tokyo(content.starts_at)}\n"
        f"終了日時: {_tokyo(content.ends_at)}\n"
        f"掲載日時: {_tokyo(content.posted_at)}\n\n"
        f"{content.body.rstrip()}\n\n"
        "――――――――――――――――――――\n"
        "このメールは、お客さまサポートの工事・故障情報メールの配信設定に基づきお送りしています。\n"
        "配信する商品、曜日・時間帯、配信先の変更・停止はマイメニューから行えます。\n"
        f"{settings_url}\n"
        "このメールには返信できません。\n"
    )


class NoticeMail:
    """A notice's mail, ready to be addressed: :meth:`for_recipient` gives the bytes of one mail."""

    def __init__(self, content: NoticeContent, *, sender: str, settings_url: str) -> None:
        self.content = content
        self.sender = sender
        self.domain = sender.rpartition("@")[2] or "localhost"
        kind = rules.KINDS.get(content.kind, content.kind)
        status = rules.STATUSES.get(content.status, content.status)
        subject = Header(f"【{kind}】{content.title}（{status}）", "utf-8").encode()
        body = _fold_base64(notice_text(content, settings_url=settings_url).encode("utf-8"))
        self._head = (
            f"From: {sender}\r\n"
            f"Subject: {subject}\r\n"
            "MIME-Version: 1.0\r\n"
            'Content-Type: text/plain; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: base64\r\n"
            "Auto-Submitted: auto-generated\r\n"
            "Precedence: bulk\r\n"
            f"List-Unsubscribe: <{settings_url}>\r\n"
            f"X-Notice-ID: {content.notice_id}\r\n"
        ).encode("ascii")
        self._body = b"\r\n" + body + b"\r\n"

    def message_id(self, destination_id: int) -> str:
        return rules.message_id(
            notice_id=self.content.notice_id,
            token=self.content.token,
            destination_id=destination_id,
            domain=self.domain,
        )

    def for_recipient(self, *, address: str, destination_id: int, now: datetime | None = None) -> bytes:
        date = format_datetime(now) if now is not None else formatdate(localtime=False)
        to = rules.smtp_mailbox(address)  # a carrier's taro..yamada@ in quotes
        per_mail = f"To: {to}\r\nDate: {date}\r\nMessage-ID: {self.message_id(destination_id)}\r\n"
        return per_mail.encode("ascii", "strict") + self._head + self._body
