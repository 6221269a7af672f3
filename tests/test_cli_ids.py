"""Ids beyond what a database id can be (bigint, SQLite's INTEGER) given to any command that takes one: a
usage error naming the range, exit status 2, nothing changed (they were an OverflowError traceback)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from newsletter import delivery
from newsletter.cli import app
from newsletter.config import get_settings
from newsletter.db import MAX_ID, make_engine, session_scope
from newsletter.migrate import upgrade
from newsletter.models import AuditEntry, Campaign, CampaignStatus, WebhookEndpoint
from tests.conftest import TEST_SECRET
from tests.factories import make_list, make_subscriber, publish_sample

TOO_BIG = str(MAX_ID + 1)
HUGE = "9" * 30
COMMANDS = [
    ["webhooks", "show", "{id}"],
    ["webhooks", "deliveries", "{id}"],
    ["webhooks", "deliveries", "1", "--before", "{id}"],
    ["webhooks", "redeliver", "{id}"],
    ["webhooks", "enable", "{id}"],
    ["webhooks", "disable", "{id}"],
    ["webhooks", "delete", "{id}"],
    ["webhooks", "rotate-secret", "{id}"],
    ["campaigns", "status", "{id}"],
    ["campaigns", "deliveries", "{id}"],
    ["campaigns", "deliveries", "1", "--after", "{id}"],
    ["campaigns", "resend", "{id}", "--status", "failed"],
    ["campaigns", "pause", "{id}"],
    ["campaigns", "resume", "{id}"],
    ["campaigns", "cancel", "{id}"],
    ["audit", "--before", "{id}"],
    ["subscribers", "search", "--after", "{id}"],
    ["sequences", "steps", "remove", "weekly", "{id}"],
    ["sequences", "steps", "move", "weekly", "1", "{id}"],
]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'cli.db'}" if request.param == "sqlite" else request.getfixturevalue("committed_pg")
    if request.param == "sqlite":
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
    for name, value in {
        "NEWSLETTER_DATABASE_URL": url,
        "NEWSLETTER_SECRET_KEY": TEST_SECRET,
        "NEWSLETTER_OUTBOX_DIR": str(tmp_path / "outbox"),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("NEWSLETTER_BROKER_URL", raising=False)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def snapshot() -> tuple[list[tuple[object, ...]], int]:
    with session_scope(get_settings()) as session:
        campaigns = [tuple(row) for row in session.execute(select(Campaign.id, Campaign.status).order_by(Campaign.id))]
        endpoints = [tuple(row) for row in session.execute(select(WebhookEndpoint.id, WebhookEndpoint.enabled))]
        return campaigns + endpoints, session.scalar(select(func.count()).select_from(AuditEntry)) or 0


def test_an_id_larger_than_a_database_id_is_a_usage_error(database: str) -> None:
    with session_scope(get_settings()) as session:
        weekly = make_list(session, slug="weekly")
        make_subscriber(session, weekly)
        campaign = delivery.create_campaign(session, digest_slug=publish_sample(session).slug, list_slugs=["weekly"])
        session.add(WebhookEndpoint(url="https://hooks.example.org/in", secret="whsec_x", event_types=["*"]))
    before = snapshot()
    runner = CliRunner()
    for words in COMMANDS:
        for value in (TOO_BIG, HUGE):
            result = runner.invoke(app, [w.replace("{id}", value) for w in words], env={"COLUMNS": "200"})
            said = " ".join(result.output.split())
            assert result.exit_code == 2, (words, result.output, result.exception)
            assert "Invalid value" in said and f"{MAX_ID}" in said, (words, said)
            assert "Traceback" not in said and "OverflowError" not in said
        # the largest id is still an id: it names no row (exit 1 with the reason), as any unknown id
        result = runner.invoke(app, [w.replace("{id}", str(MAX_ID)) for w in words])
        assert result.exit_code != 2 and not isinstance(result.exception, OverflowError), (words, result.output)
    # not an id, but the same overflow: a span further back than dates reach is a one-line refusal
    result = runner.invoke(app, ["audit", "--since", "9" * 15 + "d"])
    assert result.exit_code == 1 and "before the year 1" in str(result.exception), result.output
    assert snapshot() == before
    with session_scope(get_settings()) as session:
        assert session.get(Campaign, campaign.id).status == CampaignStatus.draft  # type: ignore[union-attr]
