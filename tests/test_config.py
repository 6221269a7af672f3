"""Settings: embedded defaults, refusal of insecure defaults outside development, readable errors."""

from __future__ import annotations

import pytest

from newsletter.config import DEV_SECRET_KEY, ConfigError, get_settings, load_settings, unknown_variables
from newsletter.tokens import TokenPurpose, Tokens, UnknownToken


def test_embedded_defaults_need_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NEWSLETTER_DATABASE_URL", "NEWSLETTER_BROKER_URL", "NEWSLETTER_SMTP_URL", "NEWSLETTER_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.embedded
    assert settings.database_url == "sqlite:///newsletter.db"
    assert settings.smtp_url is None
    assert str(settings.outbox_dir) == "outbox"


def test_plain_postgresql_url_uses_the_bundled_driver() -> None:
    settings = load_settings(database_url="postgresql://u:p@db:5432/news", secret_key="k" * 32)
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


@pytest.mark.parametrize(
    ("overrides", "because"),
    [
        ({"database_url": "postgresql://u@db/news"}, "the database is not SQLite"),
        ({"smtp_url": "smtp://relay.example.org:587"}, "NEWSLETTER_SMTP_URL is set"),
        ({"base_url": "https://news.example.org"}, "NEWSLETTER_BASE_URL is not a localhost URL"),
        ({"broker_url": "redis://127.0.0.1:6379/0"}, "a broker is configured"),
    ],
)
def test_the_development_key_is_refused_on_anything_but_the_embedded_demo(
    monkeypatch: pytest.MonkeyPatch, overrides: dict[str, str], because: str
) -> None:
    monkeypatch.delenv("NEWSLETTER_SECRET_KEY", raising=False)
    with pytest.raises(ConfigError) as info:
        load_settings(**overrides)
    message = str(info.value)
    assert because in message
    assert "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'" in message
    # The demo itself still needs nothing, localhost in any spelling included.
    for base_url in ("http://localhost:8000", "http://127.0.0.1:8000", "http://news.localhost"):
        assert load_settings(base_url=base_url).secret_key == DEV_SECRET_KEY


def test_the_real_deployment_of_the_issue_does_not_start_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEWSLETTER_SECRET_KEY", raising=False)
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", "postgresql://news@db/news")
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", "smtp://relay.example.org:587")
    monkeypatch.setenv("NEWSLETTER_BASE_URL", "https://news.example.org")
    with pytest.raises(ConfigError, match="the database is not SQLite and NEWSLETTER_SMTP_URL is set and"):
        load_settings()
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "a-real-key-of-enough-length")
    assert load_settings().secret_key == "a-real-key-of-enough-length"


@pytest.mark.parametrize("name", ["NEWSLETTER_ENV", "NEWSLETTER_ENVIRONMENT"])
def test_the_environment_is_read_and_a_misspelt_value_is_an_error(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "a-real-key-of-enough-length")
    monkeypatch.setenv(name, "production")
    assert load_settings().environment == "production"
    monkeypatch.setenv(name, "prodution")
    with pytest.raises(ConfigError, match="NEWSLETTER_ENV: Input should be 'development' or 'production'"):
        load_settings()


def test_unknown_variables_are_warned_about_at_startup_with_the_closest_name(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert unknown_variables(
        {
            "NEWSLETTER_SECRT_KEY": "x",
            "NEWSLETTER_DATABASE_URL": "sqlite://",
            "NEWSLETTER_ENV": "development",
            "NEWSLETTER_TEST_PG_URL": "postgresql://",  # the test suite's own
            "NEWSLETTER_WHATEVER_THIS_IS": "1",
            "HOME": "/root",
        }
    ) == [
        "NEWSLETTER_SECRT_KEY is not a setting and is ignored; did you mean NEWSLETTER_SECRET_KEY?",
        "NEWSLETTER_WHATEVER_THIS_IS is not a setting and is ignored",
    ]
    monkeypatch.setenv("NEWSLETTER_BATCH_SIZ", "100")
    get_settings.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="newsletter.config"):
            settings = get_settings()
    finally:
        get_settings.cache_clear()
    assert settings.batch_size == 500  # ignored, as the warning says
    assert "NEWSLETTER_BATCH_SIZ is not a setting and is ignored; did you mean NEWSLETTER_BATCH_SIZE?" in caplog.text


def test_old_secret_keys_still_verify_and_new_tokens_use_the_current_key(monkeypatch: pytest.MonkeyPatch) -> None:
    old, current = "the-old-key-0123456789", "the-new-key-0123456789"
    sent_before = Tokens(old).make(TokenPurpose.unsubscribe, 7, 3)
    confirm_before = Tokens(old).make(TokenPurpose.confirm, 7, 3)
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", current)
    monkeypatch.setenv("NEWSLETTER_OLD_SECRET_KEYS", f"some-older-key-000000, {old}")
    settings = load_settings()
    assert settings.previous_secret_keys == ("some-older-key-000000", old)
    tokens = Tokens.from_settings(settings)
    assert tokens.read(TokenPurpose.unsubscribe, sent_before, 2) == (7, 3)
    assert tokens.read(TokenPurpose.confirm, confirm_before, 2) == (7, 3)
    new = tokens.make(TokenPurpose.unsubscribe, 7, 3)
    assert new == Tokens(current).make(TokenPurpose.unsubscribe, 7, 3) != sent_before
    # Without the old key in the list, the rotation breaks the old links: what the README warns about.
    with pytest.raises(UnknownToken):
        Tokens(current).read(TokenPurpose.unsubscribe, sent_before, 2)
    with pytest.raises(UnknownToken):
        Tokens(current).read(TokenPurpose.confirm, confirm_before, 2)
    # A token for another purpose stays refused under every key.
    with pytest.raises(UnknownToken):
        tokens.read(TokenPurpose.preferences, sent_before, 2)
