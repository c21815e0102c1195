"""The `Channel` a call flow talks to: typed verbs, typed results, hangup as an exception.

The FastAGI adapter (`ivr.daemon.fastagi`), the classic AGI adapter (`ivr.daemon.classic`) and the
scripted fake used by unit tests (`ivr.daemon.fake`) implement it. A flow never sees protocol
dicts: it gets `Digits` or `NoInput` back, and `CallerHungUp` is raised from whatever verb was
running when the caller went away.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable


class CallerHungUp(Exception):
    """The caller went away; raised by any channel verb."""


class ChannelError(Exception):
    """The channel failed for a reason other than a hangup (protocol error, timeout, closed socket)."""


@dataclass(frozen=True)
class Digits:
    """Keys the caller entered. `terminated`: ended by the terminator key (not included in `value`);
    `timed_out`: ended because the caller stopped typing (inter-digit timeout)."""

    value: str
    terminated: bool = False
    timed_out: bool = False

    def __repr__(self) -> str:  # never show what was typed: it may be a password
        return f"Digits(<{len(self.value)} keys>, terminated={self.terminated}, timed_out={self.timed_out})"

    __str__ = __repr__


@dataclass(frozen=True)
class NoInput:
    """The caller pressed nothing before the first-digit timeout."""


CollectResult = Digits | NoInput


class CallerIdKind(StrEnum):
    NUMBER = "number"  # digits, maybe with a leading +
    WITHHELD = "withheld"  # the caller chose not to show it (anonymous, restricted, ...)
    ABSENT = "absent"  # none sent, or something that is not a phone number


@dataclass(frozen=True)
class CallerId:
    kind: CallerIdKind
    number: str | None = None

    @classmethod
    def absent(cls) -> CallerId:
        return cls(CallerIdKind.ABSENT)


_CALLER_NUMBER = re.compile(r"\+?[0-9]{1,20}")
WITHHELD_MARKERS = frozenset({"anonymous", "restricted", "private", "withheld", "unavailable", "p", "o"})


def parse_caller_id(raw: str | None) -> CallerId:
    """Validate a caller ID from Asterisk: digits with an optional leading +, or a withheld marker.

    Anything else (letters, SIP URIs, spaces, control characters, overlong values) is treated as no
    caller ID at all: it cannot identify a line.
    """
    if raw is None:
        return CallerId.absent()
    value = raw.strip()
    if value == "" or value.lower() == "unknown":
        return CallerId.absent()
    if value.lower() in WITHHELD_MARKERS:
        return CallerId(CallerIdKind.WITHHELD)
    if _CALLER_NUMBER.fullmatch(value):
        return CallerId(CallerIdKind.NUMBER, value)
    return CallerId.absent()


_UNIQUEID = re.compile(r"[0-9A-Za-z._-]{1,64}")
_SERVICE_NUMBER = re.compile(r"\+?[0-9]{1,20}")
PROMPT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
DIGIT_KEYS = frozenset("0123456789*#")


def digit_prompts(number: str) -> list[str]:
    """The prompt ids that read a number back digit by digit (`digit-0` ... `digit-9`)."""
    return [f"digit-{ch}" for ch in number if ch.isdigit()]


@runtime_checkable
class Channel(Protocol):
    """One phone call, as the flow sees it."""

    @property
    def call_id(self) -> str:
        """Asterisk's unique id of the channel (bound to every log line of the call)."""
        ...

    @property
    def caller(self) -> CallerId: ...

    @property
    def service_number(self) -> str | None:
        """The number the caller dialled (validated digits), if known."""
        ...

    async def answer(self) -> None: ...

    async def play(self, prompts: Sequence[str], *, interruptible: bool = True) -> str | None:
        """Play prompts in order; with `interruptible`, a key stops playback and is returned (and
        also kept as the first key of the next `collect_digits`)."""
        ...

    async def collect_digits(
        self,
        prompts: Sequence[str],
        *,
        max_digits: int,
        terminator: str | None = "#",
        first_digit_timeout: float,
        inter_digit_timeout: float,
    ) -> CollectResult:
        """Play prompts (any key interrupts them and is the first key of the entry), then collect
        up to `max_digits` keys. The terminator ends the entry and is not part of it."""
        ...

    async def say_digits(self, number: str, *, interruptible: bool = False) -> str | None: ...

    async def set_variable(self, name: str, value: str) -> None: ...

    async def hang_up(self) -> None: ...


class KeyReadingChannel(ABC):
    """Digit collection shared by the real adapters, over two primitives they implement.

    `play` keeps a key that interrupted a prompt in `_pending_key` (barge-in: it is the first key of
    the next entry); `_wait_for_key` waits up to `seconds` for one key. Collection then follows the
    same rules on every transport: first-digit timeout, inter-digit timeout, terminator, maximum.
    """

    _pending_key: str | None = None
    _call_id: str
    _caller: CallerId
    _service_number: str | None

    def _identify(
        self,
        *,
        uniqueid: str | None,
        callerid: str | None,
        dnid: str | None,
        extension: str | None,
        fallback_call_id: str,
    ) -> None:
        """Take the call's identity from AGI environment values, which are untrusted input: a
        malformed unique id is replaced, a malformed caller ID or dialled number is dropped."""
        self._call_id = uniqueid if uniqueid and _UNIQUEID.fullmatch(uniqueid) else fallback_call_id
        self._caller = parse_caller_id(callerid)
        service = dnid if dnid and dnid != "unknown" else extension
        self._service_number = service if service and _SERVICE_NUMBER.fullmatch(service) else None

    @property
    def call_id(self) -> str:
        return self._call_id

    @property
    def caller(self) -> CallerId:
        return self._caller

    @property
    def service_number(self) -> str | None:
        return self._service_number

    @abstractmethod
    async def play(self, prompts: Sequence[str], *, interruptible: bool = True) -> str | None: ...

    @abstractmethod
    async def _wait_for_key(self, seconds: float) -> str | None: ...

    async def collect_digits(
        self,
        prompts: Sequence[str],
        *,
        max_digits: int,
        terminator: str | None = "#",
        first_digit_timeout: float,
        inter_digit_timeout: float,
    ) -> CollectResult:
        if max_digits < 1:
            raise ValueError("max_digits must be at least 1")
        key, self._pending_key = self._pending_key, None
        if key is None:
            await self.play(prompts, interruptible=True)
            key, self._pending_key = self._pending_key, None
        if key is None:
            key = await self._wait_for_key(first_digit_timeout)
        if key is None:
            return NoInput()
        entered = ""
        while True:
            if terminator is not None and key == terminator:
                return Digits(entered, terminated=True)
            entered += key
            if len(entered) >= max_digits:
                return Digits(entered)
            key = await self._wait_for_key(inter_digit_timeout)
            if key is None:
                return Digits(entered, timed_out=True)

    async def say_digits(self, number: str, *, interruptible: bool = False) -> str | None:
        return await self.play(digit_prompts(number), interruptible=interruptible)
