"""Fuzzing the public routes (issue 11): strings with NUL, control characters, overlong and odd Unicode in
every path segment, query parameter and form field a stranger controls; nothing may answer 5xx.

Hypothesis drives plain requests (the public pages read forms and tokens themselves, so their OpenAPI
entries describe no body for schemathesis to generate); bounded examples keep it fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from newsletter.config import Settings
from tests.apiclient import Api, api_client
from tests.factories import make_list, make_subscriber, publish_sample

pytestmark = pytest.mark.postgres

NASTY = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8", categories=["Cc"]), min_size=1, max_size=10),
    st.builds(lambda a, b: f"{a}\x00{b}", st.text(max_size=10), st.text(max_size=10)),
    st.builds(lambda n: "x" * n, st.integers(200, 5000)),
    st.sampled_from(["weekly", "..", "%", "%00", "\u202e", "\ud7ff", "' OR 1=1 --", "a" * 300 + "@example.com"]),
)
PAGES = ["/subscribe/{}", "/archive/{}", "/confirm/{}", "/unsubscribe/{}", "/unsubscribe/{}/undo", "/preferences/{}"]
PAGES += ["/o/{}", "/c/{}"]


@pytest.fixture
def site(make_settings: Callable[..., Settings], pg_url: str, pg_sessions: sessionmaker[Session]) -> Iterator[Api]:
    with api_client(make_settings(database_url=pg_url, subscribe_ip_limit=10_000), pg_sessions) as client:
        with client.sessions() as session:
            weekly = make_list(session, slug="weekly")
            make_subscriber(session, weekly, "ana@example.com", "Ana")
            publish_sample(session)
            session.commit()
        yield client


def test_public_routes_never_answer_5xx(site: Api) -> None:
    client = site.client

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(page=st.sampled_from(PAGES), value=NASTY, field=NASTY, method=st.sampled_from(["GET", "POST"]))
    def check(page: str, value: str, field: str, method: str) -> None:
        path = page.format(quote(value.encode("utf-8", "surrogatepass"), safe=""))
        data = {"email": field, "name": field, "website": "", "lists": field, "List-Unsubscribe": field}
        answer = client.request(method, path, data=data if method == "POST" else None, params={"q": field})
        assert answer.status_code < 500, (method, path, answer.status_code, answer.text[:200])
        json = client.post("/subscribe/weekly", json={"email": field, "name": value, "attributes": {field: value}})
        assert json.status_code < 500, (field, value, json.text[:200])

    check()
    for path in ("/archive", "/feed.xml", "/healthz", "/subscribe/weekly"):
        assert client.get(path, params={"page": "\x00", "list": "x" * 5000}).status_code < 500
