"""``CredentialBackend`` over the credential core (``core.auth``, ``core.otp``).

Each method opens its own database session and transaction and commits whatever the outcome when
the outcome is part of the state (failure counters, audit events). All of it is blocking: the app
calls these methods through ``run_in_threadpool``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core import auth, limits, throttle, web_sessions
from core.db import make_engine, make_session_factory, read_session_factory_for
from core.enums import AuthUnit, CredentialKind, CredentialState
from core.models import PhoneNumber
from core.otp import choice, codes, confirmation, registration
from core.otp.common import OtpNotAvailable, UnknownNumber
from core.password_rules import confirmation_id_violations, confirmation_password_violations
from core.policy import PolicyLike
from core.secrets import SecretHasher, default_hasher
from web_stub.backend import (
    CodeStatus,
    CodeUnavailable,
    ConfirmationStatus,
    InputRefused,
    IssuedCode,
    LinkOutcome,
    LoginOutcome,
    NumberServices,
    OtpState,
    SessionRecord,
    WebLimits,
)

LOGIN_CLIENT_SCOPE = "login_client"


class CoreBackend:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        policy: PolicyLike,
        limits: WebLimits | None = None,
        *,
        hasher: SecretHasher | None = None,
    ) -> None:
        self._sessions = session_factory
        self._policy = policy
        self._hasher = hasher or default_hasher()  # every hash and check of the web goes through it
        self._limits = limits or WebLimits()
        self._times = web_sessions.SessionTimes(self._limits.idle_seconds, self._limits.lifetime_seconds)
        self._client_budget = throttle.Budget(
            self._limits.login_failures_per_client, self._limits.login_failure_window_seconds
        )
        self._code_budget = throttle.Budget(
            self._limits.otp_wrong_codes_per_number, self._limits.otp_wrong_code_window_seconds
        )
        self._mail_budget = throttle.Budget(
            self._limits.otp_mails_per_number, self._limits.otp_mail_window_seconds
        )
        self._confirmation_budget = throttle.Budget(
            self._limits.confirmation_failures_per_number, self._limits.confirmation_failure_window_seconds
        )

    @property
    def session_factory(self) -> sessionmaker[Session]:
        """Its database sessions (web_stub.ops counts lockouts and errors on them)."""
        return self._sessions

    @classmethod
    def open(
        cls, database_url: str, credentials: PolicyLike, web: Any, *, hasher: SecretHasher | None = None
    ) -> CoreBackend:
        """The backend on ``database_url`` with the credential policy and the web's limits."""
        engine = make_engine(database_url)
        return cls(make_session_factory(engine), credentials, WebLimits.from_web_settings(web), hasher=hasher)

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    # ------------------------------------------------------------------ login and passwords
    def login(self, *, number: str, password: str, now: datetime, client: str | None = None) -> LoginOutcome:
        taken = None
        if client is not None:
            with self._tx() as session:  # committed before any password check
                throttle.sweep(session, now=now, batch=50)
                taken = throttle.take(
                    session, scope=LOGIN_CLIENT_SCOPE, key=client[:80], now=now, budget=self._client_budget
                )
            if not taken.allowed:
                return LoginOutcome("throttled", retry_after_seconds=taken.retry_after_seconds)
        if len(password) > self._limits.max_secret_chars:
            return LoginOutcome("wrong")  # longer than any password: refused without hashing it
        # no database lock across the hash: reserve the try, commit, check, settle (core.auth.log_in)
        result = auth.log_in(
            self._sessions,
            number=number,
            password=password,
            now=now,
            policy=self._policy,
            hasher=self._hasher,
        )
        if result.status == "ok" and taken is not None and client is not None:
            with self._tx() as session:
                throttle.give_back(session, scope=LOGIN_CLIENT_SCOPE, key=client[:80], taken=taken)
        if result.status == "wrong":
            return LoginOutcome("wrong")
        if result.status == "locked":
            kind = result.credential_kind
            return LoginOutcome(
                "invalidated",
                number=result.identity_number,
                temporary=None if kind is None else kind is CredentialKind.TEMPORARY,
            )
        if result.status == "expired":
            return LoginOutcome("temporary_expired", number=result.identity_number)
        assert result.identity_number is not None and result.unit is not None
        return LoginOutcome(
            "ok",
            number=result.identity_number,
            contract_id=result.contract_id,
            unit=str(result.unit),
            role=result.role,
            must_change_password=result.must_change_password,
            change_reason=result.change_reason,
            otp=self.otp_state(number=result.identity_number),
        )

    # ------------------------------------------------------------------ sessions
    @staticmethod
    def _record(row: web_sessions.LoginSession) -> SessionRecord:
        """The row's columns of the record's field names."""
        return SessionRecord(**{column.name: getattr(row, column.name) for column in fields(SessionRecord)})

    def session_open(
        self, *, id_hash: str, now: datetime, stage: str, number: str, data: str, sealed: str | None
    ) -> SessionRecord:
        with self._tx() as session:
            row = web_sessions.open_session(
                session,
                id_hash=id_hash,
                now=now,
                times=self._times,
                stage=stage,
                number=number,
                data=data,
                sealed=sealed,
            )
            return self._record(row)

    def session_load(self, *, id_hash: str, now: datetime) -> tuple[SessionRecord | None, str | None]:
        with self._tx() as session:
            row, verdict = web_sessions.load_session(session, id_hash=id_hash, now=now, times=self._times)
            if row is not None:
                return self._record(row), None
            return None, (str(verdict) if verdict else None)

    def session_save(
        self,
        *,
        id_hash: str,
        now: datetime,
        stage: str,
        data: str,
        sealed: str | None,
        new_id_hash: str | None,
        resnapshot: bool,
    ) -> None:
        with self._tx() as session:
            web_sessions.save_session(
                session,
                id_hash=id_hash,
                now=now,
                times=self._times,
                stage=stage,
                data=data,
                sealed=sealed,
                new_id_hash=new_id_hash,
                resnapshot=resnapshot,
            )

    def session_delete(self, *, id_hash: str) -> None:
        with self._tx() as session:
            web_sessions.delete_session(session, id_hash=id_hash)

    def change_password(
        self, *, number: str, current_password: str, new_password: str, now: datetime
    ) -> list[str]:
        """No lock across a hash: the current password's try is reserved and committed, then both
        passwords are checked and the new one hashed, then one transaction stores (core.auth)."""
        try:
            auth.change_password_in_steps(
                self._sessions,
                number=number,
                new_password=new_password,
                current_password=current_password,
                now=now,
                policy=self._policy,
                hasher=self._hasher,
            )
        except auth.CurrentPasswordWrong as exc:
            return {"wrong": ["current_wrong"], "expired": ["temporary_expired"]}.get(exc.status, ["locked"])
        except auth.PasswordRuleError as exc:
            return list(exc.reasons)
        return []

    def scope(self, *, contract_id: int, unit: str, number: str) -> list[NumberServices]:
        with self._tx() as session:
            numbers = auth.login_scope(
                session, contract_id=contract_id, unit=AuthUnit(unit), login_number=number
            )
            rows = {
                row.number: row
                for row in session.scalars(select(PhoneNumber).where(PhoneNumber.number.in_(numbers)))
            }
            return [
                NumberServices(number=n, services=[s.label_ja for s in rows[n].service_codes])
                for n in numbers
                if n in rows
            ]

    def unit_change_numbers(
        self, *, contract_id: int, new_unit: str, login_number: str, now: datetime
    ) -> list[str]:
        with self._tx() as session:
            return auth.unit_change_password_numbers(
                session,
                contract_id=contract_id,
                new_unit=AuthUnit(new_unit),
                login_number=login_number,
                now=now,
                policy=self._policy,
            )

    def check_password(self, *, number: str, password: str, now: datetime) -> str:
        if len(password) > self._limits.max_secret_chars:
            return "wrong"
        return auth.check_password_in_steps(
            self._sessions,
            number=number,
            password=password,
            now=now,
            policy=self._policy,
            hasher=self._hasher,
        )

    def otp_registered_numbers(self, *, numbers: list[str]) -> list[str]:
        found = []
        with read_session_factory_for(self._sessions)() as session, session.begin():
            for number in numbers:
                state = choice.otp_state(session, number=number)
                if state.has_confirmation or state.mail_address is not None or state.status == "pending":
                    found.append(number)
        return found

    def otp_release(self, *, numbers: list[str], now: datetime) -> list[str]:
        with self._tx() as session:
            return registration.release_registrations(session, numbers=numbers, now=now)

    def contract_size(self, *, contract_id: int) -> int:
        with read_session_factory_for(self._sessions)() as session:
            count = session.scalar(
                select(func.count()).select_from(PhoneNumber).where(PhoneNumber.contract_id == contract_id)
            )
            return int(count or 0)

    def change_unit(
        self, *, contract_id: int, new_unit: str, login_number: str, passwords: dict[str, str], now: datetime
    ) -> dict[str, str]:
        try:  # no lock across a hash: tries reserved and committed, checked, then settled
            auth.change_unit_in_steps(
                self._sessions,
                contract_id=contract_id,
                new_unit=AuthUnit(new_unit),
                login_number=login_number,
                passwords=passwords,
                now=now,
                policy=self._policy,
                hasher=self._hasher,
            )
        except auth.UnitChangeError as exc:
            return dict(exc.problems)  # the tries were counted and committed
        return {}

    def password_marks(self, *, numbers: list[str], now: datetime) -> dict[str, bool]:
        with self._tx() as session:
            return {
                n: auth.credential_state_for(session, n, now=now, policy=self._policy)
                is not CredentialState.PERMANENT
                for n in numbers
            }

    def bulk_change_passwords(self, *, rows: list[tuple[str, str]], now: datetime) -> dict[int, list[str]]:
        """All or nothing. Every row is checked and hashed first (a read-only session, no write
        transaction open), then one transaction stores them all."""
        problems: dict[int, list[str]] = {}
        changes: list[auth.PasswordChange] = []
        with read_session_factory_for(self._sessions)() as session, session.begin():
            for index, (number, password) in enumerate(rows):
                try:
                    changes.append(
                        auth.prepare_password_change(
                            session, number=number, new_password=password, hasher=self._hasher
                        )
                    )
                except auth.PasswordRuleError as exc:
                    problems[index] = list(exc.reasons)
                except auth.UnknownIdentity:
                    problems[index] = ["not_in_scope"]
        if problems:
            return problems
        with self._tx() as session:
            for change in changes:
                auth.apply_password_change(session, change, now=now, policy=self._policy)
        return problems

    def bulk_otp_settings(
        self, *, rows: list[tuple[str, bool, str, str, str]], now: datetime
    ) -> tuple[dict[int, dict[str, list[str]]], dict[int, str]]:
        problems: dict[int, dict[str, list[str]]] = {}
        tokens: dict[int, str] = {}
        prepared: dict[int, registration.NewRegistration] = {}
        for index, (_number, use, mail, confirmation_id, confirmation_password) in enumerate(rows):
            if not use:
                continue
            try:  # checked and hashed before the transaction: no lock is held across a hash
                prepared[index] = registration.prepare_registration(
                    mail_address=mail,
                    confirmation_id=confirmation_id,
                    confirmation_password=confirmation_password,
                    hasher=self._hasher,
                )
            except registration.OtpInputError as exc:
                problems[index] = exc.problems
        with self._sessions() as session:
            session.begin()
            for index, (number, use, *_) in enumerate(rows):
                if index in problems:
                    continue
                try:
                    with session.begin_nested():
                        if not use:
                            choice.decline_otp(session, number=number, now=now)
                            continue
                        tokens[index] = registration.start_registration(
                            session,
                            number=number,
                            registration=prepared[index],
                            now=now,
                            policy=self._policy,
                            replace_registered=True,  # the admin's bulk settings (seed P27)
                        )
                except UnknownNumber:
                    problems[index] = {"number": ["unknown"]}
            if problems:
                session.rollback()
                return problems, {}
            session.commit()
        return {}, tokens

    def confirmation_id_violations(self, value: str) -> list[str]:
        return confirmation_id_violations(value)

    def confirmation_password_violations(self, value: str) -> list[str]:
        return confirmation_password_violations(value)

    # ------------------------------------------------------------------ one-time password
    def otp_state(self, *, number: str) -> OtpState:
        with self._tx() as session:
            state = choice.otp_state(session, number=number)
        return OtpState(state.status, state.mail_address)

    def otp_decline(self, *, number: str, now: datetime) -> None:
        with self._tx() as session:
            choice.decline_otp(session, number=number, now=now)

    def otp_disable(self, *, number: str, now: datetime) -> None:
        self.otp_decline(number=number, now=now)

    def otp_enable(self, *, number: str, now: datetime) -> OtpState:
        with self._tx() as session:
            choice.choose_otp(session, number=number, now=now)
        return self.otp_state(number=number)

    def otp_register(
        self,
        *,
        number: str,
        email: str,
        confirmation_id: str,
        confirmation_password: str,
        now: datetime,
    ) -> str:
        try:
            prepared = registration.prepare_registration(  # hashed before the transaction
                mail_address=email,
                confirmation_id=confirmation_id,
                confirmation_password=confirmation_password,
                hasher=self._hasher,
            )
            with self._tx() as session:
                return registration.start_registration(
                    session, number=number, registration=prepared, now=now, policy=self._policy
                )
        except registration.OtpInputError as exc:
            raise InputRefused(exc.problems) from None
        except OtpNotAvailable as exc:
            raise InputRefused({"registration": [exc.reason]}) from None

    def otp_change_address(self, *, number: str, email: str, now: datetime) -> str:
        try:
            # hashed before the transaction
            prepared = registration.prepare_address_change(mail_address=email, hasher=self._hasher)
            with self._tx() as session:
                return registration.start_address_change(
                    session, number=number, registration=prepared, now=now, policy=self._policy
                )
        except registration.OtpInputError as exc:
            raise InputRefused(exc.problems) from None
        except OtpNotAvailable as exc:
            raise InputRefused({"mail_address": [exc.reason]}) from None

    def otp_confirm_link(self, *, token: str, now: datetime) -> LinkOutcome:
        result = registration.complete_registration_in_steps(
            self._sessions, token=token, now=now, policy=self._policy, hasher=self._hasher
        )
        return LinkOutcome(result.status, result.number)

    def otp_issue_code(self, *, number: str, login_attempt_id: str, now: datetime) -> IssuedCode:
        new_code = codes.prepare_code(self._hasher)  # hashed before the transaction
        try:
            with self._tx() as session:
                mail = limits.take_code_mail(session, number=number, now=now, budget=self._mail_budget)
                if not mail.allowed:
                    raise CodeUnavailable("too_many_mails", mail.retry_after_seconds)
                issued = codes.issue_code(
                    session,
                    number=number,
                    login_attempt_id=login_attempt_id,
                    code=new_code,
                    now=now,
                    policy=self._policy,
                )
        except OtpNotAvailable as exc:
            raise CodeUnavailable(exc.reason) from None
        return IssuedCode(code=issued.code, email=issued.mail_address)

    def otp_mail_failed(self, *, number: str, now: datetime) -> None:
        with self._tx() as session:
            taken = throttle.current(
                session, scope=limits.OTP_MAIL_SCOPE, key=number, now=now, budget=self._mail_budget
            )
            if taken.count:
                throttle.give_back(
                    session,
                    scope=limits.OTP_MAIL_SCOPE,
                    key=number,
                    taken=throttle.Taken(True, taken.count, taken.window_started_at),
                )

    def otp_verify_code(self, *, number: str, login_attempt_id: str, code: str, now: datetime) -> CodeStatus:
        """Both counts (the attempt's wrong codes, the number's wrong codes across attempts) are
        taken and the try reserved in one transaction, committed before the code is checked; the
        result is recorded in a second one (no lock is held across the hash)."""
        with self._tx() as session:
            taken = limits.take_code_check(session, number=number, now=now, budget=self._code_budget)
            if not taken.allowed:
                limits.invalidate_password(session, number=number, now=now, reason="otp_codes")
                return CodeStatus.INVALIDATED
            ticket = codes.reserve_code_check(
                session, number=number, login_attempt_id=login_attempt_id, now=now, policy=self._policy
            )
            if isinstance(ticket, CodeStatus):  # no try spent
                status = self._settle_code_count(session, number=number, now=now, taken=taken, status=ticket)
        if isinstance(ticket, CodeStatus):
            if ticket is CodeStatus.NONE:
                # a dummy check (committed first): same time as a real one
                codes.code_matches(None, code, self._hasher)
            return status
        ok = codes.code_matches(ticket, code, self._hasher)
        with self._tx() as session:
            result = codes.settle_code_check(session, ticket, ok=ok, now=now)
            return self._settle_code_count(session, number=number, now=now, taken=taken, status=result)

    def _settle_code_count(
        self, session: Session, *, number: str, now: datetime, taken: throttle.Taken, status: CodeStatus
    ) -> CodeStatus:
        """Give the number's count back unless the code was wrong; at the limit, invalidate."""
        if status not in (CodeStatus.WRONG, CodeStatus.TOO_MANY):
            throttle.give_back(
                session, scope=limits.OTP_CODE_SCOPE, key=limits.credential_key(session, number), taken=taken
            )
        elif taken.count >= self._code_budget.limit:
            limits.invalidate_password(session, number=number, now=now, reason="otp_codes")
            return CodeStatus.INVALIDATED
        return status

    def otp_settings_locked(self, *, number: str) -> bool:
        with self._tx() as session:
            return limits.otp_settings_locked(session, number=number)

    def _counted_confirmation(self, session: Session, *, number: str, now: datetime) -> throttle.Taken | None:
        """One confirmation try taken (None: the settings are, or now become, locked)."""
        if limits.otp_settings_locked(session, number=number):
            return None
        taken = limits.take_confirmation_check(
            session, number=number, now=now, budget=self._confirmation_budget
        )
        if not taken.allowed:
            limits.lock_otp_settings(session, number=number, now=now)
            return None
        return taken

    def _settle_confirmation(
        self, session: Session, *, number: str, now: datetime, taken: throttle.Taken, wrong: bool
    ) -> bool:
        """Give a try back when it was not a wrong one; lock at the limit. True: now locked."""
        if not wrong:
            key = limits.confirmation_key(session, number)
            throttle.give_back(session, scope=limits.CONFIRMATION_SCOPE, key=key, taken=taken)
            return False
        if taken.count >= self._confirmation_budget.limit:
            limits.lock_otp_settings(session, number=number, now=now)
            return True
        return False

    def otp_check_confirmation(
        self, *, number: str, confirmation_id: str, confirmation_password: str, now: datetime
    ) -> ConfirmationStatus:
        """The try is counted and committed before the check, which runs with no transaction open;
        a second transaction records it (the 5-failure lock stays exact under concurrency)."""
        with self._tx() as session:
            taken = self._counted_confirmation(session, number=number, now=now)
            if taken is None:
                return "locked"
            hashes = confirmation.confirmation_hashes(session, number=number)
        ok = confirmation.confirmation_matches(
            hashes,
            confirmation_id=confirmation_id,
            confirmation_password=confirmation_password,
            hasher=self._hasher,
        )
        with self._tx() as session:
            confirmation.record_confirmation_check(session, hashes, ok=ok, now=now)
            if self._settle_confirmation(session, number=number, now=now, taken=taken, wrong=not ok):
                return "locked"
            return "ok" if ok else "wrong"

    def _change_confirmation(
        self, which: str, *, number: str, current: str, new: str, now: datetime
    ) -> list[str]:
        with self._tx() as session:
            taken = self._counted_confirmation(session, number=number, now=now)
            if taken is None:
                return ["locked"]
            hashes = confirmation.confirmation_hashes(session, number=number)
        # the current value checked and the new one hashed with no transaction open
        change = confirmation.prepare_confirmation_change(
            hashes, which=which, current=current, new=new, hasher=self._hasher
        )
        with self._tx() as session:
            reasons = confirmation.apply_confirmation_change(session, change, now=now)
            wrong = "current_wrong" in reasons
            if self._settle_confirmation(session, number=number, now=now, taken=taken, wrong=wrong):
                return ["locked"]
            return reasons

    def otp_change_confirmation_id(self, *, number: str, current: str, new: str, now: datetime) -> list[str]:
        return self._change_confirmation("id", number=number, current=current, new=new, now=now)

    def otp_change_confirmation_password(
        self, *, number: str, current: str, new: str, now: datetime
    ) -> list[str]:
        return self._change_confirmation("password", number=number, current=current, new=new, now=now)
