"""Every branch of the temporary-password flow, with the scripted fake channel and a real SQLite db."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import pytest
import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.enums import AuthUnit, CredentialKind
from core.models import Contract, Credential, PhoneNumber
from core.secrets import SecretHasher
from ivr.channel import CallerHungUp
from ivr.daemon.scripted import HANG_UP, NO_INPUT, PROMPT_SECONDS, FakeChannel, HangUpAfter, ScriptItem
from ivr.flow.store import SqlCallStore
from ivr.flow.temporary_password import CallReport, Outcome, busy_call, temporary_password_call
from ivr.settings import MenuSettings
from tests.support import record_of

PASSWORD = "40719352"
LINE = "0300001111"
OTHER_PASSWORD = "86150274"


def digits_of(number: str) -> list[str]:
    return [f"digit-{d}" for d in number]


def password_prompts(number: str) -> list[str]:
    return ["set-for-number-prefix", *digits_of(number), "set-for-number-suffix"]


def completed_prompts(number: str) -> list[str]:
    return ["set-for-number-prefix", *digits_of(number), "completed-suffix"]


async def call(
    store: SqlCallStore,
    menu: MenuSettings,
    script: Sequence[ScriptItem],
    *,
    caller: str | None = "0300001111",
    **kwargs: Any,
) -> tuple[FakeChannel, CallReport]:
    channel = FakeChannel(script, caller=caller, **kwargs)
    report = await temporary_password_call(channel, store=store, menu=menu, monotonic=channel.clock)
    return channel, report


def credential_for(sessions: sessionmaker[Session], number: str) -> Credential | None:
    with sessions() as session:
        return session.scalars(
            select(Credential).join(PhoneNumber).where(PhoneNumber.number == number)
        ).one_or_none()


def all_credentials_of(store: SqlCallStore) -> list[Credential]:
    return all_credentials(store.sessions)


def all_credentials(sessions: sessionmaker[Session]) -> list[Credential]:
    with sessions() as session:
        return list(session.scalars(select(Credential)))


def contract_unit(sessions: sessionmaker[Session], contract_number: str) -> AuthUnit:
    with sessions() as session:
        contract = session.scalars(select(Contract).where(Contract.contract_number == contract_number)).one()
        return contract.auth_unit


def assert_ended_with(channel: FakeChannel, outcome: Outcome) -> None:
    assert channel.variables["IVR_RESULT"] == outcome.value
    assert channel.variable_order[-1] == "IVR_RESULT"
    assert channel.hung_up_by_flow


def assert_password_stored(
    sessions: sessionmaker[Session], hasher: SecretHasher, number: str, password: str = PASSWORD
) -> None:
    credential = credential_for(sessions, number)
    assert credential is not None
    assert credential.kind is CredentialKind.TEMPORARY
    assert credential.secret_hash != password
    assert hasher.verify(credential.secret_hash, password)
    assert credential.expires_at is not None
    assert (credential.expires_at - credential.set_at).total_seconds() == 24 * 3600


# ---------------------------------------------------------------- unit 1


async def test_unit1_from_the_contract_line(
    call_store: SqlCallStore,
    menu_settings: MenuSettings,
    voice_sessions: sessionmaker[Session],
    test_hasher: SecretHasher,
) -> None:
    channel, report = await call(call_store, menu_settings, ["1", PASSWORD, PASSWORD])
    assert report.outcome is Outcome.COMPLETED
    assert channel.prompts == [
        "choose-unit",
        *password_prompts("0300001111"),
        "confirm-password",
        *completed_prompts("0300001111"),
    ]
    assert_ended_with(channel, Outcome.COMPLETED)
    assert_password_stored(voice_sessions, test_hasher, "0300001111")
    assert contract_unit(voice_sessions, "0300001111") is AuthUnit.LINE
    record = record_of(voice_sessions, channel.call_id)
    assert record.outcome == "completed"
    assert record.unit == "line"
    assert record.target_number == "0300001111"
    assert record.caller == "0300001111"
    assert record.service_number == "0363044747"
    assert record.ended_at is not None and record.started_at <= record.ended_at
    assert record.wrong_entries == 0


async def test_unit1_from_an_additional_number_sets_the_line_password(
    call_store: SqlCallStore,
    menu_settings: MenuSettings,
    voice_sessions: sessionmaker[Session],
    test_hasher: SecretHasher,
) -> None:
    channel, report = await call(call_store, menu_settings, ["1", PASSWORD, PASSWORD], caller="0300002222")
    assert report.outcome is Outcome.COMPLETED
    assert report.target_number == "0300001111"
    assert "enter-number" not in channel.prompts
    assert_password_stored(voice_sessions, test_hasher, "0300001111")
    assert credential_for(voice_sessions, "0300002222") is None


async def test_caller_id_in_international_form_is_recognised(
    call_store: SqlCallStore, menu_settings: MenuSettings
) -> None:
    _channel, report = await call(call_store, menu_settings, ["1", PASSWORD, PASSWORD], caller="+81300001111")
    assert report.outcome is Outcome.COMPLETED


# ---------------------------------------------------------------- unit 2


async def test_unit2_with_a_valid_number(
    call_store: SqlCallStore,
    menu_settings: MenuSettings,
    voice_sessions: sessionmaker[Session],
    test_hasher: SecretHasher,
) -> None:
    channel, report = await call(call_store, menu_settings, ["2", "0300002222#", PASSWORD, PASSWORD])
    assert report.outcome is Outcome.COMPLETED
    assert channel.prompts[:2] == ["choose-unit", "enter-number"]
    assert channel.prompts[2:5] == ["set-for-number-prefix", "digit-0", "digit-3"]
    assert report.target_number == "0300002222"
    assert_password_stored(voice_sessions, test_hasher, "0300002222")
    assert credential_for(voice_sessions, "0300001111") is None
    assert contract_unit(voice_sessions, "0300001111") is AuthUnit.NUMBER
    assert record_of(voice_sessions, channel.call_id).unit == "number"


async def test_unit2_number_of_another_contract_three_times_ends_with_nothing_written(
    call_store: SqlCallStore, menu_settings: MenuSettings, voice_sessions: sessionmaker[Session]
) -> None:
    channel, report = await call(
        call_store, menu_settings, ["2", "0422001234#", "0422005678#", "0355501001#", PASSWORD, PASSWORD]
    )
    assert report.outcome is Outcome.TOO_MANY_WRONG_NUMBER
    assert channel.prompts == [
        "choose-unit",
        "enter-number",
        "wrong-entry",
        "enter-number",
        "wrong-entry",
        "enter-number",
        "too-many-wrong",
    ]
    assert_ended_with(channel, Outcome.TOO_MANY_WRONG_NUMBER)
    assert all_credentials(voice_sessions) == []
    assert contract_unit(voice_sessions, "0300001111") is AuthUnit.LINE
    record = record_of(voice_sessions, channel.call_id)
    assert record.outcome == "too_many_wrong_number"
    assert record.last_step == "number"
    assert record.wrong_entries == 3


async def test_unit2_garbage_and_unknown_numbers_are_wrong_entries_then_a_good_one(
    call_store: SqlCallStore, menu_settings: MenuSettings
) -> None:
    _channel, report = await call(
        call_store, menu_settings, ["2", "12#", "0399999999#", "0300002222#", PASSWORD, PASSWORD]
    )
    assert report.outcome is Outcome.COMPLETED
    assert report.wrong_entries == 2


async def test_unit2_number_without_hash_is_taken_after_the_inter_digit_timeout(
    call_store: SqlCallStore, menu_settings: MenuSettings
) -> None:
    _channel, report = await call(call_store, menu_settings, ["2", "0300002222", PASSWORD, PASSWORD])
    assert report.outcome is Outcome.COMPLETED
    assert report.target_number == "0300002222"


# ---------------------------------------------------------------- unit 3


async def test_unit3_from_the_contract_number_asks_for_the_number(
    call_store: SqlCallStore,
    menu_settings: MenuSettings,
    voice_sessions: sessionmaker[Session],
    test_hasher: SecretHasher,
) -> None:
    channel, report = await call(
        call_store, menu_settings, ["3", "0355501005#", PASSWORD, PASSWORD], caller="0355501000"
    )
    assert report.outcome is Outcome.COMPLETED
    assert "enter-number" in channel.prompts
    assert report.target_number == "0355501005"
    assert_password_stored(voice_sessions, test_hasher, "0355501005")
    assert contract_unit(voice_sessions, "0355501000") is AuthUnit.ADMIN_USER


async def test_unit3_from_the_contract_number_for_itself(
    call_store: SqlCallStore,
    menu_settings: MenuSettings,
    voice_sessions: sessionmaker[Session],
    test_hasher: SecretHasher,
) -> None:
    _channel, report = await call(
        call_store, menu_settings, ["3", "0355501000#", PASSWORD, PASSWORD], caller="0355501000"
    )
    assert report.outcome is Outcome.COMPLETED
    assert_password_stored(voice_sessions, test_hasher, "0355501000")


async def test_unit3_from_an_additional_number_does_not_ask_for_the_number(
    call_store: SqlCallStore,
    menu_settings: MenuSettings,
    voice_sessions: sessionmaker[Session],
    test_hasher: SecretHasher,
) -> None:
    channel, report = await call(call_store, menu_settings, ["3", PASSWORD, PASSWORD], caller="0355501003")
    assert report.outcome is Outcome.COMPLETED
    assert channel.prompts[:2] == ["choose-unit", "set-for-number-prefix"]
    assert "enter-number" not in channel.prompts
    assert report.target_number == "0355501003"
    assert_password_stored(voice_sessions, test_hasher, "0355501003")
    assert credential_for(voice_sessions, "0355501000") is None


# ---------------------------------------------------------------- password rules


async def test_password_of_7_digits_is_wrong_after_the_inter_digit_timeout(
    call_store: SqlCallStore,
    menu_settings: MenuSettings,
    voice_sessions: sessionmaker[Session],
    test_hasher: SecretHasher,
) -> None:
    channel, report = await call(call_store, menu_settings, ["1", "1234567", PASSWORD, PASSWORD])
    assert report.outcome is Outcome.COMPLETED
    assert report.wrong_entries == 1
    assert channel.prompts == [
        "choose-unit",
        *password_prompts("0300001111"),
        "wrong-entry",
        *password_prompts("0300001111"),
        "confirm-password",
        *completed_prompts("0300001111"),
    ]
    assert_password_stored(voice_sessions, test_hasher, "0300001111")


async def test_password_entry_ends_at_the_8th_key_and_a_9th_key_is_the_confirmations_first(
    call_store: SqlCallStore,
    menu_settings: MenuSettings,
    voice_sessions: sessionmaker[Session],
    test_hasher: SecretHasher,
) -> None:
    # 9 keys: the first 8 are the password at once; the 9th starts the confirmation, which is then
    # wrong; the key left over from it is swallowed by "wrong-entry", and the caller tries again.
    channel, report = await call(call_store, menu_settings, ["1", "407193529", "40719352", "40719352"])
    assert report.outcome is Outcome.COMPLETED
    assert report.wrong_entries == 1
    assert channel.prompts[-len(completed_prompts("0300001111")) - 2 :] == [
        "wrong-entry",
        "confirm-password",
        *completed_prompts("0300001111"),
    ]
    assert "confirm-password" not in channel.prompts[: channel.prompts.index("wrong-entry")]  # barged in
    assert_password_stored(voice_sessions, test_hasher, "0300001111", "40719352")


@pytest.mark.parametrize(
    ("guess", "reason"),
    [
        ("12345678", "sequential_run"),
        ("98761352", "sequential_run"),
        ("00000000", "repeated_run"),
        ("11112222", "repeated_run"),
        ("77770352", "repeated_run"),
        ("52229999", "repeated_run"),
    ],
)
async def test_a_guessable_password_is_refused_with_its_own_prompt_and_counts_as_wrong(
    call_store: SqlCallStore,
    menu_settings: MenuSettings,
    voice_sessions: sessionmaker[Session],
    test_hasher: SecretHasher,
    guess: str,
    reason: str,
) -> None:
    with structlog.testing.capture_logs() as logs:
        channel, report = await call(call_store, menu_settings, ["1", guess, PASSWORD, PASSWORD])
    assert report.outcome is Outcome.COMPLETED
    assert report.wrong_entries == 1
    refused = channel.prompts.index("password-guessable")
    assert channel.prompts[refused + 1 : refused + 1 + len(password_prompts(LINE))] == password_prompts(LINE)
    assert "wrong-entry" not in channel.prompts
    steps = [e for e in logs if e["event"] == "step" and e["step"] == "password"]
    assert [(e["result"], e.get("refused")) for e in steps] == [("no_match", reason), ("digits", None)]
    assert guess not in repr(logs)
    assert_password_stored(voice_sessions, test_hasher, LINE)


async def test_the_line_s_own_number_is_refused_unless_the_setting_allows_it(
    call_store: SqlCallStore, menu_settings: MenuSettings, voice_sessions: sessionmaker[Session]
) -> None:
    # 0355501005 (a number of the business contract): its last 8 digits, 55501005, hold no run of 4
    own = "55501005"
    channel, report = await call(
        call_store, menu_settings, ["1", own, PASSWORD, PASSWORD], caller="0355501005"
    )
    assert report.outcome is Outcome.COMPLETED and report.wrong_entries == 1
    assert "password-guessable" in channel.prompts
    allowed = menu_settings.model_copy(update={"refuse_own_number_password": False})
    channel, report = await call(call_store, allowed, ["1", own, own], caller="0355501005")
    assert report.outcome is Outcome.COMPLETED and "password-guessable" not in channel.prompts


async def test_three_guessable_passwords_end_the_call(
    call_store: SqlCallStore, menu_settings: MenuSettings
) -> None:
    channel, report = await call(call_store, menu_settings, ["1", "12345678", "87654321", "55550000"])
    assert report.outcome is Outcome.TOO_MANY_WRONG_PASSWORD
    assert channel.prompts.count("password-guessable") == 2 and channel.prompts[-1] == "too-many-wrong"
    assert all_credentials_of(call_store) == []


async def test_password_with_star_or_empty_hash_is_wrong(
    call_store: SqlCallStore, menu_settings: MenuSettings
) -> None:
    _channel, report = await call(call_store, menu_settings, ["1", "1234*678", "#", PASSWORD, PASSWORD])
    assert report.outcome is Outcome.COMPLETED
    assert report.wrong_entries == 2


async def test_a_hash_right_after_a_full_entry_is_dropped_once_not_counted(
    call_store: SqlCallStore, menu_settings: MenuSettings
) -> None:
    # callers used to ending every entry with # (the number step asks for it)
    channel, report = await call(call_store, menu_settings, ["1#", PASSWORD + "#", PASSWORD + "#"])
    assert report.outcome is Outcome.COMPLETED
    assert report.wrong_entries == 0
    assert "wrong-entry" not in channel.prompts


async def test_a_type_ahead_caller_without_hash_never_waits(
    call_store: SqlCallStore, menu_settings: MenuSettings
) -> None:
    # all typed at the first prompt: every entry ends at its last key, no prompt after the first is
    # heard until the farewell, and nothing waits for a timeout
    channel, report = await call(call_store, menu_settings, ["1" + PASSWORD + PASSWORD])
    assert report.outcome is Outcome.COMPLETED
    assert all(not c["timed_out"] for c in channel.collects)
    assert channel.prompts == ["choose-unit", *completed_prompts("0300001111")]
    assert channel.now == pytest.approx(PROMPT_SECONDS * len(channel.prompts))


async def test_each_entry_is_one_collection_inside_asterisk(
    call_store: SqlCallStore, menu_settings: MenuSettings
) -> None:
    # unit, password, confirmation: one GET DATA each (keys between commands would be lost)
    channel, report = await call(call_store, menu_settings, ["1", PASSWORD, PASSWORD])
    assert report.outcome is Outcome.COMPLETED
    assert [c["max"] for c in channel.collects] == [1, 8, 8]


async def test_confirmation_mismatch_then_success(
    call_store: SqlCallStore,
    menu_settings: MenuSettings,
    voice_sessions: sessionmaker[Session],
    test_hasher: SecretHasher,
) -> None:
    channel, report = await call(call_store, menu_settings, ["1", PASSWORD, OTHER_PASSWORD, PASSWORD])
    assert report.outcome is Outcome.COMPLETED
    assert channel.prompts.count("confirm-password") == 2
    assert channel.prompts[channel.prompts.index("confirm-password") + 1] == "wrong-entry"
    assert_password_stored(voice_sessions, test_hasher, "0300001111")
    assert not test_hasher.verify(credential_for(voice_sessions, "0300001111").secret_hash, OTHER_PASSWORD)  # type: ignore[union-attr]


async def test_three_confirmation_mismatches_end_the_call(
    call_store: SqlCallStore, menu_settings: MenuSettings, voice_sessions: sessionmaker[Session]
) -> None:
    channel, report = await call(
        call_store, menu_settings, ["1", PASSWORD, OTHER_PASSWORD, OTHER_PASSWORD, NO_INPUT]
    )
    assert report.outcome is Outcome.TOO_MANY_WRONG_PASSWORD
    assert channel.prompts[-1] == "too-many-wrong"
    assert all_credentials(voice_sessions) == []
    assert record_of(voice_sessions, channel.call_id).last_step == "confirm"


async def test_three_bad_passwords_end_the_call(
    call_store: SqlCallStore, menu_settings: MenuSettings, voice_sessions: sessionmaker[Session]
) -> None:
    channel, report = await call(call_store, menu_settings, ["1", "1", "12345", NO_INPUT])
    assert report.outcome is Outcome.TOO_MANY_WRONG_PASSWORD
    assert_ended_with(channel, Outcome.TOO_MANY_WRONG_PASSWORD)
    assert all_credentials(voice_sessions) == []


# ---------------------------------------------------------------- wrong entries at the unit step


async def test_three_wrong_entries_at_the_unit_step(
    call_store: SqlCallStore, menu_settings: MenuSettings, voice_sessions: sessionmaker[Session]
) -> None:
    channel, report = await call(call_store, menu_settings, ["4", "*", "#"])
    assert report.outcome is Outcome.TOO_MANY_WRONG_UNIT
    assert channel.prompts == [
        "choose-unit",
        "wrong-entry",
        "choose-unit",
        "wrong-entry",
        "choose-unit",
        "too-many-wrong",
    ]
    assert_ended_with(channel, Outcome.TOO_MANY_WRONG_UNIT)
    record = record_of(voice_sessions, channel.call_id)
    assert (record.outcome, record.last_step, record.wrong_entries) == ("too_many_wrong_unit", "unit", 3)


async def test_no_input_at_all_until_the_end(
    call_store: SqlCallStore, menu_settings: MenuSettings, voice_sessions: sessionmaker[Session]
) -> None:
    channel, report = await call(call_store, menu_settings, [NO_INPUT, NO_INPUT, NO_INPUT])
    assert report.outcome is Outcome.TOO_MANY_WRONG_UNIT
    assert channel.prompts[-1] == "too-many-wrong"
    assert_ended_with(channel, Outcome.TOO_MANY_WRONG_UNIT)
    assert all_credentials(voice_sessions) == []


async def test_wrong_entries_are_counted_per_step(
    call_store: SqlCallStore, menu_settings: MenuSettings
) -> None:
    script: list[ScriptItem] = [
        "9",
        NO_INPUT,
        "2",
        "1#",
        NO_INPUT,
        "0300002222#",
        "1",
        NO_INPUT,
        PASSWORD,
        "1",
        NO_INPUT,
        PASSWORD,
    ]
    _channel, report = await call(call_store, menu_settings, script)
    assert report.outcome is Outcome.COMPLETED
    assert report.wrong_entries == 8


# ---------------------------------------------------------------- hangups


async def test_hang_up_after_5_password_digits_writes_nothing(
    call_store: SqlCallStore, menu_settings: MenuSettings, voice_sessions: sessionmaker[Session]
) -> None:
    channel, report = await call(call_store, menu_settings, ["1", HangUpAfter("40719")])
    assert report.outcome is Outcome.CALLER_HUNG_UP
    assert "IVR_RESULT" not in channel.variables
    assert all_credentials(voice_sessions) == []
    record = record_of(voice_sessions, channel.call_id)
    assert (record.outcome, record.last_step) == ("caller_hung_up", "password")


async def test_hang_up_during_confirmation_writes_nothing(
    call_store: SqlCallStore, menu_settings: MenuSettings, voice_sessions: sessionmaker[Session]
) -> None:
    channel, report = await call(call_store, menu_settings, ["1", PASSWORD, HangUpAfter("407")])
    assert report.outcome is Outcome.CALLER_HUNG_UP
    assert all_credentials(voice_sessions) == []
    record = record_of(voice_sessions, channel.call_id)
    assert (record.outcome, record.last_step) == ("caller_hung_up", "confirm")


@pytest.mark.parametrize(
    ("prompt", "step"),
    [("choose-unit", "unit"), ("enter-number", "number"), ("confirm-password", "confirm")],
)
async def test_hang_up_during_a_prompt(
    call_store: SqlCallStore,
    menu_settings: MenuSettings,
    voice_sessions: sessionmaker[Session],
    prompt: str,
    step: str,
) -> None:
    channel, report = await call(
        call_store, menu_settings, ["2", "0300002222#", PASSWORD, PASSWORD], hang_up_at_prompt=prompt
    )
    assert report.outcome is Outcome.CALLER_HUNG_UP
    assert all_credentials(voice_sessions) == []
    assert record_of(voice_sessions, channel.call_id).last_step == step


async def test_hang_up_before_anything(
    call_store: SqlCallStore, menu_settings: MenuSettings, voice_sessions: sessionmaker[Session]
) -> None:
    channel, report = await call(call_store, menu_settings, [HANG_UP])
    assert report.outcome is Outcome.CALLER_HUNG_UP
    assert record_of(voice_sessions, channel.call_id).outcome == "caller_hung_up"


async def test_hang_up_during_the_completion_prompt_keeps_the_password(
    call_store: SqlCallStore,
    menu_settings: MenuSettings,
    voice_sessions: sessionmaker[Session],
    test_hasher: SecretHasher,
) -> None:
    channel, report = await call(
        call_store, menu_settings, ["1", PASSWORD, PASSWORD], hang_up_at_prompt="completed-suffix"
    )
    assert report.outcome is Outcome.COMPLETED
    assert_password_stored(voice_sessions, test_hasher, "0300001111")
    assert record_of(voice_sessions, channel.call_id).last_step == "farewell"


# ---------------------------------------------------------------- identification


@pytest.mark.parametrize("caller", ["anonymous", "unknown", None, "sip:0300001111@example", "03-0000-1111"])
async def test_withheld_or_unusable_caller_id(
    call_store: SqlCallStore,
    menu_settings: MenuSettings,
    voice_sessions: sessionmaker[Session],
    caller: str | None,
) -> None:
    channel, report = await call(call_store, menu_settings, ["1", PASSWORD, PASSWORD], caller=caller)
    assert report.outcome is Outcome.CALLER_ID_WITHHELD
    assert channel.prompts == ["caller-id-withheld"]
    assert_ended_with(channel, Outcome.CALLER_ID_WITHHELD)
    assert all_credentials(voice_sessions) == []
    assert record_of(voice_sessions, channel.call_id).outcome == "caller_id_withheld"


@pytest.mark.parametrize("caller", ["0399999999", "12345", "+15551234567"])
async def test_caller_on_no_contract(
    call_store: SqlCallStore, menu_settings: MenuSettings, voice_sessions: sessionmaker[Session], caller: str
) -> None:
    channel, report = await call(call_store, menu_settings, ["1", PASSWORD, PASSWORD], caller=caller)
    assert report.outcome is Outcome.CALLER_NOT_ELIGIBLE
    assert channel.prompts == ["caller-not-eligible"]
    assert_ended_with(channel, Outcome.CALLER_NOT_ELIGIBLE)
    record = record_of(voice_sessions, channel.call_id)
    assert (record.outcome, record.caller) == ("caller_not_eligible", caller)


# ---------------------------------------------------------------- barge-in, errors, busy


async def test_keys_typed_ahead_skip_prompts(
    call_store: SqlCallStore,
    menu_settings: MenuSettings,
    voice_sessions: sessionmaker[Session],
    test_hasher: SecretHasher,
) -> None:
    channel, report = await call(call_store, menu_settings, [f"1{PASSWORD}#{PASSWORD}#"])
    assert report.outcome is Outcome.COMPLETED
    assert "set-for-number-suffix" not in channel.prompts
    assert "confirm-password" not in channel.prompts
    assert_password_stored(voice_sessions, test_hasher, "0300001111")


class LookupSeenStore(SqlCallStore):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.looked_up = threading.Event()

    def lookup_caller(self, caller_number: str) -> Any:
        self.looked_up.set()
        return super().lookup_caller(caller_number)


class AnswerWaitsForLookup(FakeChannel):
    """An ANSWER whose reply comes only once the caller's line is being looked up."""

    def __init__(self, store: LookupSeenStore, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.store = store

    async def answer(self) -> None:
        assert await asyncio.to_thread(self.store.looked_up.wait, 10), "no lookup during ANSWER"
        await super().answer()


async def test_the_caller_is_looked_up_while_answer_is_on_its_way(
    voice_sessions: sessionmaker[Session], test_hasher: SecretHasher, menu_settings: MenuSettings
) -> None:
    store = LookupSeenStore(voice_sessions, hasher=test_hasher.hash)
    channel = AnswerWaitsForLookup(store, ["4", "4", "4"])
    report = await temporary_password_call(channel, store=store, menu=menu_settings, monotonic=channel.clock)
    assert report.outcome is Outcome.TOO_MANY_WRONG_UNIT
    assert channel.prompts[0] == "choose-unit"


class HangUpAtAnswer(FakeChannel):
    async def answer(self) -> None:
        raise CallerHungUp()


async def test_a_hangup_at_answer_with_a_failed_lookup_is_a_hangup(
    voice_sessions: sessionmaker[Session], test_hasher: SecretHasher, menu_settings: MenuSettings
) -> None:
    store = BrokenStore(voice_sessions, hasher=test_hasher.hash)
    channel = HangUpAtAnswer([], call_id="gone.1")
    report = await temporary_password_call(channel, store=store, menu=menu_settings)
    assert report.outcome is Outcome.CALLER_HUNG_UP
    assert record_of(voice_sessions, "gone.1").outcome == "caller_hung_up"


class BrokenStore(SqlCallStore):
    def lookup_caller(self, caller_number: str) -> Any:
        raise RuntimeError("database unavailable")


async def test_database_failure_is_a_system_error_with_an_apology(
    voice_sessions: sessionmaker[Session], test_hasher: SecretHasher, menu_settings: MenuSettings
) -> None:
    store = BrokenStore(voice_sessions, hasher=test_hasher.hash)
    channel, report = await call(store, menu_settings, ["1", PASSWORD, PASSWORD])
    assert report.outcome is Outcome.SYSTEM_ERROR
    assert channel.prompts == ["system-error"]
    assert_ended_with(channel, Outcome.SYSTEM_ERROR)
    record = record_of(voice_sessions, channel.call_id)
    assert (record.outcome, record.last_step) == ("system_error", "identify")


class FailingSaveStore(SqlCallStore):
    def save_temporary_password(self, **kwargs: Any) -> None:
        raise RuntimeError("disk full")


async def test_save_failure_never_plays_completion(
    voice_sessions: sessionmaker[Session], test_hasher: SecretHasher, menu_settings: MenuSettings
) -> None:
    store = FailingSaveStore(voice_sessions, hasher=test_hasher.hash)
    channel, report = await call(store, menu_settings, ["1", PASSWORD, PASSWORD])
    assert report.outcome is Outcome.SYSTEM_ERROR
    assert "completed-suffix" not in channel.prompts
    assert channel.prompts[-1] == "system-error"
    assert all_credentials(voice_sessions) == []


async def test_channel_failure_mid_call_is_a_system_error(
    call_store: SqlCallStore, menu_settings: MenuSettings, voice_sessions: sessionmaker[Session]
) -> None:
    channel, report = await call(
        call_store, menu_settings, ["1", PASSWORD, PASSWORD], fail_at_prompt="confirm-password"
    )
    assert report.outcome is Outcome.SYSTEM_ERROR
    assert all_credentials(voice_sessions) == []
    assert record_of(voice_sessions, channel.call_id).last_step == "confirm"


async def test_busy_call_says_busy_and_records_it(
    call_store: SqlCallStore, voice_sessions: sessionmaker[Session]
) -> None:
    channel = FakeChannel([], call_id="busy.1")
    await busy_call(channel, store=call_store)
    assert channel.prompts == ["busy"]
    assert_ended_with(channel, Outcome.BUSY)
    assert record_of(voice_sessions, "busy.1").outcome == "busy"


# ---------------------------------------------------------------- the call log


async def test_call_log_has_steps_and_never_a_password(
    call_store: SqlCallStore, menu_settings: MenuSettings
) -> None:
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        channel, report = await call(
            call_store, menu_settings, ["1", "1234567", PASSWORD, OTHER_PASSWORD, PASSWORD]
        )
    assert report.outcome is Outcome.COMPLETED
    text = repr(logs)
    assert PASSWORD not in text and OTHER_PASSWORD not in text and "1234567" not in text
    events = [entry["event"] for entry in logs]
    assert events[0] == "call_started"
    assert events[-1] == "call_finished"
    steps = [(e["step"], e["attempt"], e["result"]) for e in logs if e["event"] == "step"]
    assert steps == [
        ("unit", 1, "digits"),
        ("password", 1, "no_match"),
        ("password", 2, "digits"),
        ("confirm", 1, "no_match"),
        ("confirm", 2, "digits"),
    ]
    finished = logs[-1]
    assert finished["outcome"] == "completed"
    assert finished["unit"] == "line"
    assert finished["target_number"] == "0300001111"
    assert isinstance(finished["duration_ms"], int)
    assert finished["call_id"] == channel.call_id


class StuckChannel(FakeChannel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting = asyncio.Event()

    async def collect_digits(self, prompts: Any, **kwargs: Any) -> Any:
        self.waiting.set()
        await asyncio.sleep(3600)


async def test_shutdown_cutting_a_call_still_finishes_its_record(
    call_store: SqlCallStore, menu_settings: MenuSettings, voice_sessions: sessionmaker[Session]
) -> None:
    channel = StuckChannel([], call_id="cut.1")
    task = asyncio.create_task(temporary_password_call(channel, store=call_store, menu=menu_settings))
    await asyncio.wait_for(channel.waiting.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    record = record_of(voice_sessions, "cut.1")
    assert (record.outcome, record.last_step) == ("system_error", "unit")


class SlowStartStore(SqlCallStore):
    """A store whose call-record start is still being written when the shutdown comes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started = threading.Event()
        self.release = threading.Event()

    def start_call(self, **fields: Any) -> None:
        self.started.set()
        self.release.wait(10)
        super().start_call(**fields)


async def test_shutdown_while_the_record_starts_still_finishes_it(
    call_store: SqlCallStore, menu_settings: MenuSettings, voice_sessions: sessionmaker[Session]
) -> None:
    store = SlowStartStore(call_store.sessions)
    task = asyncio.create_task(
        temporary_password_call(StuckChannel([], call_id="cut.2"), store=store, menu=menu_settings)
    )
    await asyncio.to_thread(store.started.wait, 10)
    task.cancel()
    await asyncio.sleep(0)  # the cancellation reaches the call while its start is still being written
    store.release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    record = record_of(voice_sessions, "cut.2")
    assert record.outcome == "system_error"


async def test_each_step_line_carries_its_duration(
    call_store: SqlCallStore, menu_settings: MenuSettings
) -> None:
    with structlog.testing.capture_logs() as logs:
        await call(call_store, menu_settings, ["1", PASSWORD, PASSWORD])
    steps = [e for e in logs if e["event"] == "step"]
    assert len(steps) == 3 and all(isinstance(e["duration_ms"], int) and e["duration_ms"] >= 0 for e in steps)


@pytest.mark.parametrize(
    ("script", "caller", "prompt", "outcome"),
    [
        (["4", "4", "4"], "0300001111", "too-many-wrong", "too_many_wrong_unit"),
        ([], "anonymous", "caller-id-withheld", "caller_id_withheld"),
        ([], "0399999999", "caller-not-eligible", "caller_not_eligible"),
    ],
)
async def test_hanging_up_during_the_closing_prompt_keeps_the_outcome(
    call_store: SqlCallStore,
    menu_settings: MenuSettings,
    voice_sessions: sessionmaker[Session],
    script: list[ScriptItem],
    caller: str,
    prompt: str,
    outcome: str,
) -> None:
    channel, _report = await call(call_store, menu_settings, script, caller=caller, hang_up_at_prompt=prompt)
    assert record_of(voice_sessions, channel.call_id).outcome == outcome
