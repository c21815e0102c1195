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
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from core.enums import AuthUnit
from core.phone import InvalidPhoneNumber, normalize_number
from core.phone_line import CallerLine, target_number_for, temporary_password_problem
from core.secrets import constant_time_equals
from ivr.channel import CallerHungUp, CallerIdKind, Channel, CollectResult, Digits, NoInput, digit_prompts
from ivr.flow.store import CallStore
from ivr.settings import MenuSettings

if TYPE_CHECKING:
    from ivr.metrics import DaemonMetrics

T = TypeVar("T")

RESULT_VARIABLE = "IVR_RESULT"
NUMBER_MAX_DIGITS = 15  # longer than any national number, so an overlong entry is seen as wrong
LEFTOVER_KEYS_DROPPED = 4  # then "wrong-entry" plays once more, uninterruptible
PASSWORD_DIGITS = 8  # the operator guide: the entry ends at the 8th key; later keys are the next step's


class Outcome(StrEnum):
    COMPLETED = "completed"
    TOO_MANY_WRONG_UNIT = "too_many_wrong_unit"
    TOO_MANY_WRONG_NUMBER = "too_many_wrong_number"
    TOO_MANY_WRONG_PASSWORD = "too_many_wrong_password"
    CALLER_HUNG_UP = "caller_hung_up"
    CALLER_ID_WITHHELD = "caller_id_withheld"
    CALLER_NOT_ELIGIBLE = "caller_not_eligible"
    SYSTEM_ERROR = "system_error"
    BUSY = "busy"


class Step(StrEnum):
    ANSWER = "answer"
    IDENTIFY = "identify"
    UNIT = "unit"
    NUMBER = "number"
    PASSWORD = "password"
    CONFIRM = "confirm"
    SAVE = "save"
    FAREWELL = "farewell"


_TOO_MANY = {
    Step.UNIT: Outcome.TOO_MANY_WRONG_UNIT,
    Step.NUMBER: Outcome.TOO_MANY_WRONG_NUMBER,
    Step.PASSWORD: Outcome.TOO_MANY_WRONG_PASSWORD,
    Step.CONFIRM: Outcome.TOO_MANY_WRONG_PASSWORD,
}


class _TooManyWrong(Exception):
    def __init__(self, step: Step) -> None:
        super().__init__(step.value)
        self.step = step


@dataclass
class CallReport:
    """What happened on one call (also what goes into the call record)."""

    call_id: str
    caller: str | None
    service_number: str | None
    started_at: datetime
    outcome: Outcome | None = None
    last_step: Step = Step.ANSWER
    unit: AuthUnit | None = None
    target_number: str | None = None
    wrong_entries: int = 0
    password_stored: bool = False
    ended_at: datetime | None = None
    prompts: list[str] = field(default_factory=list)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class TemporaryPasswordCall:
    """Holds the call's collaborators; `run()` is the flow."""

    def __init__(
        self,
        channel: Channel,
        *,
        store: CallStore,
        menu: MenuSettings,
        clock: Callable[[], datetime] = _utcnow,
        hash_executor: Executor | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        metrics: DaemonMetrics | None = None,
    ) -> None:
        self.channel = channel
        self.metrics = metrics  # ivr.metrics: step durations, wrong entries, hash times
        self.store = store
        self.menu = menu
        self.clock = clock
        self.monotonic = monotonic
        self._full_entry_at: float | None = None  # when the last fixed-length entry got its last key
        self.hash_executor = hash_executor  # None: the event loop's default thread pool
        self.log = structlog.get_logger("ivr.call")
        self._decided: Outcome | None = None  # set just before the closing prompt plays
        caller = channel.caller
        self.report = CallReport(
            call_id=channel.call_id,
            caller=caller.number if caller.kind is CallerIdKind.NUMBER else caller.kind.value,
            service_number=channel.service_number,
            started_at=clock(),
        )

    # ------------------------------------------------------------------ the call

    async def run(self) -> CallReport:
        report = self.report
        monotonic_start = time.monotonic()
        with structlog.contextvars.bound_contextvars(call_id=report.call_id):
            self.log.info(
                "call_started",
                caller=report.caller,
                caller_kind=self.channel.caller.kind.value,
                service_number=report.service_number,
            )
            # the start is written whatever happens to the call meanwhile, so that a shutdown
            # cutting the call here finishes a record that exists (not one still being written);
            # a batching store only queues it: done at once, no task, nothing to wait for
            record_start: asyncio.Future[bool]
            if self.store.queues_call_records:
                record_start = asyncio.get_running_loop().create_future()
                record_start.set_result(self._queue_record_start())
            else:
                record_start = asyncio.ensure_future(self._record_start())
            try:
                record_started = await asyncio.shield(record_start)
                if not record_started:
                    raise RuntimeError("call record could not be started")
                report.outcome = await self._menu()
                await self._finish_on_line(report.outcome)
            except CallerHungUp:
                # hanging up while hearing how the call ends does not change how it ended
                report.outcome = self._decided or (
                    Outcome.COMPLETED if report.password_stored else Outcome.CALLER_HUNG_UP
                )
                self.log.info("caller_hung_up", step=report.last_step.value)
            except asyncio.CancelledError:  # the daemon is shutting down past its grace period
                report.outcome = Outcome.COMPLETED if report.password_stored else Outcome.SYSTEM_ERROR
                self.log.warning("call_cut_by_shutdown", step=report.last_step.value)
                report.ended_at = self.clock()
                await asyncio.shield(self._finish_record_after(record_start))
                raise
            except Exception as exc:  # the caller must hear an apology, never dead air
                report.outcome = Outcome.COMPLETED if report.password_stored else Outcome.SYSTEM_ERROR
                self.log.error(
                    "call_failed", step=report.last_step.value, error_type=type(exc).__name__, exc_info=False
                )
                if report.outcome is Outcome.SYSTEM_ERROR:
                    await self._apologise()
            report.ended_at = self.clock()
            await self._record_finish()
            self.log.info(
                "call_finished",
                outcome=report.outcome.value if report.outcome else None,
                last_step=report.last_step.value,
                unit=report.unit.value if report.unit else None,
                target_number=report.target_number,
                wrong_entries=report.wrong_entries,
                duration_ms=round((time.monotonic() - monotonic_start) * 1000),
            )
        return report

    async def _menu(self) -> Outcome:
        channel, report = self.channel, self.report
        number = channel.caller.number if channel.caller.kind is CallerIdKind.NUMBER else None
        # The caller's line is looked up (in a thread) while ANSWER goes to Asterisk and back, so
        # the first prompt follows the answer with no database time in between.
        lookup = asyncio.ensure_future(self._lookup(number)) if number is not None else None
        try:
            await channel.answer()
        except BaseException:
            if lookup is not None:
                _forget(lookup)
            raise

        # 1. Who is calling: the line is identified by the caller ID alone.
        report.last_step = Step.IDENTIFY
        if lookup is None:
            self.log.info("caller_not_identified", caller_kind=channel.caller.kind.value)
            self._decided = Outcome.CALLER_ID_WITHHELD
            await self._play(["caller-id-withheld"], interruptible=False)
            return Outcome.CALLER_ID_WITHHELD
        line = await lookup
        if line is None:
            self._decided = Outcome.CALLER_NOT_ELIGIBLE
            await self._play(["caller-not-eligible"], interruptible=False)
            return Outcome.CALLER_NOT_ELIGIBLE
        self.log.debug(
            "caller_identified", contract_id=line.contract_id, is_contract_number=line.is_contract_number
        )

        # 2. The unit: 1 line, 2 number, 3 admin/user.
        try:
            unit = await self._ask(
                Step.UNIT, ["choose-unit"], max_digits=1, terminator=None, accept=_unit_key, fixed_length=True
            )
            report.unit = unit
            self.log.debug("unit_chosen", unit=unit.value)

            # 2'. The number, ending with #, when the unit needs one.
            entered: str | None = None
            if unit is AuthUnit.NUMBER or (unit is AuthUnit.ADMIN_USER and line.is_contract_number):
                entered = await self._ask(
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
            password = await self._ask(
                Step.PASSWORD,
                ["set-for-number-prefix", *read_back, "set-for-number-suffix"],
                max_digits=PASSWORD_DIGITS,
                terminator="#",
                accept=_valid_password,
                fixed_length=True,
            )
            await self._ask(
                Step.CONFIRM,
                ["confirm-password"],
                max_digits=PASSWORD_DIGITS,
                terminator="#",
                accept=lambda d: _same_password(password, d),
                fixed_length=True,
            )
        except _TooManyWrong as too_many:
            self.log.info("too_many_wrong", step=too_many.step.value)
            self._decided = _TOO_MANY[too_many.step]
            await self._play(["too-many-wrong"], interruptible=False)
            return _TOO_MANY[too_many.step]

        # 6. Store durably, and only then say it is done.
        report.last_step = Step.SAVE
        save_started = self.monotonic()
        password_hash = await asyncio.get_running_loop().run_in_executor(
            self.hash_executor, self.store.hash_password, password
        )
        hashed = self.monotonic()
        if self.metrics is not None:
            self.metrics.hashed(hashed - save_started)
        await asyncio.to_thread(  # the hash is done: no database lock is held across it
            self.store.save_temporary_password,
            line=line,
            unit=unit,
            target_number=target,
            password_hash=password_hash,
            now=self.clock(),
        )
        report.password_stored = True
        self.log.info(
            "temporary_password_stored",
            unit=unit.value,
            target_number=target,
            hash_ms=round((hashed - save_started) * 1000),
            store_ms=round((self.monotonic() - hashed) * 1000),
        )
        report.last_step = Step.FAREWELL
        await self._play(["set-for-number-prefix", *read_back, "completed-suffix"], interruptible=False)
        return Outcome.COMPLETED

    # ------------------------------------------------------------------ steps

    async def _ask(
        self,
        step: Step,
        prompts: Sequence[str],
        *,
        max_digits: int,
        terminator: str | None,
        accept: Callable[[Digits], Awaitable[T | None]],
        fixed_length: bool = False,
    ) -> T:
        """Ask until an entry is accepted; the `max_wrong_entries`-th wrong one raises.

        A fixed-length entry ends at its last key. A lone ``#`` that follows such an entry within
        `menu.leftover_key_seconds` is the caller's habit of ending every entry with ``#``, not an
        entry of this step: it is dropped, once, and the prompt asked again. After a wrong entry,
        see `_say_wrong_entry`.
        """
        self.report.last_step = step
        attempt = 1
        forgiven = False
        while True:
            asked_at = self.monotonic()
            result = await self.channel.collect_digits(
                prompts,
                max_digits=max_digits,
                terminator=terminator,
                first_digit_timeout=self.menu.first_digit_timeout_seconds,
                inter_digit_timeout=self.menu.inter_digit_timeout_seconds,
            )
            self.report.prompts.extend(prompts)
            ended_at = self.monotonic()
            previous_full, self._full_entry_at = self._full_entry_at, None
            if (
                not forgiven
                and isinstance(result, Digits)
                and result.value == ""
                and result.terminated
                and previous_full is not None
                and ended_at - previous_full <= self.menu.leftover_key_seconds
            ):
                forgiven = True
                self.log.info("step_trailing_terminator_dropped", step=step.value, attempt=attempt)
                continue
            if fixed_length and isinstance(result, Digits) and len(result.value) == max_digits:
                self._full_entry_at = ended_at
            value = await accept(result) if isinstance(result, Digits) else None
            accepted = value is not None
            self._log_entry(step, attempt, result, accepted=accepted, started=asked_at, ended=ended_at)
            if value is not None:
                return value
            self.report.wrong_entries += 1
            if attempt >= self.menu.max_wrong_entries:
                raise _TooManyWrong(step)
            attempt += 1
            self._full_entry_at = None
            await self._say_wrong_entry(ended_at)

    async def _say_wrong_entry(self, entry_ended: float) -> None:
        """Play "wrong-entry", interruptible: a key that stops it is the caller's retry and the first
        key of the next try. Keys that stop it within `menu.leftover_key_seconds` of the wrong
        entry's last key are left over from that entry (a 9th key, a trailing #): they are dropped
        and "wrong-entry" plays again, so they cannot spoil the next try."""
        last_key = entry_ended
        for _ in range(LEFTOVER_KEYS_DROPPED):
            self.report.prompts.append("wrong-entry")
            key = await self.channel.play(["wrong-entry"], interruptible=True)
            now = self.monotonic()
            if key is None or now - last_key > self.menu.leftover_key_seconds:
                return
            self.channel.discard_typed_ahead()
            last_key = now
        self.report.prompts.append("wrong-entry")
        await self.channel.play(["wrong-entry"], interruptible=False)

    def _log_entry(
        self, step: Step, attempt: int, result: CollectResult, *, accepted: bool, started: float, ended: float
    ) -> None:
        fields: dict[str, Any] = {
            "step": step.value,
            "attempt": attempt,
            "duration_ms": round((ended - started) * 1000),
        }
        if isinstance(result, NoInput):
            fields["result"] = "no_input"
        else:
            fields["result"] = "digits" if accepted else "no_match"
            fields["digit_count"] = len(result.value)
            fields["ended_by"] = (
                "terminator" if result.terminated else "timeout" if result.timed_out else "max"
            )
            if step is Step.UNIT:
                fields["key"] = result.value
            elif step is Step.NUMBER:
                fields["entered_number"] = result.value
        self.log.info("step", **fields)
        if self.metrics is not None:
            self.metrics.entry(step.value, accepted, ended - started)

    async def _lookup(self, caller_number: str) -> CallerLine | None:
        try:
            number = normalize_number(caller_number)
        except InvalidPhoneNumber as exc:
            self.log.info("caller_number_invalid", reason=exc.reason)
            return None
        return await asyncio.to_thread(self.store.lookup_caller, number)

    async def _number_on_contract(self, line: CallerLine, entry: Digits) -> str | None:
        try:
            number = normalize_number(entry.value)
        except InvalidPhoneNumber:
            return None
        on_contract = await asyncio.to_thread(self.store.number_on_contract, line.contract_id, number)
        return number if on_contract else None

    # ------------------------------------------------------------------ endings

    async def _play(self, prompts: Sequence[str], *, interruptible: bool) -> None:
        self.report.prompts.extend(prompts)
        await self.channel.play(prompts, interruptible=interruptible)

    async def _finish_on_line(self, outcome: Outcome) -> None:
        """Tell the dialplan how it went (IVR_RESULT, set last), then end the call."""
        await self.channel.set_variable(RESULT_VARIABLE, outcome.value)
        await self.channel.hang_up()

    async def _apologise(self) -> None:
        try:
            await self.channel.play(["system-error"], interruptible=False)
            self.report.prompts.append("system-error")
            await self._finish_on_line(Outcome.SYSTEM_ERROR)
        except Exception as exc:  # the line may be gone; the dialplan apologises then
            self.log.warning("apology_not_played", error_type=type(exc).__name__)

    def _queue_record_start(self) -> bool:
        report = self.report
        try:
            self.store.start_call(
                call_id=report.call_id,
                caller=report.caller,
                service_number=report.service_number,
                started_at=report.started_at,
            )
        except Exception as exc:
            self.log.error("call_record_start_failed", error_type=type(exc).__name__)
            return False
        return True

    async def _record_start(self) -> bool:
        report = self.report
        try:
            await write_call_record(
                self.store,
                self.store.start_call,
                call_id=report.call_id,
                caller=report.caller,
                service_number=report.service_number,
                started_at=report.started_at,
            )
        except Exception as exc:
            self.log.error("call_record_start_failed", error_type=type(exc).__name__)
            return False
        return True

    async def _finish_record_after(self, record_start: asyncio.Future[bool]) -> None:
        if await record_start:
            await self._record_finish()

    async def _record_finish(self) -> None:
        report = self.report
        try:
            await write_call_record(
                self.store,
                self.store.finish_call,
                call_id=report.call_id,
                ended_at=report.ended_at or self.clock(),
                outcome=(report.outcome or Outcome.SYSTEM_ERROR).value,
                unit=report.unit.value if report.unit else None,
                target_number=report.target_number,
                last_step=report.last_step.value,
                wrong_entries=report.wrong_entries,
            )
        except Exception as exc:
            self.log.error("call_record_finish_failed", error_type=type(exc).__name__)


def _forget(task: asyncio.Future[Any]) -> None:
    """Cancel a task whose result is no longer wanted (an exception it ended with is retrieved, so
    asyncio does not report it as never retrieved)."""
    if task.done():
        if not task.cancelled():
            task.exception()
    else:
        task.cancel()


async def write_call_record(store: CallStore, method: Callable[..., None], **fields: Any) -> None:
    """A call-record write: queued at once when the store batches them, else in a thread."""
    if store.queues_call_records:
        method(**fields)
    else:
        await asyncio.to_thread(method, **fields)


async def _unit_key(entry: Digits) -> AuthUnit | None:
    try:
        return AuthUnit.from_menu_key(entry.value)
    except ValueError:
        return None


async def _valid_password(entry: Digits) -> str | None:
    return entry.value if temporary_password_problem(entry.value) is None else None


async def _same_password(first: str, entry: Digits) -> bool | None:
    same = constant_time_equals(first, entry.value)
    return True if same else None


async def temporary_password_call(
    channel: Channel,
    *,
    store: CallStore,
    menu: MenuSettings,
    clock: Callable[[], datetime] = _utcnow,
    hash_executor: Executor | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> CallReport:
    """The temporary-password line, start to end, on one channel."""
    return await TemporaryPasswordCall(
        channel, store=store, menu=menu, clock=clock, hash_executor=hash_executor, monotonic=monotonic
    ).run()


async def busy_call(channel: Channel, *, store: CallStore, clock: Callable[[], datetime] = _utcnow) -> None:
    """Beyond the concurrency cap: say "busy, call again later" and end the call (and record it)."""
    log = structlog.get_logger("ivr.call")
    started = clock()
    caller = (
        channel.caller.number if channel.caller.kind is CallerIdKind.NUMBER else channel.caller.kind.value
    )
    with structlog.contextvars.bound_contextvars(call_id=channel.call_id):
        log.warning("call_rejected_busy", caller=caller)
        try:
            await channel.answer()
            await channel.play(["busy"], interruptible=False)
            await channel.set_variable(RESULT_VARIABLE, Outcome.BUSY.value)
            await channel.hang_up()
        except CallerHungUp:
            pass
        try:
            await write_call_record(
                store,
                store.start_call,
                call_id=channel.call_id,
                caller=caller,
                service_number=channel.service_number,
                started_at=started,
            )
            await write_call_record(
                store,
                store.finish_call,
                call_id=channel.call_id,
                ended_at=clock(),
                outcome=Outcome.BUSY.value,
                unit=None,
                target_number=None,
                last_step=Step.ANSWER.value,
                wrong_entries=0,
            )
        except Exception as exc:
            log.error("call_record_failed", error_type=type(exc).__name__)
