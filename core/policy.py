"""The tunable credential rules (the operator guide gives the defaults).

Mirrors the settings' ``CredentialPolicy`` (``stack.settings``) field for field so core never
imports the root: functions accept anything with these attributes (:class:`PolicyLike`), e.g.
``settings.credentials``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol


class PolicyLike(Protocol):
    @property
    def temporary_validity_seconds(self) -> int: ...
    @property
    def temporary_max_failures(self) -> int: ...
    @property
    def permanent_max_failures(self) -> int: ...
    @property
    def permanent_max_age_days(self) -> int | None: ...
    @property
    def otp_code_validity_seconds(self) -> int: ...
    @property
    def otp_code_max_failures(self) -> int: ...
    @property
    def registration_link_validity_seconds(self) -> int: ...


@dataclass(frozen=True)
class CredentialPolicy:
    temporary_validity_seconds: int = 24 * 3600
    temporary_max_failures: int = 3
    permanent_max_failures: int = 10
    permanent_max_age_days: int | None = None  # None: permanent passwords never expire
    otp_code_validity_seconds: int = 300
    otp_code_max_failures: int = 3
    registration_link_validity_seconds: int = 24 * 3600


DEFAULT_POLICY = CredentialPolicy()


def permanent_max_age(policy: PolicyLike) -> timedelta | None:
    days = policy.permanent_max_age_days
    return None if days is None else timedelta(days=days)
