"""The public web over HTTP: subscribe, confirm, one-click unsubscribe, preferences, tracking, archive, feed."""

from __future__ import annotations

import email
import email.policy
import html
import random
import re
import string
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from newsletter import confirmations, delivery, gdpr, subscriptions, suppressions, users
from newsletter.config import ConfigError, Settings
from newsletter.db import make_engine
from newsletter.delivery import ledger
from newsletter.mailer import MemoryMailer
from newsletter.models import (
    Campaign,
    CampaignStatus,
    Delivery,
    Event,
    EventType,
    Link,
    MailingList,
    OptIn,
    Role,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
)
from newsletter.tokens import TokenPurpose, Tokens
from newsletter.tracking import PIXEL
from newsletter.web import create_app
from newsletter.web.pages import trusted_networks
from newsletter.web.throttle import LocalThrottle
from tests.conftest import fresh_database
from tests.factories import make_list, make_subscriber, make_subscribers, publish_sample, subscription_of
from tests.test_subscriptions import MALFORMED_ADDRESSES, counts

with warnings.catch_warnings():
    # Starlette 1.x would like `httpx2` for its TestClient; httpx still works and is what we ship.
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient


@dataclass
class Web:
    app: FastAPI
    client: TestClient
    mailer: MemoryMailer
    sessions: sessionmaker[Session]
    settings: Settings
    tokens: Tokens

    def session(self) -> Session:
        return self.sessions()

    def client_from(self, ip: str) -> TestClient:
        return TestClient(self.app, client=(ip, 50000), follow_redirects=False)


@pytest.fixture
def web(settings: Settings, sessions: sessionmaker[Session]) -> Iterator[Web]:
    app = create_app(settings)
    app.state.sessions = app.state.tracking_sessions = app.state.one_click_sessions = sessions
    app.state.open_hot_pools = False  # the PostgreSQL fast path would not see this test's rows
    app.state.subscribe_throttle = LocalThrottle(settings.subscribe_ip_limit, 3600)
    mailer = MemoryMailer()

    def enqueue(subscription_id: int) -> None:
        with sessions.begin() as session:
            confirmations.send_confirmation(session, settings, mailer, subscription_id)

    app.state.enqueue_confirmation = enqueue
    with TestClient(app, client=("203.0.113.10", 50000), follow_redirects=False) as client:
        yield Web(app, client, mailer, sessions, settings, Tokens(settings.secret_key))


def fresh(session: Session) -> Session:
    session.expire_all()
    return session


def confirm_link(message: bytes) -> str:
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    text = parsed.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    match = re.search(r"https?://\S+/confirm/(\S+)", text)
    assert match, text
    return "/confirm/" + match[1]


def start(session: Session, settings: Settings, campaign_id: int) -> list[delivery.BatchRange]:
    """`delivery.start` for these tests: render (registering links), plan the ledger, mark it sending.

    The ledger is planned row by row here so that these tests do not depend on the engine's set-based
    planning SQL, which the delivery engine's own tests cover.
    """
    campaign = delivery.get_campaign(session, campaign_id)
    delivery.render_campaign(session, settings, campaign)
    rows = session.execute(
        select(Subscription.subscriber_id, func.min(Subscription.list_id))
        .where(
            Subscription.list_id.in_([m.id for m in campaign.lists]),
            Subscription.status == SubscriptionStatus.confirmed,
        )
        .group_by(Subscription.subscriber_id)
        .order_by(Subscription.subscriber_id)
    ).all()
    session.add_all(Delivery(campaign_id=campaign_id, subscriber_id=s, list_id=m) for s, m in rows)
    campaign.status = CampaignStatus.sending
    session.flush()
    return ledger.batch_ranges(session, campaign_id, settings.batch_size)


# --- subscribe --------------------------------------------------------------------------------------------


def test_subscribe_form_is_accessible(web: Web, session: Session) -> None:
    mailing_list = make_list(session, name="The Steppe Courier")
    mailing_list.form_fields = [{"name": "city", "label": "City"}]
    session.commit()
    page = web.client.get(f"/subscribe/{mailing_list.slug}")
    assert page.status_code == 200
    html = page.text
    assert "The Steppe Courier" in html
    for field in ("email", "name", "attr-city"):
        assert f'<label for="{field}">' in html and f'id="{field}"' in html
    assert 'name="website"' in html and 'tabindex="-1"' in html  # the honeypot is out of reach
    assert "<script" not in html
    assert page.headers["x-frame-options"] == "DENY" and page.headers["referrer-policy"] == "no-referrer"
    css = web.client.get(re.search(r'href="(/static/style\.css\?v=\w+)"', html)[1])  # type: ignore[index]
    assert css.status_code == 200 and ":focus-visible" in css.text and len(css.content) < 8000


def test_private_and_unknown_lists_are_404(web: Web, session: Session) -> None:
    private = make_list(session, visibility="private")
    session.commit()
    before = counts(session)
    for slug in (private.slug, "no-such-list"):
        assert web.client.get(f"/subscribe/{slug}").status_code == 404
        assert web.client.post(f"/subscribe/{slug}", data={"email": "a@example.com"}).status_code == 404
    assert counts(fresh(session)) == before and not web.mailer.sent


def test_double_opt_in_flow_over_http(web: Web, session: Session) -> None:
    mailing_list = make_list(session, opt_in=OptIn.double, name="Weekly Brief")
    session.commit()
    answer = web.client.post(f"/subscribe/{mailing_list.slug}", data={"email": "Ann@Example.com", "name": "Ann"})
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    assert len(web.mailer.sent) == 1
    message = web.mailer.sent[0]
    assert message.recipient == "ann@example.com"
    parsed = email.message_from_bytes(message.data, policy=email.policy.default)
    assert parsed["Subject"] == "Confirm your subscription to Weekly Brief"
    assert parsed.get_body(("html",)) is not None
    link = confirm_link(message.data)

    subscription = session.scalar(select(Subscription).join(Subscriber).where(Subscriber.email == "ann@example.com"))
    assert subscription is not None and subscription.status == SubscriptionStatus.pending

    confirmed = web.client_from("198.51.100.20").get(link)
    assert confirmed.status_code == 200 and "You are subscribed" in confirmed.text
    subscription = fresh(session).get(Subscription, subscription.id)
    assert subscription is not None and subscription.status == SubscriptionStatus.confirmed
    assert subscription.consent_ip == "198.51.100.20" and subscription.consent_at is not None
    assert web.client.get(link).status_code == 200  # idempotent
    assert session.scalar(select(func.count()).where(Event.type == EventType.confirm)) == 1


def test_the_answer_is_the_same_whoever_the_address_belongs_to(web: Web, session: Session) -> None:
    mailing_list = make_list(session)
    make_subscriber(session, mailing_list, "confirmed@example.com")
    make_subscriber(session, mailing_list, "pending@example.com", confirmed=False)
    suppressions.suppress(session, "suppressed@example.com", SuppressionReason.hard_bounce)
    session.commit()
    bodies = set()
    for address in ("new@example.com", "pending@example.com", "confirmed@example.com", "suppressed@example.com"):
        answer = web.client.post(f"/subscribe/{mailing_list.slug}", data={"email": address})
        assert answer.status_code == 200
        bodies.add(answer.text)
    assert len(bodies) == 1
    assert sorted(m.recipient for m in web.mailer.sent) == ["new@example.com", "pending@example.com"]


def test_single_opt_in_over_http(web: Web, session: Session) -> None:
    mailing_list = make_list(session, opt_in=OptIn.single)
    session.commit()
    answer = web.client.post(f"/subscribe/{mailing_list.slug}", data={"email": "now@example.com"})
    assert answer.status_code == 200 and "Thank you" in answer.text
    assert not web.mailer.sent
    assert fresh(session).scalar(select(Subscription.status)) == SubscriptionStatus.confirmed


def test_malformed_addresses_over_http_change_nothing(web: Web, session: Session) -> None:
    mailing_list = make_list(session)
    session.commit()
    before = counts(session)
    for number, address in enumerate(MALFORMED_ADDRESSES):
        client = web.client_from(f"192.0.2.{number + 1}")  # keep under the per-IP limit
        answer = client.post(f"/subscribe/{mailing_list.slug}", data={"email": address})
        assert answer.status_code == 400, address
        assert 'role="alert"' in answer.text and 'aria-invalid="true"' in answer.text
        as_json = client.post(f"/subscribe/{mailing_list.slug}", json={"email": address})
        assert as_json.status_code == 400 and as_json.json()["field"] == "email"
    assert counts(fresh(session)) == before and not web.mailer.sent


def test_flood_from_one_ip_is_limited(web: Web, session: Session) -> None:
    mailing_list = make_list(session)
    session.commit()
    limit = web.settings.subscribe_ip_limit
    statuses = [
        web.client.post(f"/subscribe/{mailing_list.slug}", data={"email": f"victim{i}@example.com"}).status_code
        for i in range(limit + 15)
    ]
    assert statuses == [200] * limit + [429] * 15
    assert len(web.mailer.sent) == limit
    assert fresh(session).scalar(select(func.count()).select_from(Subscriber)) == limit
    # Another network is not affected.
    assert (
        web.client_from("198.51.100.99")
        .post(f"/subscribe/{mailing_list.slug}", data={"email": "other@example.com"})
        .status_code
        == 200
    )


def test_flood_for_one_address_sends_one_email(web: Web, session: Session) -> None:
    mailing_list = make_list(session)
    session.commit()
    for i in range(60):  # from many addresses, so only the per-address limit is in play
        answer = web.client_from(f"10.0.{i // 250}.{i % 250 + 1}").post(
            f"/subscribe/{mailing_list.slug}", data={"email": "victim@example.com"}
        )
        assert answer.status_code == 200
    assert len(web.mailer.sent) == 1
    assert fresh(session).scalar(select(func.count()).select_from(Subscription)) == 1


def test_redis_throttle_is_shared(redis_url: str) -> None:
    from newsletter.web.throttle import RedisThrottle

    first, second = RedisThrottle(redis_url, 3, 3600, "t"), RedisThrottle(redis_url, 3, 3600, "t")
    assert [first.allow("ip"), second.allow("ip"), first.allow("ip"), second.allow("ip")] == [True] * 3 + [False]
    assert first.allow("other-ip")


def test_honeypot_hit_changes_nothing(web: Web, session: Session) -> None:
    mailing_list = make_list(session)
    session.commit()
    before = counts(session)
    answer = web.client.post(
        f"/subscribe/{mailing_list.slug}", data={"email": "bot@example.com", "website": "http://spam.example"}
    )
    human = web.client_from("198.51.100.1").post(f"/subscribe/{mailing_list.slug}", data={"email": "h@example.com"})
    assert answer.status_code == 200 and answer.text == human.text  # indistinguishable for the bot
    assert (
        fresh(session).scalar(select(func.count()).select_from(Subscriber).where(Subscriber.email == "bot@example.com"))
        == 0
    )
    assert counts(session)["Subscriber"] == before["Subscriber"] + 1
    assert [m.recipient for m in web.mailer.sent] == ["h@example.com"]


def test_json_variant_and_cors(web: Web, session: Session) -> None:
    mailing_list = make_list(session)
    mailing_list.cors_origins = ["https://friends.example"]
    session.commit()
    url = f"/subscribe/{mailing_list.slug}"
    preflight = web.client.options(
        url, headers={"Origin": "https://friends.example", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "https://friends.example"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    stranger = web.client.options(url, headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in stranger.headers

    answer = web.client.post(
        url,
        data={"email": "embed@example.com"},
        headers={"Accept": "application/json", "Origin": "https://friends.example"},
    )
    assert answer.status_code == 200 and answer.json()["status"] == "ok"
    assert answer.headers["access-control-allow-origin"] == "https://friends.example"
    answer = web.client.post(url, json={"email": "json@example.com", "name": "J"})
    assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers
    assert sorted(m.recipient for m in web.mailer.sent) == ["embed@example.com", "json@example.com"]


# --- unsubscribe ------------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_gmail_one_click_post_unsubscribes_mid_campaign(
    make_settings: object, pg_sessions: sessionmaker[Session], pg_url: str
) -> None:
    settings: Settings = make_settings(database_url=pg_url)  # type: ignore[operator]
    app = create_app(settings)
    app.state.sessions = app.state.tracking_sessions = app.state.one_click_sessions = pg_sessions
    app.state.open_hot_pools = False  # the fast path is tested on committed rows below
    with pg_sessions() as session:
        mailing_list = make_list(session)
        readers = make_subscribers(session, mailing_list, 5)
        digest = publish_sample(session)
        campaign = delivery.create_campaign(session, digest_slug=digest.slug, list_slugs=[mailing_list.slug])
        ranges = start(session, settings, campaign.id)
        session.commit()
        leaving = readers[2]
        token = Tokens(settings.secret_key).make(TokenPurpose.unsubscribe, leaving.id, mailing_list.id)

        # Exactly what Gmail sends (RFC 8058): form-encoded body, no cookies, no auth, no Origin.
        with TestClient(app, follow_redirects=False) as client:
            answer = client.post(
                f"/unsubscribe/{token}",
                content=b"List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "Google-Mail"},
            )
        assert answer.status_code == 200
        assert not answer.cookies

        session.expire_all()
        subscription = subscription_of(session, leaving, mailing_list)
        assert subscription.status == SubscriptionStatus.unsubscribed
        assert subscription.unsubscribe_source == "one-click" and subscription.unsubscribed_at is not None
        event = session.scalar(select(Event).where(Event.type == EventType.unsubscribe))
        assert event is not None and event.subscriber_id == leaving.id and event.detail == "one-click"

        claimed = ledger.claim(session, campaign.id, ranges[0].first_id, ranges[-1].last_id, limit=100, worker="t")
        assert {c.subscriber_id for c in claimed} == {r.id for r in readers} - {leaving.id}
        skipped = session.scalar(select(Delivery.status).where(Delivery.subscriber_id == leaving.id))
        assert skipped == "skipped"


def test_unsubscribe_page_button_and_undo(web: Web, session: Session) -> None:
    mailing_list = make_list(session, name="Weekly Brief")
    subscriber = make_subscriber(session, mailing_list, "leaver@example.com")
    session.commit()
    token = web.tokens.make(TokenPurpose.unsubscribe, subscriber.id, mailing_list.id)
    page = web.client.get(f"/unsubscribe/{token}")
    assert page.status_code == 200 and f'action="/unsubscribe/{token}"' in page.text
    assert "leaver@example.com" not in page.text and "l•••" in page.text  # masked for forwarded links
    assert subscription_of(fresh(session), subscriber, mailing_list).status == SubscriptionStatus.confirmed

    done = web.client.post(f"/unsubscribe/{token}", data={})
    assert done.status_code == 200 and "You are unsubscribed" in done.text and "/undo" in done.text
    subscription = subscription_of(fresh(session), subscriber, mailing_list)
    assert subscription.status == SubscriptionStatus.unsubscribed and subscription.unsubscribe_source == "page"

    back = web.client.post(f"/unsubscribe/{token}/undo")
    assert back.status_code == 200 and "Welcome back" in back.text
    assert subscription_of(fresh(session), subscriber, mailing_list).status == SubscriptionStatus.confirmed


def test_bad_tokens_are_404_without_side_effects(web: Web, session: Session) -> None:
    mailing_list = make_list(session)
    subscriber = make_subscriber(session, mailing_list, confirmed=False)
    gone = make_subscriber(session, mailing_list)
    session.commit()
    tokens = web.tokens
    gone_token = tokens.make(TokenPurpose.unsubscribe, gone.id, mailing_list.id)
    session.delete(gone)
    session.commit()
    other_purpose = tokens.make(TokenPurpose.confirm, subscriber.id, mailing_list.id)
    forged = tokens.make(TokenPurpose.unsubscribe, subscriber.id, mailing_list.id)[:-2] + "xx"
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + "-_."
    randoms = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))) for _ in range(300)]
    before = counts(session)
    for bad in [forged, other_purpose, gone_token, *randoms]:
        assert web.client.get(f"/unsubscribe/{bad}").status_code == 404
        one_click = web.client.post(
            f"/unsubscribe/{bad}",
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert one_click.status_code == 404
    unsubscribe_token = tokens.make(TokenPurpose.unsubscribe, subscriber.id, mailing_list.id)
    for bad in [forged, unsubscribe_token, *randoms[:50]]:
        assert web.client.get(f"/confirm/{bad}").status_code == 404
        assert web.client.get(f"/preferences/{bad}").status_code == 404
    for bad in [forged, other_purpose, gone_token, *randoms[:50]]:
        assert web.client.post(f"/unsubscribe/{bad}/undo").status_code == 404
    assert counts(fresh(session)) == before
    assert subscription_of(session, subscriber, mailing_list).status == SubscriptionStatus.pending


# --- preferences ------------------------------------------------------------------------------------------


def test_preferences_page_saves_lists_sections_and_name(web: Web, session: Session) -> None:
    weekly = make_list(session, slug="weekly", name="Weekly", from_email="news@steppe.example")
    daily = make_list(session, slug="daily", name="Daily", from_email="daily@steppe.example")
    subscriber = make_subscriber(session, weekly, "pref@example.com", name="Old")
    digest = publish_sample(session)
    delivery.create_campaign(session, digest_slug=digest.slug, list_slugs=["weekly"])
    session.commit()
    sections = subscriptions.list_sections(session, weekly.id)
    assert len(sections) >= 2
    token = web.tokens.make(TokenPurpose.preferences, subscriber.id)
    page = web.client.get(f"/preferences/{token}")
    assert page.status_code == 200 and "Weekly" in page.text and "Daily" in page.text
    for section in sections:
        assert f'value="{section}"' in page.text.replace("&amp;", "&") or section in page.text

    saved = web.client.post(
        f"/preferences/{token}",
        data={"name": "New Name", "list": [str(daily.id), str(weekly.id)], f"section.{weekly.id}": [sections[0]]},
    )
    assert saved.status_code == 200 and "saved" in saved.text
    fresh(session)
    assert session.get(Subscriber, subscriber.id).name == "New Name"  # type: ignore[union-attr]
    assert subscription_of(session, subscriber, weekly).sections == [sections[0]]
    assert subscription_of(session, subscriber, daily).status == SubscriptionStatus.confirmed

    everything = web.client.post(f"/preferences/{token}", data={"action": "unsubscribe_all"})
    assert everything.status_code == 200
    fresh(session)
    for mailing_list in (weekly, daily):
        assert subscription_of(session, subscriber, mailing_list).status == SubscriptionStatus.unsubscribed


# --- tracking ---------------------------------------------------------------------------------------------


@dataclass
class Sent:
    campaign: Campaign
    deliveries: list[Delivery]
    links: list[Link]


def send_sample(session: Session, settings: Settings, mailing_list: MailingList, readers: int = 2) -> Sent:
    make_subscribers(session, mailing_list, readers, prefix=f"t{mailing_list.id}-")
    digest = publish_sample(session)
    campaign = delivery.create_campaign(
        session, digest_slug=digest.slug, list_slugs=[mailing_list.slug], allow_repeat=True
    )
    start(session, settings, campaign.id)
    session.commit()
    deliveries = list(session.scalars(select(Delivery).where(Delivery.campaign_id == campaign.id)))
    links = list(session.scalars(select(Link).where(Link.campaign_id == campaign.id).order_by(Link.position)))
    return Sent(campaign, deliveries, links)


def events(session: Session, kind: EventType) -> int:
    return fresh(session).scalar(select(func.count()).select_from(Event).where(Event.type == kind)) or 0


def test_open_pixel_records_opens(web: Web, session: Session) -> None:
    sent = send_sample(session, web.settings, make_list(session))
    first, second = sent.deliveries
    pixel = web.client.get(f"/o/{web.tokens.make(TokenPurpose.track, first.id)}")
    assert pixel.status_code == 200 and pixel.headers["content-type"] == "image/gif"
    assert pixel.content.startswith(b"GIF89a") and "no-store" in pixel.headers["cache-control"]
    web.client.get(f"/o/{web.tokens.make(TokenPurpose.track, first.id)}")
    web.client.get(f"/o/{web.tokens.make(TokenPurpose.track, second.id)}")
    from newsletter import tracking

    stats = tracking.stats(fresh(session), sent.campaign.id)
    assert (stats.opens, stats.unique_opens) == (3, 2)
    before = counts(session)
    for bad in ["x", web.tokens.make(TokenPurpose.track, 10**9), web.tokens.make(TokenPurpose.preferences, first.id)]:
        assert web.client.get(f"/o/{bad}").status_code == 404
    assert counts(fresh(session)) == before


def test_click_redirects_only_to_registered_links(web: Web, session: Session) -> None:
    sent = send_sample(session, web.settings, make_list(session))
    target = sent.deliveries[0]
    track = web.tokens.make(TokenPurpose.track, target.id)
    link = sent.links[1]
    answer = web.client.get(f"/c/{track}.{link.position}")
    assert answer.status_code == 302 and answer.headers["location"] == link.url
    click = fresh(session).scalar(select(Event).where(Event.type == EventType.click))
    assert click is not None and click.url == link.url and click.delivery_id == target.id

    before = counts(session)
    unregistered = max(link.position for link in sent.links) + 1
    for bad in [
        f"{track}.{unregistered}",
        f"{track}.0",
        f"{track}.-1",
        f"{track}.1e3",
        f"{track}",
        f"{track}.https://evil.example",
        f"{web.tokens.make(TokenPurpose.track, 10**9)}.1",
        f"{web.tokens.make(TokenPurpose.unsubscribe, target.subscriber_id, target.list_id)}.1",
        f"{track[:-5]}{'B' if track[-5] == 'A' else 'A'}{track[-4:]}.1",  # one signature character changed
        "https:%2F%2Fevil.example",
    ]:
        answer = web.client.get(f"/c/{bad}")
        assert answer.status_code == 404, bad
        assert "location" not in answer.headers
    assert web.client.get("/c/x?url=https://evil.example").status_code == 404
    assert counts(fresh(session)) == before


def test_tracking_off_records_nothing_but_links_still_work(web: Web, session: Session) -> None:
    mailing_list = make_list(session)
    sent = send_sample(session, web.settings, mailing_list)
    session.execute(update(MailingList).where(MailingList.id == mailing_list.id).values(tracking=False))
    session.commit()
    track = web.tokens.make(TokenPurpose.track, sent.deliveries[0].id)
    assert web.client.get(f"/o/{track}").status_code == 200
    answer = web.client.get(f"/c/{track}.1")
    assert answer.status_code == 302 and answer.headers["location"] == sent.links[0].url
    assert events(session, EventType.open) == 0 and events(session, EventType.click) == 0


@pytest.fixture
def committed_pg_url() -> Iterator[str]:
    """A database of its own for a test whose rows must be committed: other connections read them."""
    with fresh_database("newsletter_test_hot") as url:
        yield url


FORM = "application/x-www-form-urlencoded"


def _hot_hits(app: FastAPI, sessions: sessionmaker[Session], settings: Settings) -> list[tuple[Any, ...]]:
    """Opens, clicks and one-clicks on a fresh campaign through `app`; the events they wrote, ids mapped."""
    tokens = Tokens(settings.secret_key)
    with sessions() as session:
        tracked, untracked = make_list(session), make_list(session)
        sent, quiet = send_sample(session, settings, tracked), send_sample(session, settings, untracked)
        untracked.tracking = False  # after sending, as `test_tracking_off_records_nothing_but_links_still_work`
        session.commit()
        first_event = session.scalar(select(func.coalesce(func.max(Event.id), 0)))
    first, second = sent.deliveries
    leaver = first.subscriber_id
    unsubscribe = tokens.make(TokenPurpose.unsubscribe, leaver, tracked.id)
    one_click = {"content": b"List-Unsubscribe=One-Click", "headers": {"Content-Type": FORM}}
    with TestClient(app, follow_redirects=False) as client:
        assert (app.state.hot_pools is not None) == app.state.open_hot_pools
        for delivery_ in (first, first, second, quiet.deliveries[0]):
            pixel = client.get(f"/o/{tokens.make(TokenPurpose.track, delivery_.id)}")
            assert pixel.status_code == 200 and pixel.content == PIXEL and pixel.headers["content-type"] == "image/gif"
        for delivery_, link in ((first, sent.links[1]), (second, sent.links[0]), (quiet.deliveries[0], quiet.links[0])):
            answer = client.get(f"/c/{tokens.make(TokenPurpose.track, delivery_.id)}.{link.position}")
            assert answer.status_code == 302 and answer.headers["location"] == link.url
        for _ in range(2):  # the second is a no-op, still a 200
            answer = client.post(f"/unsubscribe/{unsubscribe}", **one_click)  # type: ignore[arg-type]
            assert answer.status_code == 200 and answer.text == "You are unsubscribed.\n"
        track = tokens.make(TokenPurpose.track, first.id)
        for bad in ["x", tokens.make(TokenPurpose.track, 10**9), unsubscribe]:
            assert client.get(f"/o/{bad}").status_code == 404
        for bad in [f"{track}.99", f"{track}.0", f"{track}.https://evil.example", f"{unsubscribe}.1", "x"]:
            answer = client.get(f"/c/{bad}")
            assert answer.status_code == 404 and "location" not in answer.headers
        for bad in [track, unsubscribe[:-2] + "xx", tokens.make(TokenPurpose.unsubscribe, leaver, 10**9)]:
            assert client.post(f"/unsubscribe/{bad}", **one_click).status_code == 404  # type: ignore[arg-type]
    with sessions() as session:
        subscription = subscription_of(session, session.get(Subscriber, leaver), tracked)  # type: ignore[arg-type]
        assert subscription.status == SubscriptionStatus.unsubscribed
        assert subscription.unsubscribe_source == "one-click" and subscription.unsubscribed_at is not None
        names: list[dict[Any, Any]] = [
            {},
            {sent.campaign.id: "campaign"},
            {first.id: "first", second.id: "second"},
            {leaver: "leaver", second.subscriber_id: "other"},
            {tracked.id: "tracked"},
            {link.id: link.position for link in sent.links},
            {},
            {},
        ]
        rows = session.execute(
            select(Event.type, Event.campaign_id, Event.delivery_id, Event.subscriber_id, Event.list_id)
            .add_columns(Event.link_id, Event.url, Event.detail)
            .where(Event.id > first_event)
            .order_by(Event.id)
        ).all()
        return [tuple(column.get(v, v) for column, v in zip(names, row, strict=True)) for row in rows]


@pytest.mark.postgres
def test_postgres_fast_path_records_what_the_session_path_records(make_settings: object, committed_pg_url: str) -> None:
    """The hot endpoints on the async pools (`deps.HotPools`) against the same requests on sessions."""
    settings: Settings = make_settings(database_url=committed_pg_url)  # type: ignore[operator]
    engine = make_engine(committed_pg_url)
    sessions = sessionmaker(bind=engine, expire_on_commit=False)
    fast = create_app(settings)
    assert fast.state.open_hot_pools
    on_sessions = create_app(settings)
    on_sessions.state.open_hot_pools = False
    try:
        recorded = [_hot_hits(app, sessions, settings) for app in (fast, on_sessions)]
    finally:
        engine.dispose()
    assert recorded[0] == recorded[1]
    events_ = recorded[0]
    assert [e[0] for e in events_] == ["open", "open", "open", "click", "click", "unsubscribe"]
    assert events_[-1][2:] == (None, "leaver", "tracked", None, None, "one-click")
    assert fast.state.hot_pools is None  # closed with the app


def test_untracked_list_emails_carry_no_tracking_urls(web: Web, session: Session) -> None:
    mailing_list = make_list(session, tracking=False)
    sent = send_sample(session, web.settings, mailing_list)
    html = sent.campaign.html or ""
    assert "/o/" not in html and "/c/" not in html and not sent.links


# --- archive and feed -------------------------------------------------------------------------------------


def test_archive_digest_page_and_atom_feed(web: Web, session: Session) -> None:
    mailing_list = make_list(session, name="Kazakhstan in the World Press")
    sent = send_sample(session, web.settings, mailing_list)
    digest = sent.campaign.digest
    unsent = publish_sample(session, path=__import__("pathlib").Path("tests/digests/unicode.md"))
    session.commit()

    archive = web.client.get("/archive")
    assert archive.status_code == 200 and "Kazakhstan in the World Press" in archive.text
    assert f'href="/archive/{digest.slug}"' in archive.text
    assert f'href="/archive/{unsent.slug}"' not in archive.text  # not sent yet: not public yet
    assert web.client.get(f"/archive/{unsent.slug}").status_code == 404

    page = web.client.get(f"/archive/{digest.slug}")
    assert page.status_code == 200
    assert digest.title in page.text.replace("&#39;", "'").replace("&amp;", "&")
    for item in digest.items[:3]:
        assert item.url.replace("&", "&amp;") in page.text
    for personal in ("%%", "/unsubscribe/", "/preferences/", "/o/", "/c/"):
        assert personal not in page.text

    feed = web.client.get("/feed.xml")
    assert feed.status_code == 200 and feed.headers["content-type"].startswith("application/atom+xml")
    atom = "{http://www.w3.org/2005/Atom}"
    root = ET.fromstring(feed.content)  # noqa: S314 - our own output
    assert root.tag == f"{atom}feed"
    for required in ("id", "title", "updated", "author"):
        assert root.find(f"{atom}{required}") is not None
    entries = root.findall(f"{atom}entry")
    assert len(entries) == 1
    entry = entries[0]
    assert entry.find(f"{atom}link").get("href") == f"{web.settings.base_url}/archive/{digest.slug}"  # type: ignore[union-attr]
    content = entry.find(f"{atom}content")
    assert content is not None and content.get("type") == "html"
    assert digest.items[0].headline in html.unescape(content.text or "")
    assert "/unsubscribe/" not in (content.text or "")


def test_healthz_still_answers(web: Web, session: Session) -> None:
    admin = users.create_user(session, "root", Role.admin).token
    session.commit()
    answer = web.client.get("/healthz", headers={"Authorization": f"Bearer {admin}"})
    assert answer.status_code == 200 and answer.json()["database"] == "ok"


def test_healthz_tells_strangers_only_ok_or_not(web: Web, session: Session) -> None:
    """Issue 11 item 11: the details (which part, its error text: hosts, ports, drivers) are for admins."""
    admin = users.create_user(session, "root", Role.admin).token
    editor = users.create_user(session, "ed", Role.editor).token
    session.commit()
    for headers in ({}, {"Authorization": f"Bearer {editor}"}, {"Authorization": "Bearer nl_" + "x" * 43}):
        answer = web.client.get("/healthz", headers=headers)
        assert answer.status_code == 200 and answer.json() == {"status": "ok"}, headers

    broken = create_app(web.settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"}))
    broken.state.sessions = web.sessions
    client = TestClient(broken)
    stranger = client.get("/healthz")
    assert stranger.status_code == 503 and stranger.json() == {"status": "unavailable"}
    assert "127.0.0.1" not in stranger.text and "error" not in stranger.text
    detailed = client.get("/healthz", headers={"Authorization": f"Bearer {admin}"})
    assert detailed.status_code == 503
    assert detailed.json()["database"] == "ok" and detailed.json()["broker"].startswith("error: ")


def test_x_forwarded_for_is_believed_only_from_trusted_proxies(web: Web, session: Session, make_settings: Any) -> None:
    """Issue 11 item 12: by default the header is the client's word, and a flood could pick a fresh
    address per request past the per-IP limit, and write any consent IP it likes."""
    mailing_list = make_list(session, opt_in=OptIn.single)
    session.commit()
    limit = web.settings.subscribe_ip_limit
    statuses = [
        web.client.post(
            f"/subscribe/{mailing_list.slug}",
            data={"email": f"flood{i}@example.com"},
            headers={"X-Forwarded-For": f"198.51.100.{i + 1}"},
        ).status_code
        for i in range(limit + 5)
    ]
    assert statuses == [200] * limit + [429] * 5
    ips = set(fresh(session).scalars(select(Subscription.consent_ip)))
    assert ips == {"203.0.113.10"}  # the peer, not what the header said

    # behind a trusted proxy: the nearest address that is not a proxy, whatever the client prepended
    web.app.state.trusted_proxies = trusted_networks(make_settings(trusted_proxies="203.0.113.0/24, 10.0.0.1"))
    proxied = web.client_from("203.0.113.10").post(
        f"/subscribe/{mailing_list.slug}",
        data={"email": "behind@example.com"},
        headers={"X-Forwarded-For": "6.6.6.6, 192.0.2.77, 10.0.0.1"},
    )
    assert proxied.status_code == 200
    row = fresh(session).scalar(
        select(Subscription.consent_ip).join(Subscriber).where(Subscriber.email == "behind@example.com")
    )
    assert row == "192.0.2.77"
    # from a peer that is not a proxy, the header is still ignored
    direct = web.client_from("192.0.2.200").post(
        f"/subscribe/{mailing_list.slug}", data={"email": "direct@example.com"}, headers={"X-Forwarded-For": "6.6.6.6"}
    )
    assert direct.status_code == 200
    row = fresh(session).scalar(
        select(Subscription.consent_ip).join(Subscriber).where(Subscriber.email == "direct@example.com")
    )
    assert row == "192.0.2.200"


def test_trusted_proxies_must_be_addresses_or_networks(make_settings: Any) -> None:
    with pytest.raises(ConfigError, match="not an IP address or network"):
        make_settings(trusted_proxies="10.0.0.0/8, proxy.internal")
    assert make_settings().trusted_proxies == ()


def test_confirmation_goes_through_the_worker_task_in_embedded_mode(
    web: Web, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    from newsletter.web.public.subscribe import enqueue_confirmation
    from worker import tasks

    calls: list[int] = []
    monkeypatch.setattr(tasks.send_confirmation, "delay", lambda subscription_id: calls.append(subscription_id))
    web.app.state.enqueue_confirmation = enqueue_confirmation
    mailing_list = make_list(session)
    session.commit()
    web.client.post(f"/subscribe/{mailing_list.slug}", data={"email": "queued@example.com"})
    subscription_id = fresh(session).scalar(select(Subscription.id))
    assert calls == [subscription_id]  # enqueued once, after the commit made the row visible


def test_suppression_count_helper_sees_all_tables(session: Session) -> None:
    assert set(counts(session)) == {"Subscriber", "Subscription", "Event", "Suppression"}
    assert Suppression.__tablename__ == "suppressions"


def _people(session: Session) -> list[Any]:
    session.expire_all()
    return [
        *session.execute(select(Subscriber.email, Subscriber.name, Subscriber.attributes)),
        *session.execute(select(Subscription.subscriber_id, Subscription.list_id, Subscription.status)),
    ]


def test_nul_in_the_subscribe_form_or_preferences_is_a_400_not_a_500(web: Web, session: Session) -> None:
    """Issue 11 item 8: a NUL in the name, an extra field or the preferences name reached PostgreSQL."""
    weekly = make_list(session, "weekly")
    weekly.form_fields = [{"name": "city", "label": "City"}]
    reader = make_subscriber(session, weekly, "ana@example.com", "Ana")
    session.commit()
    before = _people(session)
    as_json = web.client.post("/subscribe/weekly", json={"email": "new@example.com", "name": "N\x00"})
    assert as_json.status_code == 400 and as_json.json()["field"] == "name" and "NUL" in as_json.json()["error"]
    with_attribute = web.client.post(
        "/subscribe/weekly", json={"email": "new@example.com", "attributes": {"city": "Alm\x00aty"}}
    )
    assert with_attribute.status_code == 400 and with_attribute.json()["field"] == "attributes"
    form = web.client.post("/subscribe/weekly", data={"email": "new@example.com", "name": "N\x00"})
    assert form.status_code in (200, 400) and "NUL" in html.unescape(form.text)
    token = web.tokens.make(TokenPurpose.preferences, reader.id)
    saved = web.client.post(f"/preferences/{token}", data={"name": "A\x00na", "list": [str(weekly.id)]})
    assert saved.status_code == 400 and "Nothing was saved" in saved.text
    assert _people(session) == before
    assert web.mailer.sent == []


def test_preferences_ignore_list_and_section_ids_that_are_not_ascii_digits(web: Web, session: Session) -> None:
    """Found by the schemathesis pass: '²' passed str.isdigit() and int() refused it, a 500."""
    weekly = make_list(session, "weekly")
    reader = make_subscriber(session, weekly, "ana@example.com", "Ana")
    session.commit()
    before = _people(session)
    odd = {"list": ["\u00b2", "\u0663"], "section.\u00b2": ["a"]}
    assert web.client.post("/preferences/not-a-token", data=odd).status_code == 404
    token = web.tokens.make(TokenPurpose.preferences, reader.id, bound_to=reader.created_at)
    # The odd ids name no list: they are ignored, as any id that is not one of the page's lists.
    saved = web.client.post(f"/preferences/{token}", data={**odd, "list": [*odd["list"], str(weekly.id)]})
    assert saved.status_code == 200 and "saved" in saved.text
    assert _people(session) == before
    assert subscription_of(fresh(session), reader, weekly).status == SubscriptionStatus.confirmed


# --- issue 11, items 5 and 6: erasure is final, an old confirmation link does not undo an unsubscribe -----


def _snapshot(session: Session) -> list[Any]:
    fresh(session)
    return [
        counts(session),
        *session.execute(select(Subscriber.id, Subscriber.email, Subscriber.status).order_by(Subscriber.id)),
        *session.execute(select(Subscription.id, Subscription.status).order_by(Subscription.id)),
    ]


@pytest.mark.parametrize("how", ["erased", "blocklisted"])
def test_an_erased_or_blocklisted_subscribers_old_links_are_unknown_and_change_nothing(
    web: Web, session: Session, how: str
) -> None:
    mailing_list = make_list(session, opt_in=OptIn.double)
    pending = make_subscriber(session, mailing_list, "pending@example.com", confirmed=False)
    confirmed = make_subscriber(session, mailing_list, "confirmed@example.com")
    session.commit()
    tokens = web.tokens
    links_of = {
        s.id: {
            "confirm": tokens.make(TokenPurpose.confirm, s.id, mailing_list.id, bound_to=s.created_at),
            "preferences": tokens.make(TokenPurpose.preferences, s.id, bound_to=s.created_at),
            "unsubscribe": tokens.make(TokenPurpose.unsubscribe, s.id, mailing_list.id, bound_to=s.created_at),
        }
        for s in (pending, confirmed)
    }
    # the confirmed one unsubscribes first, so the undo button would otherwise bring them back
    web.client.post(f"/unsubscribe/{links_of[confirmed.id]['unsubscribe']}", data={})
    for subscriber in (pending, confirmed):
        if how == "erased":
            gdpr.erase_subscriber(session, fresh(session).get(Subscriber, subscriber.id))  # type: ignore[arg-type]
        else:
            session.execute(
                update(Subscriber).where(Subscriber.id == subscriber.id).values(status=SubscriberStatus.blocklisted)
            )
    session.commit()
    unknown = web.client.get("/confirm/not-a-token")
    assert unknown.status_code == 404
    before = _snapshot(session)
    for token in links_of.values():
        answers = [
            web.client.get(f"/confirm/{token['confirm']}"),
            web.client.get(f"/preferences/{token['preferences']}"),
            web.client.post(f"/preferences/{token['preferences']}", data={"lists": str(mailing_list.id)}),
            web.client.post(f"/unsubscribe/{token['unsubscribe']}/undo"),
        ]
        for answer in answers:
            assert answer.status_code == 404 and answer.text == unknown.text, answer.request.url
    assert _snapshot(session) == before
    assert web.mailer.sent == []


def test_an_old_confirmation_link_after_an_unsubscribe_offers_to_come_back_and_changes_nothing(
    web: Web, session: Session
) -> None:
    mailing_list = make_list(session, opt_in=OptIn.double, name="Weekly Brief")
    session.commit()
    web.client.post(f"/subscribe/{mailing_list.slug}", data={"email": "back@example.com"})
    link = confirm_link(web.mailer.sent[0].data)
    assert web.client.get(link).status_code == 200
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == "back@example.com"))
    assert subscriber is not None
    unsubscribe = web.tokens.make(
        TokenPurpose.unsubscribe, subscriber.id, mailing_list.id, bound_to=subscriber.created_at
    )
    web.client.post(f"/unsubscribe/{unsubscribe}", data={})
    before = _snapshot(session)

    again = web.client.get(link)
    assert again.status_code == 200 and "You left this list" in again.text
    assert "You are subscribed" not in again.text
    undo = re.search(r'<form method="post" action="(/unsubscribe/[^"]+/undo)"', again.text)
    assert undo is not None  # a button (a POST): link scanners open every GET
    assert _snapshot(session) == before
    assert subscription_of(fresh(session), subscriber, mailing_list).status == SubscriptionStatus.unsubscribed

    back = web.client.post(undo[1])
    assert back.status_code == 200 and "Welcome back" in back.text
    assert subscription_of(fresh(session), subscriber, mailing_list).status == SubscriptionStatus.confirmed


def test_an_old_confirmation_link_of_someone_who_never_confirmed_and_left_does_not_subscribe(
    web: Web, session: Session
) -> None:
    mailing_list = make_list(session, opt_in=OptIn.double)
    subscriber = make_subscriber(session, mailing_list, "never@example.com", confirmed=False)
    session.commit()
    token = web.tokens.make(TokenPurpose.confirm, subscriber.id, mailing_list.id, bound_to=subscriber.created_at)
    subscriptions.unsubscribe_subscription(session, subscription_of(session, subscriber, mailing_list), source="admin")
    session.commit()
    before = _snapshot(session)
    again = web.client.get(f"/confirm/{token}")
    assert again.status_code == 200 and "You left this list" in again.text and "/undo" not in again.text
    assert _snapshot(session) == before


def test_nul_in_a_path_or_query_is_a_404_or_422_never_a_500(web: Web, session: Session) -> None:
    """Issue 11 item 8, web side: PostgreSQL refuses NUL in text; these reached it and were 500s."""
    mailing_list = make_list(session, slug="weekly")
    make_subscriber(session, mailing_list, "kept@example.com")
    session.commit()
    before = _snapshot(session)
    paths = [
        "/subscribe/we%00ekly",
        "/archive/a%00b",
        "/confirm/a%00b",
        "/unsubscribe/a%00b",
        "/preferences/a%00b",
        "/o/a%00b",
        "/c/a%00b",
        "/api/v1/lists/we%00ekly",
    ]
    for path in paths:
        for method in ("GET", "POST"):  # (the API's own filters are tested in test_api.py)
            answer = web.client.request(method, path, data={"email": "new@example.com"})
            assert answer.status_code == 404, (method, path, answer.status_code)
    for path in ("/subscribe/weekly?email=a%00b", "/archive?page=%00", "/feed.xml?list=%00"):
        answer = web.client.get(path)
        assert answer.status_code == 422 and "NUL" in answer.text, path
    assert _snapshot(session) == before
    assert web.mailer.sent == []


def test_the_confirmation_is_sent_after_the_answer_and_the_answers_match(web: Web, session: Session) -> None:
    """Issue 11 item 10: sent before answering (embedded mode), the email made a new address answer
    measurably slower than a known one. Now the answer leaves first, the same for both, and the email
    still arrives."""
    mailing_list = make_list(session)
    make_subscriber(session, mailing_list, "known@example.com")
    session.commit()
    order: list[str] = []
    sending = web.app.state.enqueue_confirmation

    def enqueue(subscription_id: int) -> None:
        order.append("confirmation")
        sending(subscription_id)

    web.app.state.enqueue_confirmation = enqueue

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        async def recorded(message: Any) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                order.append("answered")
            await send(message)

        await web.app(scope, receive, recorded)

    client = TestClient(recording, client=("203.0.113.10", 50000))
    known = client.post(f"/subscribe/{mailing_list.slug}", data={"email": "known@example.com"})
    assert order == ["answered"]
    new = client.post(f"/subscribe/{mailing_list.slug}", data={"email": "new@example.com"})
    assert order == ["answered", "answered", "confirmation"]
    assert known.status_code == new.status_code == 200 and known.text == new.text
    assert [m.recipient for m in web.mailer.sent] == ["new@example.com"]
    assert "/confirm/" in confirm_link(web.mailer.sent[0].data)
