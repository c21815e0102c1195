"""A scripted `Channel` for unit tests (the way httpx swaps a transport).

The fake implements only the primitives the real adapters implement (`_stream`: Background/Playback,
`_gather`: GET DATA) and emulates them as Asterisk behaves, so unit tests run the real collection
rules of `ivr.channel.KeyReadingChannel`. The script is what the caller does, in order:

- ``"1"``, ``"0300001111#"``, ``"12345678"``: keys typed. Keys beyond what one entry takes stay
  typed ahead for the next entry (as on a real line, where they would stop the next prompt); ``#``
  ends an entry. Keys typed ahead stop an interruptible prompt at once; a prompt that cannot be
  interrupted swallows them (Asterisk reads and drops them).
- `NO_INPUT`: the caller stays silent for the whole entry (every round of the first-digit wait).
- `HangUpAfter("12345")`: types those keys, then hangs up in the middle of the entry.
- `HANG_UP`: hangs up at the next thing the flow does.

`hang_up_at_prompt` hangs up when a given prompt id starts playing. Everything the flow did is
recorded (prompts played, GET DATA rounds as counts only, variables, hangup).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from ivr.channel import CallerHungUp, Gathered, KeyReadingChannel, parse_caller_id


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
PROMPT_SECONDS = 2.0


class FakeChannel(KeyReadingChannel):
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
        self._typed = ""  # keys the caller has typed that Asterisk has not consumed yet
        self._hang_up_when_typed = False
        self._silent = False  # NO_INPUT: silent until the entry's last round of waiting
        self._identify(
            uniqueid=call_id,
            callerid=caller,
            dnid=service_number,
            extension=service_number,
            fallback_call_id="invalid-fake",
        )
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
        self.commands = 0  # AGI commands the flow would have sent
        self.progress: list[str] = []  # "start <class>" / "stop", in order
        self.now = 0.0  # the call's own time: a prompt heard to the end takes PROMPT_SECONDS

    def clock(self) -> float:
        """A monotonic clock of this call, for the flow's `monotonic` (typed-ahead keys take no time)."""
        return self.now

    # -- helpers
    def _check_alive(self) -> None:
        self.commands += 1
        if self.caller_gone:
            raise CallerHungUp()
        if not self._typed and self._script and isinstance(self._script[0], _HangUp):
            self._script.pop(0)
            self.caller_gone = True
            raise CallerHungUp()

    def _start_prompt(self, prompt: str) -> None:
        if prompt == self.hang_up_at_prompt:
            self.caller_gone = True
            raise CallerHungUp()
        if prompt == self.fail_at_prompt:
            raise ConnectionResetError("scripted channel failure")

    def _caller_types(self) -> None:
        """Nothing typed ahead: the caller does the next thing of the script."""
        if self._typed or self._silent:
            return
        if not self._script:
            self._silent = True  # a caller who stopped doing anything
            return
        item = self._script.pop(0)
        if isinstance(item, _HangUp):
            self.caller_gone = True
            raise CallerHungUp()
        if isinstance(item, _NoInput):
            self._silent = True
        elif isinstance(item, HangUpAfter):
            self._typed, self._hang_up_when_typed = item.keys, True
        else:
            self._typed = item

    # -- the primitives (STREAM FILE, GET DATA)
    async def _stream(self, prompts: Sequence[str], interruptible: bool) -> str | None:
        self._check_alive()
        self._silent = False
        for prompt in prompts:
            self._start_prompt(prompt)
            if self._typed and interruptible:
                key, self._typed = self._typed[0], self._typed[1:]
                return key  # stopped at once: not heard
            self.prompts.append(prompt)
            self.now += PROMPT_SECONDS
            if not interruptible:
                self._typed = ""  # keys during a prompt that cannot be interrupted are dropped
        return None

    async def _gather(self, prompt: str | None, wait: float, max_digits: int) -> Gathered:
        self._check_alive()
        if prompt is not None:
            self._silent = False
            self._start_prompt(prompt)
            if not self._typed:
                self.prompts.append(prompt)
                self.now += PROMPT_SECONDS
        self._caller_types()
        keys = ""
        while self._typed:
            key, self._typed = self._typed[0], self._typed[1:]
            if key == "#":
                return self._gathered(keys, False, max_digits)
            keys += key
            if len(keys) >= max_digits:
                return self._gathered(keys, False, max_digits)
        if self._hang_up_when_typed:
            self.caller_gone = True
            raise CallerHungUp()
        self.now += wait
        return self._gathered(keys, True, max_digits)

    def _gathered(self, keys: str, timed_out: bool, max_digits: int) -> Gathered:
        self.collects.append({"max": max_digits, "count": len(keys), "timed_out": timed_out})
        return Gathered(keys, timed_out)

    async def _exec(self, application: str, *arguments: str) -> None:
        self._check_alive()
        if application == "StartMusicOnHold":
            self.progress.append(f"start {arguments[0]}")
        elif application == "StopMusicOnHold":
            self.progress.append("stop")
        else:
            raise ValueError(f"the fake knows no application {application}")

    # -- Channel properties and other verbs
    async def answer(self) -> None:
        self._check_alive()
        self.answered = True

    async def set_variable(self, name: str, value: str) -> None:
        self._check_alive()
        self.variables[name] = value
        self.variable_order.append(name)

    async def hang_up(self) -> None:
        if self.caller_gone:
            raise CallerHungUp()
        self.hung_up_by_flow = True
