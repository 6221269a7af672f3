"""The sequences API on both backends: admins write, editors read and preview, bad input changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from newsletter.config import Settings
from tests.apiclient import Api, api_client
from tests.factories import make_list


@pytest.fixture
def api(settings: Settings, sessions: sessionmaker[Session]) -> Iterator[Api]:
    with api_client(settings, sessions) as client:
        with sessions.begin() as session:
            make_list(session, slug="weekly")
        yield client


def steps(api: Api) -> list[tuple[Any, ...]]:
    answer = api.call("GET", "/api/v1/sequences/weekly", "editor")
    assert answer.status_code == 200
    body = answer.json()
    return [body["enabled"], *[(s["position"], s["subject"], s["delay_hours"]) for s in body["steps"]]]


def test_admins_set_up_a_sequence_and_editors_read_and_preview_it(api: Api) -> None:
    assert api.call("POST", "/api/v1/sequences", json={"list": "weekly"}).status_code == 201
    assert api.call("POST", "/api/v1/sequences", json={"list": "weekly"}).status_code == 409
    step = {"subject": "Welcome", "body": "Hello **there**.", "delay_hours": 0}
    added = api.call("POST", "/api/v1/sequences/weekly/steps", json=step)
    assert added.status_code == 201 and added.json()["steps"][0]["counts"]["sent"] == 0
    api.call("POST", "/api/v1/sequences/weekly/steps", json=step | {"subject": "Week one", "delay_hours": 168})
    assert api.call("PATCH", "/api/v1/sequences/weekly/steps/2", json={"subject": "Week 1"}).status_code == 200
    assert api.call("POST", "/api/v1/sequences/weekly/steps/2/move", json={"to": 1}).status_code == 200
    assert api.call("POST", "/api/v1/sequences/weekly/enable").json()["enabled"] is True
    assert steps(api) == [True, (1, "Week 1", 168), (2, "Welcome", 0)]

    preview = api.call(
        "POST", "/api/v1/sequences/weekly/preview", "editor", json={"subject": "Hi", "body": step["body"]}
    )
    assert preview.status_code == 200 and "<strong>there</strong>" in preview.json()["html"]
    assert [s["list"] for s in api.call("GET", "/api/v1/sequences", "editor").json()] == ["weekly"]
    # a step's campaign is not among the campaigns, but its report (the step's ledger) can be read by id
    campaign_id = added.json()["steps"][0]["campaign_id"]
    assert api.call("GET", "/api/v1/campaigns", "editor").json() == []
    report = api.call("GET", f"/api/v1/campaigns/{campaign_id}", "editor")
    assert report.status_code == 200 and report.json()["digest"] is None and report.json()["lists"] == ["weekly"]

    for method, path, body in [
        ("POST", "/api/v1/sequences/weekly/steps", step),
        ("PATCH", "/api/v1/sequences/weekly/steps/1", {"subject": "Edited"}),
        ("DELETE", "/api/v1/sequences/weekly/steps/1", None),
        ("POST", "/api/v1/sequences/weekly/disable", None),
    ]:
        assert api.call(method, path, "editor", json=body).status_code == 403
        assert api.call(method, path, None, json=body).status_code == 401
    assert steps(api) == [True, (1, "Week 1", 168), (2, "Welcome", 0)]

    assert api.call("DELETE", "/api/v1/sequences/weekly/steps/1").status_code == 204
    assert api.call("POST", "/api/v1/sequences/weekly/disable").json()["enabled"] is False
    assert steps(api) == [False, (1, "Welcome", 0)]


BAD_STEPS: list[tuple[dict[str, Any], str | None]] = [
    ({"subject": " ", "body": "Text."}, "subject"),
    ({"subject": "Hi", "body": "  "}, "body"),
    ({"subject": "Hi", "body": "Text.", "delay_hours": -1}, "delay_hours"),
    ({"subject": "Hi", "body": "x" * 50_001}, "body"),
    ({"subject": "Hi", "body": "Text.", "colour": "red"}, "colour"),
    ({"subject": "Hi", "body": "Text.", "template": "missing"}, None),  # no such template: 404
]


def test_bad_steps_are_refused_naming_the_field_and_nothing_changes(api: Api) -> None:
    api.call("POST", "/api/v1/sequences", json={"list": "weekly"})
    api.call("POST", "/api/v1/sequences/weekly/steps", json={"subject": "Welcome", "body": "Hello."})
    before = steps(api)
    for body, field in BAD_STEPS:
        for method, path in [("POST", "/api/v1/sequences/weekly/steps"), ("PATCH", "/api/v1/sequences/weekly/steps/1")]:
            change = (
                body if method == "POST" else {k: v for k, v in body.items() if k != "subject" or field == "subject"}
            )
            answer = api.call(method, path, json=change)
            assert answer.status_code == (404 if field is None else 422), (method, body, answer.text)
            if field is not None:
                assert field in {str(part) for error in answer.json()["detail"] for part in error["loc"]}
        assert steps(api) == before
    assert api.call("GET", "/api/v1/sequences/nosuchlist", "editor").status_code == 404
    assert api.call("PATCH", "/api/v1/sequences/weekly/steps/9", json={"subject": "x"}).status_code == 404


def test_deleting_a_list_removes_its_sequence(api: Api) -> None:
    assert api.call("POST", "/api/v1/sequences", json={"list": "weekly"}).status_code == 201
    body = {"subject": "Welcome", "body": "Hello."}
    added = api.call("POST", "/api/v1/sequences/weekly/steps", json=body)
    assert added.status_code == 201 and api.call("POST", "/api/v1/sequences/weekly/enable").status_code == 200
    campaign_id = added.json()["steps"][0]["campaign_id"]
    entry = api.client.get("/openapi.json").json()["paths"]["/api/v1/lists/{slug}"]["delete"]
    assert "welcome sequence" in entry["summary"] and "steps not sent yet are never sent" in entry["description"]
    assert api.call("DELETE", "/api/v1/lists/weekly").status_code == 204
    assert api.call("GET", "/api/v1/sequences/weekly").status_code == 404
    assert api.call("GET", f"/api/v1/campaigns/{campaign_id}").status_code == 404  # the step's campaign went too
