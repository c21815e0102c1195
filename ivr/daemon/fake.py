"""A scripted `Channel` for unit tests (the way httpx swaps a transport).

The script is what the caller does, in order. Each `collect_digits` consumes keys from it:

- ``"1"``, ``"0300001111#"``, ``"12345678"``: keys typed. Keys beyond what one entry takes stay
  typed-ahead for the next entry (as on a real line); the terminator ends an entry.
- `NO_INPUT`: the caller stays silent until the first-digit timeout.
- `HangUpAfter("12345")`: types those keys, then hangs up in the middle of the entry.
- `HANG_UP`: hangs up at the next thing the flow does.

`hang_up_at_prompt` hangs up when a given prompt id starts playing. Everything the flow did is
recorded in `events` (prompts played, keys collected as counts only, variables, hangup).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from ivr.channel import CallerHungUp, CallerId, CollectResult, Digits, NoInput, parse_caller_id


@dataclass(frozen=True)
class HangUpAfter:
    keys: str


class _NoInput:
    def __repr__(self) -> str:
        return "NO_INPUT"


class _HangUp:
    def __repr__(self) -> str:
        return "HANG_UP"


NO_INPUT: Final = _NoInput()
HANG_UP: Final = _HangUp()

ScriptItem = str | _NoInput | _HangUp | HangUpAfter


class FakeChannel:
    def __init__(
        self,
        script: Sequence[ScriptItem] = (),
        *,
        caller: str | None = "0300001111",
        call_id: str = "1700000000.1",
        service_number: str | None = "0363044747",
        hang_up_at_prompt: str | None = None,
        fail_at_prompt: str | None = None,
    ) -> None:
        self._script: list[ScriptItem] = list(script)
        self._typed_ahead = ""
        self._call_id = call_id
        self._caller = parse_caller_id(caller)
        self._service_number = service_number
        self.hang_up_at_prompt = hang_up_at_prompt
        self.fail_at_prompt = fail_at_prompt
        self.prompts: list[str] = []
        self.variables: dict[str, str] = {}
        self.variable_order: list[str] = []
        self.answered = False
        self.hung_up_by_flow = False
        self.caller_gone = False
        self.collects: list[dict[str, object]] = []

    # -- Channel properties
    @property
    def call_id(self) -> str:
        return self._call_id

    @property
    def caller(self) -> CallerId:
        return self._caller

    @property
    def service_number(self) -> str | None:
        return self._service_number

    # -- helpers
    def _check_alive(self) -> None:
        if self.caller_gone:
            raise CallerHungUp()
        if not self._typed_ahead and self._script and isinstance(self._script[0], _HangUp):
            self._script.pop(0)
            self.caller_gone = True
            raise CallerHungUp()

    def _play_one(self, prompt: str) -> None:
        self._check_alive()
        if prompt == self.hang_up_at_prompt:
            self.caller_gone = True
            raise CallerHungUp()
        if prompt == self.fail_at_prompt:
            raise ConnectionResetError("scripted channel failure")
        self.prompts.append(prompt)

    def _next_keys(self) -> str | _NoInput | HangUpAfter:
        if self._typed_ahead:
            keys, self._typed_ahead = self._typed_ahead, ""
            return keys
        if not self._script:
            return NO_INPUT  # a caller who stopped doing anything
        item = self._script.pop(0)
        if isinstance(item, _HangUp):
            self.caller_gone = True
            raise CallerHungUp()
        return item

    # -- verbs
    async def answer(self) -> None:
        self._check_alive()
        self.answered = True

    async def play(self, prompts: Sequence[str], *, interruptible: bool = True) -> str | None:
        for prompt in prompts:
            self._play_one(prompt)
        return None

    async def collect_digits(
        self,
        prompts: Sequence[str],
        *,
        max_digits: int,
        terminator: str | None = "#",
        first_digit_timeout: float,
        inter_digit_timeout: float,
    ) -> CollectResult:
        for prompt in prompts:
            if self._typed_ahead:
                break  # keys typed ahead cut the prompts short (barge-in)
            self._play_one(prompt)
        item = self._next_keys()
        if isinstance(item, _NoInput):
            self.collects.append({"max": max_digits, "result": "no_input"})
            return NoInput()
        hang_up_after = isinstance(item, HangUpAfter)
        keys = item.keys if isinstance(item, HangUpAfter) else item
        value = ""
        for index, key in enumerate(keys):
            if terminator is not None and key == terminator:
                self._typed_ahead = keys[index + 1 :]
                self.collects.append({"max": max_digits, "result": "digits", "count": len(value)})
                return Digits(value, terminated=True)
            value += key
            if len(value) >= max_digits:
                self._typed_ahead = keys[index + 1 :]
                self.collects.append({"max": max_digits, "result": "digits", "count": len(value)})
                return Digits(value)
        if hang_up_after:
            self.caller_gone = True
            raise CallerHungUp()
        if not value:
            return NoInput()
        self.collects.append({"max": max_digits, "result": "digits", "count": len(value)})
        return Digits(value, timed_out=True)

    async def say_digits(self, number: str, *, interruptible: bool = False) -> str | None:
        for ch in number:
            self._play_one(f"digit-{ch}")
        return None

    async def set_variable(self, name: str, value: str) -> None:
        self._check_alive()
        self.variables[name] = value
        self.variable_order.append(name)

    async def hang_up(self) -> None:
        if self.caller_gone:
            raise CallerHungUp()
        self.hung_up_by_flow = True
