"""A tiny FastAGI server for the lab's own tests: records what Asterisk hands it.

Not the product's daemon (that is ivr/agi + ivr/daemon); just enough protocol to prove that a SIPp
call reaches FastAGI with its caller ID and its DTMF digits intact.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class StubCall:
    env: dict[str, str] = field(default_factory=dict)
    digits: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    hung_up: bool = False


class StubAgiServer:
    """Answers each FastAGI connection: reads the environment, collects digits with WAIT FOR DIGIT
    until ``idle_ms`` passes with none (or ``max_digits``), reads ``read_variables``, then sets
    IVR_RESULT and hangs up (unless ``set_result`` is False)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 4573,
        *,
        idle_ms: int = 4000,
        first_digit_ms: int = 15000,
        max_digits: int = 32,
        read_variables: tuple[str, ...] = ("IVR_CALLER_ID_STATUS",),
        set_result: bool = True,
    ) -> None:
        self.host, self.port = host, port
        self.idle_ms, self.first_digit_ms, self.max_digits = idle_ms, first_digit_ms, max_digits
        self.read_variables = read_variables
        self.set_result = set_result
        self.calls: list[StubCall] = []
        self.done = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> StubAgiServer:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _command(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, command: str) -> str:
        writer.write(command.encode() + b"\n")
        await writer.drain()
        line = (await asyncio.wait_for(reader.readline(), timeout=60)).decode().strip()
        if line.startswith("HANGUP"):  # AGIEXITONHANGUP: Asterisk tells us the caller left
            raise ConnectionResetError("hangup")
        return line

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        call = StubCall()
        self.calls.append(call)
        try:
            while True:
                line = (await asyncio.wait_for(reader.readline(), timeout=5)).decode().rstrip("\n")
                if not line:
                    break
                key, _, value = line.partition(":")
                call.env[key.strip()] = value.strip()
            timeout = self.first_digit_ms
            while len(call.digits) < self.max_digits:
                reply = await self._command(reader, writer, f"WAIT FOR DIGIT {timeout}")
                code = int(reply.split("result=", 1)[1].split()[0])
                if code <= 0:
                    break
                call.digits += chr(code)
                timeout = self.idle_ms
            for name in self.read_variables:
                reply = await self._command(reader, writer, f"GET VARIABLE {name}")
                call.variables[name] = reply.split("(", 1)[1].rsplit(")", 1)[0] if "(" in reply else ""
            if self.set_result:
                await self._command(reader, writer, 'SET VARIABLE IVR_RESULT "stub-done"')
                await self._command(reader, writer, "HANGUP")
        except (ConnectionResetError, asyncio.IncompleteReadError, TimeoutError, IndexError, ValueError):
            call.hung_up = True
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self.done.set()
