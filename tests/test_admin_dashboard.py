"""The dashboard over HTTP (both backends): sending now with live polling, recent campaigns with their
rates, subscriber growth with its numbers, digests waiting; the empty states; markup shown as text."""

from __future__ import annotations

import datetime as dt
import json
import re

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from newsletter import delivery, digests, growth
from newsletter.db import utcnow
from newsletter.models import (
    Campaign,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
    Digest,
    Event,
    EventType,
    MailingList,
    Role,
    Subscriber,
    Subscription,
)
from tests.admin import AdminWeb
from tests.factories import make_list, make_subscribers

EVIL = "<script>alert(1)</script>"


def publish(session: Session, title: str, date: str = "2030-01-06") -> Digest:
    source = {
        "title": title,
        "date": date,
        "items": [{"headline": "A headline", "source": "The Source", "url": "https://example.com/a", "summary": "S."}],
    }
    stored, _ = digests.publish(session, digests.parse_digest(json.dumps(source), "json"))
    return stored


def campaign_with(
    session: Session, mailing_list: MailingList, readers: list[Subscriber], digest: Digest, statuses: list[str]
) -> Campaign:
    campaign = delivery.create_campaign(session, digest_slug=digest.slug, list_slugs=[mailing_list.slug])
    campaign.started_at = utcnow() - dt.timedelta(minutes=5)
    session.add_all(
        Delivery(
            campaign_id=campaign.id,
            subscriber_id=reader.id,
            list_id=mailing_list.id,
            status=DeliveryStatus(status),
            sent_at=utcnow() - dt.timedelta(seconds=20) if status == "sent" else None,
        )
        for reader, status in zip(readers, statuses, strict=True)
    )
    campaign.recipient_count = len(statuses)
    session.flush()
    return campaign


def test_empty_dashboard_says_what_it_is_for(admin_web: AdminWeb) -> None:
    page = admin_web.signed_in(Role.editor, name="ed").get("/admin")
    assert page.status_code == 200
    text = page.text
    assert "Nothing is sending right now" in text and "hx-trigger" not in text
    assert "No campaigns yet" in text and "A campaign sends a digest to one or more lists" in text
    assert "No one joined or left in 30 days" in text and "growth-chart" not in text
    assert "chart.umd.min.js" not in text  # no chart, no chart library
    assert "Nothing waiting" in text and 'href="/admin/digests/new"' in text


def test_dashboard_shows_sending_recent_growth_and_drafts(admin_web: AdminWeb, session: Session) -> None:
    weekly = make_list(session, slug="weekly")
    readers = make_subscribers(session, weekly, 10)
    # Growth: 10 confirmed today (the factory), 3 of them a week ago, 2 left yesterday.
    today = utcnow()
    ids = [r.id for r in readers]
    session.execute(
        update(Subscription)
        .where(Subscription.subscriber_id.in_(ids[:3]))
        .values(confirmed_at=today - dt.timedelta(days=7))
    )
    session.execute(
        update(Subscription)
        .where(Subscription.subscriber_id.in_(ids[3:5]))
        .values(unsubscribed_at=today - dt.timedelta(days=1))
    )
    finished = campaign_with(session, weekly, readers[:4], publish(session, "Issue one"), ["sent"] * 4)
    finished.status = CampaignStatus.finished
    # each event names its delivery, as the tracking path records it (readers are counted per delivery)
    row_of = dict(
        session.execute(select(Delivery.subscriber_id, Delivery.id).where(Delivery.campaign_id == finished.id)).all()
    )
    for kind, reader in [(EventType.open, readers[0]), (EventType.open, readers[1])] + [
        (EventType.click, readers[0])
    ] * 2:
        session.add(Event(type=kind, campaign_id=finished.id, delivery_id=row_of[reader.id], subscriber_id=reader.id))
    session.add(Event(type=EventType.bounce, campaign_id=finished.id, subscriber_id=readers[3].id))
    sending = campaign_with(
        session, weekly, readers, publish(session, f"Issue two {EVIL}"), ["sent"] * 3 + ["pending"] * 6 + ["failed"]
    )
    sending.status = CampaignStatus.sending
    sending.subject = f"Issue two {EVIL}"
    publish(session, f"Draft {EVIL}", date="2030-01-13")
    session.commit()

    page = admin_web.signed_in(Role.editor, name="ed").get("/admin").text
    assert EVIL not in page and "Draft &lt;script&gt;alert(1)&lt;/script&gt;" in page
    # Sending now: the progress, and the panel polls every 2 s.
    assert 'hx-get="/admin/sending-now" hx-trigger="every 2s"' in page
    assert "4 of 10 done (40%)" in page and "3 sent · 1 failed" in page
    # Recent campaigns: sent, open and click rates per message sent, bounces.
    row = re.search(rf'<a href="/admin/campaigns/{finished.id}">Issue one</a>.*?</tr>', page, re.S)
    assert row is not None
    cells = re.findall(r'<td class="num">([^<]*)</td>', row[0])
    assert cells == ["4", "50.0%", "25.0%", "1", "0"]
    # Growth: totals beside the chart, and a row per day.
    assert re.search(r"Joined</th><td class=\"num\">10<", page) and re.search(r"Left</th><td class=\"num\">2<", page)
    assert re.search(r"Net</th><td class=\"num\">\+8<", page)
    assert page.count("<tr data-day=") == 30 and "growth-chart" in page and "chart.umd.min.js" in page
    ninety = admin_web.signed_in(Role.editor, name="ed").get("/admin?days=90").text
    assert ninety.count("<tr data-day=") == 90 and "last 90 days" in ninety
    odd = admin_web.signed_in(Role.editor, name="ed").get("/admin?days=45").text
    assert odd.count("<tr data-day=") == 30
    # Drafts: the digest no campaign uses, not the two that were sent.
    drafts = page[page.index("Digests waiting to be sent") :]
    assert "Draft &lt;script&gt;" in drafts and "Issue one" not in drafts


def test_sending_panel_stops_polling_when_nothing_sends(admin_web: AdminWeb, session: Session) -> None:
    weekly = make_list(session, slug="weekly")
    readers = make_subscribers(session, weekly, 2)
    campaign = campaign_with(session, weekly, readers, publish(session, "Issue"), ["sent", "pending"])
    campaign.status = CampaignStatus.sending
    session.commit()
    client = admin_web.signed_in(Role.editor, name="ed")
    live = client.get("/admin/sending-now")
    assert live.status_code == 200 and 'hx-trigger="every 2s"' in live.text and "1 of 2 done" in live.text
    assert "<html" not in live.text  # a fragment, not a page
    session.execute(update(Campaign).where(Campaign.id == campaign.id).values(status=CampaignStatus.finished))
    session.commit()
    done = client.get("/admin/sending-now")
    assert "hx-trigger" not in done.text and "Nothing is sending right now" in done.text
    assert admin_web.new_client().get("/admin/sending-now").status_code == 303  # signed in only


def test_growth_counts_people_once_a_day_across_lists(session: Session) -> None:
    weekly, daily = make_list(session, slug="weekly"), make_list(session, slug="daily")
    people = make_subscribers(session, weekly, 2)
    for person in people:
        session.add(Subscription(subscriber_id=person.id, list_id=daily.id, status="confirmed", confirmed_at=utcnow()))
    session.flush()
    per_day = growth.subscriber_growth(session, 7)
    assert len(per_day) == 7 and per_day[-1].day == utcnow().date()
    assert (per_day[-1].joined, per_day[-1].left, per_day[-1].net) == (2, 0, 2)
    assert sum(d.joined for d in per_day[:-1]) == 0
