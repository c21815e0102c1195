"""Classic AGI (process per call, stdin/stdout) with pyst2, running the same flow.

For operators who cannot run a daemon: the dialplan runs ``AGI(/path/to/ivr-agi)`` and Asterisk
starts one process per call. pyst2's calls block, so each runs in a worker thread and the flow
stays the same `async def`.

pyst2 echoes every command and reply to stderr, which Asterisk copies into its log: reply lines of
WAIT FOR DIGIT carry the keys pressed (a password), so pyst2's stderr goes to /dev/null here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any, TypeVar

import structlog
from asterisk.agi import AGI, AGIAppError, AGIError, AGIHangup, AGIUnknownError

from ivr.channel import (
    PROMPT_ID,
    CallerHungUp,
    ChannelError,
    KeyReadingChannel,
)
from ivr.daemon.fastagi import ALL_KEYS, PROMPT_DIRECTORY

T = TypeVar("T")


class ClassicAgiChannel(KeyReadingChannel):
    """The `Channel` of a process-per-call AGI script (pyst2 over stdin/stdout)."""

    def __init__(self, agi: Any) -> None:
        self.agi = agi
        env: dict[str, str] = dict(agi.env)
        self._identify(
            uniqueid=env.get("agi_uniqueid"),
            callerid=env.get("agi_callerid"),
            dnid=env.get("agi_dnid"),
            extension=env.get("agi_extension"),
            fallback_call_id=f"invalid-{os.getpid()}",
        )
        self._pending_key: str | None = None
        self.log = structlog.get_logger("ivr.call")

    @classmethod
    def from_stdio(cls, stdin: IO[str] | None = None, stdout: IO[str] | None = None) -> ClassicAgiChannel:
        devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
        agi = AGI(stdin=stdin or sys.stdin, stdout=stdout or sys.stdout, stderr=devnull)
        return cls(agi)

    async def _run(self, call: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(call, *args)
        except AGIHangup as exc:
            raise CallerHungUp() from exc
        except AGIUnknownError as exc:
            if exc.args and exc.args[0] == 511:
                raise CallerHungUp() from exc
            if exc.args and exc.args[0] == 0:  # EOF or a "HANGUP" line
                raise CallerHungUp() from exc
            raise ChannelError("unexpected AGI reply") from exc
        except (BrokenPipeError, EOFError) as exc:
            raise CallerHungUp() from exc
        except ValueError as exc:  # pyst2 cannot parse EOF or a "HANGUP" line: int("")
            raise CallerHungUp() from exc

    async def answer(self) -> None:
        try:
            await self._run(self.agi.answer)
        except AGIAppError as exc:
            raise CallerHungUp() from exc

    async def play(self, prompts: Sequence[str], *, interruptible: bool = True) -> str | None:
        escape = ALL_KEYS if interruptible else ""
        for prompt in prompts:
            if not PROMPT_ID.fullmatch(prompt):
                raise ValueError(f"not a prompt id: {prompt!r}")
            try:
                key = await self._run(self.agi.stream_file, f"{PROMPT_DIRECTORY}/{prompt}", escape)
            except AGIAppError:  # -1: a hangup, or a file Asterisk cannot open
                await self._run(self.agi.execute, "CHANNEL STATUS")
                self.log.error("prompt_missing", prompt=prompt)
                continue
            except AGIError as exc:
                raise ChannelError("STREAM FILE failed") from exc
            self.log.info("prompt", prompt=prompt, interrupted=bool(key))
            if key:
                self._pending_key = str(key)
                return str(key)
        return None

    async def _wait_for_key(self, seconds: float) -> str | None:
        try:
            key = await self._run(self.agi.wait_for_digit, max(1, round(seconds * 1000)))
        except AGIAppError as exc:
            raise CallerHungUp() from exc
        return str(key) if key else None

    async def set_variable(self, name: str, value: str) -> None:
        await self._run(self.agi.set_variable, name, value)

    async def hang_up(self) -> None:
        """Hang up with cause 16, normal clearing (see `FastAgiChannel.hang_up`)."""
        with contextlib.suppress(AGIAppError, AGIHangup):
            await self._run(self.agi.appexec, "Hangup", "16")
