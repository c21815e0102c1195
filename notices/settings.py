"""The support site's and notice mail's settings section (composed by the root, `stack.settings`)."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, Field, SecretStr


class NoticeSettings(BaseModel):
    """The support site and its maintenance/outage notice mail (notices/, docs/notices.md)."""

    # --- the support site (its own Starlette app, served by `ivr notices serve`)
    web_host: str = "127.0.0.1"
    web_port: int = 8081
    base_url: str = "http://127.0.0.1:8081"  # links in mails (confirmation, List-Unsubscribe)
    operator_token: SecretStr | None = None  # Bearer token of the operator JSON API; None: API off
    confirmation_validity_seconds: int = 24 * 3600  # registration and destination links
    pending_retry_seconds: int = 30 * 60  # the same pending address again: "try after 30 minutes"
    # products a customer may choose to be told about (code: label); notices name them by code
    products: dict[str, str] = Field(
        default_factory=lambda: {
            "hikari-denwa": "ひかり電話",
            "hikari-net": "光インターネット",
            "ocn": "OCN",
            "business-line": "法人向け回線",
        }
    )
    session_idle_timeout_seconds: int = 15 * 60  # the support login's idle logout
    session_lifetime_seconds: int = 8 * 3600
    login_failures_per_account: int = 10  # wrong passwords per support ID per window: then locked
    login_failure_window_seconds: int = 3600
    login_failures_per_client: int = 100  # failed logins per client address per window (then 429)
    mails_per_address: int = 5  # registration / reset / confirmation mails per address per hour
    # --- the mail
    sender: str = "notice@support.example.jp"  # From: (the seed's site uses @support.ntt.com)
    return_path_domain: str = "bounce.support.example.jp"  # per-mail return paths b-<id>-<sig>@…
    bounce_secret: SecretStr = SecretStr("change-me-notice-bounce-secret")  # signs the return paths
    # The relay (an MTA such as postfix) or the receiving server; unset: the `smtp` section's.
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_start_tls: bool = False  # with smtp_host unset, the `smtp` section's TLS and login apply
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_connections: int = Field(default=16, ge=1, le=500)  # SMTP sessions kept open per worker
    send_timeout_seconds: float = 30.0  # one mail's whole SMTP transaction
    # True (mail goes straight to the receiving server): its 250 is delivery and resets the failure
    # count. False (through a relay such as postfix): the relay's acceptance is not delivery; the
    # worker asks for DSNs (NOTIFY=SUCCESS,FAILURE) and the relay's success report resets the count.
    acceptance_is_delivery: bool = True
    # --- the bounce listener (RFC 3464 DSNs to the return paths)
    bounce_host: str = "127.0.0.1"
    bounce_port: int = 2526
    # --- the queue and the worker
    worker_id: str | None = None  # default: the host name; distinct for every live worker
    window: int = Field(default=400, ge=1, le=100_000)  # mails claimed and not yet recorded
    per_domain_window: int = Field(default=50, ge=1)  # of them, at most this many to one domain
    claim_batch: int = Field(default=200, ge=1)
    lease_seconds: float = 120.0  # a claimed mail not recorded within it is claimed again
    poll_seconds: float = 0.5
    flush_seconds: float = 0.05  # results are recorded in one transaction at most this long after
    # the database away: the n-th failed recording in a row waits n × this (at most 5 s) to try again
    record_retry_seconds: float = Field(default=0.2, gt=0)
    max_failures: int = Field(default=3, ge=1)  # consecutive failures that stop a destination
    retry_backoff_seconds: list[int] = Field(default_factory=lambda: [60, 300, 900, 1800, 3600])
    give_up_after_seconds: int = 24 * 3600  # a temporary failure for this long counts as failed
    # our relay down (refused, timed out, TLS or login failed, 421, MAIL FROM refused): the worker
    # stops claiming and probes it again after these pauses in turn (the last one repeats)
    relay_backoff_seconds: list[float] = Field(default_factory=lambda: [1.0, 2.0, 5.0, 10.0, 30.0, 60.0])
    metrics_token: SecretStr | None = None  # bearer token of /metrics on the support site's port


def organisational_domain_of() -> Callable[[str], str]:
    """The organisational domain of a host name (RFC 7489 3.2: the public suffix list's registrable
    domain; a name the list does not know, such as ``localhost``, stands for itself). The list is
    the one `publicsuffixlist` ships, read when this is called (not at import)."""
    from publicsuffixlist import PublicSuffixList

    psl = PublicSuffixList()

    def organisational(host: str) -> str:
        name = host.strip().rstrip(".").lower()
        return psl.privatesuffix(name) or name

    return organisational


def sender_domain_problems(s: NoticeSettings, organisational: Callable[[str], str]) -> list[str]:
    """Why the mail's identities do not fit together (empty: they do). The return path is what
    receivers see as the envelope sender and where bounces go (our bounce listener): it must be in
    the sender's organisational domain, the one customers are told to allow; it is never derived
    from the sender silently, since only the operator knows where that domain's mail is routed."""
    sender_domain = s.sender.rpartition("@")[2]
    if "@" not in s.sender or not sender_domain:
        return [f"IVR_NOTICES__SENDER ({s.sender!r}) is not a mail address"]
    ours, theirs = organisational(sender_domain), organisational(s.return_path_domain)
    if ours == theirs:
        return []
    return [
        f"IVR_NOTICES__RETURN_PATH_DOMAIN ({s.return_path_domain}, organisational domain {theirs}) is not "
        f"in the organisational domain of IVR_NOTICES__SENDER ({s.sender}: {ours}): set "
        f"IVR_NOTICES__RETURN_PATH_DOMAIN to a domain under {ours} whose mail is routed to the bounce "
        "listener (docs/notices.md)"
    ]
