"""Digest drafts: editable until a campaign uses them, then frozen; duplicates; what the public sees."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from newsletter import delivery, digests, previews
from newsletter.config import Settings
from newsletter.db import make_engine
from newsletter.migrate import upgrade
from newsletter.models import Campaign, Digest, DigestItem
from tests.factories import make_list, make_subscribers

DRAFT: dict[str, Any] = {
    "title": "Weekly",
    "date": "2025-04-26",
    "slug": "weekly-draft",
    "items": [
        {"headline": "Rail deal", "source": "Ariana", "url": "https://example.com/rail", "summary": "Trains."},
        {"headline": "Visitors", "source": "Azernews", "url": "https://example.com/visit", "section": "Tourism"},
    ],
}


def draft(**changes: Any) -> digests.Digest:
    return digests.Digest.model_validate({**DRAFT, **changes})


def snapshot(session: Session, slug: str) -> tuple[Any, ...]:
    """Everything stored about a digest, to show that a refused edit changed nothing."""
    session.expire_all()
    stored = session.scalar(select(Digest).where(Digest.slug == slug))
    assert stored is not None
    items = [(i.position, i.headline, i.source, i.url, i.summary, i.section) for i in stored.items]
    return (stored.title, stored.date, stored.language, stored.intro, stored.content_hash, stored.updated_at, items)


def digest_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Digest)) or 0


def test_a_draft_is_edited_in_place_and_renders_its_new_content(session: Session, settings: Settings) -> None:
    make_list(session, slug="weekly")
    stored, _ = digests.publish(session, draft())
    before = stored.content_hash
    edited = draft(
        title="Weekly, corrected",
        language="ru",
        intro="Hello.",
        items=[{"headline": "Visitors up", "source": "Azernews", "url": "https://example.com/visit"}, *DRAFT["items"]],
    )
    updated = digests.update(session, "weekly-draft", edited)
    assert updated.id == stored.id and updated.slug == "weekly-draft"
    assert (updated.title, updated.language, updated.intro) == ("Weekly, corrected", "ru", "Hello.")
    assert [item.headline for item in updated.items] == ["Visitors up", "Rail deal", "Visitors"]
    assert [item.position for item in updated.items] == [1, 2, 3]
    assert updated.content_hash == edited.model_copy(update={"slug": "weekly-draft"}).content_hash() != before
    assert session.scalar(select(func.count()).select_from(DigestItem)) == 3  # the old rows are gone
    assert digests.from_stored(updated) == edited
    shown = previews.preview_digest(session, settings, "weekly-draft")
    assert "Weekly, corrected" in shown.subject and "Visitors up" in shown.html


def test_saving_the_same_content_again_changes_nothing(session: Session) -> None:
    digests.publish(session, draft())
    before = snapshot(session, "weekly-draft")
    digests.update(session, "weekly-draft", draft())
    assert snapshot(session, "weekly-draft") == before


def test_a_digest_used_by_a_campaign_is_frozen_and_says_how_to_proceed(session: Session) -> None:
    weekly = make_list(session, slug="weekly")
    make_subscribers(session, weekly, 1)
    digests.publish(session, draft())
    campaign = delivery.create_campaign(session, digest_slug="weekly-draft", list_slugs=["weekly"])
    before = snapshot(session, "weekly-draft")
    with pytest.raises(digests.DigestFrozen) as refused:
        digests.update(session, "weekly-draft", draft(title="Typo fixed"))
    assert str(refused.value) == f"digest 'weekly-draft' is used by campaign {campaign.id}; duplicate it to edit"
    assert snapshot(session, "weekly-draft") == before
    assert [c.id for c in digests.campaigns_using(session, session.get(Digest, campaign.digest_id))] == [campaign.id]  # type: ignore[arg-type]


def test_an_unknown_slug_or_a_changed_slug_is_refused_and_changes_nothing(session: Session) -> None:
    digests.publish(session, draft())
    before = snapshot(session, "weekly-draft")
    with pytest.raises(digests.DigestNotFound, match="no digest with slug 'nope'"):
        digests.update(session, "nope", draft())
    with pytest.raises(digests.InvalidDigest, match="an edit keeps the slug 'weekly-draft', got 'renamed'"):
        digests.update(session, "weekly-draft", draft(slug="renamed", title="Other"))
    assert snapshot(session, "weekly-draft") == before and digest_count(session) == 1
    # Without a slug the body's derived one does not count: the edit keeps the path's.
    without_slug = digests.Digest.model_validate({k: v for k, v in DRAFT.items() if k != "slug"} | {"title": "New"})
    assert digests.update(session, "weekly-draft", without_slug).title == "New"


def test_publishing_other_content_under_a_taken_slug_points_at_update(session: Session) -> None:
    digests.publish(session, draft())
    before = snapshot(session, "weekly-draft")
    assert digests.publish(session, draft())[1] is False
    with pytest.raises(digests.DigestConflict, match=r"newsletter digests update weekly-draft FILE"):
        digests.publish(session, draft(title="Other"))
    assert snapshot(session, "weekly-draft") == before and digest_count(session) == 1


def test_duplicate_makes_an_editable_copy_under_a_new_slug(session: Session) -> None:
    weekly = make_list(session, slug="weekly")
    make_subscribers(session, weekly, 1)
    digests.publish(session, draft(language="kk"))
    delivery.create_campaign(session, digest_slug="weekly-draft", list_slugs=["weekly"])
    copy = digests.duplicate(session, "weekly-draft")
    again = digests.duplicate(session, "weekly-draft")
    named = digests.duplicate(session, "weekly-draft", "issue-2")
    assert [copy.slug, again.slug, named.slug] == ["weekly-draft-copy", "weekly-draft-copy-2", "issue-2"]
    assert digests.from_stored(copy) == draft(language="kk", slug="weekly-draft-copy")
    assert digests.campaigns_using(session, copy) == []
    assert digests.update(session, "weekly-draft-copy", draft(title="Fixed", slug="weekly-draft-copy")).title == "Fixed"


@pytest.mark.parametrize(
    ("new_slug", "error", "message"),
    [
        ("weekly-draft", digests.DigestConflict, "slug 'weekly-draft' is already taken; choose another"),
        ("Not A Slug", digests.InvalidDigest, "slug: must be 1-100 lowercase letters"),
    ],
)
def test_a_copy_under_a_taken_or_malformed_slug_is_refused(
    session: Session, new_slug: str, error: type[Exception], message: str
) -> None:
    digests.publish(session, draft())
    before = snapshot(session, "weekly-draft")
    with pytest.raises(error, match=message):
        digests.duplicate(session, "weekly-draft", new_slug)
    with pytest.raises(digests.DigestNotFound):
        digests.duplicate(session, "nope")
    assert snapshot(session, "weekly-draft") == before and digest_count(session) == 1


def test_a_long_slug_gets_a_copy_slug_within_the_limit(session: Session) -> None:
    long_slug = "a" * 100
    digests.publish(session, draft(slug=long_slug))
    first = digests.duplicate(session, long_slug)
    second = digests.duplicate(session, long_slug)
    assert first.slug == "a" * 95 + "-copy" and second.slug == "a" * 93 + "-copy-2"


def test_a_digest_without_a_language_keeps_the_hash_it_had_before_the_field_existed() -> None:
    # The sha256 of the canonical JSON without the "language" and "preheader" keys, as digests stored before
    # those fields existed carry it.
    import hashlib
    import json

    body = draft().model_dump(mode="json")
    del body["language"], body["preheader"]
    legacy = hashlib.sha256(
        json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    ).hexdigest()
    assert draft().content_hash() == legacy
    assert draft(language="en").content_hash() != legacy
    assert draft(preheader="One line for the inbox").content_hash() != legacy


@pytest.mark.parametrize("language", ["english language", "e", "en_US", "x" * 36])
def test_a_malformed_language_is_refused_with_an_example(language: str) -> None:
    with pytest.raises(digests.InvalidDigest, match=r"language: .*such as en, ru, kk or pt-BR|language: String should"):
        digests.parse_digest(
            digests.to_markdown(draft()).replace("slug: weekly-draft", f"slug: weekly-draft\nlanguage: {language}"),
            "md",
        )


def test_migration_0005_keeps_stored_digests_and_dates_their_last_change_at_publication(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, "0004")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO digests (slug, title, date, content_hash, published_at) "
                "VALUES ('old', 'Old', '2025-01-01', 'h', '2025-01-02 03:04:05.000000')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO digest_items (digest_id, position, headline, source, url, summary) "
                "VALUES (1, 1, 'H', 'S', 'https://example.com/a', '')"
            )
        )
    upgrade(engine)
    with Session(engine) as session:
        old = session.scalars(select(Digest)).one()
        assert old.updated_at == dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC) == old.published_at
        assert old.language is None and [item.headline for item in old.items] == ["H"]
    engine.dispose()


def test_campaign_rows_keep_pointing_at_the_frozen_content(session: Session) -> None:
    weekly = make_list(session, slug="weekly")
    make_subscribers(session, weekly, 1)
    digests.publish(session, draft())
    campaign = delivery.create_campaign(session, digest_slug="weekly-draft", list_slugs=["weekly"])
    copy = digests.duplicate(session, "weekly-draft")
    digests.update(session, copy.slug, draft(title="Changed copy", slug=copy.slug))
    session.expire_all()
    used = session.get(Campaign, campaign.id)
    assert used is not None and used.digest.title == "Weekly" and used.digest.slug == "weekly-draft"


def test_the_archive_and_feed_show_a_draft_only_once_it_went_out(settings: Settings, sessions: Any) -> None:
    """Decided: a digest is public (archive page, issue page, feed entry) from its first send to a public
    list, dated by that send, and never before, however long it was a draft."""
    from fastapi.testclient import TestClient

    from newsletter.web import create_app

    app = create_app(settings)
    app.state.sessions = app.state.tracking_sessions = app.state.one_click_sessions = sessions
    app.state.open_hot_pools = False
    with sessions() as session:
        weekly = make_list(session, slug="weekly")
        make_subscribers(session, weekly, 1)
        digests.publish(session, draft())
        session.commit()
    atom = "{http://www.w3.org/2005/Atom}"

    def public(client: TestClient) -> tuple[bool, bool, list[str]]:
        import xml.etree.ElementTree as ET

        feed = ET.fromstring(client.get("/feed.xml").content)  # noqa: S314 - our own output
        return (
            'href="/archive/weekly-draft"' in client.get("/archive").text,
            client.get("/archive/weekly-draft").status_code == 200,
            [entry.findtext(f"{atom}published") or "" for entry in feed.findall(f"{atom}entry")],
        )

    with TestClient(app) as client:
        assert public(client) == (False, False, [])
        with sessions() as session:
            campaign = delivery.create_campaign(session, digest_slug="weekly-draft", list_slugs=["weekly"])
            session.commit()
            assert public(client) == (False, False, [])  # a campaign not yet sending: still private
            delivery.start(session, settings, campaign.id)
            session.commit()
            started = campaign.started_at
        listed, page, published = public(client)
        assert listed and page and len(published) == 1
        assert started is not None and dt.datetime.fromisoformat(published[0]) == started


@pytest.mark.postgres
def test_an_edit_waits_for_a_campaign_being_created_and_then_is_refused(committed_pg: str) -> None:
    """PostgreSQL, two transactions: the campaign's foreign key holds the digest row, so the edit waits for
    it and then sees the campaign, instead of changing a digest a campaign has just started using."""
    import threading

    engine = make_engine(committed_pg)
    try:
        with Session(engine) as setup:
            weekly = make_list(setup, slug="weekly")
            make_subscribers(setup, weekly, 1)
            digests.publish(setup, draft())
            setup.commit()
        outcome: list[BaseException | None] = []

        def edit() -> None:
            with Session(engine) as other:
                try:
                    digests.update(other, "weekly-draft", draft(title="Edited meanwhile"))
                    other.commit()
                    outcome.append(None)
                except BaseException as exc:  # handed to the test thread
                    outcome.append(exc)

        with Session(engine) as creating:
            delivery.create_campaign(creating, digest_slug="weekly-draft", list_slugs=["weekly"])
            creating.flush()
            editor = threading.Thread(target=edit)
            editor.start()
            editor.join(1.0)
            assert editor.is_alive()  # waiting for the campaign's transaction
            creating.commit()
        editor.join(10)
        assert len(outcome) == 1 and isinstance(outcome[0], digests.DigestFrozen)
        with Session(engine) as check:
            assert check.scalars(select(Digest.title)).all() == ["Weekly"]
    finally:
        engine.dispose()
