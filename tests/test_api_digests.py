"""The digest API over HTTP on both backends: drafts by Content-Type, edits, duplicates, and every refusal."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from newsletter import delivery, digests
from newsletter.config import Settings
from newsletter.models import Digest
from tests.apiclient import Api, api_client
from tests.factories import make_list, make_subscribers

DIGEST: dict[str, Any] = {
    "title": "API digest",
    "date": "2025-04-26",
    "slug": "api-digest",
    "items": [{"headline": "Rail", "source": "Ariana", "url": "https://example.com/a", "summary": "Trains."}],
}
MARKDOWN = digests.to_markdown(digests.Digest.model_validate(DIGEST))


@pytest.fixture
def api(settings: Settings, sessions: sessionmaker[Session]) -> Iterator[Api]:
    with api_client(settings, sessions) as client:
        yield client


def stored(api: Api) -> list[tuple[Any, ...]]:
    """Every digest with its items, to show that a refused request changed nothing."""
    with api.sessions() as session:
        rows = session.scalars(select(Digest).order_by(Digest.id)).all()
        return [
            (d.slug, d.title, d.language, d.content_hash, d.updated_at, [(i.headline, i.url) for i in d.items])
            for d in rows
        ]


def send(api: Api, method: str, path: str, body: str | bytes, content_type: str | None) -> Any:
    headers = {"Content-Type": content_type} if content_type else {}
    return api.call(method, path, "editor", content=body, headers=headers)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", json.dumps(DIGEST)),
        ("application/json; charset=utf-8", json.dumps(DIGEST)),
        ("text/markdown", MARKDOWN),
        ("text/markdown; charset=UTF-8", MARKDOWN),
        ("application/yaml", yaml.safe_dump(DIGEST)),
        ("text/yaml", yaml.safe_dump(DIGEST)),
    ],
)
def test_a_draft_is_stored_from_json_markdown_or_yaml(api: Api, content_type: str, body: str) -> None:
    created = send(api, "POST", "/api/v1/digests", body, content_type)
    assert created.status_code == 201, created.text
    assert created.json() == {"slug": "api-digest", "created": True}
    read = api.call("GET", "/api/v1/digests/api-digest", "editor").json()
    assert read["title"] == "API digest" and read["frozen"] is False and read["campaigns"] == []
    assert [item["summary"] for item in read["items"]] == ["Trains."]
    # The same content in another format is the same digest: a no-op
    assert send(api, "POST", "/api/v1/digests", MARKDOWN, "text/markdown").json()["created"] is False


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "multipart/form-data", None])
def test_any_other_content_type_is_415_and_stores_nothing(api: Api, content_type: str | None) -> None:
    refused = send(api, "POST", "/api/v1/digests", json.dumps(DIGEST), content_type)
    assert refused.status_code == 415
    assert "is not a digest format: use application/json, text/markdown" in refused.json()["error"]
    assert stored(api) == []


@pytest.mark.parametrize(
    ("content_type", "body", "problem"),
    [
        ("text/markdown", "no front matter", "line 1: a Markdown digest starts with YAML front matter"),
        ("application/yaml", "title: [unclosed", "invalid YAML at line 1"),
        ("application/json", "{", "invalid JSON at line 1"),
        ("application/json", json.dumps({**DIGEST, "items": []}), "items: a digest needs at least one item"),
        ("application/json", json.dumps({**DIGEST, "language": "en_US"}), "language: must be a language tag"),
        ("text/markdown", b"---\ntitle: \xff\n", "the body is not UTF-8 text (byte 11)"),
        (
            "text/markdown",
            MARKDOWN.replace("https://example.com/a", "javascript:alert(1)"),
            'item 1 at line 7 (headline "Rail"): url: must be an absolute http(s) URL',
        ),
    ],
)
def test_an_invalid_digest_is_422_with_the_problem_and_stores_nothing(
    api: Api, content_type: str, body: str | bytes, problem: str
) -> None:
    refused = send(api, "POST", "/api/v1/digests", body, content_type)
    assert refused.status_code == 422, refused.text
    assert problem in refused.json()["error"]
    assert any(problem in entry["msg"] for entry in refused.json()["detail"])
    assert stored(api) == []


def test_put_edits_a_draft_in_any_format(api: Api) -> None:
    send(api, "POST", "/api/v1/digests", json.dumps(DIGEST), "application/json")
    edited = MARKDOWN.replace("API digest", "API digest, corrected").replace("Trains.", "More trains.")
    answer = send(api, "PUT", "/api/v1/digests/api-digest", edited, "text/markdown")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["title"] == "API digest, corrected" and body["items"][0]["summary"] == "More trains."
    assert body["updated_at"] >= body["published_at"]
    without_slug = {k: v for k, v in DIGEST.items() if k != "slug"} | {"language": "kk"}
    again = send(api, "PUT", "/api/v1/digests/api-digest", yaml.safe_dump(without_slug), "application/yaml")
    assert again.status_code == 200 and again.json()["language"] == "kk" and again.json()["slug"] == "api-digest"


def test_put_refusals_change_nothing(api: Api) -> None:
    with api.sessions() as session:
        weekly = make_list(session, slug="weekly")
        make_subscribers(session, weekly, 1)
        session.commit()
    send(api, "POST", "/api/v1/digests", json.dumps(DIGEST), "application/json")
    before = stored(api)
    changed = json.dumps({**DIGEST, "title": "Changed"})

    unknown = send(api, "PUT", "/api/v1/digests/nope", changed, "application/json")
    assert unknown.status_code == 404 and unknown.json()["error"] == "no digest with slug 'nope'"
    invalid = send(
        api, "PUT", "/api/v1/digests/api-digest", json.dumps({**DIGEST, "date": "2025-02-30"}), "application/json"
    )
    assert invalid.status_code == 422 and "date: expected a date like 2025-04-26, got '2025-02-30'" in invalid.text
    renamed = send(api, "PUT", "/api/v1/digests/api-digest", json.dumps({**DIGEST, "slug": "x"}), "application/json")
    assert renamed.status_code == 422 and "an edit keeps the slug 'api-digest'" in renamed.json()["error"]
    wrong_type = send(api, "PUT", "/api/v1/digests/api-digest", changed, "text/html")
    assert wrong_type.status_code == 415
    assert stored(api) == before

    with api.sessions() as session:
        campaign = delivery.create_campaign(session, digest_slug="api-digest", list_slugs=["weekly"])
        session.commit()
        campaign_id = campaign.id
    frozen = send(api, "PUT", "/api/v1/digests/api-digest", changed, "application/json")
    assert frozen.status_code == 409
    assert frozen.json()["error"] == f"digest 'api-digest' is used by campaign {campaign_id}; duplicate it to edit"
    assert stored(api) == before
    read = api.call("GET", "/api/v1/digests/api-digest", "editor").json()
    assert read["frozen"] is True and read["campaigns"] == [campaign_id]


def test_duplicate_over_http(api: Api) -> None:
    send(api, "POST", "/api/v1/digests", json.dumps(DIGEST), "application/json")
    copy = api.call("POST", "/api/v1/digests/api-digest/duplicate", "editor")
    assert copy.status_code == 201 and copy.json()["slug"] == "api-digest-copy" and copy.json()["frozen"] is False
    named = api.call("POST", "/api/v1/digests/api-digest/duplicate", "editor", json={"slug": "issue-2"})
    assert named.status_code == 201 and named.json()["items"] == copy.json()["items"]
    before = stored(api)
    taken = api.call("POST", "/api/v1/digests/api-digest/duplicate", "editor", json={"slug": "issue-2"})
    assert taken.status_code == 409 and "slug 'issue-2' is already taken" in taken.json()["error"]
    malformed = api.call("POST", "/api/v1/digests/api-digest/duplicate", "editor", json={"slug": "Bad Slug"})
    assert malformed.status_code == 422
    unknown = api.call("POST", "/api/v1/digests/nope/duplicate", "editor")
    assert unknown.status_code == 404
    anonymous = api.call("POST", "/api/v1/digests/api-digest/duplicate", None)
    assert anonymous.status_code == 401
    assert stored(api) == before


def test_a_body_over_the_api_limit_is_413_before_it_is_parsed(api: Api, settings: Settings) -> None:
    huge = "x" * (settings.max_api_body_bytes + 1)
    refused = send(api, "POST", "/api/v1/digests", huge, "text/markdown")
    assert refused.status_code == 413
    assert stored(api) == []
