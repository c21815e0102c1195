"""The support site's rules as pure functions (seed 000's answers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from notices import rules
from notices.rules import AddOutcome, DestinationState, DestinationView, FailureCount

# 2026-12-06 is a Sunday; 23:30 UTC on Sunday is Monday 08:30 in Tokyo
SUNDAY_2330_UTC = datetime(2026, 12, 6, 23, 30, tzinfo=UTC)


def test_the_delivery_window_is_read_in_tokyo_time() -> None:
    monday = rules.days_mask([0])
    eight = rules.hours_mask([8])
    assert rules.in_delivery_window(monday, eight, SUNDAY_2330_UTC)
    assert not rules.in_delivery_window(rules.days_mask([6]), eight, SUNDAY_2330_UTC)  # Sunday in UTC only
    assert not rules.in_delivery_window(monday, rules.hours_mask([23]), SUNDAY_2330_UTC)


@pytest.mark.parametrize(("minute", "inside"), [(-1, False), (0, True), (59, True), (60, False)])
def test_one_hour_bands_start_and_end_on_the_hour(minute: int, inside: bool) -> None:
    band_start = datetime(2026, 12, 7, 8, 0, tzinfo=rules.TOKYO)
    moment = band_start + timedelta(minutes=minute)
    assert rules.in_delivery_window(rules.ALL_DAYS, rules.hours_mask([8]), moment) is inside


def test_no_day_or_no_hour_selected_is_never_inside() -> None:
    assert not rules.in_delivery_window(0, rules.ALL_HOURS, SUNDAY_2330_UTC)
    assert not rules.in_delivery_window(rules.ALL_DAYS, 0, SUNDAY_2330_UTC)


def test_masks_round_trip_and_refuse_out_of_range() -> None:
    assert rules.days_of(rules.days_mask([0, 2, 6])) == [0, 2, 6]
    assert rules.hours_of(rules.hours_mask([0, 9, 23])) == [0, 9, 23]
    with pytest.raises(ValueError):
        rules.days_mask([7])
    with pytest.raises(ValueError):
        rules.hours_mask([24])
    with pytest.raises(ValueError):
        rules.in_delivery_window(1, 1, datetime(2026, 1, 1))  # naive


@pytest.mark.parametrize(
    "bad",
    ["", "no-at", "a@b", "a@@b.jp", "a b@c.jp", "...@c.jp", "=a..b@c.jp", "a@-c.jp", "x" * 65 + "@c.jp"],
)
def test_bad_addresses_are_refused(bad: str) -> None:
    with pytest.raises(rules.AddressError):
        rules.normalize_address(bad)


@pytest.mark.parametrize("legacy", [".a@docomo.ne.jp", "a..b@docomo.ne.jp", "taro.@ezweb.ne.jp"])
def test_the_carriers_legacy_addresses_are_accepted_and_sent_quoted(legacy: str) -> None:
    assert rules.normalize_address(legacy) == legacy
    local, _, domain = legacy.rpartition("@")
    assert rules.smtp_mailbox(legacy) == f'"{local}"@{domain}'
    assert rules.smtp_mailbox("taro.yamada@docomo.ne.jp") == "taro.yamada@docomo.ne.jp"


def test_any_address_is_accepted_and_its_domain_lowercased() -> None:
    assert (
        rules.normalize_address("  Taro.Yamada+ivr@Example.OCN.ne.JP ") == "Taro.Yamada+ivr@example.ocn.ne.jp"
    )


NOW = datetime(2026, 12, 4, 1, 0, tzinfo=UTC)


def view(address: str, state: DestinationState, sent_minutes_ago: float | None = None) -> DestinationView:
    sent = None if sent_minutes_ago is None else NOW - timedelta(minutes=sent_minutes_ago)
    return DestinationView(address, state, sent)


def test_up_to_three_destinations_counting_pending_and_stopped() -> None:
    existing = [
        view("a@x.jp", DestinationState.DELIVERING),
        view("b@x.jp", DestinationState.PENDING, 100),
        view("c@x.jp", DestinationState.STOPPED),
    ]
    assert rules.decide_add_destination(existing, "d@x.jp", NOW) is AddOutcome.LIMIT_REACHED
    assert rules.decide_add_destination(existing[:2], "d@x.jp", NOW) is AddOutcome.ADDED


def test_the_same_pending_address_within_30_minutes_is_already_pending_then_resent() -> None:
    assert (
        rules.decide_add_destination([view("a@x.jp", DestinationState.PENDING, 29.9)], "a@x.jp", NOW)
        is AddOutcome.ALREADY_PENDING
    )
    assert (
        rules.decide_add_destination([view("a@x.jp", DestinationState.PENDING, 30)], "A@x.jp", NOW)
        is AddOutcome.RESENT
    )
    # even with three destinations, re-sending the pending one's confirmation is allowed
    three = [
        view("a@x.jp", DestinationState.PENDING, 31),
        view("b@x.jp", DestinationState.DELIVERING),
        view("c@x.jp", DestinationState.DELIVERING),
    ]
    assert rules.decide_add_destination(three, "a@x.jp", NOW) is AddOutcome.RESENT
    assert (
        rules.decide_add_destination([view("a@x.jp", DestinationState.STOPPED)], "a@x.jp", NOW)
        is AddOutcome.ALREADY_REGISTERED
    )


def test_three_consecutive_failures_stop_a_destination_and_a_delivery_resets_the_count() -> None:
    state = FailureCount(0, DestinationState.DELIVERING)
    state = rules.after_failure(state, max_failures=3)
    state = rules.after_failure(state, max_failures=3)
    assert state == FailureCount(2, DestinationState.DELIVERING)
    assert rules.after_delivered(state) == FailureCount(0, DestinationState.DELIVERING)
    state = rules.after_failure(state, max_failures=3)
    assert state == FailureCount(3, DestinationState.STOPPED)
    assert rules.after_delivered(state).state is DestinationState.STOPPED  # only 配信再開 restarts
    assert rules.after_resume(state) == FailureCount(0, DestinationState.DELIVERING)
    assert rules.after_resume(FailureCount(1, DestinationState.DELIVERING)) == FailureCount(
        1, DestinationState.DELIVERING
    )


def test_temporary_failures_back_off_then_give_up() -> None:
    policy = rules.RetryPolicy((60, 300), give_up_after_seconds=3600)
    first = NOW
    assert policy.next_attempt(attempts=1, first_queued_at=first, now=NOW) == NOW + timedelta(seconds=60)
    assert policy.next_attempt(attempts=2, first_queued_at=first, now=NOW) == NOW + timedelta(seconds=300)
    assert policy.next_attempt(attempts=9, first_queued_at=first, now=NOW) == NOW + timedelta(seconds=300)
    assert policy.next_attempt(attempts=3, first_queued_at=first, now=NOW + timedelta(hours=1)) is None


def test_reply_codes() -> None:
    assert rules.classify_reply(250) is rules.ReplyClass.DELIVERED
    assert rules.classify_reply(452) is rules.ReplyClass.TEMPORARY
    assert rules.classify_reply(550) is rules.ReplyClass.PERMANENT


def test_return_paths_are_signed() -> None:
    secret = b"k" * 16
    address = rules.return_path(delivery_id=42, secret=secret, domain="bounce.example.jp")
    assert rules.delivery_of_return_path(address, secret=secret, domain="bounce.example.jp") == 42
    assert (
        rules.delivery_of_return_path(f"<{address.upper()}>", secret=secret, domain="BOUNCE.example.jp") == 42
    )
    forged = address.replace("b-42-", "b-43-")
    assert rules.delivery_of_return_path(forged, secret=secret, domain="bounce.example.jp") is None
    assert rules.delivery_of_return_path(address, secret=b"other", domain="bounce.example.jp") is None
    assert rules.delivery_of_return_path(address, secret=secret, domain="else.example.jp") is None


def test_message_ids_are_stable_per_notice_and_destination() -> None:
    one = rules.message_id(notice_id=1, token="ab", destination_id=7, domain="support.example.jp")
    assert one == rules.message_id(notice_id=1, token="ab", destination_id=7, domain="support.example.jp")
    assert one != rules.message_id(notice_id=1, token="ab", destination_id=8, domain="support.example.jp")
