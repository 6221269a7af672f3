"""Issue 11 item 1: the links people get by mail are bound to their row, and act on no other row.

Real mail (campaign copies and confirmation emails through aiosmtpd), read back and clicked over HTTP on
both backends; and the PostgreSQL one-click fast path (the psycopg pool of web/deps.py).
"""

from __future__ import annotations

import datetime as dt
import re
from email.message import EmailMessage

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from newsletter import confirmations, delivery, subscribers, subscriptions
from newsletter.config import Settings
from newsletter.db import make_engine
from newsletter.delivery import sending
from newsletter.mailer import SMTPMailer
from newsletter.models import (
    Event,
    MailingList,
    OptIn,
    Subscriber,
    Subscription,
    SubscriptionSource,
    SubscriptionStatus,
)
from newsletter.tokens import TokenPurpose, Tokens, UnknownToken
from newsletter.web import create_app
from tests.factories import make_list, make_subscriber, publish_sample, subscription_of
from tests.smtpserver import RecordingSMTPServer
from tests.test_web_public import FORM, TestClient, Web, web  # noqa: F401  (web is a fixture)

ONE_CLICK = {"content": b"List-Unsubscribe=One-Click", "headers": {"Content-Type": FORM}}


def _state(session: Session) -> list[tuple[object, ...]]:
    session.expire_all()
    return [
        *session.execute(
            select(
                Subscriber.id, Subscriber.email, Subscriber.name, Subscription.list_id, Subscription.status,
                Subscription.sections, Subscription.updated_at,
            )
            .join(Subscription, Subscription.subscriber_id == Subscriber.id)
            .order_by(Subscriber.id, Subscription.list_id)
        ).all(),
        ("events", session.scalar(select(func.count()).select_from(Event))),
    ]  # fmt: skip


def _path(url: str, settings: Settings) -> str:
    assert url.startswith(settings.base_url), url
    return url.removeprefix(settings.base_url)


def _text(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def _reuse_id(session: Session, gone_id: int, mailing_list: MailingList, *, confirmed: bool) -> Subscriber:
    """Eve, forced onto the id of a deleted row, as a database rebuilt from an export would hand it out."""
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    session.execute(
        insert(Subscriber).values(
            id=gone_id, email="eve@example.com", email_hash="eve", email_domain="example.com", name="Eve",
            attributes={}, created_at=later, updated_at=later,
        )
    )  # fmt: skip
    eve = session.get(Subscriber, gone_id)
    assert eve is not None
    subscriptions.add_subscription(session, mailing_list, eve, source=SubscriptionSource.admin, confirmed=confirmed)
    session.commit()
    return eve


def test_campaign_links_are_bound_work_and_never_act_on_a_row_that_got_the_same_id(
    web: Web,  # noqa: F811
    sessions: sessionmaker[Session],
    session: Session,
    settings: Settings,
) -> None:
    weekly = make_list(session, slug="weekly")
    dave = make_subscriber(session, weekly, "dave@example.com", name="Dave")
    digest = publish_sample(session)
    campaign = delivery.create_campaign(session, digest_slug=digest.slug, list_slugs=["weekly"])
    ranges = delivery.start(session, settings, campaign.id)
    session.commit()
    with RecordingSMTPServer() as smtp:
        for batch in ranges:
            sending.send_batch(sessions, settings, SMTPMailer(smtp.url), campaign.id, batch.first_id, batch.last_id)
        (received,) = smtp.wait_for(1)
    header = re.fullmatch(r"<([^>]+)>(?:, *<mailto:[^>]*>)?", str(received.message["List-Unsubscribe"]).strip())
    assert header is not None
    unsubscribe = _path(header[1], settings)
    match = re.search(r"Preferences: (\S+)", _text(received.message))
    assert match is not None
    preferences = _path(match[1], settings)
    assert f"{settings.base_url}{unsubscribe}" in _text(received.message)

    # Both are bound to Dave's row, and work for him.
    dave_id, created = dave.id, dave.created_at
    assert web.tokens.read_bound(TokenPurpose.unsubscribe, unsubscribe.rpartition("/")[2], 2)[:2] == (
        (dave_id, weekly.id),
        created,
    )
    own = web.tokens.read_bound(TokenPurpose.preferences, preferences.rpartition("/")[2], 1)
    assert (own.ids, own.bound_to) == ((dave_id,), created)
    page = web.client.get(unsubscribe)
    assert page.status_code == 200 and "Unsubscribe" in page.text and weekly.name in page.text
    prefs = web.client.get(preferences)
    assert prefs.status_code == 200 and weekly.name in prefs.text
    bound_link = re.search(r'href="[^"]*(/preferences/[^"]+)"', page.text)
    assert bound_link is not None  # the unsubscribe page's own link to the preferences is bound too
    assert web.tokens.read_bound(TokenPurpose.preferences, bound_link[1].rpartition("/")[2], 1).bound_to == created

    subscribers.delete_subscriber(session, dave)
    session.commit()
    eve = _reuse_id(session, dave_id, weekly, confirmed=True)
    before = _state(session)
    for answer in (
        web.client.get(unsubscribe),
        web.client.post(unsubscribe, **ONE_CLICK),  # type: ignore[arg-type]
        web.client.post(unsubscribe, data={}),
        web.client.post(f"{unsubscribe}/undo", data={}),
        web.client.get(preferences),
        web.client.post(preferences, data={"name": "Not Eve", "list": [str(weekly.id)]}),
        web.client.post(preferences, data={"action": "unsubscribe_all"}),
    ):
        assert answer.status_code == 404, answer.text
        assert "Eve" not in answer.text and "eve@" not in answer.text
    assert _state(session) == before
    assert subscription_of(session, eve, weekly).status == SubscriptionStatus.confirmed


def test_the_confirmation_email_link_is_bound_works_and_confirms_nobody_else(
    web: Web,  # noqa: F811
    session: Session,
    settings: Settings,
) -> None:
    weekly = make_list(session, slug="weekly", opt_in=OptIn.double, name="Weekly Brief")
    dave = make_subscriber(session, weekly, "dave@example.com", confirmed=False)
    carol = make_subscriber(session, weekly, "carol@example.com", confirmed=False)
    session.commit()
    with RecordingSMTPServer() as smtp:
        mailer = SMTPMailer(smtp.url)
        for person in (dave, carol):
            subscription_id = subscription_of(session, person, weekly).id
            result = confirmations.send_confirmation(session, settings, mailer, subscription_id)
            assert result is not None and result.ok
        received = {m.rcpt_tos[0]: m.message for m in smtp.wait_for(2)}
    session.commit()
    links = {}
    for person in (dave, carol):
        match = re.search(r"(/confirm/\S+)", _text(received[person.email]))
        assert match is not None
        links[person.email] = match[1]
        reading = web.tokens.read_bound(TokenPurpose.confirm, match[1].rpartition("/")[2], 2)
        assert reading.ids == (person.id, weekly.id) and reading.bound_to == person.created_at

    # Carol's works, and the preferences link on the page it opens is bound to her row.
    page = web.client.get(links["carol@example.com"])
    assert page.status_code == 200 and "You are subscribed" in page.text
    preferences = re.search(r'href="[^"]*/preferences/([^"]+)"', page.text)
    assert preferences is not None
    assert web.tokens.read_bound(TokenPurpose.preferences, preferences[1], 1).bound_to == carol.created_at
    assert subscription_of(session, carol, weekly).status == SubscriptionStatus.confirmed

    # Dave's, clicked after Dave is gone and Eve got his id, confirms nobody.
    dave_id = dave.id
    subscribers.delete_subscriber(session, dave)
    session.commit()
    eve = _reuse_id(session, dave_id, weekly, confirmed=False)
    before = _state(session)
    answer = web.client.get(links["dave@example.com"])
    assert answer.status_code == 404 and "eve@" not in answer.text
    assert _state(session) == before
    assert subscription_of(session, eve, weekly).status == SubscriptionStatus.pending


def test_an_unbound_confirmation_link_acts_only_on_a_row_older_than_the_link(session: Session) -> None:
    """Confirmation mail sent before links were bound: the link's own time says which rows it can be for."""
    tokens = Tokens("a-test-secret-key-0123456789abcdef")
    weekly = make_list(session, opt_in=OptIn.double)
    old = make_subscriber(session, weekly, "old@example.com", confirmed=False)
    newer = make_subscriber(session, weekly, "newer@example.com", confirmed=False)
    newer.created_at = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)  # created after the link was signed
    session.flush()
    before = _state(session)
    with pytest.raises(UnknownToken):
        subscriptions.confirm(session, tokens, token=tokens.make(TokenPurpose.confirm, newer.id, weekly.id))
    assert _state(session) == before
    confirmed = subscriptions.confirm(session, tokens, token=tokens.make(TokenPurpose.confirm, old.id, weekly.id))
    assert confirmed.status == SubscriptionStatus.confirmed


@pytest.mark.postgres
def test_the_one_click_fast_path_over_http_refuses_a_link_for_a_row_that_got_the_same_id(
    make_settings: object, committed_pg: str
) -> None:
    """The hot pool of deps.HotPools (autocommit psycopg, no ORM) checks the binding in its statement."""
    settings: Settings = make_settings(database_url=committed_pg)  # type: ignore[operator]
    tokens = Tokens.from_settings(settings)
    engine = make_engine(committed_pg)
    try:
        with Session(engine, expire_on_commit=False) as session:
            weekly = make_list(session, slug="weekly")
            dave = make_subscriber(session, weekly, "dave@example.com")
            session.commit()
            daves = tokens.make(TokenPurpose.unsubscribe, dave.id, weekly.id, bound_to=dave.created_at)
            dave_id = dave.id
            subscribers.delete_subscriber(session, dave)
            session.commit()
            eve = _reuse_id(session, dave_id, weekly, confirmed=True)
            eves = tokens.make(TokenPurpose.unsubscribe, eve.id, weekly.id, bound_to=eve.created_at)
            before = _state(session)
        app = create_app(settings)
        assert app.state.open_hot_pools
        with TestClient(app, client=("203.0.113.10", 50000)) as client:
            assert app.state.hot_pools is not None  # the fast path answers, not the session path
            assert client.post(f"/unsubscribe/{daves}", **ONE_CLICK).status_code == 404  # type: ignore[arg-type]
            with Session(engine) as session:
                assert _state(session) == before
            assert client.post(f"/unsubscribe/{eves}", **ONE_CLICK).status_code == 200  # type: ignore[arg-type]
        with Session(engine) as session:
            assert session.scalar(select(Subscription.status)) == SubscriptionStatus.unsubscribed
            assert session.scalar(select(Event.detail)) == "one-click"
    finally:
        engine.dispose()
