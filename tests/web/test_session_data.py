"""A session's typed data (web_stub.sessions.SessionData) as stored in its row: pure."""

from __future__ import annotations

import json

from web_stub.sessions import Draft, SessionData


def test_round_trip_keeps_every_field_and_stores_only_changes() -> None:
    data = SessionData(otp_status="on", two_step=True, login_attempt_id="abc")
    data.draft = Draft(email="taro@example.jp", confirmation_password_length=9, address_only=False)
    stored = data.to_json()
    assert json.loads(stored) == {
        "draft": {"address_only": False, "confirmation_password_length": 9, "email": "taro@example.jp"},
        "login_attempt_id": "abc",
        "otp_status": "on",
        "two_step": True,
    }
    assert SessionData.from_json(stored) == data
    assert SessionData().to_json() == "{}"


def test_rows_written_before_the_typed_fields_still_load() -> None:
    old = (
        '{"otp_status": "pending", "otp_email": null, "login_attempt_id": "x",'
        ' "change_reason": "temporary", "gone": 1}'
    )
    data = SessionData.from_json(old)
    assert data == SessionData(otp_status="pending", login_attempt_id="x", change_reason="temporary")
    assert SessionData.from_json('{"draft": {"email": "a@b.jp"}}').draft is None  # unreadable draft: none
    assert SessionData.from_json(None) == SessionData.from_json("[]") == SessionData()
