"""Audit entries written by each front — the CLI (a subprocess), the REST API and the admin pages — for
campaign actions, user and token changes and sign-ins; `newsletter audit` and GET /api/v1/audit read them."""

from __future__ import annotations

import datetime as dt
import getpass
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, sessionmaker

from newsletter import users
from newsletter.cli.audit import parse_since
from newsletter.cli.console import Failure
from newsletter.config import Settings
from newsletter.models import AuditEntry, Role
from newsletter.web.api.deps import get_jobs
from tests.admin import CLIENT_IP, AdminWeb, csrf_from, sign_in
from tests.apiclient import Api, RecordingJobs, api_client
from tests.factories import make_list, make_subscribers, publish_sample
from tests.test_cli import Cli


def entries(sessions: sessionmaker[Session]) -> list[tuple[str, str, str, str | None]]:
    with sessions() as session:
        return [
            (e.actor, e.actor_kind.value, e.action, e.target)
            for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        ]


@pytest.mark.postgres
def test_cli_actions_are_audited_and_read_back(committed_pg: str, tmp_path: Path) -> None:
    engine = create_engine(committed_pg)
    with Session(engine) as session, session.begin():  # the data through the domain: CLI runs cost seconds each
        weekly = make_list(session, slug="weekly")
        make_subscribers(session, weekly, 1)
        slug = publish_sample(session).slug
        users.create_user(session, "ops", Role.admin)
    engine.dispose()
    cli = Cli(committed_pg, tmp_path)
    me = getpass.getuser()
    later = cli.json("campaigns", "send", slug, "--list", "weekly", "--at", "2099-01-01T09:00:00+00:00")
    cli.run("campaigns", "cancel", str(later["id"]))
    now = cli.json("campaigns", "send", slug, "--list", "weekly", "--again")  # embedded: sent at once
    cli.run("users", "tokens", "create", "ops", "--purpose", "deploy script")
    assert "weekly: campaigns use the bundled template" in cli.run("templates", "default", "weekly").stdout
    rows = cli.json("audit")
    assert [(r["actor"], r["actor_kind"], r["action"], r["target"]) for r in reversed(rows)] == [
        (me, "cli", "campaign.schedule", f"campaign:{later['id']}"),
        (me, "cli", "campaign.cancel", f"campaign:{later['id']}"),
        (me, "cli", "campaign.send", f"campaign:{now['id']}"),
        (me, "cli", "token.create", "user:ops"),
        (me, "cli", "list.update", "list:weekly"),
    ]
    assert now["status"] == "finished"
    schedule = rows[-1]
    assert schedule["details"]["lists"] == ["weekly"] and schedule["details"]["digest"] == slug
    assert schedule["details"]["scheduled_at"].startswith("2099-01-01T09:00")
    assert rows[1]["details"]["purpose"] == "deploy script" and rows[0]["details"] == {"default_template": None}
    text = cli.run("audit", "--action", "campaign", "--since", "1d", COLUMNS="200").stdout
    assert "campaign.cancel" in text and "campaign.send" in text and "token.create" not in text


def test_audit_since_takes_dates_times_and_spans() -> None:
    assert parse_since("2026-12-01") == dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    assert parse_since("2026-12-01T09:30:00+01:00") == dt.datetime(2026, 12, 1, 8, 30, tzinfo=dt.UTC)
    week = parse_since("7d")
    assert week is not None and abs(dt.datetime.now(dt.UTC) - dt.timedelta(days=7) - week) < dt.timedelta(seconds=5)
    for bad in ("last tuesday", "2026-12-01T09:30:00", "7w"):
        with pytest.raises(Failure):
            parse_since(bad)


@pytest.fixture
def api(make_settings: Any, pg_url: str, pg_sessions: sessionmaker[Session]) -> Iterator[Api]:
    with api_client(make_settings(database_url=pg_url), pg_sessions) as client:
        yield client


def test_api_actions_are_audited_and_listed(api: Api) -> None:
    with api.sessions.begin() as session:
        weekly = make_list(session, slug="weekly")
        make_subscribers(session, weekly, 2)
        digest = publish_sample(session).slug
    sent = api.call("POST", "/api/v1/campaigns", role="editor", json={"digest": digest, "lists": ["weekly"]})
    assert sent.status_code == 201, sent.text
    campaign = sent.json()["id"]
    assert api.call("POST", f"/api/v1/campaigns/{campaign}/cancel", role="editor").status_code == 200
    made = api.call("POST", "/api/v1/users/ed/tokens", json={"purpose": "newsroom CMS"})
    assert made.status_code == 201 and made.json()["token"].startswith(made.json()["prefix"])
    assert api.call("POST", "/api/v1/users/ed/role", json={"role": "admin"}).json()["role"] == "admin"
    assert api.call("POST", "/api/v1/users/ed/deactivate").json()["deactivated"] is True
    assert api.call("GET", "/api/v1/me", role="editor").status_code == 401  # a deactivated user's token
    assert api.call("POST", "/api/v1/users/ed/reactivate").json()["deactivated"] is False
    refused = api.call("POST", "/api/v1/users/root/role", json={"role": "editor"})
    assert refused.status_code == 200  # ed is an admin now, so root may become an editor
    assert entries(api.sessions) == [
        ("ed", "token", "campaign.send", f"campaign:{campaign}"),
        ("ed", "token", "campaign.cancel", f"campaign:{campaign}"),
        ("root", "token", "token.create", "user:ed"),
        ("root", "token", "user.role", "user:ed"),
        ("root", "token", "user.deactivate", "user:ed"),
        ("root", "token", "user.reactivate", "user:ed"),
        ("root", "token", "user.role", "user:root"),
    ]
    page = api.call("GET", "/api/v1/audit", role="editor", params={"limit": 3})
    assert page.status_code == 200  # ed is an admin now
    body = page.json()
    assert [i["action"] for i in body["items"]] == ["user.role", "user.reactivate", "user.deactivate"]
    assert body["items"][0]["details"] == {"previous": "admin", "role": "editor"}
    as_ed = {"role": "editor"}  # root is an editor now, ed an admin
    older = api.call("GET", "/api/v1/audit", params={"limit": 3, "before": body["next_before"]}, **as_ed).json()
    assert [i["action"] for i in older["items"]] == ["user.role", "token.create", "campaign.cancel"]
    last = api.call("GET", "/api/v1/audit", params={"limit": 3, "before": older["next_before"]}, **as_ed).json()
    assert [i["action"] for i in last["items"]] == ["campaign.send"] and last["next_before"] is None
    family = api.call("GET", "/api/v1/audit", params={"action": "campaign"}, **as_ed).json()
    assert [i["action"] for i in family["items"]] == ["campaign.cancel", "campaign.send"]
    assert api.call("GET", "/api/v1/audit", params={"limit": 0}, **as_ed).status_code == 422
    assert api.call("GET", "/api/v1/audit").status_code == 403


def test_admin_send_and_sign_in_failures_are_audited(admin_web: AdminWeb, settings: Settings) -> None:
    jobs = RecordingJobs()
    admin_web.app.dependency_overrides[get_jobs] = lambda: jobs
    with admin_web.sessions.begin() as session:
        weekly = make_list(session, slug="weekly")
        make_subscribers(session, weekly, 2)
        digest = publish_sample(session).slug
    assert sign_in(admin_web.new_client(), "ed", "not the password").status_code == 401
    editor = admin_web.signed_in(Role.editor, name="ed")
    form = editor.get("/admin/campaigns/new", params={"digest": digest})
    sent = editor.post(
        "/admin/campaigns/new/send", data={"digest": digest, "lists": ["weekly"], "csrf_token": csrf_from(form.text)}
    )
    assert sent.status_code == 303 and jobs.started
    campaign = jobs.started[0]
    token = csrf_from(form.text)
    assert editor.post(f"/admin/campaigns/{campaign}/cancel", data={"csrf_token": token}).status_code == 303
    with admin_web.sessions() as session:
        rows = list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))
        got = [(e.actor, e.actor_kind.value, e.action, e.target, e.ip) for e in rows]
        assert got == [
            ("ed", "user", "sign_in.fail", "user:ed", CLIENT_IP),
            ("ed", "user", "sign_in.ok", "user:ed", CLIENT_IP),
            ("ed", "user", "campaign.send", f"campaign:{campaign}", CLIENT_IP),
            ("ed", "user", "campaign.cancel", f"campaign:{campaign}", CLIENT_IP),
        ]
        assert rows[0].details == {"reason": "password"} and rows[2].details["lists"] == ["weekly"]
    assert sign_in(admin_web.new_client(), "nobody-here", "x").status_code == 401
    with admin_web.sessions() as session:
        last = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
        assert last is not None and (last.actor, last.action, last.target) == (
            "nobody-here",
            "sign_in.fail",
            "user:nobody-here",
        )


def test_a_nul_in_an_audit_filter_is_a_422_not_a_500(api: Api) -> None:
    # found by the schema fuzz: PostgreSQL text cannot hold NUL, so it must be refused before the query
    for name in ("actor", "action", "target"):
        answer = api.call("GET", "/api/v1/audit", params={name: "a\x00b"})
        assert answer.status_code == 422, (name, answer.text)
