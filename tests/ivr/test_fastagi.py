"""The FastAGI adapter and server against a real socket, with a scripted stand-in for Asterisk.

The stand-in speaks the reply shapes of res_agi.c: STREAM FILE returns the key that interrupted it,
WAIT FOR DIGIT the next key or 0 on timeout, HANGUP notices, 511 on a dead channel.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import structlog
from sqlalchemy.orm import Session, sessionmaker

from core.models import CallRecord
from ivr.agi.protocol import build_command
from ivr.channel import ChannelError
from ivr.daemon.fastagi import AgiConnection
from ivr.daemon.server import SECRET_VARIABLE, FastAgiServer, parse_networks, peer_allowed
from ivr.flow.store import SqlCallStore
from ivr.settings import AgiSettings, MenuSettings
from tests.support import async_eventually, credentials, finished, record

PASSWORD = "40719352"
PAUSE = None  # the caller stops typing: the collection in progress times out
SECRET = "s3cret-shared-with-asterisk-only-0123456789"
SECRET_COMMAND = build_command("GET", "VARIABLE", SECRET_VARIABLE).decode().rstrip("\n")


def environment(
    callerid: str = "0300001111", uniqueid: str = "1700000000.7", script: str = "temp-password"
) -> bytes:
    lines = [
        "agi_network: yes",
        f"agi_network_script: {script}",
        f"agi_request: agi://127.0.0.1:4573/{script}",
        "agi_channel: PJSIP/caller-00000001",
        "agi_language: ja",
        "agi_type: PJSIP",
        f"agi_uniqueid: {uniqueid}",
        f"agi_callerid: {callerid}",
        "agi_calleridname: unknown",
        "agi_dnid: 0363044747",
        "agi_extension: 0363044747",
    ]
    return ("\n".join(lines) + "\n\n").encode()


@dataclass
class FakeAsterisk:
    """Answers the daemon's commands like res_agi would, for one call.

    `keys` is what the caller types, in order; `PAUSE` is the caller stopping (a GET DATA or WAIT
    FOR DIGIT in progress times out there). GET DATA collects as ``ast_app_getdata_full`` does: keys
    up to the maximum, ``#`` ends it (not included), a pause ends it with ``(timeout)``.
    """

    keys: list[str | None]
    secret: str | None = SECRET
    missing_prompts: set[str] = field(default_factory=set)
    hang_up_on: Callable[[str], bool] | None = None
    stall_on: Callable[[str], bool] | None = None
    commands: list[str] = field(default_factory=list)
    dead: bool = False
    refused: bool = False  # reset by the daemon at accept (a peer outside the allow-list)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def _get_data(self, words: list[str]) -> str:
        name = words[2].strip('"')
        if name and name.removeprefix("ivr/") in self.missing_prompts:
            return "200 result=-1"
        maximum = int(words[4]) if len(words) > 4 else 1024
        got = ""
        while self.keys:
            key = self.keys.pop(0)
            if key is None:
                return f"200 result={got} (timeout)"
            if key == "#":
                return f"200 result={got}"
            got += key
            if len(got) >= maximum:
                return f"200 result={got}"
        return f"200 result={got} (timeout)"

    def reply(self, command: str) -> list[str]:
        if self.dead:
            return ["511 Command Not Permitted on a dead channel or intercepted channel"]
        if self.hang_up_on is not None and self.hang_up_on(command):
            self.dead = True
            return ["200 result=-1 endpos=0", "HANGUP"]
        words = command.split()
        verb = " ".join(words[:2]).upper()
        if verb == "GET VARIABLE":
            if words[2].strip('"') == SECRET_VARIABLE and self.secret is not None:
                return [f"200 result=1 ({self.secret})"]
            return ["200 result=0"]
        if verb == "GET DATA":
            return [self._get_data(words)]
        if verb in ("EXEC BACKGROUND", "EXEC PLAYBACK"):
            files = [f.removeprefix("ivr/") for f in words[2].strip('"').split("&")]
            if any(f in self.missing_prompts for f in files):
                return ["200 result=0"]  # Background stops at the file it cannot open
            if verb == "EXEC BACKGROUND" and self.keys and self.keys[0] is not None:
                return [f"200 result={ord(self.keys.pop(0))}"]  # type: ignore[arg-type]
            return ["200 result=0"]
        if verb == "STREAM FILE":
            name = words[2]
            if name.removeprefix("ivr/") in self.missing_prompts:
                return ["200 result=-1 endpos=0"]
            escape = words[3].strip('"') if len(words) > 3 else ""
            if escape and self.keys and self.keys[0] is not None:
                return [f"200 result={ord(self.keys.pop(0))} endpos=800"]  # type: ignore[arg-type]
            return ["200 result=0 endpos=16000"]
        if verb == "WAIT FOR":
            key = self.keys.pop(0) if self.keys else None
            return [f"200 result={ord(key) if key else 0}"]
        if verb == "CHANNEL STATUS":
            return ["200 result=6"]
        if command.upper() == "EXEC HANGUP 16":
            self.dead = True
            return ["200 result=-1", "HANGUP"]
        return ["200 result=1"] if verb.startswith("SET") else ["200 result=0"]

    async def call(self, port: int, env: bytes | None = None) -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(env or environment())
            await writer.drain()
        except ConnectionResetError:  # refused at accept: the daemon resets at once
            self.refused = True
            return
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), timeout=10)
                except ConnectionResetError:  # closed with our environment unread
                    return
                if not line:
                    return
                command = line.decode().rstrip("\n")
                self.commands.append(command)
                if self.stall_on is not None and self.stall_on(command):
                    await self.released.wait()
                    continue
                for answer in self.reply(command):
                    writer.write((answer + "\n").encode())
                await writer.drain()
        finally:
            writer.close()

    @property
    def call_commands(self) -> list[str]:
        """The commands after the secret was proven."""
        return [c for c in self.commands if c != SECRET_COMMAND]

    @property
    def prompts(self) -> list[str]:
        """Prompt files played (STREAM FILE, and GET DATA with a file)."""
        played = []
        for c in self.commands:
            words = c.split()
            if c.startswith(("EXEC Background", "EXEC Playback")):
                played += [f.removeprefix("ivr/") for f in words[2].strip('"').split("&")]
            elif c.startswith("STREAM FILE") or (c.startswith("GET DATA") and words[2] != '""'):
                played.append(words[2].removeprefix("ivr/"))
        return played


@pytest.fixture
async def server(call_store: SqlCallStore, menu_settings: MenuSettings) -> FastAgiServer:
    agi = AgiSettings(
        host="127.0.0.1",
        port=0,
        header_timeout_seconds=0.5,
        header_max_bytes=2048,
        command_timeout_seconds=1.0,
        max_concurrent_calls=5,
    )
    srv = FastAgiServer(agi, menu_settings, call_store, secret=SECRET)
    await srv.start()
    yield srv  # type: ignore[misc]
    await srv.stop(grace_seconds=1)


async def wait_for_record(sessions: sessionmaker[Session], call_id: str) -> CallRecord:
    return await async_eventually(lambda: finished(sessions, call_id), 5.0, what="a finished call record")


async def test_a_whole_call_with_barge_in(
    server: FastAgiServer, voice_sessions: sessionmaker[Session]
) -> None:
    # a caller who knows the menu: everything typed ahead, no # anywhere
    asterisk = FakeAsterisk(keys=["1", *PASSWORD, *PASSWORD])
    await asterisk.call(server.port)
    assert asterisk.commands[0] == SECRET_COMMAND
    assert asterisk.call_commands[0] == "ANSWER"
    # "1" was collected by the GET DATA that played choose-unit; "4" interrupted the read-back of
    # the password step (one Background for all its files), and one GET DATA without a prompt took
    # the other 7 keys; the confirmation is one GET DATA; the completion one Playback
    read_back = "&".join(f"ivr/{p}" for p in ["set-for-number-prefix", *[f"digit-{d}" for d in "0300001111"]])
    assert asterisk.call_commands == [
        "ANSWER",
        "GET DATA ivr/choose-unit 300 1",
        f'EXEC Background "{read_back}"',
        'GET DATA "" 300 7',
        "GET DATA ivr/confirm-password 300 8",
        f'EXEC Playback "{read_back}&ivr/completed-suffix"',
        "SET VARIABLE IVR_RESULT completed",
        "EXEC Hangup 16",
    ]
    rec = await wait_for_record(voice_sessions, "1700000000.7")
    assert rec.outcome == "completed"
    assert len(credentials(voice_sessions)) == 1
    assert all(PASSWORD not in c for c in asterisk.commands)


async def test_hangup_notice_mid_entry_ends_the_call_with_nothing_written(
    server: FastAgiServer, voice_sessions: sessionmaker[Session]
) -> None:
    def password_entry(command: str) -> bool:
        return command.startswith('GET DATA "" ')  # after the first key of the password

    asterisk = FakeAsterisk(keys=["1", *PASSWORD, PAUSE], hang_up_on=password_entry)
    await asterisk.call(server.port)
    assert "EXEC Hangup 16" not in asterisk.commands
    rec = await wait_for_record(voice_sessions, "1700000000.7")
    assert (rec.outcome, rec.last_step) == ("caller_hung_up", "password")
    assert credentials(voice_sessions) == []


async def test_missing_prompt_is_skipped_and_the_call_goes_on(
    server: FastAgiServer, voice_sessions: sessionmaker[Session]
) -> None:
    asterisk = FakeAsterisk(
        keys=[PAUSE, "1", *PASSWORD, PAUSE, *PASSWORD, PAUSE], missing_prompts={"choose-unit"}
    )
    await asterisk.call(server.port)
    assert "CHANNEL STATUS" in asterisk.commands
    rec = await wait_for_record(voice_sessions, "1700000000.7")
    assert rec.outcome == "completed"


async def test_silent_asterisk_times_out_as_a_system_error(
    call_store: SqlCallStore, voice_sessions: sessionmaker[Session]
) -> None:
    # short timeouts (the GET DATA's limit is the command timeout plus its digit waits, 0.3 s):
    # what is checked is how a silent Asterisk ends the call, not how long the real timeouts are
    agi = AgiSettings(host="127.0.0.1", port=0, command_timeout_seconds=0.1)
    menu = MenuSettings(first_digit_timeout_seconds=0.1, inter_digit_timeout_seconds=0.1)
    srv = FastAgiServer(agi, menu, call_store, secret=SECRET)
    await srv.start()
    try:
        asterisk = FakeAsterisk(keys=[], stall_on=lambda c: c.startswith("GET DATA ivr/choose-unit"))
        task = asyncio.create_task(asterisk.call(srv.port))
        rec = await wait_for_record(voice_sessions, "1700000000.7")
        assert (rec.outcome, rec.last_step) == ("system_error", "unit")
        # one timeout, then the connection is closed: no apology or hangup sent to a silent peer
        # (each would wait out a timeout of its own: the round held a call 2-3 minutes that way)
        assert asterisk.commands[-1].startswith("GET DATA ivr/choose-unit")
        asterisk.released.set()
        await asyncio.wait_for(task, timeout=5)
        assert asterisk.commands[-1].startswith("GET DATA ivr/choose-unit")
    finally:
        await srv.stop(grace_seconds=1)


@pytest.mark.parametrize(
    "callerid", ["anonymous", "sip:0300001111@attacker", "0300001111\tx", '"Name" <0300001111>']
)
async def test_caller_id_that_is_not_a_number(
    server: FastAgiServer, voice_sessions: sessionmaker[Session], callerid: str
) -> None:
    asterisk = FakeAsterisk(keys=["1"])
    await asterisk.call(server.port, environment(callerid=callerid))
    assert asterisk.prompts == ["caller-id-withheld"]
    assert asterisk.commands[-2:] == ["SET VARIABLE IVR_RESULT caller_id_withheld", "EXEC Hangup 16"]


async def test_unknown_route_is_refused(server: FastAgiServer) -> None:
    asterisk = FakeAsterisk(keys=[])
    await asterisk.call(server.port, environment(script="something-else"))
    assert asterisk.commands == []


async def _good_call_succeeds(port: int, uniqueid: str, sessions: sessionmaker[Session]) -> None:
    asterisk = FakeAsterisk(keys=["1", *PASSWORD, PAUSE, *PASSWORD, PAUSE])
    await asterisk.call(port, environment(uniqueid=uniqueid))
    rec = await wait_for_record(sessions, uniqueid)
    assert rec.outcome == "completed"


async def test_truncated_environment_does_not_affect_other_calls(
    server: FastAgiServer, voice_sessions: sessionmaker[Session]
) -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(environment()[:60])
    await writer.drain()
    writer.close()
    await _good_call_succeeds(server.port, "1700000000.8", voice_sessions)


async def test_slow_environment_is_cut_at_the_header_timeout_while_others_proceed(
    server: FastAgiServer, voice_sessions: sessionmaker[Session]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"agi_network: yes\n")
    await writer.drain()
    good = asyncio.create_task(_good_call_succeeds(server.port, "1700000000.9", voice_sessions))
    closed = await asyncio.wait_for(reader.read(), timeout=3)  # server closes it (EOF)
    assert closed == b""
    await good
    writer.close()


@pytest.mark.parametrize(
    "payload",
    [
        b"GET / HTTP/1.1\r\nHost: daemon\r\n\r\n",
        b"\xff\xfe\x00garbage\n\n",
        b"agi_x: " + b"a" * 5000 + b"\n\n",
        b"agi_x: y\n" * 400 + b"\n",
    ],
)
async def test_garbage_or_oversized_environment_is_closed(
    server: FastAgiServer, voice_sessions: sessionmaker[Session], payload: bytes
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(payload)
    await writer.drain()
    got = await asyncio.wait_for(reader.read(), timeout=3)
    assert got == b""  # no command was sent: the connection was just closed
    writer.close()
    await _good_call_succeeds(server.port, "1700000000.10", voice_sessions)


async def test_beyond_the_concurrency_cap_callers_hear_busy(
    call_store: SqlCallStore, menu_settings: MenuSettings, voice_sessions: sessionmaker[Session]
) -> None:
    agi = AgiSettings(host="127.0.0.1", port=0, max_concurrent_calls=1, command_timeout_seconds=5)
    srv = FastAgiServer(agi, menu_settings, call_store, secret=SECRET)
    await srv.start()
    try:
        holder = FakeAsterisk(keys=[], stall_on=lambda c: c.startswith("GET DATA ivr/choose-unit"))
        holding = asyncio.create_task(holder.call(srv.port, environment(uniqueid="hold.1")))
        await async_eventually(lambda: srv.active_calls == 1, what="the first call held")
        second = FakeAsterisk(keys=[])
        await second.call(srv.port, environment(uniqueid="busy.2"))
        assert second.prompts == ["busy"]
        assert second.commands[-2:] == ["SET VARIABLE IVR_RESULT busy", "EXEC Hangup 16"]
        assert (await wait_for_record(voice_sessions, "busy.2")).outcome == "busy"
        holder.released.set()
        holding.cancel()
    finally:
        await srv.stop(grace_seconds=0.5)


async def test_call_id_is_bound_to_every_line_of_the_call(
    server: FastAgiServer, voice_sessions: sessionmaker[Session]
) -> None:
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await _good_call_succeeds(server.port, "1700000000.11", voice_sessions)
    call_lines = [e for e in logs if e.get("event") in {"call_started", "step", "prompt", "call_finished"}]
    assert call_lines and all(e.get("call_id") == "1700000000.11" for e in call_lines)
    assert PASSWORD not in repr(logs)


async def test_slow_connections_never_keep_a_real_call_out(
    call_store: SqlCallStore, menu_settings: MenuSettings, voice_sessions: sessionmaker[Session]
) -> None:
    # 20 connections that never finish their environment fill the 5 pending slots many times over;
    # each new connection drops the oldest pending one, and real calls still get through.
    agi = AgiSettings(host="127.0.0.1", port=0, header_timeout_seconds=30, max_pending_connections=5)
    srv = FastAgiServer(agi, menu_settings, call_store, secret=SECRET)
    await srv.start()
    try:
        stuck = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(20)]
        for _reader, writer in stuck:
            writer.write(b"agi_network: yes\n")
            await writer.drain()
        await async_eventually(lambda: srv.rejected["pending_full_oldest_dropped"] == 15)
        assert srv.pending_connections == 5
        # the oldest were closed by the daemon (EOF), the newest still wait
        assert await asyncio.wait_for(stuck[0][0].read(), timeout=2) == b""
        await asyncio.gather(
            *(_good_call_succeeds(srv.port, f"1700000000.{20 + n}", voice_sessions) for n in range(3))
        )
        for _reader, stuck_writer in stuck:
            stuck_writer.close()
    finally:
        await srv.stop(grace_seconds=0.5)


async def test_pending_connections_are_closed_at_the_deadline(
    call_store: SqlCallStore, menu_settings: MenuSettings
) -> None:
    agi = AgiSettings(host="127.0.0.1", port=0, header_timeout_seconds=0.3)
    srv = FastAgiServer(agi, menu_settings, call_store, secret=SECRET)
    await srv.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(b"agi_network: yes\n")  # and nothing more
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), timeout=3) == b""
        assert srv.rejected["environment_timeout"] == 1
        writer.close()
    finally:
        await srv.stop(grace_seconds=0.5)


@pytest.mark.parametrize("answer", [None, "wrong-secret-of-the-right-shape-0000000000", SECRET[:-1], ""])
async def test_a_peer_without_the_secret_sets_nothing(
    server: FastAgiServer, voice_sessions: sessionmaker[Session], answer: str | None
) -> None:
    impostor = FakeAsterisk(keys=["1", *PASSWORD, *PASSWORD], secret=answer)
    with structlog.testing.capture_logs() as logs:
        await impostor.call(server.port, environment(uniqueid="impostor.1"))
    assert impostor.commands == [SECRET_COMMAND]  # nothing else was run
    assert record(voice_sessions, "impostor.1") is None
    assert credentials(voice_sessions) == []
    assert server.rejected["secret_mismatch"] == 1
    assert any(e.get("reason") == "secret_mismatch" for e in logs)
    assert SECRET not in repr(logs)


async def test_a_peer_that_never_answers_the_secret_question_is_dropped(
    server: FastAgiServer, voice_sessions: sessionmaker[Session]
) -> None:
    silent = FakeAsterisk(keys=[], stall_on=lambda c: c.startswith("GET VARIABLE"))
    task = asyncio.create_task(silent.call(server.port, environment(uniqueid="silent.1")))
    await async_eventually(lambda: server.rejected["environment_timeout"] == 1)
    silent.released.set()
    await asyncio.wait_for(task, timeout=5)
    assert record(voice_sessions, "silent.1") is None


async def test_peers_outside_the_allow_list_are_closed_before_anything(
    call_store: SqlCallStore, menu_settings: MenuSettings, voice_sessions: sessionmaker[Session]
) -> None:
    agi = AgiSettings(host="127.0.0.1", port=0, allowed_peers=["192.0.2.10", "10.0.0.0/8"])
    srv = FastAgiServer(agi, menu_settings, call_store, secret=SECRET)
    await srv.start()
    try:
        asterisk = FakeAsterisk(keys=["1", *PASSWORD, *PASSWORD])
        await asterisk.call(srv.port, environment(uniqueid="outside.1"))
        assert asterisk.commands == [] and asterisk.refused
        assert srv.rejected["peer_not_allowed"] == 1
        assert record(voice_sessions, "outside.1") is None
    finally:
        await srv.stop(grace_seconds=0.5)


def test_peer_allow_list_matching() -> None:
    networks = parse_networks(["127.0.0.1/32", "::1/128", "192.0.2.0/24"])
    assert peer_allowed(("127.0.0.1", 40000), networks)
    assert peer_allowed(("::1", 40000, 0, 0), networks)
    assert peer_allowed(("::ffff:192.0.2.7", 40000, 0, 0), networks)
    assert not peer_allowed(("127.0.0.2", 40000), networks)
    assert not peer_allowed(("198.51.100.1", 40000), networks)
    assert not peer_allowed(None, networks)
    assert not peer_allowed(("not-an-address", 1), networks)


async def test_a_server_without_a_secret_cannot_be_built(
    call_store: SqlCallStore, menu_settings: MenuSettings
) -> None:
    with pytest.raises(ValueError):
        FastAgiServer(AgiSettings(port=0), menu_settings, call_store, secret="")


async def test_a_burst_of_300_connections_at_once_is_served_with_the_default_settings(
    call_store: SqlCallStore, menu_settings: MenuSettings, voice_sessions: sessionmaker[Session]
) -> None:
    # Asterisk reconnecting after an outage: hundreds of calls connect at the same moment
    agi = AgiSettings(host="127.0.0.1", port=0)
    srv = FastAgiServer(agi, menu_settings, call_store, secret=SECRET)
    await srv.start()
    try:
        callers = [FakeAsterisk(keys=["9", "9", "9"]) for _ in range(300)]
        await asyncio.gather(
            *(c.call(srv.port, environment(uniqueid=f"burst.{n}")) for n, c in enumerate(callers))
        )
        assert sum(srv.rejected.values()) == 0, srv.rejected
        assert all(c.call_commands[-2:] == ["SET VARIABLE IVR_RESULT too_many_wrong_unit", "EXEC Hangup 16"]
                   for c in callers)  # fmt: skip
    finally:
        await srv.stop(grace_seconds=0.5)


# ------------------------------------------------------------------ a command's deadline


async def _connection_pair(
    command_timeout: float,
) -> tuple[AgiConnection, asyncio.StreamReader, asyncio.StreamWriter]:
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    peer_reader, peer_writer = await asyncio.open_connection(sock=theirs)
    return AgiConnection(reader, writer, command_timeout=command_timeout), peer_reader, peer_writer


async def _reply_to(
    peer_reader: asyncio.StreamReader, peer_writer: asyncio.StreamWriter, count: int, after: float = 0.0
) -> None:
    """Asterisk's side: `count` replies, each `after` seconds after its command (a prompt playing)."""
    for _ in range(count):
        await peer_reader.readline()
        await asyncio.sleep(after)
        peer_writer.write(b"200 result=0\n")


async def test_a_stalled_command_times_out_after_quick_ones_at_its_own_deadline() -> None:
    connection, peer_reader, peer_writer = await _connection_pair(command_timeout=0.4)
    replies = asyncio.create_task(_reply_to(peer_reader, peer_writer, 5, after=0.15))
    loop = asyncio.get_running_loop()
    for _ in range(5):  # 0.75 s in all: the one timer fires before each later deadline and is set again
        await connection.command("ANSWER")
    await replies
    started = loop.time()
    with pytest.raises(ChannelError, match="timed out"):
        await connection.command("GET", "DATA", "ivr/choose-unit", "300", "1")  # nobody replies
    assert 0.35 <= loop.time() - started < 1.5
    connection.close()


async def test_a_command_with_a_shorter_limit_times_out_at_it() -> None:
    connection, peer_reader, peer_writer = await _connection_pair(command_timeout=30)
    replies = asyncio.create_task(_reply_to(peer_reader, peer_writer, 1))
    await connection.command("ANSWER")  # the timer is set 30 s ahead
    await replies
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ChannelError, match="timed out"):
        await connection.command("WAIT", "FOR", "DIGIT", "100", time_limit=0.3)
    assert loop.time() - started < 5
    connection.close()


async def test_a_cancelled_command_is_cancelled_not_timed_out() -> None:
    connection, _peer_reader, _peer_writer = await _connection_pair(command_timeout=1.0)
    task = asyncio.create_task(connection.command("ANSWER", time_limit=0.3))
    await async_eventually(lambda: _peer_reader._buffer, 3.0, what="the command sent")
    task.cancel()  # the daemon's shutdown, before the deadline
    with pytest.raises(asyncio.CancelledError):
        await task
    # the deadline of the cancelled command does not fall on the next one
    replies = asyncio.create_task(_reply_to(_peer_reader, _peer_writer, 1, after=0.5))
    assert (await connection.command("ANSWER")).result == "0"  # replied after the first deadline
    await replies
    connection.close()


async def test_a_closed_connection_leaves_no_timer_holding_it() -> None:
    connection, peer_reader, peer_writer = await _connection_pair(command_timeout=60)
    replies = asyncio.create_task(_reply_to(peer_reader, peer_writer, 1))
    await connection.command("ANSWER")
    await replies
    ref = weakref.ref(connection)
    connection.close()
    del connection
    gc.collect()
    assert ref() is None  # a timer 60 s ahead would have kept it
