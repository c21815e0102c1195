"""The SIPp wrapper: describe callers, run them against Asterisk, read what happened."""

from ivr.sipp.model import Caller, CallResult, DtmfMode, ExpectHangup, HangUp, SendDigits, Step, Wait
from ivr.sipp.runner import SippError, Target, arun_call, arun_calls, run_call, run_calls

__all__ = [
    "CallResult",
    "Caller",
    "DtmfMode",
    "ExpectHangup",
    "HangUp",
    "SendDigits",
    "SippError",
    "Step",
    "Target",
    "Wait",
    "arun_call",
    "arun_calls",
    "run_call",
    "run_calls",
]
