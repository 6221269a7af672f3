"""The webhooks API (admins only) and the `newsletter webhooks` commands, on the same domain functions:
create (SSRF refused, nothing stored), list, change, the delivery log, redelivery, a new secret, delete."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from newsletter import outbox
from newsletter.config import Settings
from newsletter.db import make_engine
from newsletter.webhooks import dispatch
from tests.apiclient import api_client
from tests.test_cli import Cli
from tests.webhookreceiver import Receiver, verify


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


def test_the_api(sessions: sessionmaker[Session], settings: Settings, receiver: Receiver) -> None:
    allowed = settings.model_copy(update={"webhooks_allow_private": True})
    with api_client(settings, sessions) as strict:
        refused = strict.call("POST", "/api/v1/webhooks", json={"url": "https://[::1]/hook", "events": ["*"]})
        assert refused.status_code == 422 and "::1 is a loopback address" in refused.json()["error"]
        plain = strict.call("POST", "/api/v1/webhooks", json={"url": receiver.url, "events": ["*"]})
        assert plain.status_code == 422 and "must use https://" in plain.json()["error"]
        assert strict.call("GET", "/api/v1/webhooks").json() == []
        api = strict
        api.client.app.state.settings = allowed  # type: ignore[attr-defined]  # what SettingsDep reads
        assert api.call("GET", "/api/v1/webhooks", role="editor").status_code == 403
        body = {"url": receiver.url, "events": ["campaign.started"], "description": "ops"}
        assert api.call("POST", "/api/v1/webhooks", role="editor", json=body).status_code == 403
        bad = api.call("POST", "/api/v1/webhooks", json={**body, "events": ["campaign.exploded"]})
        assert bad.status_code == 422 and "campaign.exploded" in bad.text
        created = api.call("POST", "/api/v1/webhooks", json=body)
        assert created.status_code == 201
        endpoint = created.json()
        assert endpoint["secret"].startswith("whsec_") and endpoint["events"] == ["campaign.started"]
        shown = api.call("GET", f"/api/v1/webhooks/{endpoint['id']}").json()
        assert "secret" not in shown and shown["description"] == "ops"
        changed = api.call(
            "PATCH", f"/api/v1/webhooks/{endpoint['id']}", json={"events": ["campaign.started", "campaign.paused"]}
        )
        assert changed.json()["events"] == ["campaign.started", "campaign.paused"]
        with sessions() as session, session.begin():
            outbox.emit(session, "campaign.paused", {"campaign": {"id": 9}})
        dispatch.dispatch(sessions, allowed)
        (log,) = api.call("GET", f"/api/v1/webhooks/{endpoint['id']}/deliveries").json()
        assert (log["status"], log["response_code"], log["attempt"]) == ("succeeded", 204, 1)
        again = api.call("POST", f"/api/v1/webhooks/deliveries/{log['id']}/redeliver")
        assert again.status_code == 202 and again.json()["attempt"] == 2 and again.json()["manual"] is True
        rotated = api.call("POST", f"/api/v1/webhooks/{endpoint['id']}/rotate-secret").json()["secret"]
        dispatch.dispatch(sessions, allowed)
        first, second = receiver.requests
        assert first.headers["webhook-id"] == second.headers["webhook-id"] == log["webhook_id"]
        assert verify(endpoint["secret"], first.headers, first.body) and verify(rotated, second.headers, second.body)
        off = api.call("PATCH", f"/api/v1/webhooks/{endpoint['id']}", json={"enabled": False}).json()
        assert off["enabled"] is False and off["disabled_reason"] == "disabled through the API"
        assert api.call("DELETE", f"/api/v1/webhooks/{endpoint['id']}").status_code == 204
        assert api.call("GET", f"/api/v1/webhooks/{endpoint['id']}").status_code == 404


@pytest.mark.postgres
def test_the_cli(committed_pg: str, tmp_path: Path, receiver: Receiver, make_settings: Callable[..., Settings]) -> None:
    cli = Cli(committed_pg, tmp_path)
    refused = cli.run("webhooks", "create", "https://10.0.0.1/hook", "--events", "*", ok=False)
    assert "10.0.0.1 is a private address" in refused.stderr
    created = json.loads(
        cli.run(
            "webhooks", "create", receiver.url, "--events", "subscriber.confirmed", "--json",
            NEWSLETTER_WEBHOOKS_ALLOW_PRIVATE="true",
        ).stdout
    )  # fmt: skip
    engine: Engine = make_engine(committed_pg)
    try:
        with Session(engine) as session, session.begin():
            outbox.emit(session, "subscriber.confirmed", {"subscriber": {"id": 1}})
        settings = make_settings(database_url=committed_pg, webhooks_allow_private=True)
        dispatch.dispatch(sessions_of(engine), settings)
        with Session(engine) as session:
            (log,) = dispatch.log_of(session, created["id"])
            assert log.status == "succeeded"
    finally:
        engine.dispose()
    again = cli.run("webhooks", "redeliver", str(log.id), NEWSLETTER_WEBHOOKS_ALLOW_PRIVATE="true")
    assert "HTTP 204" in again.stdout  # without a broker the command sends it itself
    assert len(receiver.requests) == 2 and all(verify(created["secret"], r.headers, r.body) for r in receiver.requests)


def sessions_of(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)
