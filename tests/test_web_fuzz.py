"""Fuzzing the public routes (issue 11): strings with NUL, control characters, overlong and odd Unicode in
every path segment, query parameter and form field a stranger controls; nothing may answer 5xx.

Two passes: schemathesis generates requests from the public routes' own OpenAPI entries (web/public/schema.py
documents the forms the pages read themselves, and every status and media type they answer) and checks the
answers against them, once with the documented shapes and once with every string made nasty; and
hypothesis drives plain requests with odd query parameters and form fields on top. Bounded examples keep
it fast.
"""

from __future__ import annotations

import base64
import copy
import os
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
import schemathesis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import checks
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
# Test-side only: the format the nasty pass gives every string of the public entries, so that schemathesis
# draws those strings from NASTY instead of from all of Unicode, where NUL and 5,000 x are rare.
NASTY_FORMAT = "x-nasty-text"
schemathesis.openapi.format(NASTY_FORMAT, NASTY)
# Bounded for the suite; a longer hunt sets NEWSLETTER_TEST_FUZZ_EXAMPLES (per operation; the plain pass x4).
EXAMPLES = int(os.environ.get("NEWSLETTER_TEST_FUZZ_EXAMPLES", "15"))
PUBLIC_PATHS = {
    "/subscribe/{slug}",
    "/confirm/{token}",
    "/unsubscribe/{token}",
    "/unsubscribe/{token}/undo",
    "/preferences/{token}",
    "/o/{token}",
    "/c/{token}",
    "/archive",
    "/archive/{slug}",
    "/feed.xml",
    "/healthz",
    "/webhooks/ses",  # provider webhooks, on: what the fuzz sends is refused unsigned
    "/webhooks/sendgrid",
    "/webhooks/postmark",
    "/webhooks/mailgun",
}
PAGES = ["/subscribe/{}", "/archive/{}", "/confirm/{}", "/unsubscribe/{}", "/unsubscribe/{}/undo", "/preferences/{}"]
PAGES += ["/o/{}", "/c/{}"]


@pytest.fixture
def site(make_settings: Callable[..., Settings], pg_url: str, pg_sessions: sessionmaker[Session]) -> Iterator[Api]:
    sendgrid = ec.generate_private_key(ec.SECP256R1()).public_key()
    webhooks_on = {  # so that the fuzz reaches each webhook's verification, not only its 404
        "ses_topic_arns": "arn:aws:sns:us-east-1:123456789012:bounces",
        "sendgrid_webhook_public_key": base64.b64encode(
            sendgrid.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        ).decode(),
        "postmark_webhook_auth": "postmark:a-long-test-secret",
        "mailgun_webhook_signing_key": "key-" + "a1" * 16,
    }
    settings_ = make_settings(database_url=pg_url, subscribe_ip_limit=10_000, **webhooks_on)
    with api_client(settings_, pg_sessions) as client:
        with client.sessions() as session:
            weekly = make_list(session, slug="weekly")
            make_subscriber(session, weekly, "ana@example.com", "Ana")
            publish_sample(session)
            session.commit()
        yield client


def test_public_routes_never_answer_5xx(site: Api) -> None:
    client = site.client

    @settings(max_examples=4 * EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
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


def _nasty(node: Any) -> Any:
    """A copy of an OpenAPI fragment whose every string schema is drawn from NASTY."""
    if isinstance(node, dict):
        copied = {key: _nasty(value) for key, value in node.items()}
        if copied.get("type") == "string" and "format" not in copied:
            copied["format"] = NASTY_FORMAT
            copied.pop("examples", None)
        return copied
    if isinstance(node, list):
        return [_nasty(item) for item in node]
    return node


def test_public_routes_conform_to_their_openapi_entries(site: Api) -> None:
    """schemathesis over every public route: no 5xx, and only the statuses and media types documented."""
    document = site.client.get("/openapi.json").json()
    public = {path: entry for path, entry in document["paths"].items() if not path.startswith("/api/")}
    assert set(public) == PUBLIC_PATHS  # the stylesheet and the CORS preflight are not in the schema
    config = schemathesis.Config.from_dict({"generation": {"mode": "positive"}})
    tested = []
    for paths in (public, _nasty(public)):
        schema = schemathesis.openapi.from_dict({**copy.deepcopy(document), "paths": paths}, config=config)
        schema.app = site.client.app
        for result in schema.get_all_operations():
            operation = result.ok()

            @given(case=operation.as_strategy())
            @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def exercise(case: Any) -> None:
                case.call_and_validate(
                    checks=[checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance]
                )

            exercise()
            tested.append(operation.label)
    assert len(tested) == 2 * sum(len(entry) for entry in public.values())
