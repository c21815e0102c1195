"""Playing Asterisk over FastAGI for the daemon tests: the environment, the secret, and replies to
every command, with the caller's entries from a script."""

from __future__ import annotations

import socket
from collections.abc import Iterable

from tests.ivr.test_records import SECRET, _environment


def call(port: int, call_id: str, entries: Iterable[str], *, secret: str = SECRET) -> list[str]:
    """One call: answers every command; each GET DATA gets the next entry of ``entries`` (keys); when
    they run out, the caller hangs up. Returns the commands the daemon sent."""
    pending = list(entries)
    commands: list[str] = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as peer, peer.makefile("rb") as reader:
        peer.sendall(_environment(call_id))
        while True:
            line = reader.readline().decode().strip()
            if not line:
                return commands  # the daemon ended the call
            commands.append(line)
            if line.startswith("GET VARIABLE") and "AST_CONFIG(" in line:
                reply = f"200 result=1 ({secret})"
            elif line.startswith("GET DATA"):
                if not pending:
                    return commands  # hang up
                reply = f"200 result={pending.pop(0)}"
            elif line.startswith("GET VARIABLE"):
                reply = "200 result=0"
            else:
                reply = "200 result=0"
            peer.sendall((reply + "\n").encode())
