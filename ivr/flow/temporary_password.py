"""The temporary-password line (the operator guide P4-P6), as one call.

Read it top to bottom like the call: identify the line by caller ID, choose the unit (1/2/3), enter
a number ending with # when the unit needs one, enter the 8-digit password, enter it again, hear
the number read back with "設定が完了しました". Three wrong entries at a step (no input counts) end
the call with `too-many-wrong`. A hangup anywhere raises `CallerHungUp` out of the channel verb:
nothing is written unless the confirmation matched, and the call record says at which step.

Password digits never leave this module except hashed: they are not logged, not put in an
exception, not put in a call record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import datetime
from typing import TYPE_CHECKING

from core.enums import AuthUnit
from core.phone import InvalidPhoneNumber, normalize_number
from core.phone_line import (
    CallerLine,
    guessable_temporary_password,
    target_number_for,
    temporary_password_problem,
)
from core.secrets import constant_time_equals
from ivr.channel import CallerIdKind, Channel, Digits, Progress, digit_prompts
from ivr.flow.controller import (
    NO_MATCH,
    RESULT_VARIABLE,
    CallController,
    CallReport,
    NoMatch,
    Outcome,
    Step,
    TooManyWrong,
    forget_task,
    utc_now,
)
from ivr.flow.store import CallStore, SaveAbandoned, SaveGuard
from ivr.settings import MenuSettings

if TYPE_CHECKING:
    from ivr.metrics import DaemonMetrics

__all__ = [
    "RESULT_VARIABLE",
    "BusyCall",
    "CallReport",
    "Outcome",
    "Step",
    "TemporaryPasswordCall",
    "busy_call",
    "temporary_password_call",
]

NUMBER_MAX_DIGITS = 15  # longer than any national number, so an overlong entry is seen as wrong
PASSWORD_DIGITS = 8  # the operator guide: the entry ends at the 8th key; later keys are the next step's

_TOO_MANY = {
    Step.UNIT: Outcome.TOO_MANY_WRONG_UNIT,
    Step.NUMBER: Outcome.TOO_MANY_WRONG_NUMBER,
    Step.PASSWORD: Outcome.TOO_MANY_WRONG_PASSWORD,
    Step.CONFIRM: Outcome.TOO_MANY_WRONG_PASSWORD,
}


class TemporaryPasswordCall(CallController):
    """The temporary-password line: `execute()` is the call, the controller its life."""

    def __init__(
        self,
        channel: Channel,
        *,
        store: CallStore,
        menu: MenuSettings,
        clock: Callable[[], datetime] = utc_now,
        hash_executor: Executor | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        metrics: DaemonMetrics | None = None,
    ) -> None:
        super().__init__(channel, store=store, menu=menu, clock=clock, monotonic=monotonic, metrics=metrics)
        self.hash_executor = hash_executor  # None: the event loop's default thread pool

    async def execute(self) -> Outcome:
        channel, report = self.channel, self.report
        number = channel.caller.number if channel.caller.kind is CallerIdKind.NUMBER else None
        # The caller's line is looked up (in a thread) while ANSWER goes to Asterisk and back, so
        # the first prompt follows the answer with no database time in between.
        lookup = asyncio.ensure_future(self._lookup(number)) if number is not None else None
        try:
            await channel.answer()
        except BaseException:
            if lookup is not None:
                forget_task(lookup)
            raise

        # 1. Who is calling: the line is identified by the caller ID alone.
        report.last_step = Step.IDENTIFY
        if lookup is None:
            self.log.info("caller_not_identified", caller_kind=channel.caller.kind.value)
            return await self.end(Outcome.CALLER_ID_WITHHELD, ["caller-id-withheld"])
        line = await self.wait_for(lookup, Progress.WAITING)
        if line is None:
            return await self.end(Outcome.CALLER_NOT_ELIGIBLE, ["caller-not-eligible"])
        self.log.debug(
            "caller_identified", contract_id=line.contract_id, is_contract_number=line.is_contract_number
        )

        # 2. The unit: 1 line, 2 number, 3 admin/user.
        try:
            unit = await self.ask(
                Step.UNIT, ["choose-unit"], max_digits=1, terminator=None, accept=_unit_key, fixed_length=True
            )
            report.unit = unit
            self.log.debug("unit_chosen", unit=unit.value)

            # 2'. The number, ending with #, when the unit needs one.
            entered: str | None = None
            if unit is AuthUnit.NUMBER or (unit is AuthUnit.ADMIN_USER and line.is_contract_number):
                entered = await self.ask(
                    Step.NUMBER,
                    ["enter-number"],
                    max_digits=NUMBER_MAX_DIGITS,
                    terminator="#",
                    accept=lambda d: self._number_on_contract(line, d),
                )
            target = target_number_for(unit, line, entered)
            report.target_number = target
            self.log.debug("target_number", target_number=target)

            # 3-5. The password, then again to confirm.
            read_back = digit_prompts(target)
            password = await self.ask(
                Step.PASSWORD,
                ["set-for-number-prefix", *read_back, "set-for-number-suffix"],
                max_digits=PASSWORD_DIGITS,
                terminator="#",
                accept=lambda d: self._new_password(d, channel_number=number, target=target),
                fixed_length=True,
            )
            await self.ask(
                Step.CONFIRM,
                ["confirm-password"],
                max_digits=PASSWORD_DIGITS,
                terminator="#",
                accept=lambda d: _same_password(password, d),
                fixed_length=True,
            )
        except TooManyWrong as too_many:
            self.log.info("too_many_wrong", step=too_many.step.value)
            return await self.end(_TOO_MANY[too_many.step], ["too-many-wrong"])

        # 6. Store durably, and only then say it is done: a save that takes longer than a moment
        # (a burst of confirmations, a slow database) is heard as the progress sound, and one that
        # takes too long as the apology, abandoned before it commits.
        report.last_step = Step.SAVE
        guard = SaveGuard()
        save = asyncio.ensure_future(self._save(line, unit, target, password, guard))
        await self.wait_for(save, Progress.SAVING, abandon=guard.abandon)
        report.last_step = Step.FAREWELL
        return await self.end(Outcome.COMPLETED, ["set-for-number-prefix", *read_back, "completed-suffix"])

    async def _save(
        self, line: CallerLine, unit: AuthUnit, target: str, password: str, guard: SaveGuard
    ) -> None:
        """Hash (in the hash pool), then store and commit (in a thread): no database lock is held
        across the hash. `report.password_stored` is set here, when the commit returns, whatever
        the caller is doing by then."""
        save_started = self.monotonic()
        try:
            password_hash = await asyncio.get_running_loop().run_in_executor(
                self.hash_executor, _hash_unless_abandoned, self.store, password, guard
            )
            hashed = self.monotonic()
            if self.metrics is not None:
                self.metrics.hashed(hashed - save_started)
            await asyncio.to_thread(
                self.store.save_temporary_password,
                line=line,
                unit=unit,
                target_number=target,
                password_hash=password_hash,
                now=self.clock(),
                guard=guard,
            )
        except SaveAbandoned:
            self.log.warning("temporary_password_abandoned", target_number=target)
            raise
        self.report.password_stored = True
        self.log.info(
            "temporary_password_stored",
            unit=unit.value,
            target_number=target,
            hash_ms=round((hashed - save_started) * 1000),
            store_ms=round((self.monotonic() - hashed) * 1000),
        )

    # ------------------------------------------------------------------ what the steps check

    async def _lookup(self, caller_number: str) -> CallerLine | None:
        try:
            number = normalize_number(caller_number)
        except InvalidPhoneNumber as exc:
            self.log.info("caller_number_invalid", reason=exc.reason)
            return None
        return await asyncio.to_thread(self.store.lookup_caller, number)

    async def _new_password(self, entry: Digits, *, channel_number: str | None, target: str) -> str | NoMatch:
        """8 digits, and not guessable: no run of 4 identical or 4 consecutive digits, and (with
        `menu.refuse_own_number_password`) not the last 8 digits of the caller's or the target's
        number. A guessable one is refused with its own prompt (`password-guessable`)."""
        if temporary_password_problem(entry.value) is not None:
            return NO_MATCH
        own = [n for n in (channel_number, target) if n] if self.menu.refuse_own_number_password else []
        reason = guessable_temporary_password(entry.value, own)
        return entry.value if reason is None else NoMatch(GUESSABLE_PROMPT, reason)

    async def _number_on_contract(self, line: CallerLine, entry: Digits) -> str | NoMatch:
        try:
            number = normalize_number(entry.value)
        except InvalidPhoneNumber:
            return NO_MATCH
        check = asyncio.ensure_future(
            asyncio.to_thread(self.store.number_on_contract, line.contract_id, number)
        )
        on_contract = await self.wait_for(check, Progress.WAITING)
        return number if on_contract else NO_MATCH


def _hash_unless_abandoned(store: CallStore, password: str, guard: SaveGuard) -> str:
    """In a hashing thread: a save abandoned while it queued costs no hash."""
    if guard.abandoned:
        raise SaveAbandoned()
    return store.hash_password(password)


async def _unit_key(entry: Digits) -> AuthUnit | NoMatch:
    try:
        return AuthUnit.from_menu_key(entry.value)
    except ValueError:
        return NO_MATCH


#: a well-formed password that is too easy to guess: its own prompt says why, and it counts as wrong
GUESSABLE_PROMPT = "password-guessable"


async def _same_password(first: str, entry: Digits) -> bool | NoMatch:
    return True if constant_time_equals(first, entry.value) else NO_MATCH


async def temporary_password_call(
    channel: Channel,
    *,
    store: CallStore,
    menu: MenuSettings,
    clock: Callable[[], datetime] = utc_now,
    hash_executor: Executor | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> CallReport:
    """The temporary-password line, start to end, on one channel."""
    return await TemporaryPasswordCall(
        channel, store=store, menu=menu, clock=clock, hash_executor=hash_executor, monotonic=monotonic
    ).run()


class BusyCall(CallController):
    """Beyond the concurrency cap: "busy, call again later", through the same lifecycle."""

    async def execute(self) -> Outcome:
        self.log.warning("call_rejected_busy", caller=self.report.caller)
        await self.channel.answer()
        return await self.end(Outcome.BUSY, ["busy"])


async def busy_call(channel: Channel, *, store: CallStore, clock: Callable[[], datetime] = utc_now) -> None:
    """Beyond the concurrency cap: say "busy, call again later" and end the call (and record it)."""
    await BusyCall(channel, store=store, menu=MenuSettings(), clock=clock).run()
