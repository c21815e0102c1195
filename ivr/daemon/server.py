"""The FastAGI server: one task per connection, each isolated from the others.

Before anything of a call runs, a connection must

1. come from an allowed peer (`AgiSettings.allowed_peers`, default loopback): others are closed
   at once;
2. send a complete, well-formed AGI environment for our route, and
3. prove it is our Asterisk: the daemon asks ``GET VARIABLE AST_CONFIG(ivr-agi.conf,fastagi,secret)``
   (a file only Asterisk can read) and compares the answer with its own secret in constant time.

Step 1 is decided right after ``accept`` (`Acceptor`), before any transport, stream, task or log
line exists for the connection: a flood from a peer outside the list costs an accept and a close. Each
allowed peer also has an accept budget (`accept_per_second`, `accept_burst`: a token bucket far
above what one Asterisk's bursts need); connections beyond it are closed the same way. Refusals
are counted (`rejected`, the metric) and logged at most once per reason and
`reject_log_interval_seconds`, with how many more were refused since.

Steps 2 and 3 together must finish within `header_timeout_seconds`. While they run the connection is
*pending*; when `max_pending_connections` are pending, the oldest is dropped to make room, so
connections that never finish their environment cannot keep real calls out. A failed connection
is closed with nothing run, logged (without the secret) and counted in `rejected`. Beyond
`max_concurrent_calls` active calls a caller hears `busy`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import os
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import structlog

from ivr.agi.protocol import AgiProtocolError
from ivr.channel import CallerHungUp, ChannelError
from ivr.daemon.fastagi import AgiConnection, FastAgiChannel, read_environment
from ivr.flow.store import CallStore
from ivr.flow.temporary_password import TemporaryPasswordCall, busy_call
from ivr.settings import AgiSettings, MenuSettings, hash_pool_size

if TYPE_CHECKING:
    from ivr.metrics import DaemonMetrics

ROUTE = "temp-password"
MAX_LINE_BYTES = 4096
# Asterisk reads the secret from its own configuration (asterisk.conf.d/ivr-agi.conf) without logging
# it; a dialplan global would be printed at verbose 2 and published as an AMI VarSet event.
SECRET_VARIABLE = "AST_CONFIG(ivr-agi.conf,fastagi,secret)"

# Asterisk reconnecting after an outage opens hundreds of connections at once (asyncio's default
# backlog is 100; the kernel caps it at net.core.somaxconn).
LISTEN_BACKLOG = 4096
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _lower_priority(niceness: int) -> None:
    """Run in each hashing thread: Linux schedules threads by their own nice value, so the argon2
    work (tens of ms of CPU each) gives way to the event loop that answers every other call."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


class AcceptBudget:
    """Per-peer token buckets: `burst` connections at once, refilled at `per_second`."""

    MAX_PEERS = 4096  # beyond it, peers whose bucket is full again are forgotten

    def __init__(self, per_second: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second, self.burst, self.clock = per_second, float(burst), clock
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)

    def take(self, address: str) -> bool:
        now = self.clock()
        tokens, at = self._buckets.get(address, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.per_second)
        if tokens < 1.0:
            self._buckets[address] = (tokens, now)
            return False
        self._buckets[address] = (tokens - 1.0, now)
        if len(self._buckets) > self.MAX_PEERS:
            self._forget_full(now)
        return True

    def _forget_full(self, now: float) -> None:
        for address, (tokens, at) in list(self._buckets.items()):
            if tokens + (now - at) * self.per_second >= self.burst:
                del self._buckets[address]


class Acceptor:
    """Accepts on the listening sockets itself, so that a refused peer costs an ``accept`` and a
    ``close`` (with RST: no TIME_WAIT kept for it) and nothing else: no transport, no task, no
    stream, no log line. asyncio's server would build a transport and a task for each, which a flood
    of thousands a second turns into a full accept queue that real calls wait behind.
    """

    ACCEPTS_PER_WAKEUP = 512

    def __init__(
        self,
        sockets: list[socket.socket],
        admit: Callable[[object], bool],
        serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    ) -> None:
        self.sockets = sockets
        self._admit = admit
        self._serve = serve
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accepting: set[asyncio.Task[Any]] = set()
        self.log = structlog.get_logger("ivr.daemon")

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for sock in self.sockets:
            sock.setblocking(False)
            self._loop.add_reader(sock.fileno(), self._ready, sock)

    def is_serving(self) -> bool:
        return self._loop is not None

    def close(self) -> None:
        loop, self._loop = self._loop, None
        for sock in self.sockets:
            if loop is not None:
                loop.remove_reader(sock.fileno())
            sock.close()

    def _ready(self, sock: socket.socket) -> None:
        for _ in range(self.ACCEPTS_PER_WAKEUP):
            try:
                conn, peer = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, ...: the next wakeup tries again
                self.log.warning("fastagi_accept_failed", error=str(exc))
                return
            if not self._admit(peer):
                with contextlib.suppress(OSError):
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                continue
            conn.setblocking(False)
            task = asyncio.ensure_future(self._connected(conn))
            self._accepting.add(task)
            task.add_done_callback(self._accepting.discard)

    async def _connected(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=MAX_LINE_BYTES)
        protocol = asyncio.StreamReaderProtocol(reader, self._serve)  # runs `serve` in its own task
        try:
            await loop.connect_accepted_socket(lambda: protocol, conn)
        except OSError:
            conn.close()


def listening_sockets(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Bound, listening sockets for every address of ``host`` (as asyncio's create_server binds)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _name, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def parse_networks(entries: list[str]) -> list[Network]:
    return [ipaddress.ip_network(entry.strip(), strict=False) for entry in entries]


def peer_allowed(peer: object, networks: list[Network]) -> bool:
    """`peer` is a socket's peername: (host, port[, flow, scope]) for TCP."""
    if not isinstance(peer, tuple) or not peer:
        return False
    try:
        address = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


class FastAgiServer:
    def __init__(
        self,
        agi: AgiSettings,
        menu: MenuSettings,
        store: CallStore,
        *,
        secret: str,
        sockets: list[socket.socket] | None = None,
        metrics: DaemonMetrics | None = None,
    ) -> None:
        if not secret:
            raise ValueError("the FastAGI server needs the shared secret")
        self.agi = agi
        self.menu = menu
        self.store = store
        self._secret = secret.encode()
        self._sockets = sockets or []
        self._networks = parse_networks(agi.allowed_peers)
        self._budget = AcceptBudget(agi.accept_per_second, agi.accept_burst)
        self._unlogged: Counter[str] = Counter()  # refusals since each reason's last log line
        self._next_reject_log: dict[str, float] = {}
        self.active_calls = 0
        self._live: dict[str, FastAgiChannel] = {}  # calls in progress, by Asterisk's unique id
        self.total_connections = 0
        self.rejected: Counter[str] = Counter()
        self._pending: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._acceptor: Acceptor | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._hash_pool = ThreadPoolExecutor(
            max_workers=hash_pool_size(agi),
            thread_name_prefix="ivr-hash",
            initializer=_lower_priority,
            initargs=(agi.hash_niceness,),
        )
        self.log = structlog.get_logger("ivr.daemon")
        self.metrics = metrics
        self.stopping = False
        if metrics is not None:  # read when Prometheus scrapes, nothing per call
            metrics.watch_server(
                calls_in_progress=lambda: self.active_calls,
                hash_queue=lambda: self._hash_pool._work_queue.qsize(),
                rejected=lambda: self.rejected,
            )

    @property
    def listening(self) -> bool:
        return self._acceptor is not None and self._acceptor.is_serving() and not self.stopping

    def live_calls(self) -> list[tuple[str, str | None, str | None]]:
        """The calls in progress: (Asterisk's unique id, caller number, dialled number)."""
        return [(call_id, ch.caller.number, ch.service_number) for call_id, ch in self._live.items()]

    @property
    def pending_connections(self) -> int:
        return len(self._pending)

    @property
    def port(self) -> int:
        if self._acceptor is None or not self._acceptor.sockets:
            return self.agi.port
        return int(self._acceptor.sockets[0].getsockname()[1])

    def _admit_peer(self, peer: object) -> bool:
        """Called right after ``accept``: an allowed peer within its accept budget."""
        if not peer_allowed(peer, self._networks):
            self._reject("peer_not_allowed", peer)
            return False
        if not self._budget.take(str(peer[0]) if isinstance(peer, tuple) else ""):
            self._reject("peer_over_accept_budget", peer)
            return False
        return True

    async def start(self) -> None:
        # handed over already bound (systemd socket activation), or bound here
        sockets = self._sockets or listening_sockets(self.agi.host, self.agi.port, LISTEN_BACKLOG)
        for sock in self._sockets:
            sock.listen(LISTEN_BACKLOG)
        self._acceptor = Acceptor(sockets, self._admit_peer, self._on_connection)
        self._acceptor.start()
        self.log.info("fastagi_listening", host=self.agi.host, port=self.port)
        if self.port >= 1024:
            self.log.warning(
                "fastagi_port_unprivileged",
                port=self.port,
                hint="any local user can listen on this port while the daemon is down and take calls",
            )

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop accepting; let calls in progress finish for a while, then cut them."""
        self.stopping = True
        if self._acceptor is not None:
            self._acceptor.close()
        if self._tasks:
            self.log.info("waiting_for_calls", active=len(self._tasks))
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace_seconds)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        self._hash_pool.shutdown(wait=False, cancel_futures=True)
        self.log.info("fastagi_stopped")

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.total_connections += 1
        try:
            await self._serve(reader, writer, task)
        except Exception as exc:  # one connection never takes the server down
            self.log.error("agi_connection_error", error_type=type(exc).__name__)
        finally:
            if task is not None:
                self._pending.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), timeout=2)
            if task is not None:
                self._tasks.discard(task)

    def _reject(self, reason: str, peer: object, **fields: object) -> None:
        """Count a refused connection; log it unless this reason was logged within the interval
        (a flood writes one line per interval, saying how many more were refused since)."""
        self.rejected[reason] += 1
        now = time.monotonic()
        if now < self._next_reject_log.get(reason, 0.0):
            self._unlogged[reason] += 1
            return
        self._next_reject_log[reason] = now + self.agi.reject_log_interval_seconds
        also = self._unlogged.pop(reason, 0)
        self.log.warning(
            "agi_connection_rejected",
            reason=reason,
            peer=str(peer)[:80],
            refused_since_last_line=also,
            **fields,
        )

    def _admit_pending(self, task: asyncio.Task[None] | None, writer: asyncio.StreamWriter) -> None:
        if task is None:
            return
        while len(self._pending) >= self.agi.max_pending_connections:
            oldest, oldest_writer = next(iter(self._pending.items()))
            del self._pending[oldest]
            self._reject("pending_full_oldest_dropped", oldest_writer.get_extra_info("peername"))
            oldest_writer.transport.abort()
        self._pending[task] = writer

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, task: asyncio.Task[None] | None
    ) -> None:
        peer = writer.get_extra_info("peername")  # allowed and within its budget (`_admit_peer`)
        self._admit_pending(task, writer)
        connection = AgiConnection(
            reader, writer, command_timeout=self.agi.command_timeout_seconds, metrics=self.metrics
        )
        try:
            await self._serve_connection(connection, reader, peer, task)
        finally:
            connection.close()

    async def _serve_connection(
        self,
        connection: AgiConnection,
        reader: asyncio.StreamReader,
        peer: object,
        task: asyncio.Task[None] | None,
    ) -> None:
        try:
            async with asyncio.timeout(self.agi.header_timeout_seconds):
                env = await read_environment(reader, max_bytes=self.agi.header_max_bytes)
                if env.network_script.strip("/") != ROUTE:
                    self._reject("unknown_route", peer, route=env.network_script[:64])
                    return
                answer = await connection.command("GET", "VARIABLE", SECRET_VARIABLE)
        except TimeoutError:
            self._reject("environment_timeout", peer)
            return
        except (AgiProtocolError, ConnectionError, CallerHungUp, ChannelError) as exc:
            self._reject(type(exc).__name__, peer)
            return
        finally:
            if task is not None:
                self._pending.pop(task, None)
        proof = (answer.data or "").encode() if answer.result == "1" else b""
        if not hmac.compare_digest(proof, self._secret):
            self._reject("secret_mismatch", peer)
            return
        channel = FastAgiChannel(env, connection)
        # both calls bind call_id to every log line of the call themselves
        started = time.monotonic()
        if self.active_calls >= self.agi.max_concurrent_calls:
            await busy_call(channel, store=self.store)
            if self.metrics is not None:
                self.metrics.call_ended("busy", time.monotonic() - started)
            return
        call = TemporaryPasswordCall(
            channel, store=self.store, menu=self.menu, hash_executor=self._hash_pool, metrics=self.metrics
        )
        self.active_calls += 1
        self._live[channel.call_id] = channel
        try:
            await call.run()
        finally:
            self.active_calls -= 1
            self._live.pop(channel.call_id, None)
            if self.metrics is not None:  # also for a call cut by the shutdown (system_error)
                self.metrics.call_ended(call.report.outcome, time.monotonic() - started)
