"""The `Channel` a call flow talks to: typed verbs, typed results, hangup as an exception.

The FastAGI adapter (`ivr.daemon.fastagi`), the classic AGI adapter (`ivr.daemon.classic`) and the
scripted fake used by unit tests (`ivr.daemon.scripted`) implement it. A flow never sees protocol
dicts: it gets `Digits` or `NoInput` back, and `CallerHungUp` is raised from whatever verb was
running when the caller went away.
"""

from __future__ import annotations

import math
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


class Progress(StrEnum):
    """What a caller hears while the daemon waits on something slow: a music-on-hold class of
    ``musiconhold.conf`` (its announcement first, then a soft tone, looped), started and stopped
    by the daemon without blocking (``StartMusicOnHold`` / ``StopMusicOnHold``), so the next
    prompt follows the end of the wait at once."""

    WAITING = "ivr-waiting"  # 「少々お待ちください。」: looking up the line or the number
    SAVING = "ivr-saving"  # 「ただいま設定しています。しばらくお待ちください。」: the password's save


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
ALL_KEYS = "0123456789*#"  # escape digits of an interruptible prompt
PROMPT_DIRECTORY = "ivr"  # the prompts' folder under Asterisk's sounds/<language>/


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

    def discard_typed_ahead(self) -> None:
        """Forget the key that stopped the last interruptible prompt (it will not start the next
        entry)."""
        ...

    async def start_progress(self, sound: Progress) -> None:
        """Start the progress sound and return at once: it plays until `stop_progress` or the next
        prompt."""
        ...

    async def stop_progress(self) -> None: ...

    async def set_variable(self, name: str, value: str) -> None: ...

    async def hang_up(self) -> None: ...


@dataclass(frozen=True)
class Gathered:
    """What one collection inside Asterisk (AGI ``GET DATA``) returned: the keys (``#`` ends it and
    is not included) and whether it ended because the caller stopped typing."""

    keys: str
    timed_out: bool

    def __repr__(self) -> str:  # never show what was typed
        return f"Gathered(<{len(self.keys)} keys>, timed_out={self.timed_out})"

    __str__ = __repr__


GATHER_TERMINATOR = "#"  # GET DATA's only end key (main/app.c ast_app_getdata_full)


def gather_rounds(first_digit_timeout: float, inter_digit_timeout: float) -> int:
    """How many ``GET DATA`` waits make up the first-digit timeout.

    GET DATA takes one timeout for the first key and for the keys after it (``fto = to = timeout``
    in ``ast_app_getdata_full``). The entry uses the inter-digit timeout, so keys after the first
    are timed exactly; a caller who has not started is given more rounds of it until the
    first-digit timeout is covered (rounded up to a whole number of rounds).
    """
    if inter_digit_timeout <= 0:
        raise ValueError("inter_digit_timeout must be positive")
    return max(1, math.ceil(first_digit_timeout / inter_digit_timeout - 1e-9))


def entry_from(keys: str, *, timed_out: bool, max_digits: int) -> CollectResult:
    """The typed result of one entry from the keys gathered (GET DATA semantics)."""
    if not keys:
        return NoInput() if timed_out else Digits("", terminated=True)
    if timed_out:
        return Digits(keys, timed_out=True)
    if len(keys) >= max_digits:
        return Digits(keys)
    return Digits(keys, terminated=True)  # GET DATA ends early only on the terminator


class KeyReadingChannel(ABC):
    """Digit collection shared by every adapter, over two primitives they implement.

    Asterisk's AGI loop reads and discards every key that arrives while no AGI command runs
    (``res/res_agi.c`` ``run_agi``), so an entry is collected inside Asterisk, by as few commands
    as the protocol allows:

    - ``_stream(prompts, interruptible)``: a list of prompt files as ONE command: ``EXEC
      Background a&b&c`` when any key may stop it (barge-in: the key is the entry's first), ``EXEC
      Playback a&b&c`` when it must be heard to the end.
    - ``_gather(prompt, wait, max_digits)``: ``GET DATA`` with the last prompt (or none after a
      barge-in), which plays it interruptibly and collects up to ``max_digits`` keys, ending at once
      at the last one or on ``#``, or after ``wait`` without a key.

    An entry is one command when its prompt is one file, two when it is longer (the read-back of a
    number, then the last file). The only places a key can be lost are the gaps between commands:
    after a barge-in on the first command of a two-command entry (one round trip), and between an
    entry's end and the next command.
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
    async def _stream(self, prompts: Sequence[str], interruptible: bool) -> str | None:
        """Play prompt files in order, as one command; returns the key that stopped them (only
        when `interruptible`), or None."""

    @abstractmethod
    async def _gather(self, prompt: str | None, wait: float, max_digits: int) -> Gathered:
        """Play `prompt` (if any) interruptibly and collect keys inside Asterisk (GET DATA)."""

    @abstractmethod
    async def _exec(self, application: str, *arguments: str) -> None:
        """Run a dialplan application that returns at once (``EXEC``); a hangup raises."""

    async def start_progress(self, sound: Progress) -> None:
        await self._exec("StartMusicOnHold", sound.value)

    async def stop_progress(self) -> None:
        await self._exec("StopMusicOnHold")

    async def play(self, prompts: Sequence[str], *, interruptible: bool = True) -> str | None:
        for prompt in prompts:
            if not PROMPT_ID.fullmatch(prompt):
                raise ValueError(f"not a prompt id: {prompt!r}")
        if not prompts:
            return None
        key = await self._stream(prompts, interruptible)
        if key is not None:
            self._pending_key = key
        return key

    async def collect_digits(
        self,
        prompts: Sequence[str],
        *,
        max_digits: int,
        terminator: str | None = GATHER_TERMINATOR,
        first_digit_timeout: float,
        inter_digit_timeout: float,
    ) -> CollectResult:
        if max_digits < 1:
            raise ValueError("max_digits must be at least 1")
        if terminator not in (None, GATHER_TERMINATOR):
            raise ValueError("the only terminator Asterisk's GET DATA knows is #")
        for prompt in prompts:
            if not PROMPT_ID.fullmatch(prompt):
                raise ValueError(f"not a prompt id: {prompt!r}")
        key, self._pending_key = self._pending_key, None
        if key is None and len(prompts) > 1:
            key = await self._stream(prompts[:-1], True)
        if key is not None:  # barge-in before the last prompt: the entry has begun
            if key == GATHER_TERMINATOR:
                return Digits("", terminated=True)
            if max_digits == 1:
                return Digits(key)
            rest = await self._gather(None, inter_digit_timeout, max_digits - 1)
            keys = key + rest.keys
            return entry_from(keys, timed_out=rest.timed_out, max_digits=max_digits)
        last = prompts[-1] if prompts else None
        gathered = await self._gather(last, inter_digit_timeout, max_digits)
        for _round in range(1, gather_rounds(first_digit_timeout, inter_digit_timeout)):
            if gathered.keys or not gathered.timed_out:
                break
            gathered = await self._gather(None, inter_digit_timeout, max_digits)
        return entry_from(gathered.keys, timed_out=gathered.timed_out, max_digits=max_digits)

    async def say_digits(self, number: str, *, interruptible: bool = False) -> str | None:
        return await self.play(digit_prompts(number), interruptible=interruptible)

    def discard_typed_ahead(self) -> None:
        self._pending_key = None
