"""The support site's rules: pure functions of state and ``now`` (no database, no I/O).

- Delivery window: a notice is mailed to a destination only when the moment it was posted falls in
  the support ID's delivery days and one-hour bands, Asia/Tokyo (seed 000: 「配信希望曜日/時間帯以外に
  掲載された情報は、メール配信されません」).
- Destinations: at most three per support ID, pending and stopped ones included; adding an address
  that is pending since less than 30 minutes says so (「30分経過後、もう一度お試しください」), after
  that a new confirmation mail goes.
- Failures: a permanent failure (5xx, a bounce) or a temporary one that finally gave up counts; after
  ``max_failures`` consecutive ones the destination is stopped (配信停止); a delivered mail resets
  the count; 配信再開 resets it.
- Temporary failures (4xx) are retried with back-off until ``give_up_after``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from core.mail_address import FORMULA_PREFIXES, mail_address_problems, normalize_mail_address

TOKYO = ZoneInfo("Asia/Tokyo")
ALL_DAYS = 0x7F
ALL_HOURS = 0xFFFFFF
MAX_DESTINATIONS = 3
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_LABELS_JA = ("月", "火", "水", "木", "金", "土", "日")

KINDS = {"maintenance": "工事情報", "outage": "故障情報"}
STATUSES = {
    "scheduled": "予定",
    "in_progress": "作業中",
    "completed": "完了",
    "occurring": "発生中",
    "recovered": "復旧",
    "cancelled": "中止",
}


class DestinationState(StrEnum):
    PENDING = "pending"  # 仮登録 (confirmation mailed)
    DELIVERING = "delivering"  # 配信中
    STOPPED = "stopped"  # 配信停止


class DeliveryState(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    BOUNCED = "bounced"
    SKIPPED = "skipped"


# ------------------------------------------------------------------------------ delivery window


def day_bit(moment: datetime) -> int:
    """The bit of the moment's weekday in Tokyo (Monday: bit 0)."""
    return 1 << moment.astimezone(TOKYO).weekday()


def hour_bit(moment: datetime) -> int:
    """The bit of the moment's one-hour band in Tokyo (00:00–00:59: bit 0)."""
    return 1 << moment.astimezone(TOKYO).hour


def in_delivery_window(days_mask: int, hours_mask: int, moment: datetime) -> bool:
    if moment.tzinfo is None:
        raise ValueError("an aware datetime is needed")
    return bool(days_mask & day_bit(moment)) and bool(hours_mask & hour_bit(moment))


def days_mask(days: Iterable[int]) -> int:
    mask = 0
    for day in days:
        if not 0 <= day <= 6:
            raise ValueError(f"not a weekday: {day} (0 Monday … 6 Sunday)")
        mask |= 1 << day
    return mask


def hours_mask(hours: Iterable[int]) -> int:
    mask = 0
    for hour in hours:
        if not 0 <= hour <= 23:
            raise ValueError(f"not an hour band: {hour} (0 … 23)")
        mask |= 1 << hour
    return mask


def days_of(mask: int) -> list[int]:
    return [day for day in range(7) if mask & (1 << day)]


def hours_of(mask: int) -> list[int]:
    return [hour for hour in range(24) if mask & (1 << hour)]


# ---------------------------------------------------------------------------------- addresses


class AddressError(ValueError):
    """Not a mail address we can deliver to."""


_CARRIER_LOCAL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}")


def _carrier_style(text: str) -> bool:
    """An address Japanese mobile carriers issued before 2009 (docomo, au): dots in a row or a dot
    next to the ``@`` (``taro..yamada@docomo.ne.jp``, ``taro.@ezweb.ne.jp``). Not an RFC 5321
    dot-string, but a valid quoted string: sent as ``"taro..yamada"@docomo.ne.jp``
    (:func:`smtp_mailbox`). Everything else of core's rule holds (the domain, no formula prefix)."""
    local, _, domain = text.rpartition("@")
    return (
        bool(_CARRIER_LOCAL.fullmatch(local))
        and local.strip(".") != ""
        and not mail_address_problems(f"x@{domain}")
        and not text.startswith(FORMULA_PREFIXES)
    )


def normalize_address(value: str) -> str:
    """The address as stored: core's one rule (`core.mail_address`), or a carrier's legacy address
    (:func:`_carrier_style`); trimmed, the domain lower-cased (the local part is kept as typed;
    support IDs are compared case-insensitively all the same)."""
    text = value.strip()
    if mail_address_problems(text) and not _carrier_style(text):
        raise AddressError("メールアドレスの形式が正しくありません。")
    return normalize_mail_address(text)


_DOT_STRING = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def smtp_mailbox(address: str) -> str:
    """The address as an SMTP command carries it (RFC 5321 4.1.2): a local part that is not a
    dot-string (the carriers' ``taro..yamada``, ``taro.``) goes in quotes."""
    local, _, domain = address.rpartition("@")
    if _DOT_STRING.fullmatch(local) or (local.startswith('"') and local.endswith('"') and len(local) > 1):
        return address
    escaped = local.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"@{domain}'


def domain_of(address: str) -> str:
    return address.rsplit("@", 1)[1].lower()


# ------------------------------------------------------------------------------- destinations


@dataclass(frozen=True)
class DestinationView:
    address: str
    state: DestinationState
    confirmation_sent_at: datetime | None


class AddOutcome(StrEnum):
    ADDED = "added"  # a new pending destination, confirmation mailed
    RESENT = "resent"  # pending for 30 minutes or more: a new confirmation mail
    ALREADY_PENDING = "already_pending"  # pending for less than 30 minutes: try again later
    ALREADY_REGISTERED = "already_registered"  # delivering or stopped already
    LIMIT_REACHED = "limit_reached"  # three destinations already


def decide_add_destination(
    existing: Sequence[DestinationView],
    address: str,
    now: datetime,
    *,
    retry_after: timedelta = timedelta(minutes=30),
    limit: int = MAX_DESTINATIONS,
) -> AddOutcome:
    """What adding ``address`` (normalized) to a support ID's destinations does."""
    for destination in existing:
        if destination.address.lower() != address.lower():
            continue
        if destination.state is not DestinationState.PENDING:
            return AddOutcome.ALREADY_REGISTERED
        sent = destination.confirmation_sent_at
        if sent is not None and now - sent < retry_after:
            return AddOutcome.ALREADY_PENDING
        return AddOutcome.RESENT
    if len(existing) >= limit:
        return AddOutcome.LIMIT_REACHED
    return AddOutcome.ADDED


# ---------------------------------------------------------------------------------- failures


@dataclass(frozen=True)
class FailureCount:
    consecutive_failures: int
    state: DestinationState


def after_failure(current: FailureCount, *, max_failures: int) -> FailureCount:
    """One more failed delivery: stop the destination at ``max_failures`` in a row."""
    count = current.consecutive_failures + 1
    state = current.state
    if state is DestinationState.DELIVERING and count >= max_failures:
        state = DestinationState.STOPPED
    return FailureCount(count, state)


def after_delivered(current: FailureCount) -> FailureCount:
    """A delivered mail resets the count (a stopped destination stays stopped until 配信再開)."""
    return FailureCount(0, current.state)


def after_resume(current: FailureCount) -> FailureCount:
    """配信再開: delivering again, count reset."""
    if current.state is not DestinationState.STOPPED:
        return current
    return FailureCount(0, DestinationState.DELIVERING)


class ReplyClass(StrEnum):
    DELIVERED = "delivered"
    TEMPORARY = "temporary"  # the recipient's 4xx to RCPT TO: retried, gives up after a while
    PERMANENT = "permanent"  # the recipient's 5xx to RCPT TO: failed
    # our relay could not be used (connection refused or timed out, TLS, login, 421, MAIL FROM or
    # DATA refused for a while): never the recipient's failure; the mail goes back to the queue
    # unchanged and the worker pauses until the relay answers again
    RELAY = "relay"


def classify_reply(code: int) -> ReplyClass:
    if 200 <= code < 300:
        return ReplyClass.DELIVERED
    if 400 <= code < 500:
        return ReplyClass.TEMPORARY
    return ReplyClass.PERMANENT


@dataclass(frozen=True)
class RetryPolicy:
    backoff_seconds: tuple[int, ...] = (60, 300, 900, 1800, 3600)
    give_up_after_seconds: int = 24 * 3600

    def next_attempt(
        self,
        *,
        attempts: int,
        first_queued_at: datetime,
        now: datetime,
        paused: timedelta = timedelta(0),
    ) -> datetime | None:
        """When to try again after ``attempts`` temporary failures; None: give up (it counts).
        ``paused``: how long of the mail's age our relay was down (that time does not count)."""
        if now - first_queued_at - paused >= timedelta(seconds=self.give_up_after_seconds):
            return None
        step = self.backoff_seconds[min(max(attempts, 1), len(self.backoff_seconds)) - 1]
        return now + timedelta(seconds=step)


def paused_within(outages: Iterable[tuple[datetime, datetime]], start: datetime, end: datetime) -> timedelta:
    """How much of ``start``…``end`` the union of ``outages`` (each a start and an end) covers:
    overlapping outages (two workers saw the same one) count once."""
    clipped = sorted((max(a, start), min(b, end)) for a, b in outages if b > start and a < end)
    total = timedelta(0)
    current: tuple[datetime, datetime] | None = None
    for a, b in clipped:
        if current is not None and a <= current[1]:
            current = (current[0], max(current[1], b))
            continue
        if current is not None:
            total += current[1] - current[0]
        current = (a, b)
    if current is not None:
        total += current[1] - current[0]
    return total


# -------------------------------------------------------------------------- mail identities


def message_id(*, notice_id: int, token: str, destination_id: int, domain: str) -> str:
    """The same for every attempt of one notice to one destination (a resend after a crash too)."""
    return f"<notice-{notice_id}.{destination_id}.{token}@{domain}>"


def _signature(secret: bytes, delivery_id: int) -> str:
    return hmac.new(secret, f"bounce:{delivery_id}".encode(), hashlib.sha256).hexdigest()[:12]


def return_path(*, delivery_id: int, secret: bytes, domain: str) -> str:
    """The per-mail envelope sender a bounce comes back to (VERP), signed so that a forged bounce
    cannot stop someone's destination."""
    return f"b-{delivery_id}-{_signature(secret, delivery_id)}@{domain}"


_RETURN = re.compile(r"b-(?P<id>[0-9]{1,18})-(?P<sig>[0-9a-f]{12})@(?P<domain>.+)", re.IGNORECASE)


def delivery_of_return_path(address: str, *, secret: bytes, domain: str) -> int | None:
    """The delivery id a return path stands for, or None (not ours, or a bad signature)."""
    found = _RETURN.fullmatch(address.strip().strip("<>"))
    if not found or found["domain"].lower() != domain.lower():
        return None
    delivery_id = int(found["id"])
    if not hmac.compare_digest(found["sig"].lower(), _signature(secret, delivery_id)):
        return None
    return delivery_id
