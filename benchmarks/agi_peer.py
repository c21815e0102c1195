"""Asterisk's side of AGI, as a model: answers whatever commands come as res_agi.c would, for a
scripted caller. Used by `benchmarks/agi.py` and by tests; no media time (prompts "play" at once).

It is not a replay of a transcript. The caller script says what the caller does relative to the
prompts they hear, and every command is answered from that and the channel's state:

    CallerScript([Keys("1"), Keys("40719352#"), Keys("40719352#")])          # barge in each time
    CallerScript([Keys("2", at="choose-unit"), Keys("0300002222#", barge_in=False), ...])
    CallerScript([Keys("40719352", at="set-for-number-suffix")])             # 8 digits, no "#"
    CallerScript([Keys("9"), HangUp()])                                      # hang up at a prompt

- `Keys(keys, at=ANY, barge_in=True)`: once the prompt `at` (a prompt id, without the ``ivr/``
  directory; `ANY`: whichever plays next) has started after the previous action ended, the caller
  types `keys` in one go. With `barge_in` the first key interrupts that prompt (or the first later
  one whose escape digits contain it); without, the caller waits until the prompts have ended and
  types at the next digit wait (WAIT FOR DIGIT, the wait phase of GET DATA). Keys of an action that
  the IVR does not read in one entry stay typed ahead for the next one. After the last key of an
  action the caller pauses: the next digit wait times out until a prompt makes the next action due.
- `HangUp(at=ANY, barge_in=True)`: hang up during that prompt, or at the next digit wait.
- With nothing due, every digit wait times out at once (no media time), unless the script has
  `park=True`: then the wait is held (a caller thinking, a long GET DATA) until `release()`.

Replies follow res_agi.c (Asterisk 22; see `handle_*` there): ANSWER ``200 result=0``; STREAM FILE
``200 result=<ascii of key>|0 endpos=<samples>`` (``-1`` with the sample offset for a file it cannot
open); GET DATA ``200 result=<digits>``, ``200 result=<digits> (timeout)``, ``200 result=`` for a
lone ``#``, ``200 result=-1`` on hangup or a missing file (ast_app_getdata_full and
ast_readstring_full: up to max digits, ``#`` ends the entry and is not returned); WAIT FOR DIGIT
the key's ascii, 0 on timeout, -1 on hangup; GET VARIABLE ``200 result=1 (<value>)`` or
``200 result=0`` when unset (a name ending in ``)`` is a function: ``AST_CONFIG`` reads `config`);
GET FULL VARIABLE the same with ``${NAME}`` expanded; SET VARIABLE
``200 result=1``; EXEC ``200 result=0`` (``-1`` for Hangup, which hangs the channel up; ``-2`` for an
application Asterisk does not have); CHANNEL STATUS the channel state (6, up: the dialplan answered
before AGI()); HANGUP ``200 result=1``; NOOP ``200 result=0``; VERBOSE ``200 result=1``; a command it
does not know ``510 Invalid or unknown command``; wrong arguments the ``520-`` usage block. Commands
are split as Asterisk's parse_args does (double quotes, backslash escapes) and matched
case-insensitively by their leading words (find_command).

Hangup (run_agi): once the channel is gone FastAGI gets a ``HANGUP`` line after the reply of the
command that noticed it (classic AGI gets SIGHUP instead: `on_hangup`); then only commands allowed
on a dead channel (EXEC, GET/SET VARIABLE, GET FULL VARIABLE, NOOP, VERBOSE, DATABASE ...) are
run, the rest answer ``511 Command Not Permitted on a dead channel or intercept routine``. With
``AGIEXITONHANGUP=yes`` (our dialplan sets it; `exit_on_hangup`, the default) Asterisk instead sends
``HANGUP`` twice (in the loop and on leaving it) and closes the connection.

Nothing here records what was typed: a `Session` keeps the commands (which carry no key) and
their times, never the replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

ANY: Final = "*"
DTMF_KEYS: Final = "0123456789*#ABCD"  # AST_DIGIT_ANY
PROMPT_SAMPLES: Final = 16000  # a prompt of 2 s at 8 kHz, the endpos of one played to its end
STATE_UP: Final = 6  # AST_STATE_UP
UNKNOWN: Final = "510 Invalid or unknown command"
DEAD: Final = "511 Command Not Permitted on a dead channel or intercept routine"
HANGUP_LINE: Final = "HANGUP"


@dataclass(frozen=True)
class Keys:
    keys: str
    at: str = ANY
    barge_in: bool = True

    def __post_init__(self) -> None:
        if not self.keys or any(k not in DTMF_KEYS for k in self.keys):
            raise ValueError("Keys takes one or more DTMF keys")

    def __repr__(self) -> str:  # the keys may be a password
        return f"Keys(<{len(self.keys)} keys>, at={self.at!r}, barge_in={self.barge_in})"


@dataclass(frozen=True)
class HangUp:
    at: str = ANY
    barge_in: bool = True


Action = Keys | HangUp


@dataclass(frozen=True)
class CallerScript:
    """What one caller does, and the channel's `variables`. `config` is Asterisk's configuration
    as the ``AST_CONFIG(file,category,variable)`` function reads it: ``{file: {category: {name:
    value}}}``, where ``"*"`` stands for any file or category."""

    actions: Sequence[Action] = ()
    variables: Mapping[str, str] = field(default_factory=dict)
    config: Mapping[str, Mapping[str, Mapping[str, str]]] = field(default_factory=dict)
    missing_prompts: frozenset[str] = frozenset()
    park: bool = False


# ------------------------------------------------------------------------------- command parsing


def parse_args(line: str) -> list[str]:
    """Split a command line as res_agi.c's parse_args does (quotes group, backslash escapes)."""
    words: list[str] = []
    current: list[str] | None = None
    quoted = escaped = False
    for ch in line:
        if ch == '"' and not escaped:
            quoted = not quoted
            if quoted and current is None:  # a quote after white space starts a (maybe empty) word
                current = []
                words.append("")
            continue
        if ch in " \t" and not quoted and not escaped:
            if current is not None:
                words[-1] = "".join(current)
                current = None
            continue
        if ch == "\\" and not escaped:
            escaped = True
            continue
        escaped = False
        if current is None:
            current = []
            words.append("")
        current.append(ch)
    if current is not None:
        words[-1] = "".join(current)
    return words


# (words, allowed on a dead channel) in res_agi.c's table order; find_command takes the first
# entry all of whose words the command starts with.
_COMMANDS: Final = tuple(
    (tuple(name.split()), dead)
    for name, dead in (
        ("answer", False), ("asyncagi break", True), ("channel status", False),
        ("database del", True), ("database deltree", True), ("database get", True),
        ("database put", True), ("exec", True), ("get data", False), ("get full variable", True),
        ("get option", False), ("get variable", True), ("hangup", False), ("noop", True),
        ("receive char", False), ("receive text", False), ("record file", False),
        ("say alpha", False), ("say digits", False), ("say number", False),
        ("say phonetic", False), ("say date", False), ("say time", False),
        ("say datetime", False), ("send image", False), ("send text", False),
        ("set autohangup", False), ("set callerid", False), ("set context", False),
        ("set extension", False), ("set music", False), ("set priority", False),
        ("set variable", True), ("stream file", False), ("control stream file", False),
        ("tdd mode", False), ("verbose", True), ("wait for digit", False),
        ("speech create", False), ("speech set", False), ("speech destroy", True),
        ("speech load grammar", False), ("speech unload grammar", True),
        ("speech activate grammar", False), ("speech deactivate grammar", False),
        ("speech recognize", False),
    )
)  # fmt: skip


def find_command(argv: Sequence[str]) -> tuple[str, bool] | None:
    """(the command's name, allowed on a dead channel), or None for a command Asterisk lacks."""
    lowered = [w.lower() for w in argv]
    for words, dead in _COMMANDS:
        if len(lowered) >= len(words) and tuple(lowered[: len(words)]) == words:
            return " ".join(words), dead
    return None


def _atoi(text: str) -> int:
    """C's atoi: leading white space, a sign, digits; 0 when there are none."""
    text = text.lstrip()
    sign, digits = 1, ""
    if text[:1] in "+-" and text:
        sign, text = (-1 if text[0] == "-" else 1), text[1:]
    for ch in text:
        if not ch.isdigit():
            break
        digits += ch
    return sign * int(digits) if digits else 0


def _usage(command: str) -> list[str]:
    return [
        "520-Invalid command syntax.  Proper usage follows:",
        f" Usage: {command.upper()} ...",
        "520 End of proper usage.",
    ]


class _Wait:
    """A digit wait is due but nothing is: the reply is held until `AsteriskPeer.release`."""


class _HangUpNow:
    pass


_HANG_UP: Final = _HangUpNow()
KeyOrEvent = str | None | _HangUpNow


# ------------------------------------------------------------------------------- the channel


class AsteriskPeer:
    """One channel as res_agi sees it: feed it command lines, it gives the reply lines.

    `reply(line)` returns the lines to send (a ``HANGUP`` notice included when due), or None when
    the script is parked at a digit wait: the caller then awaits `released` and calls `resume()`
    for the lines. `closed` becomes true when Asterisk would close the connection.
    """

    def __init__(
        self,
        script: CallerScript,
        *,
        fast: bool = True,
        exit_on_hangup: bool = True,
        channel_name: str = "PJSIP/carrier-00000001",
        on_hangup: Callable[[], None] | None = None,
    ) -> None:
        self.script = script
        self.fast = fast  # FastAGI: a HANGUP line; classic: `on_hangup` (SIGHUP)
        self.exit_on_hangup = exit_on_hangup
        self.channel_name = channel_name
        self.on_hangup = on_hangup
        self.variables: dict[str, str] = dict(script.variables)
        self.dead = False
        self.closed = False
        self.prompts: list[str] = []
        self.applications: list[str] = []
        self.hangup_cause: str | None = None
        self._actions: deque[Action] = deque(script.actions)
        self._typing = ""  # keys of the action in progress, not read yet
        self._armed = False  # the next action's prompt has started playing
        self._parked: Callable[[KeyOrEvent], list[str]] | None = None
        self.released = asyncio.Event() if script.park else None
        self._release_with: KeyOrEvent = None

    # -- what the caller does

    def _on_prompt(self, prompt: str) -> None:
        if not self._typing and self._actions and not self._armed:
            at = self._actions[0].at
            if at in (ANY, prompt):
                self._armed = True

    def _start_action(self) -> KeyOrEvent:
        action = self._actions.popleft()
        self._armed = False
        if isinstance(action, HangUp):
            return _HANG_UP
        self._typing = action.keys[1:]
        return action.keys[0]

    def _key_during_prompt(self, escape: str) -> KeyOrEvent:
        if self._typing:
            if self._typing[0] in escape:
                key, self._typing = self._typing[0], self._typing[1:]
                return key
            return None  # typed ahead: the caller presses it again at the next chance
        if self._armed and self._actions[0].barge_in:
            action = self._actions[0]
            if isinstance(action, HangUp) or action.keys[0] in escape:
                return self._start_action()
        return None

    def _key_in_wait(self) -> KeyOrEvent | _Wait:
        if self._typing:
            key, self._typing = self._typing[0], self._typing[1:]
            return key
        if self._armed:
            return self._start_action()
        return _Wait() if self.script.park else None

    # -- hangup

    def _hang_up(self, lines: list[str]) -> list[str]:
        """The channel is gone after the command that replied `lines`."""
        self.dead = True
        if self.fast:
            lines.append(HANGUP_LINE)
        elif self.on_hangup is not None:
            self.on_hangup()
        if self.exit_on_hangup:
            if self.fast:
                lines.append(HANGUP_LINE)
            self.closed = True
        return lines

    def release(self, *, hang_up: bool = False) -> None:
        """End a parked wait: it times out, or with `hang_up` the caller hangs up during it."""
        self._release_with = _HANG_UP if hang_up else None
        if self.released is not None:
            self.released.set()

    def resume(self) -> list[str]:
        """The reply of the parked command, once released."""
        finish, self._parked = self._parked, None
        if self.released is not None:
            self.released.clear()
        if finish is None:
            return []
        return finish(self._release_with)

    # -- commands

    def reply(self, line: str) -> list[str] | None:
        """The lines Asterisk sends for one command line; None: parked (see `resume`)."""
        argv = parse_args(line)
        found = find_command(argv) if argv else None
        if found is None:
            return [UNKNOWN]
        name, dead_ok = found
        if self.dead and not dead_ok:
            return [DEAD]
        argc = len(argv)
        if name == "answer":
            return ["200 result=0"]
        if name == "stream file":
            return self._stream_file(argv) if 4 <= argc <= 5 else _usage(name)
        if name == "get data":
            return self._get_data(argv) if argc >= 3 else _usage(name)
        if name == "wait for digit":
            if argc != 4 or not argv[3].lstrip("-").isdigit():
                return _usage(name)
            return self._digit_wait(lambda key: [f"200 result={ord(key) if key else 0}"])
        if name == "get variable":
            if argc != 3:
                return _usage(name)
            value = self._read(argv[2])
            return [f"200 result=1 ({value})"] if value is not None else ["200 result=0"]
        if name == "get full variable":
            if argc not in (3, 4):
                return _usage(name)
            return [f"200 result=1 ({self._expand(argv[2])})"]
        if name == "set variable":
            if argc != 4:
                return _usage(name)
            self.variables[argv[2]] = argv[3]
            return ["200 result=1"]
        if name == "exec":
            return self._exec(argv) if argc >= 2 else _usage(name)
        if name == "channel status":
            if argc == 2 or (argc == 3 and argv[2] == self.channel_name):
                return [f"200 result={STATE_UP}"]
            return ["200 result=-1"] if argc == 3 else _usage(name)
        if name == "hangup":
            if argc > 2:
                return _usage(name)
            if argc == 2 and argv[1] != self.channel_name:
                return ["200 result=-1"]
            return self._hang_up(["200 result=1"])
        if name == "verbose":
            return ["200 result=1"] if argc >= 2 else _usage(name)
        return ["200 result=0"]  # NOOP and the commands this model does not need

    def _read(self, name: str) -> str | None:
        """A variable, or a dialplan function when the name ends with ``)`` (ast_func_read; only
        AST_CONFIG is modelled, any other function fails to read: unset)."""
        if not name.endswith(")"):
            return self.variables.get(name)
        function, _, rest = name[:-1].partition("(")
        if function.upper() != "AST_CONFIG":
            return None
        parts = [p.strip() for p in rest.split(",")]
        if len(parts) < 3:
            return None
        file, category, variable = parts[:3]
        sections = self.script.config.get(file) or self.script.config.get(ANY) or {}
        values = sections.get(category) or sections.get(ANY) or {}
        return values.get(variable)

    def _expand(self, text: str) -> str:
        out = text
        for key, value in self.variables.items():
            out = out.replace("${" + key + "}", value)
        return out

    def _stream_file(self, argv: Sequence[str]) -> list[str]:
        path, escape = argv[2], argv[3]
        offset = _atoi(argv[4]) if len(argv) > 4 else 0
        prompt = path.rsplit("/", 1)[-1]
        if prompt in self.script.missing_prompts:
            return [f"200 result=-1 endpos={offset}"]
        self.prompts.append(prompt)
        self._on_prompt(prompt)
        key = self._key_during_prompt(escape)
        if isinstance(key, _HangUpNow):
            return self._hang_up([f"200 result=-1 endpos={PROMPT_SAMPLES // 4}"])
        if key is not None:
            return [f"200 result={ord(key)} endpos={PROMPT_SAMPLES // 4}"]
        return [f"200 result=0 endpos={PROMPT_SAMPLES}"]

    def _get_data(self, argv: Sequence[str]) -> list[str] | None:
        path = argv[2]
        max_digits = _atoi(argv[4]) if len(argv) >= 5 else 1024
        first: KeyOrEvent = None
        if path:
            prompt = path.rsplit("/", 1)[-1]
            if prompt in self.script.missing_prompts:
                return ["200 result=-1"]
            self.prompts.append(prompt)
            self._on_prompt(prompt)
            first = self._key_during_prompt(DTMF_KEYS)
        if max_digits <= 0:
            return ["200 result=-1"]
        digits: list[str] = []

        def step(key: KeyOrEvent) -> list[str] | None:
            while True:
                if isinstance(key, _HangUpNow):
                    return self._hang_up(["200 result=-1"])
                if key is None:
                    return [f"200 result={''.join(digits)} (timeout)"]
                if key == "#":
                    return [f"200 result={''.join(digits)}"]
                digits.append(key)
                if len(digits) >= max_digits:
                    return [f"200 result={''.join(digits)}"]
                nxt = self._key_in_wait()
                if isinstance(nxt, _Wait):
                    self._parked = step_after_park
                    return None
                key = nxt

        def step_after_park(key: KeyOrEvent) -> list[str]:
            return step(key) or []

        if first is not None:
            return step(first)
        nxt = self._key_in_wait()
        if isinstance(nxt, _Wait):
            self._parked = step_after_park
            return None
        return step(nxt)

    def _digit_wait(self, finish: Callable[[str | None], list[str]]) -> list[str] | None:
        def done(key: KeyOrEvent) -> list[str]:
            if isinstance(key, _HangUpNow):
                return self._hang_up(["200 result=-1"])
            return finish(key)

        key = self._key_in_wait()
        if isinstance(key, _Wait):
            self._parked = done
            return None
        return done(key)

    def _exec(self, argv: Sequence[str]) -> list[str]:
        application = argv[1].lower()
        self.applications.append(application)
        if application == "hangup":
            self.hangup_cause = argv[2] if len(argv) > 2 else ""
            return self._hang_up(["200 result=-1"])
        if application in {"playback", "wait", "noop", "set", "answer", "read", "background"}:
            return ["200 result=0"]
        return ["200 result=-2"]


# ------------------------------------------------------------------------------- transports


def agi_environment(
    *,
    uniqueid: str,
    callerid: str,
    request: str,
    network_script: str | None = None,
    dnid: str = "0363044747",
    args: Sequence[str] = (),
    channel: str = "PJSIP/carrier-00000001",
) -> bytes:
    """The environment block in res_agi.c's order (launch_netscript's two lines for FastAGI first)."""
    lines: list[str] = []
    if network_script is not None:
        lines += ["agi_network: yes", f"agi_network_script: {network_script}"]
    lines += [
        f"agi_request: {request}",
        f"agi_channel: {channel}",
        "agi_language: ja",
        "agi_type: PJSIP",
        f"agi_uniqueid: {uniqueid}",
        "agi_version: 22.5.0",
        f"agi_callerid: {callerid}",
        "agi_calleridname: unknown",
        "agi_callingpres: 0",
        "agi_callingani2: 0",
        "agi_callington: 0",
        "agi_callingtns: 0",
        f"agi_dnid: {dnid}",
        "agi_rdnis: unknown",
        "agi_context: temp-password",
        f"agi_extension: {dnid}",
        "agi_priority: 14",
        "agi_enhanced: 0.0",
        "agi_accountcode: ",
        f"agi_threadid: {os.getpid()}",
    ]
    lines += [f"agi_arg_{i}: {value}" for i, value in enumerate(args, start=1)]
    return ("\n".join(lines) + "\n\n").encode()


@dataclass
class Session:
    """One session as Asterisk saw it: commands and when they came (monotonic seconds)."""

    env_sent: float = 0.0
    ended: float = 0.0
    commands: list[str] = field(default_factory=list)
    received: list[float] = field(default_factory=list)  # when each command arrived
    replied: list[float] = field(default_factory=list)  # when its reply was sent
    variables: dict[str, str] = field(default_factory=dict)
    prompts: list[str] = field(default_factory=list)
    closed_by: str = ""  # "agi" (the AGI side closed), "asterisk" (exit on hangup), "error: ..."
    parked_at: float | None = None

    @property
    def result(self) -> str | None:
        return self.variables.get("IVR_RESULT")

    def first_prompt_latency(self) -> float | None:
        """Environment sent -> the first command that plays a prompt."""
        for command, at in zip(self.commands, self.received, strict=True):
            verb = command.split(None, 2)[:2]
            if [w.upper() for w in verb] in (["STREAM", "FILE"], ["GET", "DATA"]):
                return at - self.env_sent
        return None

    def round_trips(self) -> list[float]:
        """Reply sent -> the next command, for every command after the first prompt's."""
        first = next(
            (
                i
                for i, c in enumerate(self.commands)
                if [w.upper() for w in c.split(None, 2)[:2]] in (["STREAM", "FILE"], ["GET", "DATA"])
            ),
            None,
        )
        if first is None:
            return []
        return [
            self.received[i + 1] - self.replied[i]
            for i in range(first, len(self.commands) - 1)
            if i < len(self.replied)
        ]


def _command_line(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").removesuffix("\n")


async def _converse(
    peer: AsteriskPeer,
    session: Session,
    reader: asyncio.StreamReader,
    write: Callable[[bytes], None],
    drain: Callable[[], object],
    *,
    wait_limit: float,
    on_park: Callable[[Session], None] | None,
) -> None:
    while True:
        raw = await asyncio.wait_for(reader.readline(), wait_limit)
        if not raw:
            session.closed_by = "agi"
            return
        now = time.monotonic()
        line = _command_line(raw)
        session.commands.append(line)
        session.received.append(now)
        lines = peer.reply(line)
        if lines is None:
            assert peer.released is not None
            session.parked_at = now
            if on_park is not None:
                on_park(session)
            await peer.released.wait()
            lines = peer.resume()
        write(("".join(f"{reply}\n" for reply in lines)).encode())
        await drain()  # type: ignore[misc]
        session.replied.append(time.monotonic())
        if peer.closed:
            session.closed_by = "asterisk"
            return


async def fastagi_session(
    host: str,
    port: int,
    env: bytes,
    script: CallerScript,
    *,
    wait_limit: float = 30.0,
    exit_on_hangup: bool = True,
    on_park: Callable[[Session], None] | None = None,
    peer_out: list[AsteriskPeer] | None = None,
) -> Session:
    """Connect like Asterisk's AGI(agi://...), send the environment, answer until it ends."""
    peer = AsteriskPeer(script, fast=True, exit_on_hangup=exit_on_hangup)
    if peer_out is not None:
        peer_out.append(peer)
    session = Session()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), wait_limit)
    except (OSError, TimeoutError) as exc:
        session.closed_by = f"error: {type(exc).__name__}"
        return session
    try:
        session.env_sent = time.monotonic()
        writer.write(env)
        await _converse(
            peer, session, reader, writer.write, writer.drain, wait_limit=wait_limit, on_park=on_park
        )
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        session.closed_by = f"error: {type(exc).__name__}"
    finally:
        session.ended = time.monotonic()
        session.variables = {k: v for k, v in peer.variables.items() if k not in script.variables}
        session.prompts = peer.prompts
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return session


async def classic_session(
    argv: Sequence[str],
    env: bytes,
    script: CallerScript,
    *,
    process_env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    wait_limit: float = 60.0,
    exit_on_hangup: bool = True,
    stderr: int | None = asyncio.subprocess.DEVNULL,
) -> tuple[Session, float]:
    """Run one classic AGI process like Asterisk's AGI(/path/script): the environment on its stdin,
    replies on its stdin, commands from its stdout, SIGHUP when the channel hangs up.
    Returns the session and the seconds from spawning the process to its first command."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        env=dict(process_env) if process_env is not None else None,
        cwd=cwd,
    )
    spawned = time.monotonic()
    assert process.stdin is not None and process.stdout is not None
    stdin = process.stdin

    def sighup() -> None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGHUP)

    peer = AsteriskPeer(script, fast=False, exit_on_hangup=exit_on_hangup, on_hangup=sighup)
    session = Session()
    try:
        session.env_sent = time.monotonic()
        stdin.write(env)
        await _converse(
            peer, session, process.stdout, stdin.write, stdin.drain, wait_limit=wait_limit, on_park=None
        )
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        session.closed_by = f"error: {type(exc).__name__}"
    finally:
        session.variables = {k: v for k, v in peer.variables.items() if k not in script.variables}
        session.prompts = peer.prompts
        with contextlib.suppress(Exception):
            stdin.close()
        try:
            await asyncio.wait_for(process.wait(), wait_limit)
        except TimeoutError:
            process.kill()
            await process.wait()
        session.ended = time.monotonic()
    first = session.received[0] - spawned if session.received else float("nan")
    return session, first
