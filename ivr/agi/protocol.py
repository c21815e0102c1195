"""The AGI protocol without I/O: environment block, commands and reply lines (h11-style).

Everything here is a pure function or a small state machine fed with bytes/lines, so it can be
tested line by line. Reply shapes (from Asterisk's res_agi.c):

- ``200 result=<int|digits> [(data)] [endpos=<n>]``: success; STREAM FILE / WAIT FOR DIGIT return
  the ASCII code of a key (``result=49`` is "1"), ``0`` for none, ``-1`` for failure or hangup.
  GET DATA returns the digits themselves, ``(timeout)`` when the caller stopped typing.
- ``510 Invalid or unknown command``, ``511 Command Not Permitted on a dead channel...``,
  ``520 Invalid command syntax...`` or a ``520-`` block ending in ``520 End of proper usage.``
- ``HANGUP``: a notification FastAGI sends (outside any reply) once the channel is gone.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ivr.channel import CallerHungUp, ChannelError


class AgiProtocolError(ChannelError):
    """Asterisk (or whatever is on the other end) said something that is not AGI."""


class EnvironmentTooLarge(AgiProtocolError):
    pass


# --------------------------------------------------------------------------- environment

_ENV_KEY = re.compile(r"agi_[a-z0-9_]{1,64}")
_ENV_LINE_MAX = 1024
_ENV_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f]")  # control characters but the tab


@dataclass(frozen=True)
class AgiEnvironment:
    """The ``agi_*`` variables Asterisk sends first (only well-formed lines are kept)."""

    variables: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.variables.get(name, default)

    @property
    def network_script(self) -> str:
        return self.variables.get("agi_network_script", "")

    @property
    def uniqueid(self) -> str | None:
        return self.variables.get("agi_uniqueid")

    @property
    def channel(self) -> str | None:
        return self.variables.get("agi_channel")

    @property
    def callerid(self) -> str | None:
        return self.variables.get("agi_callerid")

    @property
    def dnid(self) -> str | None:
        return self.variables.get("agi_dnid")

    @property
    def extension(self) -> str | None:
        return self.variables.get("agi_extension")


def parse_environment(block: bytes) -> AgiEnvironment:
    """Parse the environment block (without its terminating empty line).

    Raises `AgiProtocolError` if the block is not UTF-8 text or carries no ``agi_`` variable at all
    (a port scanner, an HTTP client, garbage). Malformed individual lines are skipped.
    """
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AgiProtocolError("AGI environment is not UTF-8 text") from exc
    variables: dict[str, str] = {}
    for raw_line in text.split("\n"):
        line = raw_line.rstrip("\r")
        if not line or len(line) > _ENV_LINE_MAX:
            continue
        key, sep, value = line.partition(": ")
        if not sep:
            key, sep, value = line.partition(":")
            value = value.lstrip(" ")
        if not sep or not _ENV_KEY.fullmatch(key):
            continue
        if _ENV_CONTROL.search(value):
            continue
        variables.setdefault(key, value)
    if not variables:
        raise AgiProtocolError("no AGI variables in the environment")
    return AgiEnvironment(MappingProxyType(variables))


class EnvironmentReader:
    """Accumulates bytes until the empty line that ends the environment, within `max_bytes`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes) -> tuple[AgiEnvironment, bytes] | None:
        """Returns (environment, bytes after it) once complete, else None."""
        self._buffer += data
        end, sep_len = _find_blank_line(self._buffer)
        if end < 0:
            if len(self._buffer) > self.max_bytes:
                raise EnvironmentTooLarge(f"AGI environment larger than {self.max_bytes} bytes")
            return None
        if end > self.max_bytes:
            raise EnvironmentTooLarge(f"AGI environment larger than {self.max_bytes} bytes")
        block = bytes(self._buffer[:end])
        rest = bytes(self._buffer[end + sep_len :])
        return parse_environment(block), rest


def _find_blank_line(buffer: bytes | bytearray) -> tuple[int, int]:
    if buffer.startswith(b"\n"):
        return 0, 1
    if buffer.startswith(b"\r\n"):
        return 0, 2
    candidates = [(buffer.find(b"\n\n"), 2), (buffer.find(b"\n\r\n"), 3)]
    found = [(pos + 1, length - 1) for pos, length in candidates if pos >= 0]
    if not found:
        return -1, 0
    return min(found)


# --------------------------------------------------------------------------- commands

_SAFE_ARG = re.compile(r"[A-Za-z0-9_./:+*#=@-]{1,256}")


_LINE_BREAK = re.compile(r"[\r\n\0]")


def quote_arg(value: str) -> str:
    """Quote one command argument for Asterisk's parser (double quotes, backslash escapes)."""
    if _LINE_BREAK.search(value):
        raise ValueError("AGI arguments cannot contain line breaks")
    if _SAFE_ARG.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_command(*words: str) -> bytes:
    """``build_command("STREAM", "FILE", "ivr/choose-unit", "0123456789*#")`` -> bytes with a newline.

    A call sends the same few commands as every other (the same prompts, timeouts, variables), so
    the bytes of the last `COMMAND_CACHE_SIZE` distinct commands are kept."""
    if not words:
        raise ValueError("empty AGI command")
    return _built(words)


COMMAND_CACHE_SIZE = 1024  # bounded: a read-back of a number is one of many distinct commands


@functools.lru_cache(maxsize=COMMAND_CACHE_SIZE)
def _built(words: tuple[str, ...]) -> bytes:
    return (" ".join([words[0], *map(quote_arg, words[1:])]) + "\n").encode("utf-8")


# --------------------------------------------------------------------------- replies


@dataclass(frozen=True)
class Response:
    """One complete reply to a command."""

    code: int
    result: str | None = None  # the text after ``result=`` (may be "" for GET DATA)
    data: str | None = None  # the parenthesised part: "timeout", "hangup", a variable's value
    endpos: int | None = None
    text: str = ""  # the rest of the line for non-200 replies

    @property
    def ok(self) -> bool:
        return self.code == 200

    @property
    def result_int(self) -> int:
        if self.result is None:
            raise AgiProtocolError(f"reply {self.code} carries no result")
        try:
            return int(self.result)
        except ValueError as exc:
            raise AgiProtocolError("reply result is not a number") from exc


@dataclass(frozen=True)
class HangupNotice:
    """Asterisk's asynchronous ``HANGUP`` line."""


@dataclass(frozen=True)
class UsageStart:
    """First line of a ``520-`` multi-line usage block."""


ReplyEvent = Response | HangupNotice | UsageStart

_REPLY = re.compile(r"(?P<code>[0-9]{3})(?P<sep>[ -]?)(?P<rest>.*)")
_RESULT = re.compile(r"result=(?P<result>\S*)(?:\s+\((?P<data>[^)]*)\))?(?P<tail>.*)")
_KV = re.compile(r"(?P<key>[a-z_]+)=(?P<value>\S*)")


def parse_reply_line(line: str) -> ReplyEvent:
    """Parse one line of what Asterisk sends back (trailing newline optional)."""
    line = line.rstrip("\r\n")
    if line.strip() == "HANGUP":
        return HangupNotice()
    match = _REPLY.fullmatch(line)
    if match is None:
        raise AgiProtocolError("unparseable AGI reply line")
    code = int(match["code"])
    rest = match["rest"].strip()
    if match["sep"] == "-":
        return UsageStart()
    if code != 200:
        return Response(code=code, text=rest)
    result_match = _RESULT.fullmatch(rest)
    if result_match is None:
        raise AgiProtocolError("200 reply without result=")
    endpos: int | None = None
    for kv in _KV.finditer(result_match["tail"]):
        if kv["key"] == "endpos":
            try:
                endpos = int(kv["value"])
            except ValueError as exc:
                raise AgiProtocolError("endpos is not a number") from exc
    return Response(code=200, result=result_match["result"], data=result_match["data"], endpos=endpos)


class ReplyParser:
    """Turns lines into complete replies: folds ``520-`` blocks, reports ``HANGUP`` notices."""

    def __init__(self) -> None:
        self._in_usage = False

    def feed_line(self, line: str) -> Response | HangupNotice | None:
        """Returns a complete event, or None while inside a multi-line usage block."""
        if self._in_usage:
            stripped = line.rstrip("\r\n")
            if stripped.startswith("520 "):
                self._in_usage = False
                return Response(code=520, text="usage")
            return None
        event = parse_reply_line(line)
        if isinstance(event, UsageStart):
            self._in_usage = True
            return None
        return event


def raise_for_reply(event: Response | HangupNotice) -> Response:
    """A hangup notice or a dead-channel reply raises `CallerHungUp`; other failures raise
    `AgiProtocolError`; a 200 reply is returned."""
    if isinstance(event, HangupNotice):
        raise CallerHungUp()
    if event.code == 511:
        raise CallerHungUp()
    if event.code != 200:
        raise AgiProtocolError(f"AGI command failed with {event.code}")
    return event


# --------------------------------------------------------------------------- typed results


def key_from_result(response: Response) -> str | None:
    """STREAM FILE / WAIT FOR DIGIT: ``result=0`` -> None, ``result=49`` -> "1"; -1 raises
    `CallerHungUp` (callers that can tell a missing file from a hangup check before calling this)."""
    value = response.result_int
    if value == 0:
        return None
    if value < 0:
        raise CallerHungUp()
    if value > 0x10FFFF:
        raise AgiProtocolError("key code out of range")
    key = chr(value)
    if key not in "0123456789*#ABCD":
        raise AgiProtocolError("reply names a key that is not a DTMF key")
    return key


@dataclass(frozen=True)
class GetDataResult:
    digits: str
    timed_out: bool


def get_data_result(response: Response) -> GetDataResult:
    """GET DATA: ``result=123`` / ``result=12 (timeout)`` / ``result= (timeout)``; -1 is a hangup."""
    result = response.result or ""
    if result == "-1":
        raise CallerHungUp()
    if not all(ch in "0123456789*#ABCD" for ch in result):
        raise AgiProtocolError("GET DATA returned something other than keys")
    return GetDataResult(digits=result, timed_out=response.data == "timeout")
