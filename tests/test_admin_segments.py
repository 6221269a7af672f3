"""/admin/segments over HTTP on both backends: editors read and count, admins write (403 otherwise), CSRF on
every POST, the error next to the filter with nothing stored, the live count; the send flow's segment
picker and reach; resend to non-openers from the campaign page."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select, update

from newsletter import delivery, segments
from newsletter.models import Campaign, CampaignStatus, Delivery, DeliveryStatus, Role, Segment
from newsletter.web.api.deps import get_jobs
from tests.admin import AdminWeb, csrf_from
from tests.apiclient import RecordingJobs
from tests.factories import make_list, make_subscriber, publish_sample
from tests.test_admin_campaigns import text_of

ALMATY = '{"attribute": {"name": "city", "op": "eq", "value": "Almaty"}}'


@pytest.fixture
def jobs(admin_web: AdminWeb) -> Iterator[RecordingJobs]:
    recording = RecordingJobs()
    admin_web.app.dependency_overrides[get_jobs] = lambda: recording
    yield recording
    admin_web.app.dependency_overrides.pop(get_jobs)


@pytest.fixture
def world(admin_web: AdminWeb) -> dict[str, Any]:
    with admin_web.sessions.begin() as session:
        weekly = make_list(session, slug="weekly", name="Weekly")
        for name, city in [("ana", "Almaty"), ("bo", "Almaty"), ("cy", "Astana")]:
            make_subscriber(session, weekly, f"{name}@example.com").attributes = {"city": city}
        return {"digest": publish_sample(session).slug}


def stored(admin_web: AdminWeb) -> list[tuple[str, Any]]:
    with admin_web.sessions() as session:
        return [(s.name, s.filter) for s in session.scalars(select(Segment).order_by(Segment.id))]


def test_admin_creates_edits_counts_and_deletes(admin_web: AdminWeb, world: dict[str, Any]) -> None:
    client = admin_web.signed_in(Role.admin)
    assert "No segments yet" in client.get("/admin/segments").text
    form = client.get("/admin/segments/new")
    token = csrf_from(form.text)
    assert 'hx-post="/admin/segments/count"' in form.text
    live = client.post("/admin/segments/count", data={"csrf_token": token, "filter": ALMATY})
    assert "Matches 2 subscribers" in text_of(live.text)
    wrong = client.post("/admin/segments/count", data={"csrf_token": token, "filter": '{"opened": {"last": 0}}'})
    assert "filter.opened.last:" in text_of(wrong.text)

    nul = client.post("/admin/segments/new", data={"csrf_token": token, "name": "alm\x00aty", "filter": ALMATY})
    assert nul.status_code == 422 and "NUL" in text_of(nul.text) and stored(admin_web) == []  # was a 500
    bad = '{"all": [{"attribute": {"name": "city", "op": "like", "value": "A"}}]}'
    refused = client.post("/admin/segments/new", data={"csrf_token": token, "name": "almaty", "filter": bad})
    assert refused.status_code == 422
    assert 'id="filter-error">filter.all[0].attribute: unknown operator &#34;like&#34;' in refused.text
    assert "almaty" in refused.text and "like" in refused.text  # the values are kept
    assert stored(admin_web) == []

    created = client.post("/admin/segments/new", data={"csrf_token": token, "name": "almaty", "filter": ALMATY})
    assert created.status_code == 303
    page = client.get(created.headers["location"])
    assert "Segment “almaty”" in text_of(page.text)
    segment_id = int(created.headers["location"].rsplit("/", 1)[1])
    listed = client.get("/admin/segments")
    assert f'hx-get="/admin/segments/{segment_id}/count"' in listed.text
    assert text_of(client.get(f"/admin/segments/{segment_id}/count").text) == "2 subscribers"

    saved = client.post(f"/admin/segments/{segment_id}", data={"csrf_token": token, "name": "astana",
                        "description": "the capital", "filter": '{"not": ' + ALMATY + "}"})  # fmt: skip
    assert saved.status_code == 303 and stored(admin_web)[0][0] == "astana"
    deleted = client.post(f"/admin/segments/{segment_id}/delete", data={"csrf_token": token})
    assert deleted.status_code == 303 and stored(admin_web) == []


def test_editors_read_and_count_but_may_not_write(admin_web: AdminWeb, world: dict[str, Any]) -> None:
    with admin_web.sessions.begin() as session:
        segment_id = segments.create(session, "almaty", ALMATY).id
    editor = admin_web.signed_in(Role.editor)
    listed = editor.get("/admin/segments")
    assert listed.status_code == 200 and "almaty" in listed.text and "New segment" not in listed.text
    assert 'href="/admin/segments"' in listed.text  # in the navigation
    page = editor.get(f"/admin/segments/{segment_id}")
    assert page.status_code == 200 and "readonly" in page.text and ">Save<" not in page.text
    token = csrf_from(page.text)
    assert editor.get("/admin/segments/new").status_code == 403
    for path, data in [
        ("/admin/segments/new", {"name": "mine", "filter": ALMATY}),
        (f"/admin/segments/{segment_id}", {"name": "renamed", "filter": ALMATY}),
        (f"/admin/segments/{segment_id}/delete", {}),
    ]:
        assert editor.post(path, data={"csrf_token": token, **data}).status_code == 403
    assert stored(admin_web) == [("almaty", {"attribute": {"name": "city", "op": "eq", "value": "Almaty"}})]


def test_every_post_needs_the_csrf_token(admin_web: AdminWeb, world: dict[str, Any]) -> None:
    with admin_web.sessions.begin() as session:
        segment_id = segments.create(session, "almaty", ALMATY).id
    client = admin_web.signed_in(Role.admin)
    for path, data in [
        ("/admin/segments/new", {"name": "forged", "filter": ALMATY}),
        (f"/admin/segments/{segment_id}", {"name": "forged", "filter": ALMATY}),
        (f"/admin/segments/{segment_id}/delete", {}),
    ]:
        assert client.post(path, data={"csrf_token": "forged", **data}).status_code == 403
    assert [name for name, _ in stored(admin_web)] == ["almaty"]
    anonymous = admin_web.new_client()
    assert anonymous.get("/admin/segments").status_code == 303


def test_send_flow_picks_a_segment_and_shows_its_reach(
    admin_web: AdminWeb, world: dict[str, Any], jobs: RecordingJobs
) -> None:
    with admin_web.sessions.begin() as session:
        segments.create(session, "almaty", ALMATY)
    client = admin_web.signed_in(Role.editor)
    form = client.get("/admin/campaigns/new", params={"digest": world["digest"]})
    assert '<option value="almaty">almaty</option>' in form.text
    reach = client.get("/admin/campaigns/new/reach", params={"lists": "weekly", "segment": "almaty"})
    assert "Reaches 2 people" in text_of(reach.text)
    token = csrf_from(form.text)
    choice = {"csrf_token": token, "digest": world["digest"], "lists": "weekly", "when": "now", "segment": "almaty"}
    review = client.post("/admin/campaigns/new/review", data=choice)
    words = text_of(review.text)
    assert "2 recipients" in words and "only those in the segment almaty" in words and "Send to 2" in words
    gone = client.post("/admin/campaigns/new/review", data={**choice, "segment": "nope"})
    assert gone.status_code == 422 and "There is no segment &#39;nope&#39; any more" in gone.text
    sent = client.post("/admin/campaigns/new/send", data=choice)
    assert sent.status_code == 303 and len(jobs.started) == 1
    assert "those in the segment almaty" in text_of(client.get(sent.headers["location"]).text)
    with admin_web.sessions() as session:
        campaign = session.get(Campaign, jobs.started[0])
        assert campaign is not None and campaign.segment_filter == {"attribute": {"name": "city", "op": "eq",
                                                                                  "value": "Almaty"}}  # fmt: skip


def test_resend_to_non_openers_from_the_campaign_page(
    admin_web: AdminWeb, world: dict[str, Any], jobs: RecordingJobs
) -> None:
    with admin_web.sessions.begin() as session:
        campaign = delivery.create_campaign(session, digest_slug=world["digest"], list_slugs=["weekly"])
        delivery.start(session, admin_web.settings, campaign.id)
        session.execute(update(Delivery).where(Delivery.campaign_id == campaign.id).values(status=DeliveryStatus.sent))
        campaign.status, campaign.finished_at = CampaignStatus.finished, dt.datetime.now(dt.UTC)
        campaign_id = campaign.id
    client = admin_web.signed_in(Role.editor)
    page = client.get(f"/admin/campaigns/{campaign_id}")
    assert "Resend to non-openers" in page.text and "the 3 recipients who have not opened it" in text_of(page.text)
    token = csrf_from(page.text)
    assert client.post(f"/admin/campaigns/{campaign_id}/resend-non-openers",
                       data={"csrf_token": "forged", "subject": "x"}).status_code == 403  # fmt: skip
    made = client.post(f"/admin/campaigns/{campaign_id}/resend-non-openers",
                       data={"csrf_token": token, "subject": "Missed it?", "days": "2"})  # fmt: skip
    assert made.status_code == 303 and jobs.started == []  # scheduled, not started
    assert f"those who did not open campaign #{campaign_id}" in text_of(client.get(made.headers["location"]).text)
    with admin_web.sessions() as session:
        newest = session.scalar(select(Campaign).order_by(Campaign.id.desc()).limit(1))
        assert newest is not None and newest.subject == "Missed it?" and newest.status == CampaignStatus.scheduled
        assert newest.segment_filter == {"received": {"campaign": campaign_id, "opened": False}}
        assert session.scalar(select(func.count()).select_from(Campaign)) == 2
