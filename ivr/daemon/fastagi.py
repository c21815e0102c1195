"""`Channel` over one FastAGI connection (asyncio streams), hardened against the network.

- Every command has a timeout; a dead or silent Asterisk ends the call as a `ChannelError`.
- ``HANGUP`` notices, ``511`` replies, ``result=-1`` from a key-waiting command and EOF raise
  `CallerHungUp`.
- Keys are collected inside Asterisk with GET DATA (see `ivr.channel.KeyReadingChannel`): the AGI
  loop discards keys that arrive while no command runs, so one command per entry where it can.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog

from ivr.agi.protocol import (
    AgiEnvironment,
    AgiProtocolError,
    EnvironmentTooLarge,
    HangupNotice,
    ReplyParser,
    Response,
    build_command,
    get_data_result,
    key_from_result,
    parse_environment,
    raise_for_reply,
)
from ivr.channel import (
    PROMPT_DIRECTORY,
    CallerHungUp,
    ChannelError,
    Gathered,
    KeyReadingChannel,
)

if TYPE_CHECKING:
    from ivr.metrics import DaemonMetrics


class AgiConnection:
    """Commands and replies on one connection; knows nothing of calls or prompts."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        command_timeout: float,
        metrics: DaemonMetrics | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.metrics = metrics
        self._parser = ReplyParser()
        self.command_timeout = command_timeout
        self.hung_up = False
        self.log = structlog.get_logger("ivr.agi")
        self._deadline: float | None = None  # the running command's (loop time); None between
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[object] | None = None
        self._expired = False

    async def command(self, *words: str, time_limit: float | None = None) -> Response:
        """Send one command and return its 200 reply (hangup and failures raise)."""
        if self.hung_up:
            raise CallerHungUp()
        loop = asyncio.get_running_loop()
        self._arm(loop, loop.time() + (self.command_timeout if time_limit is None else time_limit))
        sent = time.monotonic()
        try:
            self._writer.write(build_command(*words))
            await self._writer.drain()
            reply = await self._read_reply()
        except asyncio.CancelledError:
            if self._expired:
                self._expired = False
                task = asyncio.current_task()
                if task is not None and task.uncancel() == 0:  # our deadline, no other cancellation
                    # A peer that stays silent past a deadline is not trusted with another command
                    # (its late reply would answer the wrong one): the apology and the hangup are
                    # not tried on it, so it holds the call one timeout, not three. Closing the
                    # connection ends the AGI, and the dialplan plays the apology itself.
                    self.hung_up = True
                    raise ChannelError(
                        f"AGI command {words[0]} {words[1] if len(words) > 1 else ''} timed out"
                    ) from None
            raise
        except (ConnectionError, BrokenPipeError) as exc:
            self.hung_up = True
            raise CallerHungUp() from exc
        finally:
            self._deadline = None
        if self.metrics is not None:
            self.metrics.agi_round_trip(words, time.monotonic() - sent)
        return reply

    # A command's deadline, kept with ONE timer per connection (an `asyncio.timeout` per command put
    # a timer in the loop's heap and cancelled it, ten times per short call). The timer is set again
    # only when it fires before the running command's deadline (nearly always: replies come in
    # milliseconds, deadlines are tens of seconds away) or when a command's deadline is sooner;
    # at its deadline it cancels the command's task as `asyncio.timeout` does, and `command` turns
    # that cancellation (and no other) into a ChannelError.

    def _arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        self._deadline = deadline
        self._task = asyncio.current_task()
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._at_deadline, loop)

    def _at_deadline(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:  # between commands: the next one sets the timer again
            return
        if loop.time() < deadline:  # a later command's deadline
            self._timer = loop.call_at(deadline, self._at_deadline, loop)
            return
        if self._task is not None and not self._task.done():
            self._expired = True
            self._task.cancel()

    def close(self) -> None:
        """The connection is done: its timer goes (it would keep the connection for a deadline)."""
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

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
    """Read the environment line by line (no read past it) up to its empty line, within
    `max_bytes`; the caller wraps this in a timeout. Lines are only collected here (the empty line
    is found by looking at each line once) and parsed in one go."""
    lines: list[bytes] = []
    size = 0
    while True:
        try:
            line = await reader.readline()
        except (ValueError, asyncio.LimitOverrunError) as exc:
            raise AgiProtocolError("AGI environment line too long") from exc
        if not line:
            raise AgiProtocolError("connection closed before the AGI environment ended")
        if line == b"\n" or line == b"\r\n":
            return parse_environment(b"".join(lines))
        size += len(line)
        if size > max_bytes:
            raise EnvironmentTooLarge(f"AGI environment larger than {max_bytes} bytes")
        lines.append(line)


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

    async def _stream(self, prompts: Sequence[str], interruptible: bool) -> str | None:
        # One command for the whole list: Background stops at any key and returns it (AGI's EXEC
        # sets AST_FLAG_DISABLE_WORKAROUNDS, so the key is never taken as an extension);
        # Playback cannot be interrupted. Either skips a file it cannot open (Asterisk logs it).
        files = "&".join(f"{PROMPT_DIRECTORY}/{prompt}" for prompt in prompts)
        application = "Background" if interruptible else "Playback"
        reply = await self.connection.command("EXEC", application, files)
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
        milliseconds = max(1, round(wait * 1000))
        # GET DATA restarts its timer at every key; the prompt's own length comes on top.
        limit = self.connection.command_timeout + wait * (max_digits + 1)
        file = f"{PROMPT_DIRECTORY}/{prompt}" if prompt else ""
        reply = await self.connection.command(
            "GET", "DATA", file, str(milliseconds), str(max_digits), time_limit=limit
        )
        if reply.result == "-1" and prompt:
            # -1 is a hangup, or a prompt file Asterisk cannot open: collect without it.
            await self._after_failed_playback(prompt)
            return await self._gather(None, wait, max_digits)
        result = get_data_result(reply)
        if prompt:
            self.log.debug("prompt", prompt=prompt, interrupted=bool(result.digits) or not result.timed_out)
        return Gathered(result.digits, result.timed_out)

    async def _exec(self, application: str, *arguments: str) -> None:
        reply = await self.connection.command("EXEC", application, *arguments)
        if reply.result == "-1":
            raise CallerHungUp()

    async def _after_failed_playback(self, prompt: str) -> None:
        """STREAM FILE and GET DATA say -1 both for a hangup and for a prompt file they cannot open."""
        await self.connection.command("CHANNEL", "STATUS")  # 511 / HANGUP raise CallerHungUp
        self.log.error("prompt_missing", prompt=prompt)

    async def get_variable(self, name: str) -> str | None:
        reply = await self.connection.command("GET", "VARIABLE", name)
        return reply.data if reply.result == "1" else None

    async def set_variable(self, name: str, value: str) -> None:
        await self.connection.command("SET", "VARIABLE", name, value)

    async def hang_up(self) -> None:
        """Hang up with cause 16, normal clearing, so CDRs and AMI show a normal end (AGI's own
        HANGUP leaves the cause at 0, "Unknown")."""
        with contextlib.suppress(CallerHungUp):
            await self.connection.command("EXEC", "Hangup", "16")
