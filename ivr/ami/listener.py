"""Follows Asterisk's channels live over AMI (panoramisk's Manager) and logs them to the call log.

panoramisk 1.4 reconnects by itself: a lost connection (Asterisk restarting, the socket dropped, a
``Shutdown`` event) schedules `connect()` again after ``reconnect_timeout`` seconds, and a refused
connect schedules the next try the same way, so the listener rides out restarts. It logs in again
on every connection. Its ping (every ``ping_interval`` s) notices a half-open connection.

Only channel lifecycle events are handled. DTMF events are never subscribed to or logged: they
carry the keys callers press, which include passwords. The account has no write class (no action
but Login, Ping, Events and Logoff): after a reconnect the view of live calls is rebuilt from the
daemon's own calls in progress, not by asking Asterisk (CoreShowChannels needs "reporting", which
also allows Getvar, and Getvar of AST_CONFIG() reads any file Asterisk can, the FastAGI secret
included).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from panoramisk import Manager

from ivr.settings import AmiSettings

CHANNEL_EVENTS = ("Newchannel", "Newstate", "Hangup", "FullyBooted")


@dataclass
class LiveChannel:
    uniqueid: str
    channel: str
    caller: str | None
    exten: str | None
    state: str
    started: float = field(default_factory=time.monotonic)


def _clean(value: Any, limit: int = 80) -> str | None:
    if value is None:
        return None
    text = str(value)
    if text in ("", "<unknown>"):
        return None
    return "".join(ch for ch in text if ch.isprintable())[:limit]


class AmiListener:
    def __init__(
        self,
        settings: AmiSettings,
        *,
        secret: str,
        own_calls: Callable[[], Iterable[LiveChannel]] = tuple,
    ) -> None:
        self.settings = settings
        self._secret = secret
        self._own_calls = own_calls  # the daemon's calls in progress: the view after a reconnect
        self.log = structlog.get_logger("ivr.ami")
        self.channels: dict[str, LiveChannel] = {}
        self.connected = asyncio.Event()
        self.logins = 0
        self.disconnects = 0
        self.manager: Manager | None = None
        self._background: set[asyncio.Future[None]] = set()

    def _make_manager(self) -> Manager:
        manager = Manager(
            loop=asyncio.get_running_loop(),
            host=self.settings.host,
            port=self.settings.port,
            username=self.settings.username,
            secret=self._secret,
            events="call,system",
            reconnect_timeout=max(1, round(self.settings.reconnect_seconds)),  # its constructor: int
            ping_delay=10,
            ping_interval=10,
            on_connect=self._on_connect,
            on_login=self._on_login,
            on_disconnect=self._on_disconnect,
        )
        manager.reconnect_timeout = self.settings.reconnect_seconds  # its timer takes any: as set
        for name in CHANNEL_EVENTS:
            manager.register_event(name, self._on_event)
        return manager

    async def start(self) -> None:
        self.manager = self._make_manager()
        self.manager.connect()
        self.log.info("ami_connecting", host=self.settings.host, port=self.settings.port)

    async def stop(self) -> None:
        if self.manager is not None:
            manager = self.manager
            self.manager = None
            # no reconnect after an intentional close
            manager.connection_lost = lambda exc: None
            manager.close()

    # panoramisk callbacks (plain functions called from the event loop)
    def _on_connect(self, _manager: Manager) -> None:
        self.log.info("ami_connected")

    def _on_login(self, _manager: Manager) -> None:
        self.logins += 1
        self.log.info("ami_logged_in", logins=self.logins)
        task = asyncio.ensure_future(self._resync())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _resync(self) -> None:
        """Rebuild the view of live channels (their events were missed while disconnected) from
        the daemon's own calls in progress; other channels join it with their next event."""
        try:
            own = list(self._own_calls())
        except Exception as exc:
            self.log.warning("ami_resync_failed", error_type=type(exc).__name__)
            own = []
        self.channels = {live.uniqueid: live for live in own}
        self.log.info("ami_channels_resynced", live_channels=len(self.channels))
        self.connected.set()

    def _on_disconnect(self, _manager: Manager, _exc: Any) -> None:
        self.disconnects += 1
        self.connected.clear()
        dropped = len(self.channels)
        self.channels.clear()  # their Hangup events are lost with the connection
        self.log.warning("ami_disconnected", will_retry_in_s=self.settings.reconnect_seconds, dropped=dropped)

    def _on_event(self, _manager: Manager, event: Any) -> None:
        name = str(event.get("Event", ""))
        uniqueid = _clean(event.get("Uniqueid"), 64)
        if name == "FullyBooted":
            self.log.info("ami_asterisk_ready")
            return
        if uniqueid is None:
            return
        if name == "Newchannel":
            live = LiveChannel(
                uniqueid=uniqueid,
                channel=_clean(event.get("Channel")) or "",
                caller=_clean(event.get("CallerIDNum"), 32),
                exten=_clean(event.get("Exten"), 32),
                state=_clean(event.get("ChannelStateDesc"), 20) or "",
            )
            self.channels[uniqueid] = live
            self.log.info(
                "ami_channel_new",
                ami_uniqueid=uniqueid,
                channel=live.channel,
                caller=live.caller,
                exten=live.exten,
                live_channels=len(self.channels),
            )
        elif name == "Newstate":
            state = _clean(event.get("ChannelStateDesc"), 20) or ""
            if uniqueid in self.channels:
                self.channels[uniqueid].state = state
            self.log.info("ami_channel_state", ami_uniqueid=uniqueid, state=state)
        elif name == "Hangup":
            live_channel = self.channels.pop(uniqueid, None)
            duration = round(time.monotonic() - live_channel.started, 3) if live_channel else None
            self.log.info(
                "ami_channel_hangup",
                ami_uniqueid=uniqueid,
                cause=_clean(event.get("Cause"), 8),
                cause_txt=_clean(event.get("Cause-txt"), 60),
                duration_s=duration,
                live_channels=len(self.channels),
            )
