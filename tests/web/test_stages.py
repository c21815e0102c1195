"""The login's state machine (web_stub.stages): the one table of moves, pure."""

from __future__ import annotations

import pytest

from web_stub.stages import (
    API_NEXT,
    PAGES,
    TRANSITIONS,
    Event,
    LoginStateError,
    Stage,
    next_stage,
    password_done,
)


def test_the_seed_flows_reach_home() -> None:
    flows = [
        [Event.MUST_CHANGE, Event.OTP_UNCHOSEN, Event.DECLINED_OTP],  # first login, no OTP
        [Event.MUST_CHANGE, Event.OTP_UNCHOSEN, Event.CHOSE_OTP, Event.LINK_CONFIRMED, Event.CODE_ACCEPTED],
        [Event.OTP_ON, Event.CODE_ACCEPTED],  # two-step login
        [Event.OTP_OFF],
        [Event.OTP_PENDING, Event.BACK_TO_CHOICE, Event.DECLINED_OTP],
    ]
    for flow in flows:
        stage = Stage.ANONYMOUS
        for event in flow:
            stage = next_stage(stage, event)
        assert stage is Stage.HOME, flow


@pytest.mark.parametrize(
    ("stage", "event"),
    [
        (Stage.ANONYMOUS, Event.CODE_ACCEPTED),  # no skipping the password
        (Stage.MUST_CHANGE, Event.CODE_ACCEPTED),
        (Stage.MUST_CHANGE, Event.MUST_CHANGE),
        (Stage.OTP_CHOICE, Event.CODE_ACCEPTED),
        (Stage.OTP_REGISTER, Event.CODE_ACCEPTED),  # no code before the link
        (Stage.OTP_CODE, Event.DECLINED_OTP),  # a registered number cannot decline at login
        (Stage.HOME, Event.OTP_OFF),
        ("nonsense", Event.OTP_OFF),
    ],
)
def test_a_move_the_table_does_not_have_raises(stage: Stage | str, event: Event) -> None:
    with pytest.raises(LoginStateError):
        next_stage(stage, event)


def test_every_stage_of_a_login_has_a_page_and_an_api_name() -> None:
    assert set(TRANSITIONS) == set(Stage)
    assert set(PAGES) == set(API_NEXT) == set(Stage) - {Stage.ANONYMOUS}
    for moves in TRANSITIONS.values():
        assert Stage.ANONYMOUS not in moves.values()  # a login never goes back to anonymous


def test_password_done_by_otp_status() -> None:
    assert [
        next_stage(Stage.MUST_CHANGE, password_done(s)) for s in ("unchosen", "pending", "on", "off")
    ] == [
        Stage.OTP_CHOICE,
        Stage.OTP_REGISTER,
        Stage.OTP_CODE,
        Stage.HOME,
    ]
