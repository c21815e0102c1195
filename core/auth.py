"""Login, scope, password change and authentication-unit change (what the web needs).

Synchronous and slow (argon2): async callers run these in a thread. The caller owns the session
and the transaction and should commit after :func:`authenticate` whatever its result: the failure
counter is part of the outcome.

Attempt counting is atomic in the database. Before a password is checked, one attempt is reserved
with a conditional ``UPDATE credentials SET failures = failures + 1 WHERE failures < limit``; only
a reservation that succeeded may run the check, and a success sets the counter back to 0. So 50
concurrent wrong attempts run at most 3 (temporary) or 10 (permanent) checks before the lock, on
SQLite (writers serialised by ``BEGIN IMMEDIATE``) and on PostgreSQL (row locks).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.audit import Audit
from core.db import readers_of
from core.directory import contract_number_list, find_number, number_row_on_contract
from core.enums import AuditEventType, AuthUnit, Channel, CredentialKind, CredentialState, OtpUsage
from core.models import Contract, Credential, OtpSettings, PhoneNumber
from core.password_rules import (
    confirmation_id_violations,
    confirmation_password_violations,
    password_rule_violations,
)
from core.phone import InvalidPhoneNumber, normalize_number
from core.policy import DEFAULT_POLICY, PolicyLike
from core.rules import (
    credential_state,
    identity_number_for,
    max_failures,
    must_change_password,
    permanent_expiry,
    role_for,
    scope_numbers,
)
from core.secrets import SecretHasher, default_hasher
from core.tries import reserve_try

__all__ = [
    "AttemptTicket",
    "CurrentPasswordWrong",
    "LoginResult",
    "PasswordChange",
    "PasswordRuleError",
    "UnitChangeError",
    "UnknownIdentity",
    "apply_password_change",
    "authenticate",
    "change_password_in_steps",
    "change_unit_in_steps",
    "check_attempt",
    "confirmation_id_violations",
    "confirmation_password_violations",
    "credential_state_for",
    "identity_for",
    "log_in",
    "login_scope",
    "password_rule_violations",
    "prepare_password_change",
    "reserve_attempt",
    "settle_attempt",
    "unit_change_password_numbers",
]

LoginStatus = Literal["ok", "wrong", "locked", "expired"]


class PasswordRuleError(ValueError):
    """The new password breaks rules; ``reasons`` are core.password_rules.PasswordRule codes."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = list(reasons)
        super().__init__("password rules not met: " + ", ".join(self.reasons))


class UnknownIdentity(LookupError):
    """The number is on no contract, or cannot log in under the contract's unit."""


class CurrentPasswordWrong(ValueError):
    def __init__(self, status: str) -> None:
        self.status = status
        super().__init__(f"current password check failed: {status}")


class UnitChangeError(ValueError):
    """``problems`` maps a number (or ``"*"``) to a reason code (``same_unit``, ``not_allowed``,
    ``password_required``, ``wrong_password``, ``locked``, ``expired``)."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = dict(problems)
        super().__init__("unit change refused: " + ", ".join(f"{k}={v}" for k, v in self.problems.items()))


@dataclass(frozen=True)
class LoginResult:
    status: LoginStatus
    must_change_password: bool = False
    change_reason: Literal["temporary", "expired"] | None = None
    identity_number: str | None = None
    contract_id: int | None = None
    unit: AuthUnit | None = None
    role: str | None = None  # "line" | "number" | "admin" | "user"
    credential_kind: CredentialKind | None = None
    remaining_attempts: int | None = None  # after this attempt (wrong/locked)
    otp_usage: OtpUsage | None = None
    otp_registered: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class Identity:
    """The number a login uses and the credential that belongs to it."""

    login_number: str
    contract: Contract
    phone: PhoneNumber  # the identity's number row (holds the credential)

    @property
    def credential(self) -> Credential | None:
        return self.phone.credential


def identity_for(session: Session, number: str) -> Identity | None:
    """Which identity logs in with ``number`` under its contract's current unit (None: none)."""
    row = find_number(session, number)
    if row is None:
        return None
    contract = row.contract
    identity_number = identity_number_for(contract.auth_unit, contract.contract_number, row.number)
    if identity_number is None:
        return None
    phone = (
        row
        if identity_number == row.number
        else number_row_on_contract(session, contract.id, identity_number)
    )
    if phone is None:
        return None
    return Identity(login_number=row.number, contract=contract, phone=phone)


def _identity_audit(session: Session, identity: Identity, *, now: datetime, channel: Channel | str) -> Audit:
    """Audit records about a login: the number it logs in with and its contract."""
    return Audit(session, now, channel, identity.login_number, identity.contract.id)


def _fresh_credential(session: Session, phone_number_id: int) -> Credential | None:
    return session.scalars(
        select(Credential)
        .where(Credential.phone_number_id == phone_number_id)
        .execution_options(populate_existing=True)
    ).one_or_none()


@dataclass(frozen=True)
class AttemptTicket:
    """What a reserved attempt needs after its transaction committed (no ORM object, no session)."""

    credential_id: int
    generation: int
    stored_hash: str
    limit: int
    reserved: int  # the failure count this attempt holds (1..limit)


def reserve_attempt(session: Session, *, credential: Credential, policy: PolicyLike) -> AttemptTicket | None:
    """Reserve one try: ``failures = failures + 1`` where tries are left, atomically (one UPDATE …
    RETURNING). None: no try left (locked). Commit before checking the password: the check runs
    outside any transaction (:func:`settle_attempt` records its result)."""
    limit = max_failures(credential.kind, policy)
    generation = credential.generation
    stored_hash = credential.secret_hash
    reserved = reserve_try(
        session,
        Credential.failures,
        Credential.id == credential.id,
        Credential.generation == generation,
        Credential.invalidated_at.is_(None),
        limit=limit,
    )
    credential_id = credential.id
    if credential in session:
        session.expire(credential)
    if reserved is None:
        return None
    return AttemptTicket(credential_id, generation, stored_hash, limit, reserved)


def check_attempt(ticket: AttemptTicket, password: str, hasher: SecretHasher) -> tuple[bool, str | None]:
    """The argon2 check of a reserved attempt, and a new hash when the stored one needs rehashing.
    Slow: run it with no transaction open."""
    if not hasher.verify(ticket.stored_hash, password):
        return False, None
    return True, hasher.hash(password) if hasher.needs_rehash(ticket.stored_hash) else None


def settle_attempt(
    session: Session, ticket: AttemptTicket, *, ok: bool, now: datetime, new_hash: str | None = None
) -> tuple[LoginStatus, int]:
    """Record a checked attempt. ``ok``: the counter goes back to 0 (the reservation released) and
    the rehash, if any, replaces the hash it was checked against; wrong with the last try: the
    credential is invalidated. All guarded by the generation (a password set meanwhile wins).
    Returns (status, remaining attempts)."""
    if ok:
        values: dict[str, object] = {"failures": 0, "last_success_at": now}
        session.execute(
            update(Credential)
            .where(Credential.id == ticket.credential_id, Credential.generation == ticket.generation)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if new_hash is not None:
            session.execute(
                update(Credential)
                .where(
                    Credential.id == ticket.credential_id,
                    Credential.generation == ticket.generation,
                    Credential.secret_hash == ticket.stored_hash,
                )
                .values(secret_hash=new_hash)
                .execution_options(synchronize_session=False)
            )
        return "ok", ticket.limit
    if ticket.reserved >= ticket.limit:
        session.execute(
            update(Credential)
            .where(
                Credential.id == ticket.credential_id,
                Credential.generation == ticket.generation,
                Credential.invalidated_at.is_(None),
            )
            .values(invalidated_at=now)
            .execution_options(synchronize_session=False)
        )
        return "locked", 0
    return "wrong", ticket.limit - ticket.reserved


def _checked_verify(
    session: Session,
    *,
    credential: Credential,
    password: str,
    now: datetime,
    policy: PolicyLike,
    hasher: SecretHasher,
) -> tuple[LoginStatus, int]:
    """Reserve, check, settle in the caller's one transaction. Returns (status, remaining attempts).

    Status ``ok``, ``wrong`` or ``locked`` (this attempt used the last try, or none was left).
    Does not look at expiry: callers decide that before spending an attempt. The check runs inside
    the caller's transaction (on SQLite: the write lock is held across it): services use the
    step-wise :func:`log_in` instead.
    """
    ticket = reserve_attempt(session, credential=credential, policy=policy)
    if ticket is None:
        return "locked", 0
    ok, new_hash = check_attempt(ticket, password, hasher)
    status = settle_attempt(session, ticket, ok=ok, now=now, new_hash=new_hash)
    session.expire(credential)
    return status


@dataclass
class _LoginView:
    """What a login reads before it spends a try."""

    audit_number: str | None
    identity: Identity | None
    credential: Credential | None
    state: CredentialState | None
    otp: OtpSettings | None

    @property
    def base(self) -> dict[str, Any]:
        assert self.identity is not None and self.credential is not None
        return {
            "identity_number": self.identity.login_number,
            "contract_id": self.identity.contract.id,
            "unit": self.identity.contract.auth_unit,
            "credential_kind": self.credential.kind,
        }


def _read_login(session: Session, number: str, now: datetime, policy: PolicyLike) -> _LoginView:
    try:
        audit_number: str | None = normalize_number(number)
    except InvalidPhoneNumber:
        audit_number = None
    identity = identity_for(session, number)
    credential = _fresh_credential(session, identity.phone.id) if identity else None
    if identity is None or credential is None:
        return _LoginView(audit_number, identity, None, None, None)
    otp = session.scalars(
        select(OtpSettings).where(OtpSettings.phone_number_id == identity.phone.id)
    ).one_or_none()
    return _LoginView(audit_number, identity, credential, credential_state(credential, now, policy), otp)


def _login_before_check(
    session: Session, view: _LoginView, *, now: datetime, channel: Channel | str
) -> LoginResult | None:
    """Audit and answer the logins that spend no try (unknown, invalidated, expired); None: go on.
    Unknown identities must have spent the dummy check's time already."""
    if view.identity is None or view.credential is None:
        identity = view.identity
        contract_id = identity.contract.id if identity else None
        Audit(session, now, channel, view.audit_number, contract_id).record(
            AuditEventType.LOGIN_FAILURE, "wrong", "unknown_identity" if identity is None else "no_credential"
        )
        return LoginResult(status="wrong")
    audit = _identity_audit(session, view.identity, now=now, channel=channel)
    if view.state is CredentialState.INVALIDATED:
        audit.record(AuditEventType.LOGIN_FAILURE, "locked", f"kind={view.credential.kind}")
        return LoginResult(status="locked", remaining_attempts=0, **view.base)
    if view.state is CredentialState.EXPIRED:
        audit.record(AuditEventType.LOGIN_FAILURE, "expired", "temporary_expired")
        return LoginResult(status="expired", **view.base)
    return None


def _login_after_check(
    session: Session,
    view: _LoginView,
    status: LoginStatus,
    remaining: int,
    *,
    now: datetime,
    policy: PolicyLike,
    channel: Channel | str,
) -> LoginResult:
    """Audit a checked (or refused for want of tries) login and build its result."""
    assert view.identity is not None and view.credential is not None
    identity, credential = view.identity, view.credential
    contract = identity.contract
    kind = credential.kind
    audit = _identity_audit(session, identity, now=now, channel=channel)
    if status != "ok":
        audit.record(AuditEventType.LOGIN_FAILURE, status, f"kind={kind} remaining={remaining}")
        if status == "locked" and remaining == 0:
            audit.record(AuditEventType.LOCKED, "locked", f"kind={kind}")
        return LoginResult(status=status, remaining_attempts=remaining, **view.base)

    change = must_change_password(credential, now, policy)
    reason: Literal["temporary", "expired"] | None = None
    if change:
        reason = "temporary" if kind is CredentialKind.TEMPORARY else "expired"
    otp = view.otp
    audit.record(
        AuditEventType.LOGIN_SUCCESS, "ok", f"kind={kind}" + (f" must_change={reason}" if reason else "")
    )
    return LoginResult(
        status="ok",
        must_change_password=change,
        change_reason=reason,
        role=role_for(contract.auth_unit, contract.contract_number, identity.login_number),
        remaining_attempts=remaining,
        otp_usage=otp.usage if otp else OtpUsage.UNDECIDED,
        otp_registered=bool(otp and otp.registered_at and otp.mail_address),
        **view.base,
    )


def authenticate(
    session: Session,
    *,
    number: str,
    password: str,
    now: datetime,
    policy: PolicyLike = DEFAULT_POLICY,
    hasher: SecretHasher | None = None,
    channel: Channel | str = Channel.WEB,
) -> LoginResult:
    """Check a login (number + password) and count it, all in the caller's one transaction.

    - ``wrong``: unknown number, no credential, or a wrong password (one try used; the unknown
      cases spend the time of a real check on a dummy hash).
    - ``locked``: the credential is invalidated (3 / 10 consecutive wrong tries; the attempt that
      uses the last try already reports ``locked``). Recover by setting a temporary password by phone.
    - ``expired``: a temporary password past its 24 h; no try is spent.
    - ``ok``: ``must_change_password`` when the password is temporary (``change_reason="temporary"``)
      or past the configured maximum age (``"expired"``); the failure count is back to 0.
    Does NOT commit: commit whatever the result, the counter is part of it.

    The argon2 check runs inside the caller's transaction, so on SQLite the write lock is held
    across it and every other writer (the phone line's included) waits. Services use
    :func:`log_in`, which takes a session factory and checks with no transaction open.
    """
    hasher = hasher or default_hasher()
    view = _read_login(session, number, now, policy)
    if view.identity is None or view.credential is None:
        hasher.dummy_verify(password)
    early = _login_before_check(session, view, now=now, channel=channel)
    if early is not None:
        return early
    assert view.credential is not None
    status, remaining = _checked_verify(
        session, credential=view.credential, password=password, now=now, policy=policy, hasher=hasher
    )
    return _login_after_check(session, view, status, remaining, now=now, policy=policy, channel=channel)


def log_in(
    sessions: sessionmaker[Session],
    *,
    number: str,
    password: str,
    now: datetime,
    policy: PolicyLike = DEFAULT_POLICY,
    hasher: SecretHasher | None = None,
    channel: Channel | str = Channel.WEB,
) -> LoginResult:
    """:func:`authenticate` (same results, same counting) with no lock held across the hash.

    Takes a session factory, because it commits between its steps (so it owns its transactions):

    1. a read-only session reads the identity, its credential and OTP settings;
    2. a short write transaction reserves the try (``UPDATE … RETURNING``; see the module
       docstring: the 3 / 10 limits stay exact under concurrency) or records why none is spent,
       and COMMITS;
    3. the argon2 check (and a rehash, if the parameters changed) runs with no transaction open;
    4. a second short write transaction settles the try (success: the counter back to 0; the last
       wrong try: invalidated) and writes the audit event.

    A process that dies between 2 and 4 leaves the try counted as wrong (fail safe).
    """
    hasher = hasher or default_hasher()
    with readers_of(sessions)() as session, session.begin():
        view = _read_login(session, number, now, policy)
    if view.identity is None or view.credential is None:
        hasher.dummy_verify(password)
    with sessions() as session, session.begin():
        early = _login_before_check(session, view, now=now, channel=channel)
        if early is not None:
            return early
        assert view.credential is not None
        ticket = reserve_attempt(session, credential=view.credential, policy=policy)
        if ticket is None:
            return _login_after_check(session, view, "locked", 0, now=now, policy=policy, channel=channel)
    ok, new_hash = check_attempt(ticket, password, hasher)
    with sessions() as session, session.begin():
        status, remaining = settle_attempt(session, ticket, ok=ok, now=now, new_hash=new_hash)
        return _login_after_check(session, view, status, remaining, now=now, policy=policy, channel=channel)


def login_scope(session: Session, *, contract_id: int, unit: AuthUnit, login_number: str) -> list[str]:
    """The numbers a login may act on (contract number first); ``[]`` if it may act on none."""
    contract = session.get(Contract, contract_id)
    if contract is None:
        return []
    try:
        number = normalize_number(login_number)
    except InvalidPhoneNumber:
        return []
    return scope_numbers(
        AuthUnit(unit), contract.contract_number, contract_number_list(session, contract_id), number
    )


def credential_state_for(
    session: Session, number: str, *, now: datetime, policy: PolicyLike = DEFAULT_POLICY
) -> CredentialState:
    """State of the credential a login with ``number`` would use (NONE for unknown numbers).

    The bulk download marks a number with ``*`` when this is not PERMANENT (temporary or unset).
    """
    identity = identity_for(session, number)
    if identity is None:
        return CredentialState.NONE
    return credential_state(_fresh_credential(session, identity.phone.id), now, policy)


@dataclass(frozen=True)
class PasswordChange:
    """A new password checked against the rules and hashed (:func:`prepare_password_change`),
    ready for :func:`apply_password_change`; holds no ORM object."""

    phone_number_id: int
    login_number: str
    contract_id: int
    new_hash: str = field(repr=False)
    #: the credential generation the change was checked against (None: there was no credential)
    generation: int | None


@dataclass(frozen=True)
class _PasswordTarget:
    identity: Identity
    credential: Credential | None
    customer_numbers: list[str]


def _password_target(session: Session, number: str) -> _PasswordTarget:
    identity = identity_for(session, number)
    if identity is None:
        raise UnknownIdentity("no login identity for this number")
    credential = _fresh_credential(session, identity.phone.id)
    return _PasswordTarget(identity, credential, contract_number_list(session, identity.contract.id))


def _prepared_change(target: _PasswordTarget, new_password: str, hasher: SecretHasher) -> PasswordChange:
    """The rules (raises :class:`PasswordRuleError`) and the new hash. Slow: no transaction open."""
    credential = target.credential
    reasons = password_rule_violations(
        new_password,
        current_hash=credential.secret_hash if credential else None,
        customer_numbers=target.customer_numbers,
        verify=hasher.verify,
    )
    if reasons:
        raise PasswordRuleError(reasons)
    return PasswordChange(
        phone_number_id=target.identity.phone.id,
        login_number=target.identity.login_number,
        contract_id=target.identity.contract.id,
        new_hash=hasher.hash(new_password),
        generation=credential.generation if credential else None,
    )


def prepare_password_change(
    session: Session, *, number: str, new_password: str, hasher: SecretHasher | None = None
) -> PasswordChange:
    """Read the identity that logs in with ``number`` (raises :class:`UnknownIdentity`) in
    ``session`` (a read-only one will do), check the new password against every rule (raises
    :class:`PasswordRuleError` with every reason, none audited) and hash it. The rule "not the
    current password" and the hash are argon2: call it with no write transaction open."""
    return _prepared_change(_password_target(session, number), new_password, hasher or default_hasher())


def apply_password_change(
    session: Session,
    change: PasswordChange,
    *,
    now: datetime,
    policy: PolicyLike = DEFAULT_POLICY,
    channel: Channel | str = Channel.WEB,
    same_generation: bool = False,
) -> bool:
    """Store a prepared change as the identity's permanent password (consumes a temporary one,
    resets the failure count) and audit it; nothing here hashes. ``same_generation``: only if the
    credential is still the one the change was checked against (returns False, nothing written,
    when another password was set meanwhile); otherwise the change wins, as the admin's does."""
    credential = _fresh_credential(session, change.phone_number_id)
    if same_generation and (credential.generation if credential else None) != change.generation:
        return False
    previous = credential.kind if credential else None
    if credential is None:
        credential = Credential(phone_number_id=change.phone_number_id, generation=0)
        session.add(credential)
    credential.replace_secret(
        kind=CredentialKind.PERMANENT,
        secret_hash=change.new_hash,
        set_at=now,
        expires_at=permanent_expiry(now, policy),
        channel=channel,
    )
    Audit(session, now, channel, change.login_number, change.contract_id).record(
        AuditEventType.PASSWORD_CHANGED, "ok", f"from={previous or 'none'}"
    )
    session.flush()
    return True


def change_password_in_steps(
    sessions: sessionmaker[Session],
    *,
    number: str,
    new_password: str,
    now: datetime,
    policy: PolicyLike = DEFAULT_POLICY,
    hasher: SecretHasher | None = None,
    current_password: str | None = None,
    channel: Channel | str = Channel.WEB,
) -> None:
    """Set the permanent password of the identity that logs in with ``number``, with no lock held
    across a hash (it owns its transactions, hence the session factory).

    Consumes a temporary password; resets the failure count; the new password may not break any
    rule (raises :class:`PasswordRuleError` with every reason, audited). With ``current_password``
    the current one is checked first, counting like a login (raises :class:`CurrentPasswordWrong`,
    audited): as in :func:`log_in`, the try is reserved in a committed transaction, checked with
    none open, and settled in the transaction that stores the new password (if the password was
    changed meanwhile, ``CurrentPasswordWrong("wrong")`` and nothing is stored). Without it the
    caller has already authenticated (logged-in session). Raises :class:`UnknownIdentity`.

    Steps: a read-only session reads the identity; [reserve the try, commit; check]; check the rules
    and hash the new password; one write transaction settles the try and stores (or audits the
    refusal)."""
    hasher = hasher or default_hasher()
    with readers_of(sessions)() as session, session.begin():
        target = _password_target(session, number)
    identity, credential = target.identity, target.credential
    status = "ok"
    ticket: AttemptTicket | None = None
    if current_password is not None:
        # a rehash is not needed: the password is replaced below anyway
        status, ticket = _reserve_and_check(sessions, credential, current_password, now, policy, hasher)
    change: PasswordChange | None = None
    rules: PasswordRuleError | None = None
    if status == "ok":
        try:
            change = _prepared_change(target, new_password, hasher)
        except PasswordRuleError as exc:
            rules = exc
    with sessions() as session, session.begin():
        audit = _identity_audit(session, identity, now=now, channel=channel)
        if ticket is not None:
            status, _ = settle_attempt(session, ticket, ok=status == "ok", now=now)
        if (
            status == "ok"
            and change is not None
            and not apply_password_change(
                session, change, now=now, policy=policy, channel=channel, same_generation=ticket is not None
            )
        ):
            status = "wrong"  # another password was set since the check: this one is no longer current
        if status != "ok":
            audit.record(AuditEventType.PASSWORD_CHANGED, f"current_{status}")
        elif rules is not None:
            audit.record(AuditEventType.PASSWORD_CHANGED, "rejected", ",".join(rules.reasons))
    if status != "ok":
        raise CurrentPasswordWrong(status)
    if rules is not None:
        raise rules


def check_password_in_steps(
    sessions: sessionmaker[Session],
    *,
    number: str,
    password: str,
    now: datetime,
    policy: PolicyLike = DEFAULT_POLICY,
    hasher: SecretHasher | None = None,
    channel: Channel | str = Channel.WEB,
) -> str:
    """The current password of ``number``'s identity re-entered to confirm an action (the bulk
    release): ``ok``, ``wrong``, ``locked`` or ``expired``. It counts like a login (a wrong one
    spends a try, the last one invalidates the password) with no lock across the hash: the try is
    reserved and committed, checked with no transaction open, then settled and audited."""
    hasher = hasher or default_hasher()
    with readers_of(sessions)() as session, session.begin():
        target = _password_target(session, number)
    identity, credential = target.identity, target.credential
    status, ticket = _reserve_and_check(sessions, credential, password, now, policy, hasher)
    with sessions() as session, session.begin():
        if ticket is not None:
            status, _ = settle_attempt(session, ticket, ok=status == "ok", now=now)
        _identity_audit(session, identity, now=now, channel=channel).record(
            AuditEventType.PASSWORD_REENTERED, status
        )
    return status


def _reserve_and_check(
    sessions: sessionmaker[Session],
    credential: Credential | None,
    password: str,
    now: datetime,
    policy: PolicyLike,
    hasher: SecretHasher,
) -> tuple[str, AttemptTicket | None]:
    """A password given to confirm who one is, checked like a login with no lock across the hash:
    ``ok``, ``wrong``, ``locked`` or ``expired``, and the try to settle (None: nothing reserved).
    The try is reserved in a committed transaction, then checked with none open."""
    state = credential_state(credential, now, policy) if credential else None
    if credential is None:
        hasher.dummy_verify(password)
        return "wrong", None
    if state is CredentialState.INVALIDATED:
        return "locked", None
    if state is CredentialState.EXPIRED:
        return "expired", None
    with sessions() as session, session.begin():
        ticket = reserve_attempt(session, credential=credential, policy=policy)
    if ticket is None:
        return "locked", None
    ok, _rehash = check_attempt(ticket, password, hasher)
    return ("ok" if ok else "wrong"), ticket


def unit_change_password_numbers(
    session: Session,
    *,
    contract_id: int,
    new_unit: AuthUnit,
    login_number: str,
    now: datetime,
    policy: PolicyLike = DEFAULT_POLICY,
) -> list[str]:
    """Whose current passwords the unit-change page must ask for.

    From number unit: every number that has a usable password (seed: 電話番号ごとにパスワードを入力);
    from line or admin/user unit: the login's own password.
    """
    contract = session.get(Contract, contract_id)
    if contract is None:
        return []
    number = normalize_number(login_number)
    if contract.auth_unit is not AuthUnit.NUMBER:
        return [number]
    needed = []
    for phone in session.scalars(select(PhoneNumber).where(PhoneNumber.contract_id == contract_id)):
        state = credential_state(_fresh_credential(session, phone.id), now, policy)
        if state in (CredentialState.TEMPORARY, CredentialState.PERMANENT):
            needed.append(phone.number)
    return sorted(needed, key=lambda n: (n != contract.contract_number, n))


def _copy_credential(source: Credential, target_phone_id: int, session: Session, *, channel: str) -> None:
    """The unit change copies a password to a number that needs it; the copy records where the
    change was made (``channel``), not where the copied password was first set."""
    target = _fresh_credential(session, target_phone_id)
    if target is None:
        target = Credential(phone_number_id=target_phone_id, generation=0)
        session.add(target)
    target.replace_secret(
        kind=source.kind,
        secret_hash=source.secret_hash,
        set_at=source.set_at,
        expires_at=source.expires_at,
        channel=channel,
    )


def _unit_change_reservations(
    session: Session,
    *,
    contract_id: int,
    new_unit: AuthUnit,
    login: str,
    passwords: Mapping[str, str],
    now: datetime,
    policy: PolicyLike,
) -> tuple[AuthUnit, dict[str, str], dict[str, AttemptTicket]]:
    """Check the request (raises :class:`UnitChangeError` before any try is spent) and reserve one
    try per password to check. Returns (old unit, problems so far, tickets by number)."""
    contract = session.get(Contract, contract_id)
    if contract is None:
        raise UnitChangeError({"*": "not_allowed"})
    old_unit = contract.auth_unit
    if new_unit is old_unit:
        raise UnitChangeError({"*": "same_unit"})
    numbers = contract_number_list(session, contract_id)
    if login not in numbers or identity_number_for(old_unit, contract.contract_number, login) is None:
        raise UnitChangeError({"*": "not_allowed"})
    if old_unit is AuthUnit.ADMIN_USER and login != contract.contract_number:
        raise UnitChangeError({"*": "not_allowed"})  # a user may not change the contract's unit
    needed = unit_change_password_numbers(
        session, contract_id=contract_id, new_unit=new_unit, login_number=login, now=now, policy=policy
    )
    missing = {number: "password_required" for number in needed if number not in passwords}
    if missing:
        raise UnitChangeError(missing)
    problems: dict[str, str] = {}
    tickets: dict[str, AttemptTicket] = {}
    for number in needed:
        phone = number_row_on_contract(session, contract_id, number)
        assert phone is not None
        credential = _fresh_credential(session, phone.id)
        state = credential_state(credential, now, policy)
        if credential is None or state is CredentialState.NONE:
            problems[number] = "wrong_password"
        elif state is CredentialState.INVALIDATED:
            problems[number] = "locked"
        elif state is CredentialState.EXPIRED:
            problems[number] = "expired"
        else:
            ticket = reserve_attempt(session, credential=credential, policy=policy)
            if ticket is None:
                problems[number] = "locked"
            else:
                tickets[number] = ticket
    return old_unit, problems, tickets


def _apply_unit_change(
    session: Session,
    *,
    contract_id: int,
    old_unit: AuthUnit,
    new_unit: AuthUnit,
    login: str,
    now: datetime,
    channel: str,
) -> bool:
    """Copy the passwords the new unit needs and set it (False: the unit changed meanwhile)."""
    contract = session.get(Contract, contract_id, populate_existing=True)
    if contract is None or contract.auth_unit is not old_unit:
        return False
    numbers = contract_number_list(session, contract_id)
    contract_phone = number_row_on_contract(session, contract_id, contract.contract_number)
    login_phone = number_row_on_contract(session, contract_id, login)
    assert contract_phone is not None and login_phone is not None
    if old_unit is AuthUnit.LINE:
        source = _fresh_credential(session, contract_phone.id)
        if source is not None:
            for number in numbers:
                phone = number_row_on_contract(session, contract_id, number)
                if phone is not None and phone.id != contract_phone.id:
                    _copy_credential(source, phone.id, session, channel=channel)
    elif new_unit is AuthUnit.LINE and login_phone.id != contract_phone.id:
        source = _fresh_credential(session, login_phone.id)
        if source is not None:
            _copy_credential(source, contract_phone.id, session, channel=channel)
    contract.auth_unit = new_unit
    contract.unit_changed_at = now
    return True


def change_unit_in_steps(
    sessions: sessionmaker[Session],
    *,
    contract_id: int,
    new_unit: AuthUnit,
    login_number: str,
    passwords: Mapping[str, str],
    now: datetime,
    policy: PolicyLike = DEFAULT_POLICY,
    hasher: SecretHasher | None = None,
    channel: Channel | str = Channel.WEB,
) -> None:
    """Change the contract's authentication unit (the operator guide P14–P21), with no lock across a hash.

    ``passwords`` maps each number of :func:`unit_change_password_numbers` to its current password;
    each is checked, counting like a login: a write transaction checks the request and reserves one
    try per password (committed), the passwords are checked with no transaction open, and a second
    transaction settles the tries and changes the unit (or audits the refusal). Which password holds
    afterwards:
    - line -> number or admin/user: the line password, for every number;
    - number or admin/user -> line: the password the login used (the login number's);
    - number <-> admin/user: each number keeps its own.
    Raises :class:`UnitChangeError` (after committing the counted tries); nothing hashes here but
    the checks, and the credentials are copied hash and all.
    """
    hasher = hasher or default_hasher()
    new_unit = AuthUnit(new_unit)
    login = normalize_number(login_number)
    given = {}
    for raw, value in passwords.items():
        try:
            given[normalize_number(raw)] = value
        except InvalidPhoneNumber:
            continue
    with sessions() as session, session.begin():
        old_unit, problems, tickets = _unit_change_reservations(
            session,
            contract_id=contract_id,
            new_unit=new_unit,
            login=login,
            passwords=given,
            now=now,
            policy=policy,
        )
    checked = {number: check_attempt(ticket, given[number], hasher)[0] for number, ticket in tickets.items()}
    with sessions() as session, session.begin():
        for number, ticket in tickets.items():
            status, _ = settle_attempt(session, ticket, ok=checked[number], now=now)
            if status != "ok":
                problems[number] = "wrong_password" if status == "wrong" else status
        audit = Audit(session, now, channel, login, contract_id)
        if not problems and not _apply_unit_change(
            session,
            contract_id=contract_id,
            old_unit=old_unit,
            new_unit=new_unit,
            login=login,
            now=now,
            channel=channel,
        ):
            problems["*"] = "not_allowed"  # the unit was changed meanwhile
        if problems:
            audit.record(
                AuditEventType.UNIT_CHANGED, "rejected", ",".join(f"{k}={v}" for k, v in problems.items())
            )
        else:
            audit.record(AuditEventType.UNIT_CHANGED, "ok", f"{old_unit}->{new_unit}")
            session.flush()
    if problems:
        raise UnitChangeError(problems)
