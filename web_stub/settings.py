"""The web's settings sections (composed into the one settings object by the root, `stack.settings`)."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr


class WebSettings(BaseModel):
    """The web login endpoint."""

    host: str = "127.0.0.1"
    port: int = 8080
    base_url: str = "http://127.0.0.1:8080"
    session_idle_timeout_seconds: int = 15 * 60
    cookie_secure: bool = False
    secret_key: SecretStr = SecretStr("change-me-in-production-ivr-web-secret")
    # `ivr web` lowers its CPU priority by this much (os.nice): beside the FastAGI daemon on one
    # machine, a login flood then cannot starve the callers' password hashes (nice 10). 0: as is.
    niceness: int = Field(default=15, ge=0, le=19)
    # On SIGTERM / SIGINT, requests in progress may finish this long; then their connections close.
    shutdown_grace_seconds: int = Field(default=10, ge=0)
    # --- limits (web_stub, docs/web.md "Security")
    session_absolute_lifetime_seconds: int = 8 * 3600  # a session ends this long after login
    trusted_proxies: list[str] = []  # addresses/networks whose X-Forwarded-For is believed
    login_failures_per_client: int = 100  # failed logins per client address per window ...
    login_failure_window_seconds: int = 300  # ... (then 429 without checking the password)
    otp_wrong_codes_per_number: int = 10  # wrong one-time codes per number per window ...
    otp_wrong_code_window_seconds: int = 24 * 3600  # ... (the last one invalidates the password)
    otp_mails_per_number: int = 10  # one-time-password mails per number per window
    otp_mail_window_seconds: int = 3600
    confirmation_failures_per_number: int = 5  # wrong confirmation ID/password per window ...
    confirmation_failure_window_seconds: int = 24 * 3600  # ... (then OTP settings locked)
    max_form_bytes: int = 16 * 1024  # request body of a form page or the JSON API
    max_login_bytes: int = 4 * 1024  # request body of the login form and POST /api/login
    max_upload_bytes: int = 2 * 1024 * 1024  # request body of a CSV upload page
    max_secret_chars: int = 64  # longer passwords, codes or confirmation secrets are not hashed
    # /metrics answers only this bearer token (web_stub/ops.py, docs/deploy.md); None: /metrics is 404
    metrics_token: SecretStr | None = None
    # --- what the pages tell customers
    # the temporary-password line customers call from their contract line (pages and messages)
    service_number: str = "0363044747"
    copyright_notice: str = "Copyright © 1999-2022 東日本電信電話株式会社"  # footer of every page (seed 003)


class SmtpSettings(BaseModel):
    """Outgoing mail (one-time passwords, registration links)."""

    host: str = "127.0.0.1"
    port: int = 8025
    username: str | None = None
    password: SecretStr | None = None
    start_tls: bool = False
    use_tls: bool = False
    timeout_seconds: float = 10.0
    # From: of every mail; the pages tell customers to allow mail from its domain. The default is a
    # sample (example.jp is reserved for examples): set IVR_SMTP__SENDER to the real sending address.
    sender: str = "noreply@settings.example.jp"
