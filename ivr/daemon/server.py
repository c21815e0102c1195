"""The FastAGI server: one task per connection, each isolated from the others.

A connection first has to send a complete, well-formed AGI environment within
`AgiSettings.header_timeout_seconds` and `header_max_bytes` (lines are capped too), or it is closed
without affecting any call. Beyond `max_concurrent_calls` active calls a caller hears `busy`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import structlog

from ivr.agi.protocol import AgiProtocolError
from ivr.channel import Channel
from ivr.daemon.fastagi import AgiConnection, FastAgiChannel, read_environment
from ivr.flow.store import CallStore
from ivr.flow.temporary_password import busy_call, temporary_password_call
from ivr.settings import AgiSettings, MenuSettings

ROUTE = "temp-password"
MAX_LINE_BYTES = 4096

FlowFactory = Callable[[Channel], Awaitable[object]]


class FastAgiServer:
    def __init__(self, agi: AgiSettings, menu: MenuSettings, store: CallStore) -> None:
        self.agi = agi
        self.menu = menu
        self.store = store
        self.active_calls = 0
        self.pending_connections = 0
        self.total_connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._hash_pool = ThreadPoolExecutor(
            max_workers=max(1, agi.hash_workers), thread_name_prefix="ivr-hash"
        )
        self.log = structlog.get_logger("ivr.daemon")

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self.agi.port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._on_connection, self.agi.host, self.agi.port, limit=MAX_LINE_BYTES, reuse_address=True
        )
        self.log.info("fastagi_listening", host=self.agi.host, port=self.port)

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop accepting; let calls in progress finish for a while, then cut them."""
        if self._server is not None:
            self._server.close()
        if self._tasks:
            self.log.info("waiting_for_calls", active=len(self._tasks))
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace_seconds)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2)
        self._hash_pool.shutdown(wait=False, cancel_futures=True)
        self.log.info("fastagi_stopped")

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.total_connections += 1
        peer = writer.get_extra_info("peername")
        try:
            await self._serve(reader, writer, peer)
        except Exception as exc:  # one connection never takes the server down
            self.log.error("agi_connection_error", peer=str(peer), error_type=type(exc).__name__)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), timeout=2)
            if task is not None:
                self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object) -> None:
        if self.pending_connections >= self.agi.max_pending_connections:
            self.log.warning("agi_connection_rejected", peer=str(peer), reason="too_many_pending")
            return
        self.pending_connections += 1
        try:
            env = await asyncio.wait_for(
                read_environment(reader, max_bytes=self.agi.header_max_bytes),
                timeout=self.agi.header_timeout_seconds,
            )
        except TimeoutError:
            self.log.warning("agi_connection_rejected", peer=str(peer), reason="environment_timeout")
            return
        except (AgiProtocolError, ConnectionError) as exc:
            self.log.warning("agi_connection_rejected", peer=str(peer), reason=type(exc).__name__)
            return
        finally:
            self.pending_connections -= 1
        if env.network_script.strip("/") != ROUTE:
            self.log.warning("agi_unknown_route", peer=str(peer), route=env.network_script[:64])
            return
        connection = AgiConnection(reader, writer, command_timeout=self.agi.command_timeout_seconds)
        channel = FastAgiChannel(env, connection)
        with structlog.contextvars.bound_contextvars(call_id=channel.call_id):
            if self.active_calls >= self.agi.max_concurrent_calls:
                await busy_call(channel, store=self.store)
                return
            self.active_calls += 1
            try:
                await temporary_password_call(
                    channel, store=self.store, menu=self.menu, hash_executor=self._hash_pool
                )
            finally:
                self.active_calls -= 1
