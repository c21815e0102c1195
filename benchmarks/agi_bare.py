"""A bare FastAGI responder: the same dialogs as `ivr serve`, with no logic at all.

    python benchmarks/agi_bare.py --port PORT --transcripts FILE

FILE is JSON ``{"<dialog>": ["ANSWER", "GET DATA ivr/choose-unit 10000 1", ...]}``: the commands
`ivr serve` sent for each dialog (recorded by `benchmarks/agi.py` against the daemon). For each
connection it reads the AGI environment, picks the transcript named by ``agi_arg_1``, sends each
command and reads one reply line (skipping ``520-`` usage blocks), then closes. No database, no
logging, no parsing beyond that: the floor a FastAGI server on asyncio can reach for the dialog.
Prints ``listening <port>`` on stdout when ready.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys


async def _session(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, transcripts: dict[str, list[bytes]]
) -> None:
    try:
        dialog = ""
        while True:
            line = await reader.readline()
            if not line or line in (b"\n", b"\r\n"):
                break
            if line.startswith(b"agi_arg_1:"):
                dialog = line[10:].strip().decode()
        for command in transcripts.get(dialog, ()):
            writer.write(command)
            reply = await reader.readline()
            while reply.startswith(b"520-"):
                reply = await reader.readline()
            if not reply:
                break
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _main(port: int, transcripts: dict[str, list[bytes]]) -> None:
    server = await asyncio.start_server(
        lambda r, w: _session(r, w, transcripts), "127.0.0.1", port, reuse_address=True
    )
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--transcripts", required=True)
    args = parser.parse_args(argv)
    with open(args.transcripts, encoding="utf-8") as file:
        raw: dict[str, list[str]] = json.load(file)
    transcripts = {name: [(c + "\n").encode() for c in commands] for name, commands in raw.items()}
    asyncio.run(_main(args.port, transcripts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
