"""/api/v1/segments and the campaign API's segment: roles, 422 naming the bad part with nothing stored,
counts, CSV export, a campaign's reach with a segment, resend to non-openers."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from newsletter.config import Settings
from newsletter.models import Campaign, CampaignStatus, Segment
from tests.apiclient import Api, api_client
from tests.factories import make_list, make_subscriber, publish_sample

pytestmark = pytest.mark.postgres
ALMATY = {"attribute": {"name": "city", "op": "eq", "value": "Almaty"}}


@pytest.fixture
def api(make_settings: Callable[..., Settings], pg_url: str, pg_sessions: sessionmaker[Session]) -> Iterator[Api]:
    with api_client(make_settings(database_url=pg_url), pg_sessions) as client:
        with client.sessions() as session:
            weekly = make_list(session, slug="weekly")
            for name, city in [("ana", "Almaty"), ("bo", "Almaty"), ("cy", "Astana")]:
                make_subscriber(session, weekly, f"{name}@example.com", "+Name").attributes = {"city": city}
            publish_sample(session)
            session.commit()
        yield client


def _stored(api: Api) -> int:
    with api.sessions() as session:
        return session.scalar(select(func.count()).select_from(Segment)) or 0


def test_crud_count_and_export_with_roles(api: Api) -> None:
    body = {"name": "almaty", "description": "city edition", "filter": ALMATY}
    assert api.call("POST", "/api/v1/segments", role="editor", json=body).status_code == 403
    assert api.call("POST", "/api/v1/segments", role=None, json=body).status_code == 401
    assert _stored(api) == 0
    created = api.call("POST", "/api/v1/segments", json=body)
    assert created.status_code == 201 and created.json()["created_by"] == "root"
    assert api.call("POST", "/api/v1/segments", json=body).status_code == 409
    assert [s["name"] for s in api.call("GET", "/api/v1/segments", role="editor").json()] == ["almaty"]
    assert api.call("GET", "/api/v1/segments/almaty/count", role="editor").json() == {"name": "almaty", "count": 2}
    live = api.call("POST", "/api/v1/segments/count", role="editor", json={"filter": {"not": ALMATY}})
    assert live.json() == {"name": None, "count": 1}
    assert api.call("GET", "/api/v1/segments/almaty/export", role="editor").status_code == 403
    exported = api.call("GET", "/api/v1/segments/almaty/export")
    assert exported.headers["content-type"].startswith("text/csv")
    rows = ["email,name,city", "ana@example.com,'+Name,Almaty", "bo@example.com,'+Name,Almaty"]
    assert exported.text.splitlines() == rows
    patched = api.call("PATCH", "/api/v1/segments/almaty", json={"name": "astana", "filter": {"not": ALMATY}})
    assert patched.json()["name"] == "astana" and patched.json()["updated_by"] == "root"
    assert api.call("PATCH", "/api/v1/segments/astana", role="editor", json={"name": "x"}).status_code == 403
    assert api.call("DELETE", "/api/v1/segments/astana", role="editor").status_code == 403
    assert api.call("DELETE", "/api/v1/segments/astana").status_code == 204
    assert api.call("GET", "/api/v1/segments/astana").status_code == 404


def test_bad_filters_are_422_naming_the_part_and_store_nothing(api: Api) -> None:
    bad = {"all": [ALMATY, ALMATY, {"attribute": {"name": "city", "op": "like", "value": "A"}}]}
    answer = api.call("POST", "/api/v1/segments", json={"name": "bad", "filter": bad})
    assert answer.status_code == 422
    assert answer.json()["error"].startswith('filter.all[2].attribute: unknown operator "like"')
    assert answer.json()["detail"]["path"] == "filter.all[2].attribute"
    deep: dict[str, object] = ALMATY
    for _ in range(30):
        deep = {"not": deep}
    too_deep = api.call("POST", "/api/v1/segments", json={"name": "deep", "filter": deep})
    assert "nested deeper" in too_deep.json()["error"]
    assert _stored(api) == 0
    api.call("POST", "/api/v1/segments", json={"name": "good", "filter": ALMATY})
    unchanged = api.call("PATCH", "/api/v1/segments/good", json={"name": "renamed", "filter": {"opened": {"last": -1}}})
    assert unchanged.status_code == 422 and unchanged.json()["error"].startswith("filter.opened.last:")
    assert api.call("GET", "/api/v1/segments/good").json()["filter"] == ALMATY


def test_campaign_with_a_segment_and_resend_to_non_openers(api: Api) -> None:
    api.call("POST", "/api/v1/segments", json={"name": "almaty", "filter": ALMATY})
    reach = api.call("GET", "/api/v1/campaigns/reach?list=weekly&segment=almaty", role="editor").json()
    assert reach == {"lists": ["weekly"], "segment": "almaty", "recipients": 2}
    slug = api.call("GET", "/api/v1/digests", role="editor").json()[0]["slug"]
    body = {"digest": slug, "lists": ["weekly"], "segment": "almaty"}
    created = api.call("POST", "/api/v1/campaigns", role="editor", json=body)
    assert created.status_code == 201 and api.jobs.started == [created.json()["id"]]
    missing = api.call("POST", "/api/v1/campaigns", role="editor", json={**body, "segment": "nope", "again": True})
    assert missing.status_code == 404 and "no segment named 'nope'" in missing.json()["error"]
    campaign_id = created.json()["id"]
    early = api.call("POST", f"/api/v1/campaigns/{campaign_id}/resend-non-openers", role="editor", json={})
    assert early.status_code == 409
    with api.sessions() as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None and campaign.segment_filter == ALMATY
        campaign.status, campaign.started_at = CampaignStatus.finished, campaign.created_at
        session.commit()
    again = api.call(
        "POST", f"/api/v1/campaigns/{campaign_id}/resend-non-openers", role="editor", json={"subject": "Missed it?"}
    )
    assert again.status_code == 201
    with api.sessions() as session:
        second = session.get(Campaign, again.json()["id"])
        assert second is not None and second.subject == "Missed it?"
        assert second.segment_filter == {"received": {"campaign": campaign_id, "opened": False}}
