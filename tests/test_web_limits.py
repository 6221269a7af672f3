"""Issue 11 item 2: request bodies are capped before anything parses them, and an admin API request with a
body is authenticated before a byte of it is read. Each refusal changes nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from newsletter.config import Settings
from newsletter.models import Digest, Subscriber, Subscription, Suppression
from tests.apiclient import Api, api_client

DIGEST = {
    "title": "Foreign media on Kazakhstan",
    "date": "2025-04-26",
    "slug": "api-digest",
    "items": [{"headline": "Rail", "source": "Ariana", "url": "https://example.com/a", "summary": "Text."}],
}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def api(make_settings: Callable[..., Settings], pg_url: str, pg_sessions: sessionmaker[Session]) -> Iterator[Api]:
    settings = make_settings(database_url=pg_url, max_body_bytes=4096, max_api_body_bytes=64 * 1024)
    with api_client(settings, pg_sessions) as client:
        client.call("POST", "/api/v1/lists", json={"slug": "weekly", "name": "Weekly", "from_email": "n@example.org"})
        yield client


def stored(api: Api) -> list[Any]:
    with api.sessions() as session:
        return [
            session.scalar(select(func.count()).select_from(Digest)),
            *session.execute(select(Subscriber.email, Subscriber.name).order_by(Subscriber.id)),
            *session.execute(select(Subscription.subscriber_id, Subscription.status).order_by(Subscription.id)),
            *session.execute(select(Suppression.email)),
        ]


def chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """A body sent without Content-Length (chunked), as a streaming client does."""
    sent = 0
    while sent < total:
        yield b"x" * min(size, total - sent)
        sent += size


def test_api_bodies_without_a_valid_token_are_refused_before_they_are_read(api: Api) -> None:
    before = stored(api)
    big = b'{"title": "' + b"x" * (1024 * 1024) + b'"}'
    for role in (None, "wrong", "revoked"):
        answer = api.call(
            "POST", "/api/v1/digests", role=role, content=big, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 401, (role, answer.text)
        assert answer.headers["WWW-Authenticate"] == "Bearer"
        assert "API token" in answer.json()["error"]
        # declared far larger than anything accepted: still the 401 (who asks matters before what they send)
        declared = api.call(
            "POST", "/api/v1/digests", role=role, content=b"{}", headers={"Content-Length": str(50 * 2**20)}
        )
        assert declared.status_code == 401, role
        streamed = api.call("POST", "/api/v1/digests", role=role, content=chunks(2 * 2**20))
        assert streamed.status_code == 401, role
    assert stored(api) == before


def test_an_admins_api_body_over_the_cap_is_a_413_declared_or_streamed(api: Api) -> None:
    before = stored(api)
    huge = {**DIGEST, "items": [{**DIGEST["items"][0], "summary": "x" * (100 * 1024)}]}  # type: ignore[dict-item]
    answer = api.call("POST", "/api/v1/digests", json=huge)
    assert answer.status_code == 413 and "larger than" in answer.json()["error"]
    streamed = api.call(
        "POST", "/api/v1/digests", content=chunks(200 * 1024), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413 and "larger than" in streamed.json()["error"]
    assert stored(api) == before
    # under the cap the same route works
    assert api.call("POST", "/api/v1/digests", json=DIGEST).status_code == 201
    assert stored(api)[0] == before[0] + 1


def test_uploads_get_the_larger_cap(api: Api) -> None:
    """A CSV import larger than the API's JSON cap is still read (streamed to a file), and imported."""
    rows = "".join(f"reader{n:06d}@example.com,Reader {n}\n" for n in range(4000))
    body = ("email,name\n" + rows).encode()
    assert len(body) > 64 * 1024
    report = api.call("POST", "/api/v1/lists/weekly/import", params={"confirmed": True}, content=body)
    assert report.status_code == 200, report.text
    assert report.json()["imported"] == 4000


def test_public_form_bodies_over_the_cap_are_a_413_and_subscribe_nobody(api: Api) -> None:
    before = stored(api)
    form = {"email": "ana@example.com", "name": "x" * 8000}
    answer = api.client.post("/subscribe/weekly", data=form)
    assert answer.status_code == 413
    streamed = api.client.post(
        "/subscribe/weekly", content=chunks(100 * 1024), headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert streamed.status_code == 413
    assert (
        api.client.post("/subscribe/weekly", data={"email": "x"}, headers={"Content-Length": "999999999"}).status_code
        == 413
    )
    assert stored(api) == before
    # a real form is a few dozen bytes, and still works
    assert api.client.post("/subscribe/weekly", data={"email": "ana@example.com"}).status_code == 200
    assert len(stored(api)) == len(before) + 2  # the subscriber and their pending subscription
