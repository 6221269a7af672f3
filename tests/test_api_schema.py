"""Property-based check of the admin API against its own OpenAPI document (schemathesis, bounded examples).

With an admin token, generated requests must never cause a 5xx, an undocumented status code, or a
response that does not match the documented schema.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks
from sqlalchemy.orm import Session, sessionmaker

from newsletter.config import Settings
from tests.apiclient import Api, api_client
from tests.factories import make_list, make_subscriber, publish_sample

pytestmark = pytest.mark.postgres

# Per operation: the whole run stays well under a minute. A longer hunt sets NEWSLETTER_TEST_FUZZ_EXAMPLES
# (and --hypothesis-seed to replay one); every run draws new cases either way.
EXAMPLES = int(os.environ.get("NEWSLETTER_TEST_FUZZ_EXAMPLES", "15"))
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@schemathesis.serializer("message/rfc822")
def _message(ctx: Any, value: Any) -> bytes:
    """The bounce route takes a raw message; generated values are sent as UTF-8 text."""
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")


@schemathesis.serializer("text/markdown")
def _markdown(ctx: Any, value: Any) -> bytes:
    """A Markdown digest is text; generated values are sent as UTF-8."""
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")


@pytest.fixture
def admin_api(make_settings: Callable[..., Settings], pg_url: str, pg_sessions: sessionmaker[Session]) -> Iterator[Api]:
    with api_client(make_settings(database_url=pg_url), pg_sessions) as client:
        with client.sessions() as session:  # something for the generated ids and slugs to hit
            weekly = make_list(session, slug="weekly")
            make_subscriber(session, weekly, "ana@example.com", "Ana")
            publish_sample(session)
            session.commit()
        yield client


def test_api_conforms_to_its_openapi_document(admin_api: Api) -> None:
    # Operations are driven one by one with hypothesis: schemathesis' pytest plugin (from_fixture) does not
    # work with pytest 9 yet, and this keeps the per-test database fixture.
    config = schemathesis.Config.from_dict({"generation": {"mode": "positive"}})
    schema = schemathesis.openapi.from_asgi("/openapi.json", admin_api.client.app, config=config)
    headers = admin_api.as_("admin")
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if not operation.path.startswith("/api/v1/"):
            continue

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def exercise(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        exercise()
        tested.append(operation.label)
    assert len(tested) >= 30
