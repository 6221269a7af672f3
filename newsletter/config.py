"""The service's settings: one validated object, read once from NEWSLETTER_* variables and passed in."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from newsletter.errors import NewsletterError

DEV_SECRET_KEY = "dev-insecure-secret-key-change-me"  # noqa: S105 - the documented development default


class ConfigError(NewsletterError):
    """The configuration cannot work; the message says which variable and how to fix it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEWSLETTER_", extra="ignore", frozen=True)

    environment: Literal["development", "production"] = Field(
        "development",
        description="`production` refuses insecure defaults (SECRET_KEY). Development is the embedded mode.",
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
        description="Signs subscriber tokens. Required outside development: generate one with "
        "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`.",
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
        0.8,
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
        "it was cut from (at least 1 msg/s), up to the server's rate= option or RATE_LIMIT.",
    )
    pacing_tolerance: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="A second of replies cuts the pace only when clearly more than this share of them (by two "
        "standard deviations) were pacing signals: an isolated 421 among many accepted messages is noise.",
    )

    subscribe_ip_limit: int = Field(20, ge=1, description="Subscribe requests per IP per hour.")
    confirm_resend_hours: float = Field(
        24, ge=0, description="At most one confirmation email per address per list in this window."
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

    @field_validator("smtp_url")
    @classmethod
    def _check_smtp_url(cls, value: str | None) -> str | None:
        if value:
            from newsletter.mailer import parse_smtp_urls

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
        if self.secret_key == DEV_SECRET_KEY and not self.embedded:
            raise ValueError(
                "NEWSLETTER_SECRET_KEY must be set outside development/embedded mode; generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
            )
        if len(self.secret_key) < 16:
            raise ValueError("NEWSLETTER_SECRET_KEY is too short: use at least 16 random characters")
        if bool(self.dkim_domain) != bool(self.dkim_selector) or (self.dkim_domain and not self.dkim_key_file):
            raise ValueError("DKIM needs NEWSLETTER_DKIM_DOMAIN, NEWSLETTER_DKIM_SELECTOR and DKIM_KEY_FILE together")
        return self

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
            name = f"NEWSLETTER_{field.upper()}: " if field else ""
            reasons.append(f"{name}{error['msg'].removeprefix('Value error, ')}")
        raise ConfigError("; ".join(reasons)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
