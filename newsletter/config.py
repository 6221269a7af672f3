"""The service's settings: one validated object, read once from NEWSLETTER_* variables and passed in."""

from __future__ import annotations

import difflib
import ipaddress
import logging
import os
import tempfile
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from newsletter.errors import NewsletterError
from newsletter.smtpservers import parse_smtp_urls

log = logging.getLogger(__name__)

DEV_SECRET_KEY = "dev-insecure-secret-key-change-me"  # noqa: S105 - the documented development default
MAKE_A_KEY = "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
PREFIX = "NEWSLETTER_"
# Variables of the test suite and the benchmarks, not of the service.
_NOT_SETTINGS = ("NEWSLETTER_TEST_", "NEWSLETTER_BENCH_")
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


class ConfigError(NewsletterError):
    """The configuration cannot work; the message says which variable and how to fix it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", frozen=True, populate_by_name=True)

    environment: Literal["development", "production"] = Field(
        "development",
        # NEWSLETTER_ENV is what people type; a value other than these two is an error, not ignored.
        validation_alias=AliasChoices("NEWSLETTER_ENV", "NEWSLETTER_ENVIRONMENT"),
        description="`production` refuses insecure defaults (SECRET_KEY). Development is the embedded mode. "
        "Read from NEWSLETTER_ENV or NEWSLETTER_ENVIRONMENT.",
    )
    database_url: str = Field(
        "sqlite:///newsletter.db",
        description="SQLAlchemy URL. A plain postgresql:// URL uses the bundled psycopg 3 driver.",
    )
    broker_url: str | None = Field(
        None,
        description="Celery broker (e.g. redis://localhost:6379/0). Unset: tasks run in-process (embedded mode).",
    )
    smtp_url: str | None = Field(
        None,
        description="smtp://user:pass@host:587?starttls=true (several separated by commas form a pool). "
        "Unset: messages are written as .eml files to OUTBOX_DIR.",
    )
    outbox_dir: Path = Field(Path("outbox"), description="Where .eml files go when SMTP_URL is unset.")
    base_url: str = Field(
        "http://localhost:8000",
        description="Public URL of the web app, used in unsubscribe, preference and tracking links.",
    )
    secret_key: str = Field(
        DEV_SECRET_KEY,
        description="Signs subscriber tokens. Required unless this is the embedded demo (SQLite, no broker, no "
        f"SMTP_URL, a localhost BASE_URL): generate one with `{MAKE_A_KEY}`. Changing it breaks the links "
        "in mail already sent unless the old key goes to OLD_SECRET_KEYS.",
    )
    # Kept as the text it is given (a plain str round-trips through the environment, e.g. to a worker).
    old_secret_keys: str = Field(
        "",
        description="Comma-separated keys SECRET_KEY replaced: tokens they signed (links in mail already "
        "sent) still verify, new ones are signed with SECRET_KEY.",
    )
    redis_url: str | None = Field(
        None,
        description="Redis for the global rate limit and web rate limits; defaults to BROKER_URL when that "
        "is a redis:// URL.",
    )
    rate_limit: float = Field(0, ge=0, description="Messages per second across all workers; 0 = unlimited.")
    dkim_domain: str | None = Field(None, description="Sign with DKIM for this domain (d=).")
    dkim_selector: str | None = Field(None, description="DKIM selector (s=).")
    dkim_key_file: Path | None = Field(None, description="PEM private key (RSA-2048 or Ed25519).")
    list_unsubscribe_mailto: str | None = Field(
        None, description="Optional address added to List-Unsubscribe as a mailto: alternative."
    )

    batch_size: int = Field(500, ge=1, le=10_000, description="Recipients per batch task.")
    claim_lease_seconds: int = Field(
        600, ge=10, description="A ledger row in `sending` longer than this is presumed dead."
    )
    sweep_interval_seconds: int = Field(30, ge=1, description="How often the recovery sweep runs.")
    import_stale_seconds: int = Field(
        600,
        ge=60,
        description="A wizard's import whose process has not shown it is alive for this long (its heartbeat, "
        "written every few seconds on PostgreSQL; on SQLite, since it started) is marked failed by the sweep.",
    )
    retry_base_seconds: float = Field(60, gt=0, description="First retry delay; doubles per attempt, with jitter.")
    retry_max_attempts: int = Field(5, ge=1, description="Attempts before a soft failure becomes `failed`.")
    retry_max_age_hours: float = Field(24, gt=0, description="Give up retrying a delivery after this long.")
    unknown_policy: Literal["skip", "resend"] = Field(
        "skip", description="What to do with rows whose fate a crash left unknown: skip them or resend."
    )
    outcome_flush_count: int = Field(50, ge=1, description="Write send outcomes every N messages...")
    outcome_flush_ms: int = Field(200, ge=1, description="...or every N milliseconds, whichever comes first.")
    auto_pause_window: int = Field(
        200, ge=10, description="Auto-pause looks at the outcomes of each worker's last N messages of a campaign."
    )
    auto_pause_failure_rate: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Pause a campaign (reason shown in its status) when more than this share of the last "
        "AUTO_PAUSE_WINDOW messages failed or were deferred, e.g. a rejected IP or a broken relay; 0 = never.",
    )
    track_default: bool = Field(True, description="Open/click tracking for new lists (switchable per list).")

    # Adaptive pacing per SMTP server (newsletter/pacing.py): AIMD on the server's "too fast" replies.
    pacing_floor: float = Field(
        0.5, gt=0, description="Pacing never slows an SMTP server below this many messages per second."
    )
    pacing_decrease: float = Field(
        0.9,
        gt=0,
        lt=1,
        description='On a pacing signal (421, 4.7.x, 4.2.1, "too many connections"), a server\'s pace becomes '
        "this share of the rate it was answering at.",
    )
    pacing_increase: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Each second of replies without pacing signals raises a cut pace by this share of the rate "
        "the server accepted when it was cut (past that rate, a quarter of it at first, doubling each second; at "
        "least 1 msg/s), up to the server's rate= option or RATE_LIMIT.",
    )
    pacing_tolerance: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="A second of replies cuts the pace only when clearly more than this share of them (by two "
        "standard deviations) were pacing signals: an isolated 421 among many accepted messages is noise.",
    )

    subscribe_ip_limit: int = Field(20, ge=1, description="Subscribe requests per IP per hour.")
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Comma-separated addresses or networks (e.g. 127.0.0.1,10.0.0.0/8) of the reverse proxies "
        "in front: X-Forwarded-For is believed only from these. Default none: the peer is the client.",
    )
    max_body_bytes: int = Field(
        16 * 1024,
        ge=1024,
        description="Largest request body of the public pages (forms); a larger one is a 413 before any of it "
        "is parsed.",
    )
    max_api_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest JSON body of an admin API request (after authentication)."
    )
    max_admin_body_bytes: int = Field(
        2 * 1024 * 1024, ge=1024, description="Largest form body of an admin page (a digest's text, say)."
    )
    max_upload_bytes: int = Field(
        512 * 1024 * 1024,
        ge=1024,
        description="Largest CSV import or bounce report upload; these are streamed to temporary files.",
    )
    admin_enabled: bool = Field(
        True,
        description="Serve the admin web UI under /admin (and redirect / there); false: /admin is a 404 and "
        "/ goes to the archive. The REST API is unaffected.",
    )
    session_idle_minutes: float = Field(
        120, gt=0, description="An admin who has not loaded a page for this long is signed out."
    )
    session_max_hours: float = Field(
        12, gt=0, description="An admin sign-in lasts at most this long, however busy the browser."
    )
    signin_account_limit: int = Field(
        10, ge=1, description="Sign-in attempts per user name per 15 minutes (then refused, even right ones)."
    )
    signin_ip_limit: int = Field(50, ge=1, description="Sign-in attempts per client IP per 15 minutes.")
    require_2fa_for_admins: bool = Field(
        False,
        description="Admins without two-factor sign-in (TOTP) are sent to set it up before any other admin page.",
    )

    soft_bounce_limit: int = Field(
        3,
        ge=0,
        description="Suppress an address (reason soft_bounce) when this many of its deliveries bounced softly "
        "(mailbox full, greylisted to death, ...) within SOFT_BOUNCE_DAYS; 0 = never. Hard bounces and "
        "complaints suppress at once.",
    )
    soft_bounce_days: float = Field(30, gt=0, description="The window SOFT_BOUNCE_LIMIT counts soft bounces in.")

    reputation_window: int = Field(
        2000,
        ge=100,
        description="The circuit breaker judges a sending domain by its last N accepted messages, across "
        "all its campaigns.",
    )
    reputation_min_messages: int = Field(
        500, ge=1, description="The circuit breaker waits until a domain has sent at least this many messages."
    )
    complaint_rate_limit: float = Field(
        0.003,
        ge=0,
        le=1,
        description="Pause every sending campaign of a domain when the complaint share of its last "
        "REPUTATION_WINDOW messages passes this (0.003 = 0.3%, Gmail's ceiling); 0 = never.",
    )
    hard_bounce_rate_limit: float = Field(
        0.05, ge=0, le=1, description="...or when their hard-bounce share passes this (5%); 0 = never."
    )
    verp_address: str | None = Field(
        None,
        description="VERP: send each message with the return path bounces+TOKEN@domain made from this address "
        "(e.g. bounces@news.example.org), so a bounce that quotes none of the message is still matched to its "
        "delivery. The domain's mail must reach `newsletter bounces ingest` (README). Unset: the list's From.",
    )

    # Provider webhooks (POST /webhooks/{provider}); each is off (404) until its key is set.
    max_webhook_body_bytes: int = Field(
        2 * 1024 * 1024, ge=1024, description="Largest provider webhook body (SendGrid posts events in batches)."
    )
    ses_topic_arns: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Amazon SES via SNS: the comma-separated TopicArns whose notifications are accepted (and "
        "whose subscription is confirmed). Empty: /webhooks/ses is off.",
    )
    ses_webhook_auth: str | None = Field(
        None, description="Optional USER:PASSWORD that SNS must send as HTTP basic auth (put it in the URL)."
    )
    sns_certificate_mirror: str | None = Field(
        None,
        description="For tests only: an https:// base URL the SNS signing certificates (and subscription "
        "confirmations) are fetched from instead of sns.<region>.amazonaws.com; the official form of the URL "
        "is still checked first. Refused with ENV=production.",
    )
    sns_certificate_ca_file: Path | None = Field(
        None, description="For tests only: the CA bundle that SNS_CERTIFICATE_MIRROR's certificate is checked against."
    )
    sendgrid_webhook_public_key: str | None = Field(
        None,
        description="SendGrid Event Webhook: the verification key from Settings > Mail Settings > Event Webhook "
        "(base64, as shown there, or PEM). Unset: /webhooks/sendgrid is off.",
    )
    postmark_webhook_auth: str | None = Field(
        None,
        description="Postmark: the USER:PASSWORD its webhook sends as HTTP basic auth "
        "(https://USER:PASSWORD@host/webhooks/postmark). Unset: /webhooks/postmark is off.",
    )
    mailgun_webhook_signing_key: str | None = Field(
        None,
        description="Mailgun: the HTTP webhook signing key (Sending > Webhooks). Unset: /webhooks/mailgun is off.",
    )
    provider_inbox_days: float = Field(
        7,
        gt=0,
        description="Keep provider webhook events this long after they were applied, so a provider's retry "
        "of one within that time is recognised as a duplicate (providers retry for hours, at most 3 days).",
    )
    confirm_resend_hours: float = Field(
        24, ge=0, description="At most one confirmation email per address per list in this window."
    )
    # --- the admin's import wizard
    import_dir: Path = Field(
        Path(tempfile.gettempdir()) / "newsletter-imports",
        description="Where files uploaded to /admin/imports wait for their import (removed after it); with "
        "Celery workers on other machines, a directory they share with the web servers.",
    )

    # Outgoing webhooks (newsletter/webhooks/): events POSTed to the endpoints admins register.
    webhooks_allow_private: bool = Field(
        False,
        description="Allow webhook endpoints on loopback, private, link-local or reserved addresses, and plain "
        "http:// URLs. Off: such endpoints are refused when created and when sent to (SSRF).",
    )
    webhook_timeout_seconds: float = Field(
        10, gt=0, le=60, description="How long one webhook POST may take (connecting: at most 5 s of it)."
    )
    webhook_retry_base_seconds: float = Field(
        30, gt=0, description="First webhook retry delay; doubles per attempt (at most 6 hours), with jitter."
    )
    webhook_retry_max_hours: float = Field(
        24, gt=0, description="Retry a failing webhook this long; then its endpoint is disabled with the reason."
    )
    webhook_max_payload_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest webhook request body; a larger event fails without being sent."
    )
    # --- operations: metrics and logs (issue 17) ---
    metrics_enabled: bool = Field(False, description="Serve Prometheus metrics at /metrics (404 while off).")
    metrics_token: str | None = Field(
        None, description="Bearer token /metrics requires (Authorization: Bearer TOKEN); unset: no token asked."
    )
    metrics_allow_ips: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Addresses or networks that may read /metrics, comma-separated. Unset with no token: "
        "loopback only.",
    )
    worker_metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Port each Celery worker host serves its metrics on (needs PROMETHEUS_MULTIPROC_DIR).",
    )
    worker_metrics_host: str = Field(
        "127.0.0.1", description="Address the worker metrics port listens on (0.0.0.0: every interface)."
    )
    prometheus_multiproc_dir: Path | None = Field(
        None,
        validation_alias=AliasChoices("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"),
        description="prometheus-client's multiprocess directory (PROMETHEUS_MULTIPROC_DIR, read as is): "
        "every process of a prefork worker or of `serve --workers N` writes its values there.",
    )
    log_format: Literal["text", "json"] = Field("text", description="`json`: one JSON object per log line.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="The root log level.")
    webhook_log_days: float = Field(
        30, gt=0, description="Sent events and their delivery log are deleted after this many days."
    )

    @field_validator("database_url")
    @classmethod
    def _normalise_database_url(cls, value: str) -> str:
        # Ship one PostgreSQL driver (psycopg 3) and accept the URLs people already have.
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        if not value.startswith(("sqlite:", "postgresql+")):
            raise ValueError(f"unsupported database URL {value!r}: use sqlite:///FILE or postgresql://...")
        return value

    @field_validator("ses_topic_arns", mode="before")
    @classmethod
    def _split_topics(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("ses_webhook_auth", "postmark_webhook_auth")
    @classmethod
    def _check_basic_auth(cls, value: str | None) -> str | None:
        if value and (":" not in value or not value.split(":", 1)[1]):
            raise ValueError("must be USER:PASSWORD with a password")
        return value or None

    @field_validator("verp_address")
    @classmethod
    def _check_verp_address(cls, value: str | None) -> str | None:
        if value and (value.count("@") != 1 or "+" in value or not value.partition("@")[0] or " " in value):
            raise ValueError("must be one plain address such as bounces@news.example.org (no +)")
        return value or None

    @field_validator("trusted_proxies", "metrics_allow_ips", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, list | tuple):
            for network in value:
                try:
                    ipaddress.ip_network(str(network), strict=False)
                except ValueError:
                    raise ValueError(f"{network!r} is not an IP address or network (e.g. 10.0.0.0/8)") from None
        return value

    @field_validator("smtp_url")
    @classmethod
    def _check_smtp_url(cls, value: str | None) -> str | None:
        if value:
            parse_smtp_urls(value)
        return value or None

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _refuse_default_secret(self) -> Settings:
        if self.secret_key == DEV_SECRET_KEY and self.deployment_signs:
            raise ValueError(
                f"NEWSLETTER_SECRET_KEY must be set: the development key is refused because "
                f"{' and '.join(self.deployment_signs)}; generate a key with `{MAKE_A_KEY}`"
            )
        if len(self.secret_key) < 16:
            raise ValueError("NEWSLETTER_SECRET_KEY is too short: use at least 16 random characters")
        if DEV_SECRET_KEY in self.previous_secret_keys and self.deployment_signs:
            raise ValueError("NEWSLETTER_OLD_SECRET_KEYS: the development key cannot verify links here")
        if any(len(key) < 16 for key in self.previous_secret_keys):
            raise ValueError("NEWSLETTER_OLD_SECRET_KEYS: each key must be at least 16 characters")
        if self.sns_certificate_mirror and (
            self.environment == "production" or not self.sns_certificate_mirror.startswith("https://")
        ):
            raise ValueError("NEWSLETTER_SNS_CERTIFICATE_MIRROR is for tests only, and must be an https:// URL")
        if bool(self.dkim_domain) != bool(self.dkim_selector) or (self.dkim_domain and not self.dkim_key_file):
            raise ValueError("DKIM needs NEWSLETTER_DKIM_DOMAIN, NEWSLETTER_DKIM_SELECTOR and DKIM_KEY_FILE together")
        return self

    @property
    def previous_secret_keys(self) -> tuple[str, ...]:
        """OLD_SECRET_KEYS as a list: the keys whose tokens still verify."""
        return tuple(key.strip() for key in self.old_secret_keys.split(",") if key.strip())

    @property
    def deployment_signs(self) -> list[str]:
        """Why this is not the embedded demo on one machine (empty when it is)."""
        signs = []
        if self.environment == "production":
            signs.append("NEWSLETTER_ENV is production")
        if not self.database_url.startswith("sqlite"):
            signs.append("the database is not SQLite")
        if self.broker_url:
            signs.append("a broker is configured")
        if self.smtp_url:
            signs.append("NEWSLETTER_SMTP_URL is set")
        host = urlsplit(self.base_url).hostname or ""
        if host not in _LOCAL_HOSTS and not host.endswith(".localhost"):
            signs.append(f"NEWSLETTER_BASE_URL is not a localhost URL ({host})")
        return signs

    @property
    def embedded(self) -> bool:
        """No broker and not production: everything runs in this process."""
        return self.environment == "development" and self.broker_url is None

    @property
    def effective_redis_url(self) -> str | None:
        if self.redis_url:
            return self.redis_url
        if self.broker_url and self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        return None


def load_settings(**overrides: object) -> Settings:
    """Read the environment once, turning validation errors into one readable ConfigError."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        reasons = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            name = f"{field.upper()}: " if field.upper().startswith(PREFIX) else f"{PREFIX}{field.upper()}: "
            name = name if field else ""
            reasons.append(f"{name}{error['msg'].removeprefix('Value error, ')}")
        raise ConfigError("; ".join(reasons)) from None


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A sentence for each NEWSLETTER_* variable no setting reads (a typo, usually), naming the closest one."""
    known = {PREFIX + name.upper() for name in Settings.model_fields} | {"NEWSLETTER_ENV"}
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(PREFIX) or upper in known or upper.startswith(_NOT_SETTINGS):
            continue
        # Compared without the prefix, which every name shares and which would make anything look close.
        suffixes = [k.removeprefix(PREFIX) for k in sorted(known)]
        closest = difflib.get_close_matches(upper.removeprefix(PREFIX), suffixes, n=1, cutoff=0.6)
        hint = f"; did you mean {PREFIX}{closest[0]}?" if closest else ""
        problems.append(f"{name} is not a setting and is ignored{hint}")
    return problems


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once at startup (which is when unknown variables are warned about)."""
    settings = load_settings()
    for problem in unknown_variables(os.environ):
        log.warning("%s", problem)
    return settings
