"""The digests table: keyset pages both ways, search by title, and the word for where each digest stands."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.orm import Session

from newsletter import delivery, digest_index, digests
from newsletter.models import Campaign, CampaignStatus
from tests.factories import make_list, make_subscribers


def store(session: Session, slug: str, title: str, date: dt.date) -> None:
    digests.publish(
        session,
        digests.Digest.model_validate(
            {
                "title": title,
                "date": date,
                "slug": slug,
                "items": [{"headline": "H", "source": "S", "url": "https://example.com/a"}],
            }
        ),
    )


def test_pages_go_older_and_back_newer_without_gaps_or_repeats(session: Session) -> None:
    for n in range(7):
        # two digests share each date: the id breaks the tie
        store(session, f"d{n}", f"Issue {n}", dt.date(2025, 1, 1) + dt.timedelta(days=n // 2))
    first = digest_index.page(session, limit=3)
    assert [r.slug for r in first.rows] == ["d6", "d5", "d4"] and first.newer is None and first.older
    second = digest_index.page(session, older=first.older, limit=3)
    assert [r.slug for r in second.rows] == ["d3", "d2", "d1"] and second.newer and second.older
    last = digest_index.page(session, older=second.older, limit=3)
    assert [r.slug for r in last.rows] == ["d0"] and last.older is None and last.newer
    back = digest_index.page(session, newer=last.newer, limit=3)
    assert [r.slug for r in back.rows] == ["d3", "d2", "d1"] and back.older and back.newer
    top = digest_index.page(session, newer=back.newer, limit=3)
    assert [r.slug for r in top.rows] == ["d6", "d5", "d4"] and top.newer is None and top.older


def test_search_matches_title_text_literally_and_ignores_case(session: Session) -> None:
    store(session, "a", "100% Kazakhstan", dt.date(2025, 1, 1))
    store(session, "b", "Kazakh_stan weekly", dt.date(2025, 1, 2))
    store(session, "c", "Other news", dt.date(2025, 1, 3))
    assert [r.slug for r in digest_index.page(session, search="kazakh").rows] == ["b", "a"]
    assert [r.slug for r in digest_index.page(session, search="%").rows] == ["a"]
    assert [r.slug for r in digest_index.page(session, search="h_s").rows] == ["b"]
    assert [r.slug for r in digest_index.page(session, search="  ").rows] == ["c", "b", "a"]
    assert digest_index.page(session, search="nothing like it").rows == []


@pytest.mark.parametrize("cursor", ["x", "2025-13-01.1", "2025-01-01", "2025-01-01.-1", "2025-01-01.1;drop"])
def test_a_forged_cursor_is_refused_with_a_way_back(session: Session, cursor: str) -> None:
    with pytest.raises(digest_index.BadCursor, match="start again from the first page"):
        digest_index.page(session, older=cursor)


def test_status_is_the_furthest_any_campaign_got(session: Session) -> None:
    weekly = make_list(session, slug="weekly")
    make_subscribers(session, weekly, 1)
    store(session, "draft", "Draft", dt.date(2025, 1, 1))
    store(session, "used", "Used", dt.date(2025, 1, 2))
    campaign = delivery.create_campaign(session, digest_slug="used", list_slugs=["weekly"])
    rows = {r.slug: r for r in digest_index.page(session).rows}
    assert (rows["draft"].status, rows["used"].status) == ("draft", "ready")
    assert rows["draft"].items == 1
    for status, word in [
        (CampaignStatus.scheduled, "scheduled"),
        (CampaignStatus.sending, "sending"),
        (CampaignStatus.paused, "sending"),
        (CampaignStatus.finished, "sent"),
        (CampaignStatus.cancelled, "cancelled"),
    ]:
        session.get(Campaign, campaign.id).status = status  # type: ignore[union-attr]
        session.flush()
        assert {r.slug: r.status for r in digest_index.page(session).rows}["used"] == word
    assert digest_index.status_of([CampaignStatus.cancelled, CampaignStatus.finished]) == "sent"
