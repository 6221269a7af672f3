"""Settings: embedded defaults, refusal of insecure defaults outside development, readable errors."""

from __future__ import annotations

import pytest

from newsletter.config import ConfigError, load_settings


def test_embedded_defaults_need_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NEWSLETTER_DATABASE_URL", "NEWSLETTER_BROKER_URL", "NEWSLETTER_SMTP_URL", "NEWSLETTER_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.embedded
    assert settings.database_url == "sqlite:///newsletter.db"
    assert settings.smtp_url is None
    assert str(settings.outbox_dir) == "outbox"


def test_plain_postgresql_url_uses_the_bundled_driver() -> None:
    settings = load_settings(database_url="postgresql://u:p@db:5432/news")
    assert settings.database_url == "postgresql+psycopg://u:p@db:5432/news"


@pytest.mark.parametrize(
    "overrides",
    [{"environment": "production"}, {"broker_url": "redis://127.0.0.1:6379/0"}],
)
def test_default_secret_is_refused_outside_development(overrides: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"NEWSLETTER_SECRET_KEY must be set.*secrets\.token_urlsafe"):
        load_settings(**overrides)


def test_malformed_smtp_url_is_one_readable_line() -> None:
    with pytest.raises(ConfigError, match="NEWSLETTER_SMTP_URL") as info:
        load_settings(smtp_url="smtp//no-scheme")
    assert "\n" not in str(info.value)


def test_environment_is_read_with_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_BATCH_SIZE", "250")
    monkeypatch.setenv("NEWSLETTER_UNKNOWN_POLICY", "resend")
    settings = load_settings()
    assert settings.batch_size == 250
    assert settings.unknown_policy == "resend"


def test_bad_values_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="NEWSLETTER_UNKNOWN_POLICY"):
        load_settings(unknown_policy="sometimes")
