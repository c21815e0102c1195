"""The steps of a login as one state machine (the shape of h11's ``_state.py``): the stages, the
events that move a login on, and the one table of which event moves which stage where. Nothing
else writes a session's stage: :meth:`web_stub.site.Site.advance` looks the move up here, and an
event the table does not have for the stage raises :class:`LoginStateError` (a bug, not a user
error: the pages' guards only let a request through at the stages whose events it may send).

    anonymous --password ok--> must_change | otp_choice | otp_register | otp_code | home
    must_change --password changed--> otp_choice | otp_register | otp_code | home
    otp_choice --chose OTP--> otp_register --link confirmed--> otp_code --code accepted--> home
    otp_choice --declined--> home;  otp_register --back--> otp_choice

Pure: no HTTP, no database.
"""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """Where a login stands; :data:`PAGES` gives the page of each."""

    ANONYMOUS = "anonymous"
    MUST_CHANGE = "must_change"
    OTP_CHOICE = "otp_choice"
    OTP_REGISTER = "otp_register"
    OTP_CODE = "otp_code"
    HOME = "home"


class Event(StrEnum):
    """What happened to a login."""

    MUST_CHANGE = "must_change"  # the password was right, but it is temporary or expired
    OTP_UNCHOSEN = "otp_unchosen"  # password done; one-time passwords not chosen yet
    OTP_PENDING = "otp_pending"  # password done; chosen, no address registered yet
    OTP_ON = "otp_on"  # password done; a code is needed
    OTP_OFF = "otp_off"  # password done; no code
    CHOSE_OTP = "chose_otp"
    DECLINED_OTP = "declined_otp"
    BACK_TO_CHOICE = "back_to_choice"
    LINK_CONFIRMED = "link_confirmed"  # the registration link was confirmed (here or elsewhere)
    CODE_ACCEPTED = "code_accepted"


_PASSWORD_DONE = {
    Event.OTP_UNCHOSEN: Stage.OTP_CHOICE,
    Event.OTP_PENDING: Stage.OTP_REGISTER,
    Event.OTP_ON: Stage.OTP_CODE,
    Event.OTP_OFF: Stage.HOME,
}

#: stage -> event -> next stage. The only place a login's stage changes.
TRANSITIONS: dict[Stage, dict[Event, Stage]] = {
    Stage.ANONYMOUS: {Event.MUST_CHANGE: Stage.MUST_CHANGE, **_PASSWORD_DONE},
    Stage.MUST_CHANGE: dict(_PASSWORD_DONE),
    Stage.OTP_CHOICE: {
        Event.CHOSE_OTP: Stage.OTP_REGISTER,
        Event.DECLINED_OTP: Stage.HOME,
        Event.BACK_TO_CHOICE: Stage.OTP_CHOICE,
    },
    Stage.OTP_REGISTER: {Event.BACK_TO_CHOICE: Stage.OTP_CHOICE, Event.LINK_CONFIRMED: Stage.OTP_CODE},
    Stage.OTP_CODE: {Event.LINK_CONFIRMED: Stage.OTP_CODE, Event.CODE_ACCEPTED: Stage.HOME},
    Stage.HOME: {},
}

#: The page of each stage a login can be at: a page of another stage redirects there.
PAGES: dict[Stage, str] = {
    Stage.MUST_CHANGE: "/password/required",
    Stage.OTP_CHOICE: "/otp/choice",
    Stage.OTP_REGISTER: "/otp/register",
    Stage.OTP_CODE: "/otp/send",
    Stage.HOME: "/home",
}

#: The ``next`` of the JSON API for each stage.
API_NEXT: dict[Stage, str] = {
    Stage.MUST_CHANGE: "change_password",
    Stage.OTP_CHOICE: "otp_choice",
    Stage.OTP_REGISTER: "otp_register",
    Stage.OTP_CODE: "otp_code",
    Stage.HOME: "home",
}


class LoginStateError(RuntimeError):
    """An event the table has no move for at this stage."""


def next_stage(stage: Stage | str, event: Event) -> Stage:
    try:
        return TRANSITIONS[Stage(stage)][event]
    except (KeyError, ValueError):
        raise LoginStateError(f"no move for {event!s} at stage {stage!s}") from None


def password_done(otp_status: str) -> Event:
    """The event of a finished password step, by the number's one-time-password status."""
    return {
        "unchosen": Event.OTP_UNCHOSEN,
        "pending": Event.OTP_PENDING,
        "on": Event.OTP_ON,
        "off": Event.OTP_OFF,
    }[otp_status]
