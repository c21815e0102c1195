"""Classic AGI (process per call, stdin/stdout) with pyst2, running the same flow.

For operators who cannot run a daemon: the dialplan runs ``AGI(/path/to/ivr-agi)`` and Asterisk
starts one process per call. pyst2's calls block, so each runs in a worker thread and the flow
stays the same `async def`.

pyst2 echoes every command and reply to stderr, which Asterisk copies into its log: reply lines of
GET DATA carry the keys pressed (a password), so pyst2's stderr goes to /dev/null here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any, TypeVar

import structlog
from asterisk.agi import AGI, AGIAppError, AGIHangup, AGIUnknownError

from ivr.agi.protocol import (
    ReplyParser,
    Response,
    build_command,
    get_data_result,
    key_from_result,
    raise_for_reply,
)
from ivr.channel import (
    PROMPT_DIRECTORY,
    CallerHungUp,
    ChannelError,
    Gathered,
    KeyReadingChannel,
)

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

    async def _stream(self, prompts: Sequence[str], interruptible: bool) -> str | None:
        files = "&".join(f"{PROMPT_DIRECTORY}/{prompt}" for prompt in prompts)
        application = "Background" if interruptible else "Playback"
        reply = await self._run(self._raw_command, build_command("EXEC", application, files))
        if reply.result == "-1":
            raise CallerHungUp()
        key = key_from_result(reply) if interruptible else None
        if key is None:
            for prompt in prompts:
                self.log.debug("prompt", prompt=prompt, interrupted=False)
        else:  # Asterisk does not say at which file: the ones before it were heard
            self.log.debug("prompts_interrupted", prompts=list(prompts))
        return key

    async def _gather(self, prompt: str | None, wait: float, max_digits: int) -> Gathered:
        file = f"{PROMPT_DIRECTORY}/{prompt}" if prompt else ""
        command = build_command("GET", "DATA", file, str(max(1, round(wait * 1000))), str(max_digits))
        reply = await self._run(self._raw_command, command)
        if reply.result == "-1" and prompt:
            await self._after_failed_playback(prompt)
            return await self._gather(None, wait, max_digits)
        result = get_data_result(reply)
        return Gathered(result.digits, result.timed_out)

    async def _exec(self, application: str, *arguments: str) -> None:
        reply = await self._run(self._raw_command, build_command("EXEC", application, *arguments))
        if reply.result == "-1":
            raise CallerHungUp()

    def _raw_command(self, command: bytes) -> Response:
        """One command and its reply through our own parser: pyst2's reply pattern cannot tell
        ``result= (timeout)`` (no key) from ``result=`` (``#`` first)."""
        self.agi.test_hangup()
        stdout, stdin = self.agi.stdout, self.agi.stdin
        stdout.write(command.decode("utf-8"))
        stdout.flush()
        parser = ReplyParser()
        while True:
            line = stdin.readline()
            if isinstance(line, bytes):
                line = line.decode("utf-8", errors="replace")
            if not line:
                raise CallerHungUp()
            event = parser.feed_line(line)
            if event is None:
                continue
            if isinstance(event, Response) and event.code == 100:
                continue
            return raise_for_reply(event)

    async def _after_failed_playback(self, prompt: str) -> None:
        await self._run(self.agi.execute, "CHANNEL STATUS")
        self.log.error("prompt_missing", prompt=prompt)

    async def set_variable(self, name: str, value: str) -> None:
        await self._run(self.agi.set_variable, name, value)

    async def hang_up(self) -> None:
        """Hang up with cause 16, normal clearing (see `FastAgiChannel.hang_up`)."""
        with contextlib.suppress(AGIAppError, AGIHangup):
            await self._run(self.agi.appexec, "Hangup", "16")
