"""The AMI listener against a stand-in Manager server that goes away and comes back (a restart)."""

from __future__ import annotations

import asyncio

import structlog

from ivr.ami.listener import AmiListener, LiveChannel
from ivr.settings import AmiSettings
from tests.support import async_eventually, free_port

#: what an AMI account with no write class may do (main/manager.c: actions of authority 0)
NO_PRIVILEGE_ACTIONS = {"login", "logoff", "ping", "events", "challenge", "listcommands", "waitevent"}


class StandInAmi:
    """Speaks enough AMI for an account with no write class: banner, Login, Ping; any other
    action is refused as Asterisk refuses it (and remembered); pushes channel events."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.logins: list[dict[str, str]] = []
        self.refused: list[str] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port, reuse_address=True)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        self.writers.clear()
        await self.server.wait_closed()

    async def send_event(self, **headers: str) -> None:
        text = "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        for writer in self.writers:
            writer.write(text.encode())
            await writer.drain()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        try:
            while True:
                headers: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if not line:
                        return
                    text = line.decode().rstrip("\r\n")
                    if not text:
                        break
                    key, _, value = text.partition(": ")
                    headers[key.lower()] = value
                action = headers.get("action", "").lower()
                action_id = headers.get("actionid", "")
                if action == "login":
                    self.logins.append(headers)
                    accepted = "Message: Authentication accepted\r\n\r\n"
                    writer.write(f"Response: Success\r\nActionID: {action_id}\r\n{accepted}".encode())
                elif action not in NO_PRIVILEGE_ACTIONS:
                    self.refused.append(action)
                    denied = "Response: Error\r\nMessage: Permission denied\r\n\r\n"
                    writer.write(f"ActionID: {action_id}\r\n{denied}".encode())
                else:
                    writer.write(f"Response: Success\r\nActionID: {action_id}\r\nPing: Pong\r\n\r\n".encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return


async def test_follows_channels_and_reconnects_after_a_restart() -> None:
    port = free_port()
    settings = AmiSettings(host="127.0.0.1", port=port, username="ivr-daemon", reconnect_seconds=0.2)
    ami = StandInAmi(port)
    own = [LiveChannel("1.1", channel="", caller="0300001111", exten="0363044747", state="Up")]
    listener = AmiListener(settings, secret="s3", own_calls=lambda: list(own))
    with structlog.testing.capture_logs() as logs:
        await listener.start()  # Asterisk not up yet: it keeps trying
        await asyncio.sleep(0.5)  # two tries or more
        assert listener.logins == 0
        await ami.start()
        await async_eventually(lambda: listener.connected.is_set())
        assert ami.logins[0]["username"] == "ivr-daemon" and ami.logins[0]["secret"] == "s3"
        assert set(listener.channels) == {"1.1"}  # rebuilt from the daemon's own calls

        await ami.send_event(
            Event="Newchannel",
            Uniqueid="1.2",
            Channel="PJSIP/carrier-2",
            CallerIDNum="0300002222",
            Exten="0363044747",
            ChannelStateDesc="Ring",
        )
        await ami.send_event(Event="DTMFEnd", Uniqueid="1.2", Digit="4", Direction="Received")
        await ami.send_event(Event="Hangup", Uniqueid="1.1", Cause="16", **{"Cause-txt": "Normal Clearing"})
        await async_eventually(lambda: set(listener.channels) == {"1.2"})

        await ami.stop()  # Asterisk restarts
        await async_eventually(lambda: not listener.connected.is_set())
        own.clear()  # the daemon's call ended while Asterisk was away
        await asyncio.sleep(0.5)
        await ami.start()
        await async_eventually(lambda: listener.logins == 2 and listener.connected.is_set())
        assert listener.channels == {}
        await listener.stop()
        await ami.stop()
    events = [e["event"] for e in logs]
    assert "ami_channel_new" in events and "ami_channel_hangup" in events and "ami_disconnected" in events
    assert events.count("ami_logged_in") == 2
    assert "s3" not in repr(logs)
    assert ami.refused == []  # the listener needs no write class: it never sends an action that needs one
    assert not any(e.get("digit") or "DTMF" in repr(e) for e in logs)
