"""The temporary-password line end to end: SIPp callers -> lab Asterisk -> FastAGI daemon -> SQLite.

Each test checks what the caller heard (the prompts the daemon played, and Asterisk's own log for
some), how the call ended, the credential afterwards and the call record. Issue 5's "Done when".
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.models import CallRecord, Credential, PhoneNumber
from core.phone_line import guessable_temporary_password
from core.secrets import verify_secret
from ivr.sipp import Caller, CallResult, ExpectHangup, HangUp, SendDigits, Wait, run_call, run_calls
from tests.fixtures.voice import CONCURRENT_LINES, E2E_INTER_DIGIT_TIMEOUT, PASSWORDS_USED, VoiceDaemon
from tests.support import eventually, finished

pytestmark = [pytest.mark.e2e, pytest.mark.lab]

PASSWORD = "40719352"
OTHER = "86150274"
SEVEN = "5190372"
NINE = "519037246"
PASSWORDS_USED.update({PASSWORD, OTHER, "11223344", SEVEN, NINE})


@dataclass
class Heard:
    """One call as the daemon and Asterisk saw it."""

    result: CallResult
    call_id: str
    events: list[dict[str, Any]]
    asterisk_played: list[str]
    record: CallRecord | None

    @property
    def prompts(self) -> list[str]:
        """Prompts the daemon played: heard to the end, or started and stopped by a key (of a
        list stopped by a key, Asterisk does not say at which file: its first one counts)."""
        played: list[str] = []
        for e in self.events:
            if e.get("event") == "prompt":
                played.append(e["prompt"])
            elif e.get("event") == "prompts_interrupted":
                played.append(e["prompts"][0])
        return played

    @property
    def finished(self) -> dict[str, Any]:
        return next(e for e in self.events if e.get("event") == "call_finished")


@pytest.fixture
def place(voice_daemon: VoiceDaemon, lab: Any, e2e_sessions: sessionmaker[Session]) -> Iterator[Any]:
    def _place(caller: Caller, *, expect_daemon_call: bool = True) -> Heard:
        offset = voice_daemon.log_offset()
        asterisk_offset = lab.log_offset()
        result = run_call(caller)
        assert result.error is None, result.error
        played = lab.played_prompts(asterisk_offset)
        if not expect_daemon_call:
            return Heard(result, "", [], played, None)

        def finished_calls() -> dict[str, list[dict[str, Any]]] | None:
            calls = {
                call_id: events
                for call_id, events in voice_daemon.calls(offset).items()
                if any(e.get("event") == "call_started" for e in events)
            }
            done = calls and all(any(e.get("event") == "call_finished" for e in ev) for ev in calls.values())
            return calls if done else None

        calls = eventually(finished_calls, 10, interval=0.2, what="the daemon's call finished")
        assert len(calls) == 1, f"expected one call in the daemon log, got {list(calls)}: " + (
            voice_daemon.log_tail()
        )
        call_id, events = next(iter(calls.items()))
        # records are written by a batching writer, within 200 ms
        record = eventually(lambda: finished(e2e_sessions, call_id), 5, interval=0.05, what="the call record")
        return Heard(result, call_id, events, played, record)

    yield _place


def credential(sessions: sessionmaker[Session], number: str) -> tuple[str, int] | None:
    with sessions() as session:
        found = session.scalars(
            select(Credential).join(PhoneNumber).where(PhoneNumber.number == number)
        ).one_or_none()
        return (found.secret_hash, found.generation) if found else None


def assert_set(
    sessions: sessionmaker[Session], number: str, password: str, before: tuple[str, int] | None
) -> None:
    after = credential(sessions, number)
    assert after is not None and after != before
    assert verify_secret(after[0], password)


def completion(number: str) -> list[str]:
    return ["set-for-number-prefix", *[f"digit-{d}" for d in number], "completed-suffix"]


def menu_caller(
    caller_id: str | None, *keys: str, hang_up: bool = False, first_wait: float = 1.0, **kwargs: Any
) -> Caller:
    """Wait a second after answer, then each entry with a second's pause (barge-in on prompts)."""
    steps: list[Any] = [Wait(first_wait)]
    for entry in keys:
        steps += [SendDigits(entry), Wait(1.0)]
    steps.append(HangUp() if hang_up else ExpectHangup(within=60))
    return Caller(caller_id, steps=steps, **kwargs)


# ------------------------------------------------------------------------------------- unit 1


def test_unit1_from_the_contract_line(place: Any, e2e_sessions: sessionmaker[Session]) -> None:
    before = credential(e2e_sessions, "0300001111")
    heard = place(menu_caller("0300001111", "1", PASSWORD + "#", PASSWORD + "#"))
    assert heard.result.answered and heard.result.hung_up_by == "remote"
    assert heard.prompts[0] == "choose-unit"
    assert "confirm-password" in heard.prompts
    assert heard.prompts[-12:] == completion("0300001111")
    assert heard.asterisk_played[-12:] == [f"ivr/{p}" for p in completion("0300001111")]
    assert_set(e2e_sessions, "0300001111", PASSWORD, before)
    assert heard.record is not None
    assert (heard.record.outcome, heard.record.unit, heard.record.target_number) == (
        "completed",
        "line",
        "0300001111",
    )
    assert heard.record.caller == "0300001111" and heard.record.ended_at is not None
    assert heard.finished["outcome"] == "completed"


def test_unit1_from_an_additional_number_sets_the_line_password(
    place: Any, e2e_sessions: sessionmaker[Session]
) -> None:
    before = credential(e2e_sessions, "0300001111")
    heard = place(menu_caller("0300002222", "1", OTHER + "#", OTHER + "#"))
    assert heard.prompts[-12:] == completion("0300001111")
    assert "enter-number" not in heard.prompts
    assert_set(e2e_sessions, "0300001111", OTHER, before)
    assert heard.record is not None and heard.record.target_number == "0300001111"


# ------------------------------------------------------------------------------------- unit 2


def test_unit2_with_a_valid_number(place: Any, e2e_sessions: sessionmaker[Session]) -> None:
    before = credential(e2e_sessions, "0300002222")
    heard = place(menu_caller("0300001111", "2", "0300002222#", PASSWORD + "#", PASSWORD + "#"))
    assert "enter-number" in heard.prompts
    assert heard.prompts[-12:] == completion("0300002222")
    assert_set(e2e_sessions, "0300002222", PASSWORD, before)
    assert heard.record is not None and (heard.record.outcome, heard.record.unit) == ("completed", "number")


def test_unit2_number_of_another_contract_three_times(
    place: Any, e2e_sessions: sessionmaker[Session]
) -> None:
    before = {n: credential(e2e_sessions, n) for n in ("0300001111", "0300002222", "0422001234")}
    heard = place(menu_caller("0300001111", "2", "0422001234#", "0422001234#", "0422005678#", PASSWORD + "#"))
    assert heard.result.hung_up_by == "remote"
    assert heard.prompts.count("wrong-entry") == 2
    assert heard.prompts[-1] == "too-many-wrong"
    assert "ivr/too-many-wrong" in heard.asterisk_played
    assert {n: credential(e2e_sessions, n) for n in before} == before
    assert heard.record is not None
    assert (heard.record.outcome, heard.record.last_step) == ("too_many_wrong_number", "number")


# ------------------------------------------------------------------------------------- unit 3


def test_unit3_from_the_contract_number_asks_for_the_number(
    place: Any, e2e_sessions: sessionmaker[Session]
) -> None:
    before = credential(e2e_sessions, "0355501005")
    heard = place(menu_caller("0355501000", "3", "0355501005#", PASSWORD + "#", PASSWORD + "#"))
    assert "enter-number" in heard.prompts
    assert heard.prompts[-12:] == completion("0355501005")
    assert_set(e2e_sessions, "0355501005", PASSWORD, before)
    assert heard.record is not None and heard.record.unit == "admin_user"


def test_unit3_from_an_additional_number_does_not_ask(
    place: Any, e2e_sessions: sessionmaker[Session]
) -> None:
    before = credential(e2e_sessions, "0355501003")
    heard = place(menu_caller("0355501003", "3", PASSWORD + "#", PASSWORD + "#"))
    assert "enter-number" not in heard.prompts
    assert heard.prompts[-12:] == completion("0355501003")
    assert_set(e2e_sessions, "0355501003", PASSWORD, before)


# ------------------------------------------------------------------------------------- passwords


def test_password_of_7_then_9_digits_then_a_good_one(place: Any, e2e_sessions: sessionmaker[Session]) -> None:
    before = credential(e2e_sessions, "0422001234")
    caller = Caller(
        "0422001234",
        steps=[
            Wait(1.0),
            SendDigits("1"),
            Wait(1.0),
            SendDigits(SEVEN),
            Wait(E2E_INTER_DIGIT_TIMEOUT + 1.5),  # the inter-digit timeout ends the entry: 7 is wrong
            SendDigits(NINE),  # 9 keys: the first 8 are the password at once, the 9th starts the
            Wait(0.5),  # confirmation, and the caller's confirmation (8 keys) is then wrong at once
            SendDigits(NINE[:8]),
            Wait(7.0),  # "wrong-entry", then the confirmation prompt again
            SendDigits(NINE[:8]),
            ExpectHangup(within=60),
        ],
    )
    heard = place(caller)
    assert heard.prompts[-12:] == completion("0422001234")
    steps = [(e["step"], e["result"], e.get("ended_by")) for e in heard.events if e.get("event") == "step"]
    assert steps == [
        ("unit", "digits", "max"),
        ("password", "no_match", "timeout"),
        ("password", "digits", "max"),
        ("confirm", "no_match", "max"),
        ("confirm", "digits", "max"),
    ]
    assert_set(e2e_sessions, "0422001234", NINE[:8], before)
    assert heard.record is not None and heard.record.wrong_entries == 2


def test_a_guessable_password_is_refused_then_a_good_one_is_set(
    place: Any, e2e_sessions: sessionmaker[Session]
) -> None:
    """Whoever knows the number would try 12345678 first at the web login: the phone refuses it."""
    PASSWORDS_USED.add("12345678")
    before = credential(e2e_sessions, "0422001234")
    heard = place(menu_caller("0422001234", "1", "12345678", PASSWORD, PASSWORD))
    assert "ivr/password-guessable" in heard.asterisk_played  # Asterisk played why
    refused = [e for e in heard.events if e.get("event") == "step" and e.get("result") == "no_match"]
    assert [(e["step"], e.get("refused")) for e in refused] == [("password", "sequential_run")]
    assert heard.prompts[-12:] == completion("0422001234")
    assert_set(e2e_sessions, "0422001234", PASSWORD, before)
    assert heard.record is not None and heard.record.wrong_entries == 1


def test_confirmation_mismatch_then_success(place: Any, e2e_sessions: sessionmaker[Session]) -> None:
    before = credential(e2e_sessions, "0422001234")
    heard = place(menu_caller("0422001234", "1", OTHER + "#", PASSWORD + "#", OTHER + "#"))
    assert heard.prompts.count("confirm-password") >= 1
    assert "wrong-entry" in heard.prompts
    assert heard.prompts[-12:] == completion("0422001234")
    assert_set(e2e_sessions, "0422001234", OTHER, before)


@pytest.mark.parametrize("dtmf_mode", ["rfc4733", "info"])
def test_password_with_repeated_digits(
    place: Any, e2e_sessions: sessionmaker[Session], dtmf_mode: str
) -> None:
    before = credential(e2e_sessions, "0300001111")
    heard = place(menu_caller("0300001111", "1", "11223344#", "11223344#", dtmf_mode=dtmf_mode))
    assert heard.prompts[-12:] == completion("0300001111")
    assert_set(e2e_sessions, "0300001111", "11223344", before)


# ------------------------------------------------------------------------------------- wrong entries


def test_three_wrong_entries_at_the_unit_step(place: Any, e2e_sessions: sessionmaker[Session]) -> None:
    before = credential(e2e_sessions, "0300001111")
    heard = place(menu_caller("0300001111", "4", "9", "*"))
    assert heard.result.hung_up_by == "remote"
    assert heard.prompts.count("wrong-entry") == 2 and heard.prompts[-1] == "too-many-wrong"
    assert credential(e2e_sessions, "0300001111") == before
    assert heard.record is not None and heard.record.outcome == "too_many_wrong_unit"


def test_no_input_at_all_until_the_end(place: Any, e2e_sessions: sessionmaker[Session]) -> None:
    # (SIPp's recv timeout tops out near 65 s: wait first, then expect the hangup)
    heard = place(Caller("0300001111", steps=[Wait(30.0), ExpectHangup(within=60)]))
    assert heard.result.hung_up_by == "remote"
    units = [e["result"] for e in heard.events if e.get("event") == "step"]
    assert units == ["no_input", "no_input", "no_input"]
    assert heard.prompts[-1] == "too-many-wrong"
    assert heard.record is not None
    assert (heard.record.outcome, heard.record.wrong_entries) == ("too_many_wrong_unit", 3)


# ------------------------------------------------------------------------------------- hangups


def test_caller_hangs_up_after_5_password_digits(place: Any, e2e_sessions: sessionmaker[Session]) -> None:
    before = credential(e2e_sessions, "0300001111")
    heard = place(menu_caller("0300001111", "1", "40719", hang_up=True))
    assert heard.result.hung_up_by == "local"
    assert credential(e2e_sessions, "0300001111") == before
    assert heard.record is not None
    assert (heard.record.outcome, heard.record.last_step) == ("caller_hung_up", "password")


def test_caller_hangs_up_during_confirmation(place: Any, e2e_sessions: sessionmaker[Session]) -> None:
    before = credential(e2e_sessions, "0300001111")
    heard = place(menu_caller("0300001111", "1", OTHER + "#", "861", hang_up=True))
    assert credential(e2e_sessions, "0300001111") == before
    assert heard.record is not None
    assert (heard.record.outcome, heard.record.last_step) == ("caller_hung_up", "confirm")


# ------------------------------------------------------------------------------------- who calls


@pytest.mark.parametrize("privacy", [False, True], ids=["anonymous", "privacy-id-184"])
def test_withheld_caller_id(place: Any, e2e_sessions: sessionmaker[Session], privacy: bool) -> None:
    before = credential(e2e_sessions, "0300001111")
    caller_id = "0300001111" if privacy else None
    heard = place(menu_caller(caller_id, "1", PASSWORD + "#", PASSWORD + "#", privacy=privacy))
    assert heard.prompts == ["caller-id-withheld"]
    assert "ivr/caller-id-withheld" in heard.asterisk_played
    assert heard.result.hung_up_by == "remote"
    assert credential(e2e_sessions, "0300001111") == before
    assert heard.record is not None and heard.record.outcome == "caller_id_withheld"


def test_caller_id_on_no_contract(place: Any) -> None:
    heard = place(menu_caller("0399999999", "1", PASSWORD + "#", PASSWORD + "#"))
    assert heard.prompts == ["caller-not-eligible"]
    assert heard.result.hung_up_by == "remote"
    assert heard.record is not None
    assert (heard.record.outcome, heard.record.caller) == ("caller_not_eligible", "0399999999")


def test_caller_id_from_an_untrusted_address_is_not_believed(
    place: Any, e2e_sessions: sessionmaker[Session]
) -> None:
    before = credential(e2e_sessions, "0300001111")
    heard = place(menu_caller("0300001111", "1", PASSWORD + "#", PASSWORD + "#", source_ip="127.0.0.2"))
    assert heard.prompts == ["caller-id-withheld"]
    assert credential(e2e_sessions, "0300001111") == before
    assert heard.record is not None and heard.record.outcome == "caller_id_withheld"


# ------------------------------------------------------------------------------------- barge-in


def test_keys_typed_during_the_first_prompt_are_taken(
    place: Any, e2e_sessions: sessionmaker[Session]
) -> None:
    before = credential(e2e_sessions, "0422001234")
    caller = Caller(
        "0422001234",
        steps=[Wait(0.8), SendDigits("1"), Wait(0.8), SendDigits(PASSWORD + "#"), Wait(0.8),
               SendDigits(PASSWORD + "#"), ExpectHangup(within=60)],
    )  # fmt: skip
    heard = place(caller)
    first = next(e for e in heard.events if e.get("event") == "prompt")
    assert (first["prompt"], first["interrupted"]) == ("choose-unit", True)
    assert "set-for-number-suffix" not in heard.prompts  # typed over the read-back
    assert_set(e2e_sessions, "0422001234", PASSWORD, before)
    assert heard.result.duration < 40


def type_ahead_caller(caller_id: str, *entries: str, dtmf_mode: str, gap: float = 0.12) -> Caller:
    """A caller who knows the menu: each entry typed 1.5 s into the prompt that asks for it (over
    the prompt), keys `gap` apart, no # after a fixed-length entry."""
    steps: list[Any] = [Wait(1.5)]
    for entry in entries:
        steps += [SendDigits(entry, tone=0.06, gap=gap - 0.06), Wait(1.5)]
    steps.append(ExpectHangup(within=60))
    return Caller(caller_id, steps=steps, dtmf_mode=dtmf_mode)


def steps_of(heard: Heard) -> list[dict[str, Any]]:
    return [e for e in heard.events if e.get("event") == "step"]


@pytest.mark.parametrize("dtmf_mode", ["rfc4733", "info"])
@pytest.mark.parametrize(
    ("caller_id", "entries", "target"),
    [
        ("0300001111", ("1",), "0300001111"),
        ("0300001111", ("2", "0300002222#"), "0300002222"),
        ("0355501000", ("3", "0355501005#"), "0355501005"),
    ],
    ids=["unit1", "unit2", "unit3"],
)
def test_type_ahead_callers_without_hash_complete_and_never_wait(
    place: Any,
    e2e_sessions: sessionmaker[Session],
    dtmf_mode: str,
    caller_id: str,
    entries: tuple[str, ...],
    target: str,
) -> None:
    password = {"rfc4733": "27183904", "info": "31415926"}[dtmf_mode]
    PASSWORDS_USED.add(password)
    before = credential(e2e_sessions, target)
    heard = place(type_ahead_caller(caller_id, *entries, password, password, dtmf_mode=dtmf_mode))
    assert heard.record is not None and heard.record.outcome == "completed", voice_tail(heard)
    assert heard.record.wrong_entries == 0
    assert_set(e2e_sessions, target, password, before)
    steps = steps_of(heard)
    assert [e["result"] for e in steps] == ["digits"] * len(steps)
    # every entry ended at its last key (or #), none by a timeout, and each was collected while
    # the caller was still typing: no step waited after its entry was complete
    assert all(e["ended_by"] in ("max", "terminator") for e in steps)
    # 1.5 s into the prompt, 8 keys: a wait for more keys (the inter-digit timeout) would add 2 s
    typing_ms = 1500 + 8 * 120 + 500
    for e in steps:
        if e["step"] in ("password", "confirm"):
            assert e["duration_ms"] < typing_ms, e
    assert heard.prompts[-12:] == completion(target)


def voice_tail(heard: Heard) -> str:
    return repr([(e.get("event"), e.get("step"), e.get("result")) for e in heard.events])


def test_an_autodialler_typing_everything_at_once_loses_no_key(
    place: Any, e2e_sessions: sessionmaker[Session]
) -> None:
    # the unit, the password and its confirmation as one burst of 17 keys 120 ms apart, during the
    # first prompt: every entry ends at its last key and the next takes the keys after it
    before = credential(e2e_sessions, "0422001234")
    caller = Caller(
        "0422001234",
        steps=[
            Wait(1.0),
            SendDigits("1" + PASSWORD + PASSWORD, tone=0.06, gap=0.06),
            ExpectHangup(within=60),
        ],
        dtmf_mode="info",
    )
    heard = place(caller)
    assert heard.record is not None and heard.record.outcome == "completed", voice_tail(heard)
    assert heard.record.wrong_entries == 0
    assert_set(e2e_sessions, "0422001234", PASSWORD, before)


def test_a_fastagi_peer_without_the_secret_sets_nothing(
    voice_daemon: VoiceDaemon, e2e_sessions: sessionmaker[Session]
) -> None:
    """A local process posing as Asterisk: it sends a perfect AGI environment for a contract line
    and answers every command as Asterisk would, but cannot answer the secret question."""
    before = credential(e2e_sessions, "0300001111")
    offset = voice_daemon.log_offset()
    env = (
        "agi_network: yes\nagi_network_script: temp-password\nagi_uniqueid: impostor.1\n"
        "agi_callerid: 0300001111\nagi_dnid: 0363044747\nagi_extension: 0363044747\n\n"
    )
    sent: list[str] = []
    with socket.create_connection(("127.0.0.1", voice_daemon.port), timeout=5) as sock:
        sock.sendall(env.encode())
        stream = sock.makefile("rwb")
        keys = iter("1" + PASSWORD + PASSWORD)
        while True:
            line = stream.readline()
            if not line:
                break
            command = line.decode().strip()
            sent.append(command)
            if command.startswith("GET VARIABLE"):
                reply = "200 result=1 (guess-0123456789abcdefghijklmnopqrstuv)"
            elif command.startswith("GET DATA"):
                reply = "200 result=" + "".join(next(keys, "") for _ in range(8))
            else:
                reply = "200 result=0"
            stream.write((reply + "\n").encode())
            stream.flush()
    assert len(sent) == 1 and sent[0].startswith("GET VARIABLE")  # then closed: nothing else ran
    assert credential(e2e_sessions, "0300001111") == before
    with e2e_sessions() as session:
        assert session.scalars(select(CallRecord).where(CallRecord.call_id == "impostor.1")).first() is None
    events = voice_daemon.events_once(
        offset, lambda found: any(e.get("event") == "agi_connection_rejected" for e in found)
    )
    assert any(e.get("reason") == "secret_mismatch" for e in events)


# ------------------------------------------------------------------------------------- failures, load


def test_daemon_stopped_caller_hears_the_apology(place: Any, voice_daemon: VoiceDaemon) -> None:
    voice_daemon.stop()
    try:
        heard = place(Caller("0300001111", steps=[ExpectHangup(within=30)]), expect_daemon_call=False)
    finally:
        voice_daemon.start()
    assert heard.result.answered and heard.result.hung_up_by == "remote"
    assert heard.asterisk_played == ["ivr/system-error"]


def test_20_concurrent_callers_on_different_lines_all_complete(
    voice_daemon: VoiceDaemon, e2e_sessions: sessionmaker[Session]
) -> None:
    passwords = {number: f"{52718304 + i * 1013:08d}" for i, number in enumerate(CONCURRENT_LINES)}
    assert not [pw for pw in passwords.values() if guessable_temporary_password(pw)]  # the IVR takes them
    PASSWORDS_USED.update(passwords.values())
    offset = voice_daemon.log_offset()
    callers = [menu_caller(number, "1", pw + "#", pw + "#") for number, pw in passwords.items()]
    results = run_calls(callers, rate=10, concurrency=20)
    assert [r.error for r in results] == [None] * 20
    assert all(r.hung_up_by == "remote" for r in results)

    def twenty_finished() -> list[dict[str, Any]] | None:
        ended = [e for e in voice_daemon.events(offset) if e.get("event") == "call_finished"]
        return ended if len(ended) >= 20 else None

    ended = eventually(twenty_finished, 15, interval=0.2, what="20 calls finished")
    assert sorted(e["outcome"] for e in ended) == ["completed"] * 20
    for number, password in passwords.items():
        found = credential(e2e_sessions, number)
        assert found is not None and verify_secret(found[0], password), number


# ------------------------------------------------------------------------------------- classic AGI


class _ProcessPerCallBridge:
    """What inetd/socat do for a classic AGI script: one `ivr agi` process per connection, its
    stdin/stdout the connection."""

    def __init__(self, port: int, env: dict[str, str], log_path: str) -> None:
        self.listener = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self.listener.settimeout(0.2)
        self.env = env
        self.log_path = log_path
        self.children: list[subprocess.Popen[bytes]] = []
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn, open(self.log_path, "ab") as log:
                self.children.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "stack.cli.main", "agi"],
                        stdin=conn.fileno(),
                        stdout=conn.fileno(),
                        stderr=log,
                        env=self.env,
                    )
                )

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.listener.close()
        for child in self.children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()


def test_classic_agi_process_per_call(
    place: Any, voice_daemon: VoiceDaemon, e2e_sessions: sessionmaker[Session]
) -> None:
    before = credential(e2e_sessions, "0422005678")
    voice_daemon.stop()
    bridge = _ProcessPerCallBridge(voice_daemon.port, voice_daemon.env, str(voice_daemon.log_path))
    try:
        # a process per call starts Python first: the caller waits for the first prompt
        heard = place(menu_caller("0422005678", "1", PASSWORD + "#", PASSWORD + "#", first_wait=5.0))
    finally:
        bridge.close()
        voice_daemon.start()
    assert len(bridge.children) == 1 and bridge.children[0].returncode == 0
    assert heard.prompts[-12:] == completion("0422001234")
    assert heard.result.hung_up_by == "remote"
    assert heard.record is not None and heard.record.outcome == "completed"
    assert credential(e2e_sessions, "0422005678") == before  # line unit: the contract number's
    found = credential(e2e_sessions, "0422001234")
    assert found is not None and verify_secret(found[0], PASSWORD)
    assert os.path.exists(voice_daemon.log_path)
