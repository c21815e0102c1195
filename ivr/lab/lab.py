"""The lab: Asterisk 22 in its root filesystem with our configuration, and the processes beside it.

Asterisk runs as ``chroot ROOT /usr/sbin/asterisk -f -C <conf>``; the root filesystem shares the
host's network, so 127.0.0.1 works both ways. Nothing is mounted: each lab instance gets its own
directory inside the root filesystem (``/srv/ivr-lab/<instance>``) holding the rendered
configuration, a copy of the prompts, and Asterisk's run, spool and log directories, all readable
from the host. Every process the lab starts is recorded with its pid and start time in
``<run_dir>/state.json``; ``down`` stops exactly those, by pid, and checks none is left.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ivr.lab import config as lab_config
from ivr.lab.prompts import PromptsReport, build_prompts, load_catalog
from ivr.lab.rootfs import BuildReport, RootfsRecipe, ensure_rootfs, is_complete, rootfs_path
from ivr.settings import VoiceSettings

ASTERISK = "/usr/sbin/asterisk"
_PLAYING = re.compile(r"<(?P<channel>[^>]+)> Playing '(?P<file>[^']+?)(?:\.(?:wav|slin|gsm|ulaw|alaw))?'")


class LabError(RuntimeError):
    """The lab could not do what was asked; the message says why."""


@dataclass(frozen=True)
class ProcessSpec:
    """A process ``ivr lab up`` starts after Asterisk (the daemon, the web endpoint...)."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    ready: Callable[[], bool] | None = None  # polled until True
    ready_timeout: float = 20.0


@dataclass(frozen=True)
class LabBuild:
    rootfs: BuildReport
    prompts: PromptsReport

    @property
    def seconds(self) -> float:
        return self.rootfs.seconds + self.prompts.seconds


@dataclass(frozen=True)
class ProcessStatus:
    name: str
    pid: int
    running: bool


@dataclass(frozen=True)
class LabStatus:
    running: bool
    root: Path
    built: bool
    processes: list[ProcessStatus] = field(default_factory=list)
    uptime: str | None = None
    channels: str | None = None


def _proc_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (guards against a reused pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # exited, not yet reaped
        return None
    return int(fields[19])


def _alive(pid: int, start_time: int | None) -> bool:
    current = _proc_start_time(pid)
    return current is not None and (start_time is None or current == start_time)


def _processes_with_arg(marker: bytes) -> list[int]:
    """Pids of live Asterisk processes whose command line contains ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline and b"asterisk" in cmdline and _proc_start_time(int(proc.name)) is not None:
            found.append(int(proc.name))
    return found


def _process_roots() -> set[Path]:
    """Root directories of running processes (a chrooted Asterisk's is its root filesystem)."""
    roots: set[Path] = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                roots.add(Path(os.readlink(proc / "root")))
    return roots


def port_free(host: str, port: int, kind: int = socket.SOCK_STREAM) -> bool:
    """Whether a server could bind ``port`` now (with SO_REUSEADDR, as servers do)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class Lab:
    """Paths and process control of the Asterisk lab (see module docstring)."""

    def __init__(self, settings: VoiceSettings) -> None:
        self.settings = settings
        self.recipe = RootfsRecipe()
        self.run_dir = settings.lab.run_dir.resolve()
        self.cache_dir = settings.lab.cache_dir
        instance = hashlib.sha256(str(self.run_dir).encode()).hexdigest()[:10]
        self.instance_rel = f"srv/ivr-lab/{instance}"
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # --- paths

    @property
    def root(self) -> Path:
        return rootfs_path(self.cache_dir, self.recipe)

    @property
    def instance_dir(self) -> Path:
        """The instance directory, as seen from the host."""
        return self.root / self.instance_rel

    @property
    def paths(self) -> lab_config.AsteriskPaths:
        base = "/" + self.instance_rel
        return lab_config.AsteriskPaths(
            etc=f"{base}/etc",
            data=f"{base}/data",
            varlib=f"{base}/lib",
            spool=f"{base}/spool",
            run=f"{base}/run",
            log=f"{base}/log",
        )

    def host_path(self, chroot_path: str) -> Path:
        return self.root / chroot_path.lstrip("/")

    @property
    def sounds_dir(self) -> Path:
        """Sounds directory Asterisk uses: ``<sounds>/ja/ivr/<id>.wav``."""
        return self.host_path(self.paths.data) / "sounds"

    @property
    def asterisk_log_path(self) -> Path:
        return self.host_path(self.paths.log) / "messages"

    @property
    def console_log_path(self) -> Path:
        return self.run_dir / "logs" / "asterisk.console.log"

    @property
    def cdr_path(self) -> Path:
        return self.host_path(self.paths.log) / "cdr-csv" / "Master.csv"

    @property
    def state_path(self) -> Path:
        return self.run_dir / "state.json"

    # --- reservation by a test session

    @property
    def test_lock_path(self) -> Path:
        return self.cache_dir / f"test-session-sip-{self.settings.lab.sip_port}.lock"

    @contextlib.contextmanager
    def reserved_for_tests(self, *, wait: float = 1800.0) -> Iterator[None]:
        """Hold the lab's ports for one test session; a second session waits for the first."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.test_lock_path, "a+") as lock:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LabError(
                            f"the lab is held by another test session ({self.test_lock_path})"
                        ) from None
                    time.sleep(1)
            lock.seek(0)
            lock.truncate()
            lock.write(str(os.getpid()))
            lock.flush()
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def reserved_by(self) -> int | None:
        """Pid of the test session holding the lab, if one does."""
        try:
            lock = open(self.test_lock_path)  # noqa: SIM115
        except OSError:
            return None
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = lock.read().strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(lock, fcntl.LOCK_UN)
        return None

    # --- build

    def build(self, *, progress: Callable[[str], None] | None = None) -> LabBuild:
        """Build (or reuse) the root filesystem and the prompts. Idempotent, fast when cached."""
        say = progress or (lambda _msg: None)
        if not is_complete(self.root):
            say(f"building the root filesystem {self.root} (Debian {self.recipe.suite}, mmdebstrap)...")
        rootfs = ensure_rootfs(self.cache_dir, recipe=self.recipe, mirror=self.settings.lab.mirror)
        prompts = build_prompts(rootfs.path, self.recipe.key, self.cache_dir, load_catalog())
        return LabBuild(rootfs, prompts)

    def prune(self) -> list[Path]:
        """Remove cached root filesystems and prompt sets other than the current ones, except a
        root filesystem some process still runs in. Returns what was removed."""
        keep_prompts = {p.name for p in self.cache_dir.glob("prompts-*") if p.is_dir()}
        if is_complete(self.root):
            keep_prompts = {
                build_prompts(self.root, self.recipe.key, self.cache_dir, load_catalog()).sounds_dir.name
            }
        in_use = _process_roots()
        removed: list[Path] = []
        for path in sorted(self.cache_dir.iterdir()):
            if not path.is_dir() or path == self.root:
                continue
            if path.name.startswith("rootfs-") and path.resolve() not in in_use:
                shutil.rmtree(path)
                path.with_name(path.name + ".build.log").unlink(missing_ok=True)
                removed.append(path)
            elif path.name.startswith("prompts-") and path.name not in keep_prompts:
                shutil.rmtree(path)
                removed.append(path)
        # Instances of labs whose run directory is gone (e.g. a test's temporary lab).
        for instance in sorted((self.root / "srv" / "ivr-lab").glob("*")):
            marker = instance / "run_dir"
            if instance == self.instance_dir or not marker.is_file():
                continue
            running = _processes_with_arg(f"/srv/ivr-lab/{instance.name}/etc/asterisk.conf".encode())
            if not Path(marker.read_text().strip()).exists() and not running:
                shutil.rmtree(instance)
                removed.append(instance)
        return removed

    # --- state

    def _read_state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {"processes": []}
        data.setdefault("processes", [])
        return data

    def _write_state(self, state: Mapping[str, Any]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.state_path)

    def _recorded(self) -> list[dict[str, Any]]:
        return list(self._read_state()["processes"])

    def is_running(self) -> bool:
        return any(
            p["name"] == "asterisk" and _alive(p["pid"], p.get("start_time")) for p in self._recorded()
        )

    # --- up / down

    def up(
        self,
        *,
        agi_ports: tuple[int, int] | None = None,
        extra: Sequence[ProcessSpec] = (),
        progress: Callable[[str], None] | None = None,
    ) -> float:
        """Start Asterisk (then ``extra`` processes) and wait until ready; returns the seconds taken."""
        say = progress or (lambda _msg: None)
        started = time.monotonic()
        if self.is_running():
            raise LabError(
                f"the lab is already running (state in {self.state_path}); run `ivr lab down` first"
            )
        self._forget_dead()
        if not is_complete(self.root):
            raise LabError(f"no root filesystem at {self.root}: run `ivr lab build` first")
        ports = agi_ports or (self.settings.agi.port, self.settings.lab.agi_fallback_port)
        self._check_ports()
        self._prepare_instance(ports)
        if self.settings.lab.agi_srv_domain:
            say("starting the lab's DNS server (hagi:// SRV records)...")
            self._start_dns(ports)
        say("starting Asterisk...")
        self._start_asterisk()
        try:
            self._wait_ready()
            for spec in extra:
                say(f"starting {spec.name}...")
                self._start_extra(spec)
        except BaseException:
            self.down()
            raise
        return time.monotonic() - started

    def _check_ports(self) -> None:
        lab = self.settings.lab
        busy = []
        if not port_free(lab.sip_host, lab.sip_port, socket.SOCK_DGRAM):
            busy.append(f"SIP {lab.sip_host}:{lab.sip_port}/udp")
        if self.settings.ami.enabled and not port_free(
            self.settings.ami.host, self.settings.ami.port, socket.SOCK_STREAM
        ):
            busy.append(f"AMI {self.settings.ami.host}:{self.settings.ami.port}/tcp")
        if busy:
            raise LabError(f"port(s) already in use: {', '.join(busy)} (another Asterisk or lab running?)")

    def _prepare_instance(self, agi_ports: tuple[int, int]) -> None:
        paths = self.paths
        for chroot_dir in (paths.etc, paths.data, paths.varlib, paths.spool, paths.run, paths.log):
            self.host_path(chroot_dir).mkdir(parents=True, exist_ok=True)
        (self.host_path(paths.log) / "cdr-csv").mkdir(exist_ok=True)
        (self.instance_dir / "run_dir").write_text(str(self.run_dir))  # for prune
        etc = self.host_path(paths.etc)
        for old in etc.glob("*.conf"):
            old.unlink()
        lab_config.render_config(etc, lab_config.placeholder_values(self.settings, paths, agi_ports))
        # data dir: our prompts, plus Asterisk's own documentation (for `core show application`).
        data = self.host_path(paths.data)
        docs = data / "documentation"
        if not docs.is_symlink():
            docs.symlink_to("/usr/share/asterisk/documentation")
        prompts = build_prompts(self.root, self.recipe.key, self.cache_dir, load_catalog())
        sounds = data / "sounds"
        fresh = data / "sounds.new"
        shutil.rmtree(fresh, ignore_errors=True)
        shutil.copytree(prompts.sounds_dir, fresh, ignore=shutil.ignore_patterns(".complete", "*.json"))
        shutil.rmtree(sounds, ignore_errors=True)
        fresh.rename(sounds)
        # Each start gets a fresh log; the previous one is kept beside it.
        if self.asterisk_log_path.exists():
            self.asterisk_log_path.replace(self.asterisk_log_path.with_name("messages.previous"))
        for stale in (self.host_path(paths.run) / "asterisk.ctl", self.host_path(paths.run) / "asterisk.pid"):
            stale.unlink(missing_ok=True)

    def _start_dns(self, agi_ports: tuple[int, int]) -> None:
        from ivr.lab import dns

        lab = self.settings.lab
        assert lab.agi_srv_domain is not None
        binary = dns.dnsmasq_binary()
        if binary is None:
            raise LabError("dnsmasq not found: apt-get install dnsmasq-base (scripts/bootstrap does)")
        if not dns.address_free(lab.dns_address):
            raise LabError(f"{lab.dns_address}:53/udp is in use (another lab's DNS server?)")
        dns.point_resolv_conf_at(self.root, lab.dns_address)
        argv = dns.dnsmasq_argv(
            address=lab.dns_address,
            domain=lab.agi_srv_domain,
            host=lab_config.agi_host(self.settings),
            ports=lab.agi_srv_ports or list(agi_ports),
            binary=binary,
        )
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        try:
            self._start_extra(
                ProcessSpec("dnsmasq", argv, ready=lambda: dns.listening(lab.dns_address), ready_timeout=10)
            )
        except BaseException:
            self.down()
            raise

    def _start_asterisk(self) -> None:
        log = self.console_log_path
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                ["chroot", str(self.root), ASTERISK, "-f", "-C", self.paths.asterisk_conf],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"},
            )
        self._children[proc.pid] = proc
        self._record("asterisk", proc.pid)

    def _record(self, name: str, pid: int) -> None:
        state = self._read_state()
        state["root"] = str(self.root)
        state["processes"].append({"name": name, "pid": pid, "start_time": _proc_start_time(pid)})
        self._write_state(state)

    def _forget_dead(self) -> None:
        state = self._read_state()
        state["processes"] = [p for p in state["processes"] if _alive(p["pid"], p.get("start_time"))]
        self._write_state(state)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.settings.lab.ready_timeout_seconds
        while True:
            if not self.is_running():
                raise LabError(
                    f"Asterisk exited while starting; see {self.console_log_path}:\n{self._tail()}"
                )
            result = self._rx("core waitfullybooted", timeout=10)
            if result.returncode == 0 and "fully booted" in result.stdout.lower():
                return
            if time.monotonic() > deadline:
                raise LabError(
                    f"Asterisk not ready after {self.settings.lab.ready_timeout_seconds}s:\n{self._tail()}"
                )
            time.sleep(0.1)

    def _tail(self, lines: int = 20) -> str:
        texts = []
        for path in (self.console_log_path, self.asterisk_log_path):
            with contextlib.suppress(OSError):
                texts.append("".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:]))
        return "\n".join(texts)

    def _start_extra(self, spec: ProcessSpec) -> None:
        log = self.run_dir / "logs" / f"{spec.name}.log"
        env = dict(os.environ)
        env.update(spec.env or {})
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                list(spec.argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=spec.cwd,
                env=env,
                start_new_session=True,
            )
        self._children[proc.pid] = proc
        self._record(spec.name, proc.pid)
        if spec.ready is None:
            return
        deadline = time.monotonic() + spec.ready_timeout
        while not spec.ready():
            if proc.poll() is not None:
                raise LabError(f"{spec.name} exited with {proc.returncode} while starting; see {log}")
            if time.monotonic() > deadline:
                raise LabError(f"{spec.name} not ready after {spec.ready_timeout}s; see {log}")
            time.sleep(0.1)

    def down(self, *, timeout: float = 10.0) -> list[str]:
        """Stop every process the lab started (newest first), by pid; returns what was stopped."""
        stopped: list[str] = []
        for entry in reversed(self._recorded()):
            pid, start_time, name = entry["pid"], entry.get("start_time"), entry["name"]
            if _alive(pid, start_time):
                if name == "asterisk":
                    self._rx("core stop now", timeout=5)
                    self._wait_gone(pid, start_time, min(timeout, 5.0))
                for sig in (signal.SIGTERM, signal.SIGKILL):
                    if _alive(pid, start_time):
                        self._signal(pid, sig)
                        self._wait_gone(pid, start_time, timeout)
                stopped.append(f"{name} ({pid})")
                self._signal_group_leftovers(pid)
            child = self._children.pop(pid, None)
            if child is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=1)
        leftovers = [p for p in self.stray_processes() if p not in {e["pid"] for e in self._recorded()}]
        for pid in leftovers:  # an Asterisk of this instance we did not record (e.g. state lost)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            stopped.append(f"stray asterisk ({pid})")
            self._wait_gone(pid, None, timeout)
        still = [e for e in self._recorded() if _alive(e["pid"], e.get("start_time"))] + [
            p for p in self.stray_processes()
        ]
        if still:
            raise LabError(f"processes still running after down: {still}")
        state = self._read_state()
        state["processes"] = []
        self._write_state(state)
        return stopped

    @staticmethod
    def _signal(pid: int, sig: signal.Signals) -> None:
        """Signal the process, and its process group when it leads one (we start each process in
        its own session, so its children go with it)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    @staticmethod
    def _signal_group_leftovers(pgid: int) -> None:
        """Children left in a stopped process's group (e.g. workers of an extra process)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)

    @staticmethod
    def _wait_gone(pid: int, start_time: int | None, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while _alive(pid, start_time) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)

    def stray_processes(self) -> list[int]:
        """Pids of processes running this instance's Asterisk configuration."""
        return _processes_with_arg(self.paths.asterisk_conf.encode())

    # --- inspection

    def _rx(self, command: str, *, timeout: float = 15) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                ["chroot", str(self.root), ASTERISK, "-C", self.paths.asterisk_conf, "-rx", command],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"},
            )
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess([], 124, "", f"timed out: {command}")

    def cli(self, command: str) -> str:
        """Run an Asterisk CLI command on the running lab and return its output."""
        if not self.is_running():
            raise LabError("the lab is not running (ivr lab up)")
        result = self._rx(command)
        if result.returncode != 0:
            raise LabError(f"asterisk -rx {command!r} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def status(self) -> LabStatus:
        processes = [
            ProcessStatus(p["name"], p["pid"], _alive(p["pid"], p.get("start_time")))
            for p in self._recorded()
        ]
        running = self.is_running()
        uptime = channels = None
        if running:
            uptime = self._rx("core show uptime").stdout.strip() or None
            channels = self._rx("core show channels count").stdout.strip() or None
        return LabStatus(running, self.root, is_complete(self.root), processes, uptime, channels)

    def log_offset(self) -> int:
        """Current size of Asterisk's log: pass it to ``messages`` to read only what follows."""
        try:
            return self.asterisk_log_path.stat().st_size
        except OSError:
            return 0

    def messages(self, since: int = 0) -> str:
        """What Asterisk logged (``messages``), from byte offset ``since``."""
        try:
            with open(self.asterisk_log_path, "rb") as log:
                log.seek(since)
                return log.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def played_prompts(self, since: int = 0, channel_prefix: str | None = None) -> list[str]:
        """Sound files Asterisk played since the offset, in order (e.g. ``ivr/choose-unit``)."""
        played = []
        for match in _PLAYING.finditer(self.messages(since)):
            if channel_prefix is None or match.group("channel").startswith(channel_prefix):
                played.append(match.group("file"))
        return played
