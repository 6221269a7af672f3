"""The campaign pages over HTTP, both backends: the list, the send flow (test send, lists and reach, now or
at a time in a zone, the confirmation), the campaign page (live progress, pause / resume / cancel, the
report, the ledger, resend). Every POST needs the CSRF token, and a refused one changes nothing."""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from newsletter import delivery, subscriptions
from newsletter.models import Campaign, CampaignStatus, Delivery, DeliveryStatus, Event, EventType, Link, Role
from newsletter.web.api.deps import get_jobs
from tests.admin import AdminWeb, csrf_from
from tests.apiclient import RecordingJobs
from tests.factories import make_list, make_subscriber, make_subscribers, publish_sample

TAGS = re.compile(r"<[^>]+>")


def text_of(page: str) -> str:
    return " ".join(html.unescape(TAGS.sub(" ", page)).split())


@pytest.fixture
def jobs(admin_web: AdminWeb) -> Iterator[RecordingJobs]:
    recording = RecordingJobs()
    admin_web.app.dependency_overrides[get_jobs] = lambda: recording
    yield recording
    admin_web.app.dependency_overrides.pop(get_jobs)


@pytest.fixture
def world(admin_web: AdminWeb) -> dict[str, Any]:
    """Lists a (4 people) and b (3, one of them also on a), a published digest."""
    with admin_web.sessions.begin() as session:
        a, b = make_list(session, slug="a", name="Alpha"), make_list(session, slug="b", name="Beta")
        both = make_subscriber(session, a, "both@example.com")
        subscriptions.add_subscription(session, b, both, source=subscriptions.SubscriptionSource.admin, confirmed=True)
        make_subscribers(session, a, 3, prefix="a")
        make_subscribers(session, b, 2, prefix="b")
        digest = publish_sample(session)
        return {"digest": digest.slug, "title": digest.title}


def count(admin_web: AdminWeb, model: Any) -> int:
    with admin_web.sessions() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def started(admin_web: AdminWeb, digest: str, lists: list[str], sent: int = 0) -> int:
    """A sending campaign, planned, with its first `sent` rows sent."""
    with admin_web.sessions.begin() as session:
        campaign = delivery.create_campaign(session, digest_slug=digest, list_slugs=lists, allow_repeat=True)
        delivery.start(session, admin_web.settings, campaign.id)
        rows = session.scalars(select(Delivery).where(Delivery.campaign_id == campaign.id).order_by(Delivery.id))
        for row in list(rows)[:sent]:
            row.status, row.sent_at = DeliveryStatus.sent, dt.datetime.now(dt.UTC)
        return campaign.id


# --- the list ---------------------------------------------------------------------------------------------


def test_the_list_is_empty_at_first_and_says_what_to_do(admin_web: AdminWeb) -> None:
    page = admin_web.signed_in(Role.editor).get("/admin/campaigns")
    assert page.status_code == 200
    assert "No campaigns yet" in page.text and 'href="/admin/digests"' in page.text


def test_the_list_shows_status_digest_lists_sent_and_rates_and_pages_by_keyset(
    admin_web: AdminWeb, world: dict[str, Any]
) -> None:
    cid = started(admin_web, world["digest"], ["a", "b"], sent=4)
    with admin_web.sessions.begin() as session:
        rows = session.scalars(select(Delivery).where(Delivery.campaign_id == cid).order_by(Delivery.id)).all()
        for row in rows[:2]:
            session.add(
                Event(type=EventType.open, campaign_id=cid, delivery_id=row.id, subscriber_id=row.subscriber_id)
            )
        session.add(Event(type=EventType.click, campaign_id=cid, delivery_id=rows[0].id))
        for _ in range(29):
            delivery.create_campaign(session, digest_slug=world["digest"], list_slugs=["a"], allow_repeat=True)
    client = admin_web.signed_in(Role.editor)
    first = client.get("/admin/campaigns")
    words = text_of(first.text)
    assert first.text.count("<tr>") == 1 + 25  # the head and a page of 25
    assert "Older →" in words and "← Newer" not in words
    older = client.get("/admin/campaigns", params={"older": re.findall(r"older=(\d+)", first.text)[0]})
    shown = text_of(older.text)
    assert f"#{cid}" in shown and "← Newer" in shown and "Older →" not in shown
    row = shown[shown.index(f"#{cid}") :]
    assert "sending" in row and world["digest"] in row and "a, b" in row
    assert "4 50.0% 25.0%" in row  # sent 4, two of them opened, one clicked
    newer = client.get("/admin/campaigns", params={"newer": re.findall(r"newer=(\d+)", older.text)[0]})
    assert text_of(newer.text) == words


# --- the send flow ----------------------------------------------------------------------------------------


def test_the_send_form_lists_counts_and_defaults_the_test_address_to_the_users_email(
    admin_web: AdminWeb, world: dict[str, Any]
) -> None:
    admin_web.user("ed", Role.editor, email="ed@example.org")
    page = admin_web.signed_in(name="ed").get("/admin/campaigns/new", params={"digest": world["digest"]})
    assert page.status_code == 200
    words = text_of(page.text)
    assert f"Send “{world['title']}”" in words
    assert "Alpha (a, 4 confirmed)" in words and "Beta (b, 3 confirmed)" in words
    assert 'value="ed@example.org"' in page.text
    assert 'name="zone"' in page.text and "<option>Europe/Paris</option>" in page.text


def test_reach_counts_each_person_once(admin_web: AdminWeb, world: dict[str, Any]) -> None:
    client = admin_web.signed_in(Role.editor)
    assert "Reaches 6 people" in text_of(client.get("/admin/campaigns/new/reach?lists=a&lists=b").text)
    assert "Reaches 4 people" in text_of(client.get("/admin/campaigns/new/reach?lists=a&lists=gone").text)
    assert "Tick the lists" in client.get("/admin/campaigns/new/reach").text


def test_a_test_send_goes_out_and_says_so(admin_web: AdminWeb, world: dict[str, Any]) -> None:
    client = admin_web.signed_in(Role.editor)
    form = client.get("/admin/campaigns/new", params={"digest": world["digest"]})
    outbox = admin_web.settings.outbox_dir
    sent = client.post(
        "/admin/campaigns/new/test",
        data={"digest": world["digest"], "test_to": "me@example.net", "csrf_token": csrf_from(form.text)},
    )
    assert sent.status_code == 200 and "Test sent to me@example.net" in text_of(sent.text)
    assert len(list(outbox.glob("*.eml"))) == 1
    bad = client.post(
        "/admin/campaigns/new/test",
        data={"digest": world["digest"], "test_to": "not an address", "csrf_token": csrf_from(form.text)},
    )
    assert bad.status_code == 422 and 'aria-invalid="true" aria-describedby="test_to-error"' in bad.text
    assert "An email address must have an @-sign." in text_of(bad.text) and len(list(outbox.glob("*.eml"))) == 1


def review(client: Any, page: Any, world: dict[str, Any], **data: Any) -> Any:
    return client.post(
        "/admin/campaigns/new/review", data={"digest": world["digest"], "csrf_token": csrf_from(page.text), **data}
    )


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({}, "lists", "Tick at least one list to send to."),
        ({"lists": ["a", "gone"]}, "lists", "There is no list 'gone' any more"),
        ({"lists": ["a"], "when": "at", "at": "2020-01-01T09:00", "zone": "UTC"}, "at", "has passed"),
        ({"lists": ["a"], "when": "at", "at": "tomorrow", "zone": "UTC"}, "at", "Enter a date and time"),
        (
            {"lists": ["a"], "when": "at", "at": "2099-01-01T09:00", "zone": "Mars/Olympus"},
            "zone",
            "Choose a time zone",
        ),
    ],
)
def test_bad_choices_are_refused_next_to_their_field_and_create_nothing(
    admin_web: AdminWeb, world: dict[str, Any], data: dict[str, Any], field: str, message: str
) -> None:
    client = admin_web.signed_in(Role.editor)
    form = client.get("/admin/campaigns/new", params={"digest": world["digest"]})
    for step in ("review", "send"):
        answer = client.post(
            f"/admin/campaigns/new/{step}", data={"digest": world["digest"], "csrf_token": csrf_from(form.text), **data}
        )
        assert answer.status_code == 422
        error = answer.text[answer.text.index(f'id="{field}-error">') :]
        assert text_of(error).startswith(message) or message in text_of(error[: error.index("</p>")])
    assert count(admin_web, Campaign) == 0


def test_review_then_send_now(admin_web: AdminWeb, world: dict[str, Any], jobs: RecordingJobs) -> None:
    client = admin_web.signed_in(Role.editor, name="ed")
    form = client.get("/admin/campaigns/new", params={"digest": world["digest"]})
    confirm = review(client, form, world, lists=["a", "b"], when="now")
    assert confirm.status_code == 200
    assert "6 recipients, lists Alpha and Beta , now ." in text_of(confirm.text)
    assert count(admin_web, Campaign) == 0  # nothing until Send
    sent = client.post(
        "/admin/campaigns/new/send",
        data=dict(re.findall(r'name="(\w+)" value="([^"]*)"', confirm.text)) | {"lists": ["a", "b"]},
    )
    assert sent.status_code == 303
    with admin_web.sessions() as session:
        campaign = session.scalars(select(Campaign)).one()
        assert [m.slug for m in campaign.lists] == ["a", "b"] and campaign.created_by == "ed"
        assert campaign.scheduled_at is None
    assert sent.headers["location"] == f"/admin/campaigns/{campaign.id}" and jobs.started == [campaign.id]
    assert "Sending" in text_of(client.get(sent.headers["location"]).text)


def test_send_at_a_time_in_a_zone_is_stored_in_utc(
    admin_web: AdminWeb, world: dict[str, Any], jobs: RecordingJobs
) -> None:
    client = admin_web.signed_in(Role.editor)
    form = client.get("/admin/campaigns/new", params={"digest": world["digest"]})
    data = {"lists": ["a"], "when": "at", "at": "2099-07-01T09:30", "zone": "Europe/Paris"}
    confirm = review(client, form, world, **data)
    assert "4 recipients, list Alpha , at 01 July 2099, 09:30 Europe/Paris (07:30 UTC)." in text_of(confirm.text)
    sent = client.post(
        "/admin/campaigns/new/send", data={"digest": world["digest"], "csrf_token": csrf_from(form.text), **data}
    )
    assert sent.status_code == 303 and jobs.started == []
    with admin_web.sessions() as session:
        campaign = session.scalars(select(Campaign)).one()
        assert campaign.status == CampaignStatus.scheduled
        assert campaign.scheduled_at == dt.datetime(2099, 7, 1, 7, 30, tzinfo=dt.UTC)


def test_a_refused_campaign_says_why_on_the_confirmation_and_creates_nothing(
    admin_web: AdminWeb, world: dict[str, Any], jobs: RecordingJobs
) -> None:
    started(admin_web, world["digest"], ["a"])
    client = admin_web.signed_in(Role.editor)
    form = client.get("/admin/campaigns/new", params={"digest": world["digest"]})
    again = client.post(
        "/admin/campaigns/new/send",
        data={"digest": world["digest"], "lists": ["a"], "csrf_token": csrf_from(form.text)},
    )
    assert again.status_code == 409 and "was already sent to list 'a'" in text_of(again.text)
    assert count(admin_web, Campaign) == 1 and jobs.started == []


def test_an_unpublished_digest_is_a_404(admin_web: AdminWeb) -> None:
    page = admin_web.signed_in(Role.editor).get("/admin/campaigns/new", params={"digest": "no-such-digest"})
    assert page.status_code == 404 and "no-such-digest" in text_of(page.text)


# --- the campaign page ------------------------------------------------------------------------------------


def test_a_sending_campaign_polls_its_progress_until_it_changes(admin_web: AdminWeb, world: dict[str, Any]) -> None:
    cid = started(admin_web, world["digest"], ["a", "b"], sent=2)
    client = admin_web.signed_in(Role.editor)
    page = client.get(f"/admin/campaigns/{cid}")
    assert page.status_code == 200
    assert f'hx-get="/admin/campaigns/{cid}/progress?was=sending" hx-trigger="every 2s"' in page.text
    words = text_of(page.text)
    assert "2 of 6 done (33%)" in words and "pending sending sent failed unknown skipped 4 0 2 0 0 0" in words
    assert "Pause" in words and "Cancel…" in words and "Reload" in words
    fragment = client.get(f"/admin/campaigns/{cid}/progress?was=sending")
    assert fragment.status_code == 200 and "HX-Refresh" not in fragment.headers and "<html" not in fragment.text
    with admin_web.sessions.begin() as session:
        session.execute(Delivery.__table__.update().values(status=DeliveryStatus.sent))
        delivery.finish_if_done(session, cid)
    done = client.get(f"/admin/campaigns/{cid}/progress?was=sending")
    assert done.headers["HX-Refresh"] == "true" and "hx-trigger" not in done.text
    report = client.get(f"/admin/campaigns/{cid}")
    assert "hx-trigger" not in report.text and "Pause" not in text_of(report.text)


def test_pause_resume_and_cancel_with_its_confirmation(
    admin_web: AdminWeb, world: dict[str, Any], jobs: RecordingJobs
) -> None:
    cid = started(admin_web, world["digest"], ["a"], sent=1)
    client = admin_web.signed_in(Role.editor, name="ed")
    token = csrf_from(client.get(f"/admin/campaigns/{cid}").text)
    paused = client.post(f"/admin/campaigns/{cid}/pause", data={"csrf_token": token})
    assert paused.status_code == 303
    page = text_of(client.get(f"/admin/campaigns/{cid}").text)
    assert "Paused: no more messages go out" in page and "Paused: paused by ed" in page and "Resume" in page
    assert client.post(f"/admin/campaigns/{cid}/resume", data={"csrf_token": token}).status_code == 303
    assert jobs.batches and all(b.campaign_id == cid for b in jobs.batches)
    confirmation = text_of(client.get(f"/admin/campaigns/{cid}/cancel").text)
    assert "the 3 recipient(s) not yet sent to will never get it; the 1 already sent stay sent" in confirmation
    assert client.post(f"/admin/campaigns/{cid}/cancel", data={"csrf_token": token}).status_code == 303
    with admin_web.sessions() as session:
        assert delivery.get_campaign(session, cid).status == CampaignStatus.cancelled
    again = client.post(f"/admin/campaigns/{cid}/cancel", data={"csrf_token": token})
    assert again.status_code == 409 and "already cancelled" in text_of(again.text)


def test_the_report_shows_the_chart_with_its_numbers_links_events_and_the_ledger(
    admin_web: AdminWeb, world: dict[str, Any]
) -> None:
    cid = started(admin_web, world["digest"], ["a"], sent=4)
    with admin_web.sessions.begin() as session:
        rows = session.scalars(select(Delivery).where(Delivery.campaign_id == cid).order_by(Delivery.id)).all()
        link = session.scalars(select(Link).where(Link.campaign_id == cid).order_by(Link.position)).first()
        assert link is not None
        now = dt.datetime.now(dt.UTC)
        session.add(
            Event(
                type=EventType.open,
                campaign_id=cid,
                delivery_id=rows[0].id,
                subscriber_id=rows[0].subscriber_id,
                created_at=now,
            )
        )
        session.add(
            Event(
                type=EventType.click,
                campaign_id=cid,
                delivery_id=rows[0].id,
                subscriber_id=rows[0].subscriber_id,
                link_id=link.id,
                created_at=now,
            )
        )
        session.add(
            Event(
                type=EventType.bounce,
                campaign_id=cid,
                delivery_id=rows[1].id,
                subscriber_id=rows[1].subscriber_id,
                detail="550 5.1.1 no such user",
            )
        )
        rows[1].status, rows[1].smtp_code, rows[1].smtp_text = DeliveryStatus.failed, 550, "5.1.1 no such user"
        delivery.finish_if_done(session, cid)
    client = admin_web.signed_in(Role.editor)
    page = client.get(f"/admin/campaigns/{cid}")
    words = text_of(page.text)
    assert 'id="timeline-chart"' in page.text and "chart.umd.min.js" in page.text and "campaign-chart.js" in page.text
    assert "Opens are estimates" in words and "Opens (estimate) Clicks" in words
    assert f"{now:%H}:00 1 1" in words  # the hour's numbers in the table
    assert f"{link.url} 1 1" in words
    assert "Bounces" in words and "550 5.1.1 no such user" in words and "Nobody unsubscribed from it." in words
    assert "Resend to failed / unknown" in words
    failed = text_of(client.get(f"/admin/campaigns/{cid}", params={"status": "failed"}).text)
    recipients = failed[failed.index("Address Status") :]
    assert recipients.count("@example.com") == 1 and recipients.endswith("550 5.1.1 no such user")
    assert "a0@example.com failed" in recipients
    searched = text_of(client.get(f"/admin/campaigns/{cid}", params={"search": "a2@"}).text)
    assert "a2@example.com" in searched[searched.index("Address Status") :]
    assert client.get(f"/admin/campaigns/{cid}", params={"status": "bogus"}).status_code == 422


def test_resend_to_failed_puts_them_back_in_the_queue(
    admin_web: AdminWeb, world: dict[str, Any], jobs: RecordingJobs
) -> None:
    cid = started(admin_web, world["digest"], ["a"], sent=3)
    with admin_web.sessions.begin() as session:
        row = session.scalars(select(Delivery).where(Delivery.status == DeliveryStatus.pending)).one()
        row.status = DeliveryStatus.failed
        delivery.finish_if_done(session, cid)
    client = admin_web.signed_in(Role.editor)
    token = csrf_from(client.get(f"/admin/campaigns/{cid}").text)
    none = client.post(f"/admin/campaigns/{cid}/resend", data={"csrf_token": token})
    assert none.status_code == 303 and jobs.batches == []
    answer = client.post(f"/admin/campaigns/{cid}/resend", data={"csrf_token": token, "statuses": ["failed"]})
    assert answer.status_code == 303
    assert "1 recipient(s) are in the queue again" in text_of(client.get(answer.headers["location"]).text)
    assert jobs.batches
    with admin_web.sessions() as session:
        assert delivery.get_campaign(session, cid).status == CampaignStatus.sending
    sent_twice = client.post(f"/admin/campaigns/{cid}/resend", data={"csrf_token": token, "statuses": ["sent"]})
    assert sent_twice.status_code == 409 and "never sent twice" in text_of(sent_twice.text)


def test_cancelling_a_scheduled_campaign_names_those_its_lists_would_reach(
    admin_web: AdminWeb, world: dict[str, Any]
) -> None:
    with admin_web.sessions.begin() as session:
        at = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
        cid = delivery.create_campaign(session, digest_slug=world["digest"], list_slugs=["a", "b"], scheduled_at=at).id
    page = text_of(admin_web.signed_in(Role.editor).get(f"/admin/campaigns/{cid}/cancel").text)
    assert "the 6 recipient(s) not yet sent to will never get it. To stop for a while instead, pause it." in page


def test_every_post_needs_the_csrf_token_and_changes_nothing_without_it(
    admin_web: AdminWeb, world: dict[str, Any], jobs: RecordingJobs
) -> None:
    cid = started(admin_web, world["digest"], ["a"], sent=1)
    client = admin_web.signed_in(Role.editor)
    form = {"digest": world["digest"], "lists": ["b"], "test_to": "me@example.net", "statuses": ["failed"]}
    for path in ("pause", "resume", "cancel", "resend"):
        answer = client.post(f"/admin/campaigns/{cid}/{path}", data=form)
        assert answer.status_code == 403 and "nothing was changed" in text_of(answer.text)
    for path in ("test", "review", "send"):
        answer = client.post(f"/admin/campaigns/new/{path}", data={**form, "csrf_token": "forged"})
        assert answer.status_code == 403
    with admin_web.sessions() as session:
        assert delivery.get_campaign(session, cid).status == CampaignStatus.sending
        assert session.scalar(select(func.count()).select_from(Campaign)) == 1
    assert jobs.started == [] and jobs.batches == []
    assert not list(admin_web.settings.outbox_dir.glob("*.eml"))


def test_signed_out_visitors_are_sent_to_sign_in(admin_web: AdminWeb, world: dict[str, Any]) -> None:
    for path in ("/admin/campaigns", "/admin/campaigns/1", f"/admin/campaigns/new?digest={world['digest']}"):
        answer = admin_web.client.get(path)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/admin/sign-in?next=")
