"""`Channel` over one FastAGI connection (asyncio streams), hardened against the network.

- Every command has a timeout; a dead or silent Asterisk ends the call as a `ChannelError`.
- ``HANGUP`` notices, ``511`` replies, ``result=-1`` from a key-waiting command and EOF raise
  `CallerHungUp`.
- Barge-in: prompts play with STREAM FILE and every key as an escape digit; the key that stops a
  prompt is the first key of the entry, the rest are read with WAIT FOR DIGIT (first-digit and
  inter-digit timeouts kept apart, which GET DATA cannot do).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import structlog

from ivr.agi.protocol import (
    AgiEnvironment,
    AgiProtocolError,
    EnvironmentReader,
    HangupNotice,
    ReplyParser,
    Response,
    build_command,
    key_from_result,
    raise_for_reply,
)
from ivr.channel import (
    PROMPT_ID,
    CallerHungUp,
    ChannelError,
    KeyReadingChannel,
)

ALL_KEYS = "0123456789*#"
PROMPT_DIRECTORY = "ivr"


class AgiConnection:
    """Commands and replies on one connection; knows nothing of calls or prompts."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, command_timeout: float
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = ReplyParser()
        self.command_timeout = command_timeout
        self.hung_up = False
        self.log = structlog.get_logger("ivr.agi")

    async def command(self, *words: str, time_limit: float | None = None) -> Response:
        """Send one command and return its 200 reply (hangup and failures raise)."""
        if self.hung_up:
            raise CallerHungUp()
        limit = self.command_timeout if time_limit is None else time_limit
        try:
            async with asyncio.timeout(limit):
                self._writer.write(build_command(*words))
                await self._writer.drain()
                return await self._read_reply()
        except TimeoutError as exc:
            raise ChannelError(
                f"AGI command {words[0]} {words[1] if len(words) > 1 else ''} timed out"
            ) from exc
        except (ConnectionError, BrokenPipeError) as exc:
            self.hung_up = True
            raise CallerHungUp() from exc

    async def _read_reply(self) -> Response:
        while True:
            try:
                raw = await self._reader.readline()
            except (ValueError, asyncio.LimitOverrunError) as exc:
                raise AgiProtocolError("AGI reply line too long") from exc
            if not raw:
                self.hung_up = True
                raise CallerHungUp()
            event = self._parser.feed_line(raw.decode("utf-8", errors="replace"))
            if event is None:
                continue
            if isinstance(event, HangupNotice):
                self.hung_up = True
                raise CallerHungUp()
            if event.code == 100:  # "100 result=0 Trying...": the real reply follows
                continue
            try:
                return raise_for_reply(event)
            except CallerHungUp:
                self.hung_up = True
                raise


async def read_environment(reader: asyncio.StreamReader, *, max_bytes: int) -> AgiEnvironment:
    """Read the environment line by line (no read past it), within `max_bytes`; the caller wraps
    this in a timeout."""
    env_reader = EnvironmentReader(max_bytes)
    while True:
        try:
            line = await reader.readline()
        except (ValueError, asyncio.LimitOverrunError) as exc:
            raise AgiProtocolError("AGI environment line too long") from exc
        if not line:
            raise AgiProtocolError("connection closed before the AGI environment ended")
        done = env_reader.feed(line)
        if done is not None:
            env, _rest = done
            return env


class FastAgiChannel(KeyReadingChannel):
    """The `Channel` of one FastAGI call."""

    def __init__(self, env: AgiEnvironment, connection: AgiConnection) -> None:
        self.env = env
        self.connection = connection
        self._identify(
            uniqueid=env.uniqueid,
            callerid=env.callerid,
            dnid=env.dnid,
            extension=env.extension,
            fallback_call_id=f"invalid-{id(self):x}",
        )
        self._pending_key: str | None = None
        self.log = structlog.get_logger("ivr.call")

    async def answer(self) -> None:
        reply = await self.connection.command("ANSWER")
        if reply.result == "-1":
            raise CallerHungUp()

    async def play(self, prompts: Sequence[str], *, interruptible: bool = True) -> str | None:
        escape = ALL_KEYS if interruptible else ""
        for prompt in prompts:
            if not PROMPT_ID.fullmatch(prompt):
                raise ValueError(f"not a prompt id: {prompt!r}")
            reply = await self.connection.command("STREAM", "FILE", f"{PROMPT_DIRECTORY}/{prompt}", escape)
            if reply.result == "-1":
                await self._after_failed_playback(prompt)
                continue
            key = key_from_result(reply)
            self.log.info("prompt", prompt=prompt, interrupted=key is not None)
            if key is not None:
                self._pending_key = key
                return key
        return None

    async def _after_failed_playback(self, prompt: str) -> None:
        """STREAM FILE says -1 both for a hangup and for a prompt file it cannot open."""
        await self.connection.command("CHANNEL", "STATUS")  # 511 / HANGUP raise CallerHungUp
        self.log.error("prompt_missing", prompt=prompt)

    async def _wait_for_key(self, seconds: float) -> str | None:
        milliseconds = max(1, round(seconds * 1000))
        reply = await self.connection.command(
            "WAIT", "FOR", "DIGIT", str(milliseconds), time_limit=seconds + self.connection.command_timeout
        )
        return key_from_result(reply)

    async def set_variable(self, name: str, value: str) -> None:
        await self.connection.command("SET", "VARIABLE", name, value)

    async def hang_up(self) -> None:
        """Hang up with cause 16, normal clearing, so CDRs and AMI show a normal end (AGI's own
        HANGUP leaves the cause at 0, "Unknown")."""
        with contextlib.suppress(CallerHungUp):
            await self.connection.command("EXEC", "Hangup", "16")
