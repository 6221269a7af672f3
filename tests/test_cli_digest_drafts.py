"""`newsletter digests update` and `duplicate` as a person runs them, on SQLite and PostgreSQL.

Every refusal exits non-zero with one line on stderr and leaves the stored digests as they were.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter import delivery
from newsletter.db import make_engine, session_scope
from newsletter.migrate import upgrade
from newsletter.models import Digest, DigestItem
from tests.conftest import fresh_database
from tests.factories import SAMPLE_DIGEST, make_list, make_subscribers
from tests.test_cli_digests import SAMPLE_SLUG, Run, assert_refused, make_runner

pytestmark = pytest.mark.postgres


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'cli.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
    else:
        with fresh_database("cli_drafts") as url:
            yield url


@pytest.fixture
def run(database: str, tmp_path: Path) -> Run:
    return make_runner(database, tmp_path)


def digests_in(database: str) -> list[tuple[object, ...]]:
    engine = make_engine(database)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(Digest.slug, Digest.title, Digest.content_hash).order_by(Digest.id)).all()
            return [tuple(row) for row in rows]
    finally:
        engine.dispose()


def edited_sample(tmp_path: Path, old: str = "Tokayev", new: str = "Tokaev", name: str = "edited.md") -> Path:
    path = tmp_path / name
    path.write_text(SAMPLE_DIGEST.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    return path


def test_update_edits_a_draft_and_duplicate_copies_it(run: Run, database: str, tmp_path: Path) -> None:
    assert run("digests", "publish", str(SAMPLE_DIGEST)).returncode == 0
    before = digests_in(database)
    result = run("digests", "update", SAMPLE_SLUG, str(edited_sample(tmp_path)), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["slug"] == SAMPLE_SLUG
    after = digests_in(database)
    assert after[0][0] == SAMPLE_SLUG and after[0][2] != before[0][2]
    engine = make_engine(database)
    with engine.connect() as conn:
        summaries = conn.execute(select(DigestItem.headline)).scalars().all()
    engine.dispose()
    assert any("Tokaev" in summary for summary in summaries)
    assert not any("Tokayev" in summary for summary in summaries)

    copied = run("digests", "duplicate", SAMPLE_SLUG)
    assert copied.returncode == 0 and copied.stdout == f"{SAMPLE_SLUG}-copy\n"
    named = run("digests", "duplicate", SAMPLE_SLUG, "--slug", "issue-43", "--json")
    assert json.loads(named.stdout) == {"slug": "issue-43", "from": SAMPLE_SLUG}
    assert [row[0] for row in digests_in(database)] == [SAMPLE_SLUG, f"{SAMPLE_SLUG}-copy", "issue-43"]
    assert len({row[2] for row in digests_in(database)}) == 3  # each content hash covers its own slug


def test_update_and_duplicate_refusals_change_nothing(run: Run, database: str, tmp_path: Path) -> None:
    assert run("digests", "publish", str(SAMPLE_DIGEST)).returncode == 0
    before = digests_in(database)
    bad = edited_sample(tmp_path, "date: 2025-04-26", "date: 2025-02-30", "bad.md")
    assert_refused(run("digests", "update", SAMPLE_SLUG, str(bad)), "date: expected a date like 2025-04-26")
    assert_refused(run("digests", "update", "nope", str(SAMPLE_DIGEST)), "no digest with slug 'nope'")
    renamed = tmp_path / "renamed.md"
    renamed.write_text(
        SAMPLE_DIGEST.read_text(encoding="utf-8").replace(f"slug: {SAMPLE_SLUG}", "slug: other-slug"), encoding="utf-8"
    )
    assert_refused(run("digests", "update", SAMPLE_SLUG, str(renamed)), "an edit keeps the slug")
    assert_refused(run("digests", "update", SAMPLE_SLUG, str(tmp_path / "missing.md")), "no such file")
    assert_refused(run("digests", "duplicate", SAMPLE_SLUG, "--slug", SAMPLE_SLUG), "is already taken")
    assert_refused(run("digests", "duplicate", SAMPLE_SLUG, "--slug", "Not a slug"), "slug: must be 1-100")
    assert_refused(run("digests", "duplicate", "nope"), "no digest with slug 'nope'")
    assert digests_in(database) == before


def test_a_digest_a_campaign_uses_is_frozen(run: Run, database: str, tmp_path: Path, make_settings) -> None:
    assert run("digests", "publish", str(SAMPLE_DIGEST)).returncode == 0
    with session_scope(make_settings(database_url=database)) as session:
        weekly = make_list(session, slug="weekly")
        make_subscribers(session, weekly, 1)
        campaign_id = delivery.create_campaign(session, digest_slug=SAMPLE_SLUG, list_slugs=["weekly"]).id
    before = digests_in(database)
    assert_refused(
        run("digests", "update", SAMPLE_SLUG, str(edited_sample(tmp_path))),
        f"digest '{SAMPLE_SLUG}' is used by campaign {campaign_id}; duplicate it to edit",
    )
    assert digests_in(database) == before
    copy = run("digests", "duplicate", SAMPLE_SLUG).stdout.strip()
    edited = edited_sample(tmp_path).read_text(encoding="utf-8").replace(f"slug: {SAMPLE_SLUG}", f"slug: {copy}")
    (tmp_path / "copy.md").write_text(edited, encoding="utf-8")
    assert run("digests", "update", copy, str(tmp_path / "copy.md")).returncode == 0
