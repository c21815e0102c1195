"""`ivr lab build|up|down|status|logs|cli`: the Asterisk lab (see docs/lab.md)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ivr.lab import Lab, LabError
from ivr.lab.config import ConfigError
from ivr.lab.prompts import PromptError
from ivr.lab.rootfs import RootfsError
from stack.settings import Settings


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "lab", help="the Asterisk lab: build, up, down, status, logs, cli"
    )
    sub = parser.add_subparsers(dest="lab_command", required=True, metavar="ACTION")

    build = sub.add_parser("build", help="build (or reuse) the root filesystem and the prompts")
    build.add_argument(
        "--prune", action="store_true", help="then remove cached trees and prompt sets no longer used"
    )
    build.set_defaults(func=_build)

    up = sub.add_parser("up", help="start Asterisk with our configuration and wait until it is ready")
    up.add_argument("--agi-port", type=int, default=None, help="first FastAGI port (default: settings)")
    up.add_argument("--agi-fallback-port", type=int, default=None, help="second FastAGI port")
    up.add_argument("--restart", action="store_true", help="stop a running lab first")
    up.add_argument("--force", action="store_true", help="even while a test session holds the lab")
    up.set_defaults(func=_up)

    down = sub.add_parser("down", help="stop everything the lab started")
    down.add_argument("--force", action="store_true", help="even while a test session holds the lab")
    down.set_defaults(func=_down)

    status = sub.add_parser("status", help="what is running")
    status.set_defaults(func=_status)

    logs = sub.add_parser("logs", help="print Asterisk's log")
    logs.add_argument("-n", "--lines", type=int, default=50, help="last N lines (0: all)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("--cdr", action="store_true", help="print the call records instead")
    logs.set_defaults(func=_logs)

    render = sub.add_parser(
        "render", help="render the Asterisk configuration for a standard (non-lab) Asterisk install"
    )
    render.add_argument("--out", required=True, help="directory to write the .conf files into")
    render.add_argument("--agi-port", type=int, default=None, help="first FastAGI port (default: settings)")
    render.add_argument("--agi-fallback-port", type=int, default=None, help="second FastAGI port")
    render.set_defaults(func=_render)

    cli = sub.add_parser("cli", help='run an Asterisk CLI command, e.g. ivr lab cli "core show channels"')
    cli.add_argument("words", nargs="+", help="the command")
    cli.set_defaults(func=_cli)


def _errors(func: Any) -> Any:
    def wrapper(args: argparse.Namespace, settings: Settings) -> int:
        try:
            result: int = func(args, settings)
        except (LabError, RootfsError, PromptError, ConfigError) as exc:
            print(f"ivr lab: {exc}", file=sys.stderr)
            return 1
        return result

    return wrapper


def _say(message: str) -> None:
    print(message, flush=True)


def _refuse_if_reserved(lab: Lab, force: bool) -> None:
    holder = lab.reserved_by()
    if holder is not None and not force:
        raise LabError(
            f"a test session (pid {holder}) is using this lab; stopping it would break its calls "
            "(--force to stop it anyway)"
        )


@_errors
def _build(args: argparse.Namespace, settings: Settings) -> int:
    lab = Lab(settings)
    result = lab.build(progress=_say)
    rootfs, prompts = result.rootfs, result.prompts
    print(
        f"root filesystem: {rootfs.path} ({'built' if rootfs.built else 'cached'} in {rootfs.seconds:.2f} s)"
    )
    print(
        f"prompts: {prompts.count} in {prompts.sounds_dir}/ja/ivr "
        f"({'built' if prompts.built else 'cached'} in {prompts.seconds:.2f} s)"
    )
    kind = "cold" if rootfs.built else "warm"
    print(f"lab build: {kind}, {result.seconds:.2f} s")
    if args.prune:
        for path in lab.prune():
            print(f"removed {path}")
    return 0


@_errors
def _up(args: argparse.Namespace, settings: Settings) -> int:
    lab = Lab(settings)
    started = time.monotonic()
    if args.restart and lab.is_running():
        _refuse_if_reserved(lab, args.force)
        lab.down()
    build = lab.build(progress=_say)
    ports = (
        args.agi_port or settings.agi.port,
        args.agi_fallback_port or settings.lab.agi_fallback_port,
    )
    boot = lab.up(agi_ports=ports, progress=_say)
    total = time.monotonic() - started
    kind = "cold" if build.rootfs.built else "warm"
    lab_settings = settings.lab
    print(
        f"Asterisk is up: SIP {lab_settings.sip_host}:{lab_settings.sip_port}/udp, "
        f"AMI {settings.ami.host}:{settings.ami.port}, FastAGI -> 127.0.0.1:{ports[0]} then :{ports[1]}"
    )
    print(f"service number {lab_settings.service_number}; log {lab.asterisk_log_path}")
    print(f"lab up: {kind} start {total:.2f} s (build {build.seconds:.2f} s, Asterisk ready in {boot:.2f} s)")
    return 0


@_errors
def _down(args: argparse.Namespace, settings: Settings) -> int:
    lab = Lab(settings)
    _refuse_if_reserved(lab, args.force)
    stopped = lab.down()
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


@_errors
def _status(args: argparse.Namespace, settings: Settings) -> int:
    status = Lab(settings).status()
    print(f"root filesystem: {status.root} ({'built' if status.built else 'not built'})")
    print(f"running: {'yes' if status.running else 'no'}")
    for proc in status.processes:
        print(f"  {proc.name}: pid {proc.pid} {'running' if proc.running else 'gone'}")
    if status.uptime:
        print(status.uptime)
    if status.channels:
        print(status.channels)
    return 0 if status.running else 3


@_errors
def _logs(args: argparse.Namespace, settings: Settings) -> int:
    lab = Lab(settings)
    path = lab.cdr_path if args.cdr else lab.asterisk_log_path
    if not path.exists():
        print(f"ivr lab: no log yet at {path}", file=sys.stderr)
        return 1
    lines = path.read_text(errors="replace").splitlines()
    for line in lines[-args.lines :] if args.lines else lines:
        print(line)
    if args.follow:
        offset = path.stat().st_size
        try:
            while True:
                time.sleep(0.5)
                size = path.stat().st_size
                if size < offset:
                    offset = 0
                if size > offset:
                    with open(path, "rb") as log:
                        log.seek(offset)
                        sys.stdout.write(log.read().decode("utf-8", errors="replace"))
                        sys.stdout.flush()
                    offset = size
        except KeyboardInterrupt:
            return 0
    return 0


@_errors
def _cli(args: argparse.Namespace, settings: Settings) -> int:
    print(Lab(settings).cli(" ".join(args.words)), end="")
    return 0


@_errors
def _render(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from ivr.lab.config import AsteriskPaths, placeholder_values, render_config

    paths = AsteriskPaths(
        etc="/etc/asterisk",
        data="/usr/share/asterisk",
        varlib="/var/lib/asterisk",
        spool="/var/spool/asterisk",
        run="/var/run/asterisk",
        log="/var/log/asterisk",
    )
    ports = (args.agi_port or settings.agi.port, args.agi_fallback_port or settings.lab.agi_fallback_port)
    written = render_config(Path(args.out), placeholder_values(settings, paths, ports))
    for path in written:
        print(path)
    print(
        f"prompts: copy <sounds>/ja/ivr/*.wav (ivr lab build prints where) to {paths.data}/sounds/ja/ivr/",
        file=sys.stderr,
    )
    return 0
