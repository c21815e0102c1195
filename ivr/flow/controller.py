"""A call's lifecycle, apart from its script (Adhearsion's CallController: `run` owns the call's
life, `execute` is the call).

`CallController.run()` starts the call record, runs `execute()` (the script: what the caller hears
and types, in order), then tells the dialplan the outcome (``IVR_RESULT``, set last) and hangs up,
and finishes the record and the call's log line whatever happened: a hangup (`CallerHungUp`, an
exception out of any channel verb) becomes the outcome decided so far or ``caller_hung_up``, a
shutdown past the grace period ``system_error``, any other error ``system_error`` with the
apology played while the caller is still there. A script only asks (`ask`), plays (`play`) and
ends (`end`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, TypeVar

import structlog

from core.enums import AuthUnit
from ivr.channel import CallerHungUp, CallerIdKind, Channel, CollectResult, Digits, NoInput, Progress
from ivr.flow.store import CallStore
from ivr.settings import MenuSettings

if TYPE_CHECKING:
    from ivr.metrics import DaemonMetrics

T = TypeVar("T")

RESULT_VARIABLE = "IVR_RESULT"
LEFTOVER_KEYS_DROPPED = 4  # then "wrong-entry" plays once more, uninterruptible


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


class NoMatch:
    """What an entry's check returns when the entry is wrong (`NO_MATCH`); one that says why has
    its own `prompt` (played instead of "wrong-entry") and a `reason` for the call log."""

    __slots__ = ("prompt", "reason")

    def __init__(self, prompt: str = "wrong-entry", reason: str | None = None) -> None:
        self.prompt = prompt
        self.reason = reason

    def __repr__(self) -> str:
        return "NO_MATCH" if self.reason is None else f"NO_MATCH({self.reason})"


NO_MATCH: Final = NoMatch()


class TooManyWrong(Exception):
    """The step's last allowed entry was wrong."""

    def __init__(self, step: Step) -> None:
        super().__init__(step.value)
        self.step = step


class WaitTooLong(Exception):
    """A wait of the daemon (the database, the password's save) passed `menu.max_wait_seconds`:
    the caller hears the apology instead of waiting on."""

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


def utc_now() -> datetime:
    return datetime.now(UTC)


class CallController:
    """One call on one channel: `run()` is its life, `execute()` (a subclass's) the script."""

    def __init__(
        self,
        channel: Channel,
        *,
        store: CallStore,
        menu: MenuSettings,
        clock: Callable[[], datetime] = utc_now,
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
        self.log = structlog.get_logger("ivr.call")
        self._decided: Outcome | None = None  # set just before the closing prompt plays
        caller = channel.caller
        self.report = CallReport(
            call_id=channel.call_id,
            caller=caller.number if caller.kind is CallerIdKind.NUMBER else caller.kind.value,
            service_number=channel.service_number,
            started_at=clock(),
        )

    async def execute(self) -> Outcome:
        """The call itself: what the caller hears and types, in order. Returns how it ended."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the call's life

    async def run(self) -> CallReport:
        """The call's whole life around `execute`: the record started and finished, the outcome
        set on the line, a hangup, a shutdown or an error turned into an outcome (with the apology
        where the caller is still there), and the call's last log line."""
        report = self.report
        monotonic_start = time.monotonic()
        with structlog.contextvars.bound_contextvars(call_id=report.call_id):
            self.log.info(
                "call_started",
                caller=report.caller,
                caller_kind=self.channel.caller.kind.value,
                service_number=report.service_number,
            )
            # A batching store only queues the start: done here, nothing to wait for. A store that
            # writes it gets a task, which goes on whatever happens to the call meanwhile, so that
            # a shutdown cutting the call here finishes a record that exists (`_finish_cut_record`).
            queued = self.store.queues_call_records
            start_task = None if queued else asyncio.ensure_future(self._record_start())
            try:
                if start_task is None:
                    record_started = self._start_record()
                else:
                    record_started = await asyncio.shield(start_task)
                if not record_started:
                    raise RuntimeError("call record could not be started")
                report.outcome = await self.execute()
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
                await asyncio.shield(self._finish_cut_record(start_task))
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

    # ------------------------------------------------------------------ what a script does

    async def ask(
        self,
        step: Step,
        prompts: Sequence[str],
        *,
        max_digits: int,
        terminator: str | None,
        accept: Callable[[Digits], Awaitable[T | NoMatch]],
        fixed_length: bool = False,
    ) -> T:
        """Ask until ``accept`` takes an entry (it returns the value, or `NO_MATCH`); the
        `max_wrong_entries`-th wrong entry (no input counts) raises `TooManyWrong`.

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
            value = await accept(result) if isinstance(result, Digits) else NO_MATCH
            accepted = not isinstance(value, NoMatch)
            refused = value.reason if isinstance(value, NoMatch) else None
            self._log_entry(
                step, attempt, result, accepted=accepted, started=asked_at, ended=ended_at, refused=refused
            )
            if not isinstance(value, NoMatch):
                return value
            self.report.wrong_entries += 1
            if attempt >= self.menu.max_wrong_entries:
                raise TooManyWrong(step)
            attempt += 1
            self._full_entry_at = None
            await self._say_wrong_entry(ended_at, value.prompt)

    async def _say_wrong_entry(self, entry_ended: float, prompt: str = "wrong-entry") -> None:
        """Play "wrong-entry", interruptible: a key that stops it is the caller's retry and the first
        key of the next try. Keys that stop it within `menu.leftover_key_seconds` of the wrong
        entry's last key are left over from that entry (a 9th key, a trailing #): they are dropped
        and "wrong-entry" plays again, so they cannot spoil the next try."""
        last_key = entry_ended
        for _ in range(LEFTOVER_KEYS_DROPPED):
            self.report.prompts.append(prompt)
            key = await self.channel.play([prompt], interruptible=True)
            now = self.monotonic()
            if key is None or now - last_key > self.menu.leftover_key_seconds:
                return
            self.channel.discard_typed_ahead()
            last_key = now
        self.report.prompts.append(prompt)
        await self.channel.play([prompt], interruptible=False)

    def _log_entry(
        self,
        step: Step,
        attempt: int,
        result: CollectResult,
        *,
        accepted: bool,
        started: float,
        ended: float,
        refused: str | None = None,
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
            if refused is not None:
                fields["refused"] = refused  # why (e.g. "repeated_run"), never what was typed
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

    async def wait_for(
        self, work: asyncio.Future[T], sound: Progress, *, abandon: Callable[[], bool] | None = None
    ) -> T:
        """The result of `work` (a lookup, a save), with no dead air while it comes.

        Done within `menu.progress_after_seconds`: returned at once. Later: the progress `sound`
        starts (without blocking) and stops as soon as `work` is done, so the next prompt follows
        at once. Not done within `menu.max_wait_seconds` of the start: `abandon` is asked (a save's
        guard: True when nothing will be committed) and `WaitTooLong` raised, so the caller hears
        the apology; when `abandon` says the commit has begun, its result is awaited instead. A
        hangup during the wait leaves the work stored or not, never half: it is abandoned if it
        still can be, else awaited, so the report says which; so does a channel that fails.
        """
        if not work.done():
            await asyncio.wait((work,), timeout=self.menu.progress_after_seconds)
        if not work.done():
            await self._wait_with_progress(work, sound, abandon)
        return work.result()

    async def _wait_with_progress(
        self, work: asyncio.Future[Any], sound: Progress, abandon: Callable[[], bool] | None
    ) -> None:
        step = self.report.last_step
        started = self.monotonic()
        if self.metrics is not None:
            self.metrics.progress_sound(step.value)
        try:
            await self.channel.start_progress(sound)
            self.log.info("progress_sound_started", step=step.value, sound=sound.value)
            rest = self.menu.max_wait_seconds - self.menu.progress_after_seconds
            await asyncio.wait((work,), timeout=max(0.0, rest))
            if not work.done():
                if abandon is None or abandon():
                    _let_go(work, abandoned=abandon is not None)
                    self.log.warning("wait_too_long", step=step.value, sound=sound.value)
                    if self.metrics is not None:
                        self.metrics.wait_too_long(step.value)
                    await self.channel.stop_progress()
                    raise WaitTooLong(step)
                self.log.info("wait_past_limit_commit_begun", step=step.value)
                await asyncio.wait((work,))  # the commit has begun: its result decides
            await self.channel.stop_progress()
        except WaitTooLong:
            raise
        except Exception:  # the caller hung up, the channel failed: stored or not, never half
            if not work.done() and (abandon is None or abandon()):
                _let_go(work, abandoned=abandon is not None)
            else:
                await asyncio.wait((work,))
            raise
        self.log.info(
            "progress_sound_stopped", step=step.value, wait_ms=round((self.monotonic() - started) * 1000)
        )

    async def play(self, prompts: Sequence[str], *, interruptible: bool) -> None:
        self.report.prompts.extend(prompts)
        await self.channel.play(prompts, interruptible=interruptible)

    async def end(self, outcome: Outcome, prompts: Sequence[str]) -> Outcome:
        """The call ends with ``outcome`` once ``prompts`` (uninterruptible) have played; a caller who
        hangs up meanwhile does not change it."""
        self._decided = outcome
        await self.play(prompts, interruptible=False)
        return outcome

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

    async def _record_start(self) -> bool:
        """The record's start, written in a thread (a store that writes each record itself)."""
        return await asyncio.to_thread(self._start_record)

    def _start_record(self) -> bool:
        """The record's start (queued at once when the store batches records); False: not written."""
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

    async def _finish_cut_record(self, start_task: asyncio.Task[bool] | None) -> None:
        """The finish of a call cut by the shutdown: after its start, if that was written. A queued
        start (no task) was, or the call would not have got past it."""
        if start_task is None or await start_task:
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


def forget_task(task: asyncio.Future[Any]) -> None:
    """Cancel a task whose result is no longer wanted (an exception it ended with is retrieved, so
    asyncio does not report it as never retrieved)."""
    if task.done():
        if not task.cancelled():
            task.exception()
    else:
        task.cancel()


def _let_go(work: asyncio.Future[Any], *, abandoned: bool) -> None:
    """Stop waiting for `work`. Work that was told it is abandoned (a save's guard) runs on to its
    end, which writes nothing (and logs that it did not); other work is cancelled."""
    if abandoned:
        work.add_done_callback(lambda done: None if done.cancelled() else done.exception())
    else:
        forget_task(work)


async def write_call_record(store: CallStore, method: Callable[..., None], **fields: Any) -> None:
    """A call-record write: queued at once when the store batches them, else in a thread."""
    if store.queues_call_records:
        method(**fields)
    else:
        await asyncio.to_thread(method, **fields)
