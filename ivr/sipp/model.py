"""What a simulated caller does, and what happened on the call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DtmfMode = Literal["rfc4733", "info"]
DTMF_KEYS = "0123456789*#ABCD"


@dataclass(frozen=True)
class Wait:
    """Stay on the line, silent, for ``seconds``."""

    seconds: float


@dataclass(frozen=True)
class SendDigits:
    """Press keys: each held ``tone`` seconds, ``gap`` seconds of silence after each."""

    digits: str
    gap: float = 0.3
    tone: float = 0.12

    def __post_init__(self) -> None:
        bad = [d for d in self.digits if d.upper() not in DTMF_KEYS]
        if bad or not self.digits:
            raise ValueError(f"SendDigits: not DTMF keys: {self.digits!r}")
        if self.gap < 0.05 or self.tone < 0.04:
            raise ValueError("SendDigits: tone must be >= 0.04 s and gap >= 0.05 s")

    @property
    def seconds(self) -> float:
        return len(self.digits) * (self.tone + self.gap)


@dataclass(frozen=True)
class ExpectHangup:
    """The far end must hang up within ``within`` seconds (else we hang up and record it)."""

    within: float


@dataclass(frozen=True)
class HangUp:
    """Hang up ourselves (send BYE)."""


Step = Wait | SendDigits | ExpectHangup | HangUp


@dataclass
class Caller:
    """A simulated caller.

    ``caller_id`` None withholds it (From: anonymous, Privacy: id). With ``privacy`` True the number
    is sent in P-Asserted-Identity but marked withheld (Privacy: id), as a carrier does for 184.
    ``source_ip`` is the address the call comes from: 127.0.0.1 is the lab's trusted carrier, any
    other loopback address (127.0.0.2) an untrusted source.
    """

    caller_id: str | None
    dialled: str = "0363044747"
    dtmf_mode: DtmfMode = "rfc4733"
    steps: list[Step] = field(default_factory=list)
    source_ip: str = "127.0.0.1"
    privacy: bool = False
    answer_timeout: float = 15.0
    name: str = ""
    auth_password: str | None = None  # answer a digest challenge as user ``caller_id`` (softphone)

    def __post_init__(self) -> None:
        if self.dtmf_mode not in ("rfc4733", "info"):
            raise ValueError(f"dtmf_mode must be 'rfc4733' or 'info', not {self.dtmf_mode!r}")
        if self.caller_id is not None and not all(c.isalnum() or c in "+-._" for c in self.caller_id):
            raise ValueError(f"caller_id has characters a SIP user part cannot carry: {self.caller_id!r}")
        if not self.dialled or not all(c.isdigit() or c in "+*#" for c in self.dialled):
            raise ValueError(f"dialled must be a phone number, got {self.dialled!r}")


@dataclass
class CallResult:
    """What happened on one call."""

    answered: bool
    sip_codes: list[int]
    hung_up_by: Literal["remote", "local"] | None
    duration: float  # seconds from answer to the end of the call (from the INVITE if not answered)
    call_id: str = ""
    caller: Caller | None = None
    steps_done: int = 0  # steps completed before the call ended
    expectations_failed: list[str] = field(default_factory=list)  # ExpectHangup timeouts
    remote_hangup_after: float | None = None  # seconds from answer to the far end's BYE
    exit_code: int = 0
    error: str | None = None
    log_dir: str = ""

    @property
    def ok(self) -> bool:
        """Answered, every step done, every expectation met, no error."""
        return self.answered and not self.expectations_failed and self.error is None
