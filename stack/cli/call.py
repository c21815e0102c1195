"""`ivr call`: place one SIPp call to the lab by hand and print what happened.

    ivr call --from 0300001111 --dtmf "2,0300002222#,40719352,40719352"

Commas separate key groups; the caller waits ``--between`` seconds before each group (like the
pause key of a phone), then waits for the IVR to hang up.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from typing import Any

from ivr.lab import Lab
from ivr.sipp import Caller, ExpectHangup, HangUp, SendDigits, SippError, Step, Wait, run_call, run_calls
from ivr.sipp.model import DTMF_KEYS
from stack.settings import Settings


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "call", help="place one simulated call (SIPp) to the lab and print what happened"
    )
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--from", dest="caller_id", default="0300001111", help="caller ID (default 0300001111)")
    who.add_argument("--withheld", action="store_true", help="withhold the caller ID (anonymous)")
    parser.add_argument(
        "--to", dest="dialled", default=None, help="number dialled (default: the service number)"
    )
    parser.add_argument("--dtmf", default="", help='keys to press; commas separate groups, e.g. "1,40719352"')
    parser.add_argument("--mode", choices=("rfc4733", "info"), default="rfc4733", help="how keys are sent")
    parser.add_argument(
        "--first-wait", type=float, default=2.0, help="seconds after answer before the first keys"
    )
    parser.add_argument(
        "--between",
        type=float,
        default=None,
        help="seconds of waiting before each later group (default: the menu's inter-digit timeout + 1.5 s, "
        "so an entry without # is over before the next one starts)",
    )
    parser.add_argument("--gap", type=float, default=0.3, help="silence between two keys (seconds)")
    parser.add_argument(
        "--hangup-within",
        type=float,
        default=60.0,
        help="after the last keys, wait this long for the IVR to hang up",
    )
    parser.add_argument("--hang-up", action="store_true", help="hang up ourselves right after the last keys")
    parser.add_argument(
        "--source-ip", default="127.0.0.1", help="address to call from (127.0.0.2: untrusted)"
    )
    parser.add_argument("--count", type=int, default=1, help="place this many calls (load test)")
    parser.add_argument("--rate", type=float, default=5.0, help="new calls per second (with --count)")
    parser.add_argument("--concurrency", type=int, default=10, help="calls at once at most (with --count)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=_call)


def build_steps(dtmf: str, *, first_wait: float, between: float, gap: float) -> list[Step]:
    steps: list[Step] = [Wait(first_wait)]
    groups = [g.strip() for g in dtmf.split(",")] if dtmf.strip() else []
    for index, group in enumerate(groups):
        if index:
            steps.append(Wait(between))
        if not group:
            continue
        bad = [k for k in group if k.upper() not in DTMF_KEYS]
        if bad:
            raise ValueError(f"not DTMF keys: {''.join(bad)!r} in {group!r}")
        steps.append(SendDigits(group, gap=gap))
    return steps


def _call(args: argparse.Namespace, settings: Settings) -> int:
    try:
        between = (
            args.between if args.between is not None else settings.menu.inter_digit_timeout_seconds + 1.5
        )
        steps = build_steps(args.dtmf, first_wait=args.first_wait, between=between, gap=args.gap)
        steps.append(HangUp() if args.hang_up else ExpectHangup(args.hangup_within))
        caller = Caller(
            caller_id=None if args.withheld else args.caller_id,
            dialled=args.dialled or settings.lab.service_number,
            dtmf_mode=args.mode,
            steps=steps,
            source_ip=args.source_ip,
        )
    except ValueError as exc:
        print(f"ivr call: {exc}", file=sys.stderr)
        return 2
    if args.count > 1:
        return _load(caller, args, settings)
    lab = Lab(settings)
    mark = lab.log_offset()
    try:
        result = run_call(caller, settings)
    except SippError as exc:
        print(f"ivr call: {exc}", file=sys.stderr)
        return 1
    played = lab.played_prompts(mark)
    if args.json:
        print(
            json.dumps(
                {
                    "answered": result.answered,
                    "sip_codes": result.sip_codes,
                    "hung_up_by": result.hung_up_by,
                    "duration": round(result.duration, 3),
                    "remote_hangup_after": result.remote_hangup_after,
                    "expectations_failed": result.expectations_failed,
                    "prompts_played": played,
                    "error": result.error,
                    "call_id": result.call_id,
                },
                ensure_ascii=False,
            )
        )
    else:
        print(f"caller {caller.caller_id or 'withheld'} -> {caller.dialled} ({caller.dtmf_mode})")
        codes = " ".join(map(str, result.sip_codes)) or "-"
        print(f"answered: {'yes' if result.answered else 'no'}; SIP {codes}")
        print(f"hung up by: {result.hung_up_by or '-'} after {result.duration:.1f} s")
        if played:
            print("prompts played: " + " ".join(p.removeprefix("ivr/") for p in played))
        for failure in result.expectations_failed:
            print(f"expectation failed: {failure}")
        if result.error:
            print(f"error: {result.error}")
    return 0 if result.answered and result.error is None and not result.expectations_failed else 1


def _load(caller: Caller, args: argparse.Namespace, settings: Settings) -> int:
    """The same caller ``--count`` times at ``--rate``/s, at most ``--concurrency`` at once."""
    callers = [dataclasses.replace(caller, name=f"load-{i}") for i in range(args.count)]
    started = time.monotonic()
    try:
        results = run_calls(callers, args.rate, args.concurrency, settings)
    except SippError as exc:
        print(f"ivr call: {exc}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    ok = [r for r in results if r.ok]
    durations = sorted(r.duration for r in results if r.answered)
    summary = {
        "calls": len(results),
        "ok": len(ok),
        "answered": sum(r.answered for r in results),
        "hung_up_by_remote": sum(r.hung_up_by == "remote" for r in results),
        "errors": sorted({r.error for r in results if r.error}),
        "seconds": round(elapsed, 2),
        "duration_median": round(statistics.median(durations), 2) if durations else None,
        "duration_max": round(durations[-1], 2) if durations else None,
    }
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        for key, value in summary.items():
            print(f"{key}: {value}")
    return 0 if len(ok) == len(results) else 1
