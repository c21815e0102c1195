"""The AGI parser, line by line, without I/O."""

from __future__ import annotations

import pytest

from ivr.agi.protocol import (
    AgiProtocolError,
    EnvironmentReader,
    EnvironmentTooLarge,
    HangupNotice,
    ReplyParser,
    Response,
    UsageStart,
    build_command,
    get_data_result,
    key_from_result,
    parse_environment,
    parse_reply_line,
    raise_for_reply,
)
from ivr.channel import CallerHungUp, CallerIdKind, parse_caller_id

ENV = (
    b"agi_network: yes\n"
    b"agi_network_script: temp-password\n"
    b"agi_request: agi://127.0.0.1:4573/temp-password\n"
    b"agi_channel: PJSIP/caller-00000001\n"
    b"agi_language: ja\n"
    b"agi_uniqueid: 1700000000.42\n"
    b"agi_callerid: 0300001111\n"
    b"agi_calleridname: unknown\n"
    b"agi_dnid: 0363044747\n"
    b"agi_extension: 0363044747\n"
    b"\n"
)


def test_environment_block_is_parsed() -> None:
    env = parse_environment(ENV[:-1])
    assert env.uniqueid == "1700000000.42"
    assert env.callerid == "0300001111"
    assert env.network_script == "temp-password"
    assert env.channel == "PJSIP/caller-00000001"
    assert env.dnid == "0363044747"


def test_environment_skips_malformed_lines_but_keeps_good_ones() -> None:
    env = parse_environment(b"garbage line\nagi_uniqueid: 1.2\nnot_agi: x\nAGI_UPPER: y\nagi_x: a\x01b\n")
    assert dict(env.variables) == {"agi_uniqueid": "1.2"}


def test_environment_of_garbage_is_rejected() -> None:
    with pytest.raises(AgiProtocolError):
        parse_environment(b"GET / HTTP/1.1\r\nHost: x\r\n")
    with pytest.raises(AgiProtocolError):
        parse_environment(b"\xff\xfe\xfd")


def test_environment_reader_waits_for_the_blank_line_and_returns_what_follows() -> None:
    reader = EnvironmentReader(max_bytes=8192)
    assert reader.feed(ENV[:50]) is None
    assert reader.feed(ENV[50:-1]) is None
    done = reader.feed(b"\n200 result=0\n")
    assert done is not None
    env, rest = done
    assert env.uniqueid == "1700000000.42"
    assert rest == b"200 result=0\n"


def test_environment_reader_accepts_crlf() -> None:
    reader = EnvironmentReader(max_bytes=8192)
    done = reader.feed(b"agi_uniqueid: 1.2\r\nagi_callerid: 0300001111\r\n\r\n")
    assert done is not None
    assert done[0].callerid == "0300001111"


def test_environment_reader_enforces_the_size_limit() -> None:
    reader = EnvironmentReader(max_bytes=100)
    with pytest.raises(EnvironmentTooLarge):
        reader.feed(b"agi_x: " + b"a" * 200)
    reader = EnvironmentReader(max_bytes=100)
    with pytest.raises(EnvironmentTooLarge):
        reader.feed(b"agi_x: " + b"a" * 200 + b"\n\n")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("200 result=0", Response(code=200, result="0")),
        ("200 result=49", Response(code=200, result="49")),
        ("200 result=49 endpos=12345", Response(code=200, result="49", endpos=12345)),
        ("200 result=-1 endpos=0", Response(code=200, result="-1", endpos=0)),
        ("200 result=0 endpos=16000\n", Response(code=200, result="0", endpos=16000)),
        ("200 result=1234 (timeout)", Response(code=200, result="1234", data="timeout")),
        ("200 result= (timeout)", Response(code=200, result="", data="timeout")),
        ("200 result=1 (some value)", Response(code=200, result="1", data="some value")),
        ("200 result=-1 (hangup)", Response(code=200, result="-1", data="hangup")),
        ("510 Invalid or unknown command", Response(code=510, text="Invalid or unknown command")),
        (
            "511 Command Not Permitted on a dead channel or intercepted channel",
            Response(code=511, text="Command Not Permitted on a dead channel or intercepted channel"),
        ),
        ("520 Invalid command syntax.  Proper usage not available.", None),
    ],
)
def test_reply_lines(line: str, expected: Response | None) -> None:
    parsed = parse_reply_line(line)
    if expected is None:
        assert isinstance(parsed, Response) and parsed.code == 520
    else:
        assert parsed == expected


def test_hangup_notice_and_usage_start() -> None:
    assert parse_reply_line("HANGUP\n") == HangupNotice()
    assert parse_reply_line("520-Invalid command syntax.  Proper usage follows:") == UsageStart()


@pytest.mark.parametrize(
    "line", ["", "hello", "20 result=0", "200 resul=0", "200 result=0 endpos=abc", "2000"]
)
def test_garbage_reply_lines_raise(line: str) -> None:
    with pytest.raises(AgiProtocolError):
        parse_reply_line(line)


def test_reply_parser_folds_multiline_usage() -> None:
    parser = ReplyParser()
    assert parser.feed_line("520-Invalid command syntax.  Proper usage follows:\n") is None
    assert parser.feed_line(" Usage: STREAM FILE <filename> <escape digits>\n") is None
    assert parser.feed_line("200 result=0 looks like a reply but is usage text\n") is None
    event = parser.feed_line("520 End of proper usage.\n")
    assert event == Response(code=520, text="usage")
    assert parser.feed_line("200 result=0\n") == Response(code=200, result="0")


def test_raise_for_reply() -> None:
    assert raise_for_reply(Response(code=200, result="0")).result == "0"
    with pytest.raises(CallerHungUp):
        raise_for_reply(HangupNotice())
    with pytest.raises(CallerHungUp):
        raise_for_reply(Response(code=511, text="dead"))
    with pytest.raises(AgiProtocolError):
        raise_for_reply(Response(code=510, text="Invalid"))
    with pytest.raises(AgiProtocolError):
        raise_for_reply(Response(code=520, text="usage"))


def test_key_from_result() -> None:
    assert key_from_result(Response(code=200, result="0")) is None
    assert key_from_result(Response(code=200, result="49")) == "1"
    assert key_from_result(Response(code=200, result="35")) == "#"
    assert key_from_result(Response(code=200, result="42")) == "*"
    with pytest.raises(CallerHungUp):
        key_from_result(Response(code=200, result="-1"))
    with pytest.raises(AgiProtocolError):
        key_from_result(Response(code=200, result="65536000"))
    with pytest.raises(AgiProtocolError):
        key_from_result(Response(code=200, result="120"))  # "x" is not a key
    with pytest.raises(AgiProtocolError):
        key_from_result(Response(code=200, result="abc"))


def test_get_data_result() -> None:
    assert get_data_result(Response(code=200, result="0300001111")).digits == "0300001111"
    timed = get_data_result(Response(code=200, result="12", data="timeout"))
    assert timed.digits == "12" and timed.timed_out
    empty = get_data_result(Response(code=200, result="", data="timeout"))
    assert empty.digits == "" and empty.timed_out
    with pytest.raises(CallerHungUp):
        get_data_result(Response(code=200, result="-1"))
    with pytest.raises(AgiProtocolError):
        get_data_result(Response(code=200, result="12x"))


def test_build_command_quotes_what_needs_it() -> None:
    assert build_command("STREAM", "FILE", "ivr/choose-unit", "0123456789*#") == (
        b"STREAM FILE ivr/choose-unit 0123456789*#\n"
    )
    assert build_command("STREAM", "FILE", "ivr/x", "") == b'STREAM FILE ivr/x ""\n'
    assert build_command("SET", "VARIABLE", "IVR_RESULT", "a b") == b'SET VARIABLE IVR_RESULT "a b"\n'
    with pytest.raises(ValueError):
        build_command("SET", "VARIABLE", "X", "a\nHANGUP")


@pytest.mark.parametrize(
    ("raw", "kind", "number"),
    [
        ("0300001111", CallerIdKind.NUMBER, "0300001111"),
        ("+81300001111", CallerIdKind.NUMBER, "+81300001111"),
        ("anonymous", CallerIdKind.WITHHELD, None),
        ("Anonymous", CallerIdKind.WITHHELD, None),
        ("restricted", CallerIdKind.WITHHELD, None),
        ("unknown", CallerIdKind.ABSENT, None),
        ("", CallerIdKind.ABSENT, None),
        (None, CallerIdKind.ABSENT, None),
        ("03-0000-1111", CallerIdKind.ABSENT, None),
        ("sip:0300001111@evil", CallerIdKind.ABSENT, None),
        ("0300001111;drop table", CallerIdKind.ABSENT, None),
        ("1" * 40, CallerIdKind.ABSENT, None),
        ("++0300001111", CallerIdKind.ABSENT, None),
    ],
)
def test_caller_id_validation(raw: str | None, kind: CallerIdKind, number: str | None) -> None:
    parsed = parse_caller_id(raw)
    assert parsed.kind is kind
    assert parsed.number == number
