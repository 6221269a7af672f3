"""`newsletter segments` and `campaigns send --segment`, run for real in a subprocess against PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from newsletter.db import make_engine
from tests.factories import make_list, make_subscriber, publish_sample
from tests.test_cli import Cli

pytestmark = pytest.mark.postgres


@pytest.fixture
def cli(committed_pg: str, tmp_path: Path) -> Cli:
    return Cli(committed_pg, tmp_path)


def _seed(database_url: str) -> str:
    """Lists, subscribers and a digest made in-process: each command run below costs a Python start-up."""
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            weekly = make_list(session, slug="weekly")
            for email, name, city in [("ana", "Ana", "Almaty"), ("bo", "=Bo", "Almaty"), ("cy", "Cy", "Astana")]:
                make_subscriber(session, weekly, email=f"{email}@example.com", name=name).attributes = {"city": city}
            slug = publish_sample(session).slug
            session.commit()
    finally:
        engine.dispose()
    return slug


def test_segments_from_the_command_line(cli: Cli, tmp_path: Path) -> None:
    digest = _seed(cli.database_url)
    (tmp_path / "almaty.json").write_text('{"attribute": {"name": "city", "op": "eq", "value": "Almaty"}}')
    like = '{"all": [{"attribute": {"name": "city", "op": "like"}}]}'
    bad = cli.run("segments", "create", "almaty", "--filter", like, ok=False)
    assert 'filter.all[0].attribute: unknown operator "like"' in bad.stderr
    assert cli.sql("SELECT count(*) FROM segments") == 0  # nothing stored

    cli.run("segments", "create", "almaty", "--filter", "@almaty.json", "--description", "city edition")
    shown = cli.json("segments", "show", "almaty", "--count")
    assert shown["count"] == 2 and shown["filter"]["attribute"]["value"] == "Almaty"
    exported = cli.run("segments", "export", "almaty").stdout
    assert exported.splitlines() == ["email,name,city", "ana@example.com,Ana,Almaty", "bo@example.com,'=Bo,Almaty"]

    sent = cli.json("campaigns", "send", digest, "--list", "weekly", "--segment", "almaty")
    assert cli.sql(f"SELECT count(*) FROM deliveries WHERE campaign_id = {sent['id']} AND status = 'sent'") == 2
    outbox = sorted(p.read_text() for p in (tmp_path / "outbox").rglob("*.eml"))
    assert len(outbox) == 2 and not any("cy@example.com" in m for m in outbox)

    again = cli.json("campaigns", "resend", str(sent["id"]), "--non-openers", "--subject", "Missed it?")
    assert again["recipients"] == 2 and again["resend_of"] == sent["id"]
