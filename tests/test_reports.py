"""Report data of a campaign: reach before planning, opens and clicks per hour, bounces/complaints/
unsubscribes, the ledger searched by address; the domain on both backends and the API on PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from newsletter import delivery, stats, subscribers, subscriptions, suppressions
from newsletter.config import Settings
from newsletter.lists import ListNotFound
from newsletter.models import Campaign, Delivery, DeliveryStatus, Event, EventType, SuppressionReason
from tests.apiclient import Api, api_client
from tests.factories import make_list, make_subscriber, make_subscribers, publish_sample


def two_lists(session: Session) -> None:
    a, b = make_list(session, slug="a"), make_list(session, slug="b")
    both = make_subscriber(session, a, "both@example.com")
    subscriptions.add_subscription(session, b, both, source=subscriptions.SubscriptionSource.admin, confirmed=True)
    make_subscribers(session, a, 3, prefix="a")
    make_subscribers(session, b, 2, prefix="b")
    make_subscriber(session, a, "pending@example.com", confirmed=False)
    suppressions.suppress(
        session, make_subscriber(session, b, "bounced@example.com").email, SuppressionReason.hard_bounce
    )
    subscribers.set_blocked(session, make_subscriber(session, a, "blocked@example.com"), True)


def test_reach_counts_what_planning_would_plan(session: Session, settings: Settings) -> None:
    two_lists(session)
    assert stats.reach(session, ["a"]) == 4
    assert stats.reach(session, ["b"]) == 3
    assert stats.reach(session, ["a", "b", "a"]) == 6  # one per person
    campaign = delivery.create_campaign(session, digest_slug=publish_sample(session).slug, list_slugs=["a", "b"])
    delivery.start(session, settings, campaign.id)
    assert campaign.recipient_count == 6


def test_reach_of_an_unknown_list_is_refused_and_creates_nothing(session: Session) -> None:
    two_lists(session)
    with pytest.raises(ListNotFound, match="no list with slug 'nope'"):
        stats.reach(session, ["a", "nope"])
    assert session.scalar(select(func.count()).select_from(Campaign)) == 0


def sent_campaign(session: Session, settings: Settings, size: int = 4) -> tuple[int, list[Delivery]]:
    weekly = make_list(session, slug="weekly")
    make_subscribers(session, weekly, size)
    campaign = delivery.create_campaign(session, digest_slug=publish_sample(session).slug, list_slugs=["weekly"])
    delivery.start(session, settings, campaign.id)
    rows = list(session.scalars(select(Delivery).where(Delivery.campaign_id == campaign.id).order_by(Delivery.id)))
    for row in rows:
        row.status = DeliveryStatus.sent
    session.flush()
    return campaign.id, rows


def event(session: Session, row: Delivery, kind: EventType, at: dt.datetime, detail: str | None = None) -> None:
    session.add(
        Event(
            type=kind,
            campaign_id=row.campaign_id,
            delivery_id=row.id,
            subscriber_id=row.subscriber_id,
            list_id=row.list_id,
            detail=detail,
            created_at=at,
        )
    )


def test_timeline_counts_opens_and_clicks_per_hour_over_the_first_week(session: Session, settings: Settings) -> None:
    campaign_id, rows = sent_campaign(session, settings)
    start = dt.datetime(2026, 11, 2, 9, 40, tzinfo=dt.UTC)
    delivery.get_campaign(session, campaign_id).started_at = start
    event(session, rows[0], EventType.open, start + dt.timedelta(minutes=5))
    event(session, rows[1], EventType.open, start + dt.timedelta(minutes=15))  # 09:55, same hour
    event(session, rows[1], EventType.click, start + dt.timedelta(minutes=25))  # 10:05
    event(session, rows[2], EventType.open, start + dt.timedelta(hours=3))  # 12:40
    event(session, rows[3], EventType.open, start + dt.timedelta(days=8))  # after the first week: not shown
    session.flush()
    hours = stats.engagement_timeline(session, campaign_id)
    at = dt.datetime(2026, 11, 2, 9, tzinfo=dt.UTC)
    assert [(h.start, h.opens, h.clicks) for h in hours] == [
        (at, 2, 0),
        (at + dt.timedelta(hours=1), 0, 1),
        (at + dt.timedelta(hours=2), 0, 0),
        (at + dt.timedelta(hours=3), 1, 0),
    ]


def test_a_campaign_without_events_has_one_empty_hour(session: Session, settings: Settings) -> None:
    campaign_id, _ = sent_campaign(session, settings, size=1)
    [hour] = stats.engagement_timeline(session, campaign_id)
    assert (hour.opens, hour.clicks) == (0, 0)


def test_bounces_complaints_and_unsubscribes_are_listed_newest_first_and_paged(
    session: Session, settings: Settings
) -> None:
    campaign_id, rows = sent_campaign(session, settings)
    now = dt.datetime.now(dt.UTC)
    for i, row in enumerate(rows[:3]):
        event(session, row, EventType.bounce, now + dt.timedelta(seconds=i), detail=f"550 5.1.1 gone {i}")
    event(session, rows[3], EventType.complaint, now)
    session.flush()
    page = stats.campaign_events(session, campaign_id, EventType.bounce, limit=2)
    assert [e["detail"] for e in page.items] == ["550 5.1.1 gone 2", "550 5.1.1 gone 1"]
    assert page.items[0]["email"] == "r2@example.com"
    rest = stats.campaign_events(session, campaign_id, EventType.bounce, after=page.next_cursor, limit=2)
    assert [e["detail"] for e in rest.items] == ["550 5.1.1 gone 0"] and rest.next_cursor is None
    assert [e["email"] for e in stats.campaign_events(session, campaign_id, EventType.complaint).items] == [
        "r3@example.com"
    ]
    assert stats.campaign_events(session, campaign_id, EventType.unsubscribe).items == []
    with pytest.raises(delivery.CampaignError, match="only bounce, complaint, unsubscribe"):
        stats.campaign_events(session, campaign_id, EventType.open)
    # the campaign page's one query for the newest of each kind: the first page of each, as listed above
    kinds = (EventType.bounce, EventType.complaint, EventType.unsubscribe)
    for limit in (1, 2, 20):
        latest = stats.latest_events(session, campaign_id, kinds, limit)
        assert latest == {kind: stats.campaign_events(session, campaign_id, kind, limit=limit) for kind in kinds}


def test_the_ledger_is_searched_by_the_start_of_the_address(session: Session, settings: Settings) -> None:
    weekly = make_list(session, slug="weekly")
    for address in ("ada@example.com", "adam@example.org", "bob@example.com", "a_b@example.com", "a%b@example.com"):
        make_subscriber(session, weekly, address)
    campaign = delivery.create_campaign(session, digest_slug=publish_sample(session).slug, list_slugs=["weekly"])
    delivery.start(session, settings, campaign.id)

    def found(search: str, **kwargs: object) -> list[str]:
        return [i["email"] for i in stats.ledger_page(session, campaign.id, search=search, **kwargs).items]  # type: ignore[arg-type]

    assert found("ADA") == ["ada@example.com", "adam@example.org"]  # the start of the address, any case
    assert found("adam@") == ["adam@example.org"]
    assert found("example.com") == []  # not the middle: an index finds the start among millions
    assert found("a_b") == ["a_b@example.com"]  # _ and % are not wildcards
    assert found("a%b") == ["a%b@example.com"]
    assert found("ada", statuses=[DeliveryStatus.sent]) == []
    first = stats.ledger_page(session, campaign.id, search="a", limit=2)
    assert [i["email"] for i in first.items] == ["ada@example.com", "adam@example.org"]
    second = stats.ledger_page(session, campaign.id, search="a", after=first.next_cursor, limit=2)
    assert [i["email"] for i in second.items] == ["a_b@example.com", "a%b@example.com"]


# --- the API ----------------------------------------------------------------------------------------------


@pytest.fixture
def pg_settings(make_settings: Callable[..., Settings], pg_url: str) -> Settings:
    return make_settings(database_url=pg_url)


@pytest.fixture
def api(pg_settings: Settings, pg_sessions: sessionmaker[Session]) -> Iterator[Api]:
    with api_client(pg_settings, pg_sessions) as client:
        yield client


def test_api_reach_progress_timeline_events_and_search(api: Api, pg_settings: Settings) -> None:
    with api.sessions() as session:
        two_lists(session)
        session.commit()
    reach = api.call("GET", "/api/v1/campaigns/reach", "editor", params={"list": ["a", "b"]})
    assert reach.status_code == 200 and reach.json() == {"lists": ["a", "b"], "recipients": 6, "segment": None}
    missing = api.call("GET", "/api/v1/campaigns/reach", "editor", params={"list": ["a", "nope"]})
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    nothing = api.call("GET", "/api/v1/campaigns/reach", "editor").json()
    assert nothing == {"lists": [], "recipients": 0, "segment": None}
    assert api.call("GET", "/api/v1/campaigns/reach", "editor", params={"list": "Bad Slug!"}).status_code == 422

    with api.sessions() as session:
        digest = publish_sample(session)
        campaign = delivery.create_campaign(session, digest_slug=digest.slug, list_slugs=["a"])
        delivery.start(session, pg_settings, campaign.id)
        cid = campaign.id
        row = session.scalars(select(Delivery).where(Delivery.campaign_id == cid).order_by(Delivery.id)).first()
        assert row is not None
        event(session, row, EventType.unsubscribe, dt.datetime.now(dt.UTC), detail="one-click")
        session.commit()
    state = api.call("GET", f"/api/v1/campaigns/{cid}/progress", "editor").json()
    assert state["status"] == "sending" and state["counts"]["pending"] == 4 and state["rate"] == 0
    hours = api.call("GET", f"/api/v1/campaigns/{cid}/timeline", "editor").json()
    assert len(hours) == 1 and hours[0]["opens"] == 0
    unsubscribed = api.call("GET", f"/api/v1/campaigns/{cid}/events", "editor", params={"type": "unsubscribe"})
    assert [e["email"] for e in unsubscribed.json()["items"]] == ["both@example.com"]
    opens = api.call("GET", f"/api/v1/campaigns/{cid}/events", "editor", params={"type": "open"})
    assert opens.status_code == 409 and "only bounce" in opens.json()["error"]
    searched = api.call("GET", f"/api/v1/campaigns/{cid}/deliveries", "editor", params={"search": "a1@"}).json()
    assert [d["email"] for d in searched["items"]] == ["a1@example.com"]
    assert api.call("GET", "/api/v1/campaigns/999999/progress", "editor").status_code == 404


def test_a_big_campaigns_report_is_current_after_every_event(session: Session, settings: Settings) -> None:
    # The figures come from counters kept in each event's transaction: no aggregate is kept for a while.
    campaign_id, rows = sent_campaign(session, settings, size=2)
    delivery.get_campaign(session, campaign_id).recipient_count = 1_000_000
    now = dt.datetime.now(dt.UTC)
    for expected, row in enumerate([rows[0], rows[1], rows[1]], start=1):
        event(session, row, EventType.open, now)
        session.flush()
        report = stats.campaign_report(session, campaign_id)
        assert report["opens"] == expected
        assert report["unique_opens"] == min(expected, 2)
        assert stats.campaign_figures(session, [campaign_id])[campaign_id].unique_opens == min(expected, 2)
        assert sum(hour.opens for hour in stats.engagement_timeline(session, campaign_id)) == expected
