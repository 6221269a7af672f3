"""The audit log of lists, subscribers, imports, exports, suppressions and blocked domains: each change made
from the CLI, the API or an admin page is found in it with who, how and what (PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from newsletter import audit
from newsletter.config import Settings
from newsletter.models import ActorKind, Role
from tests.admin import AdminWeb, csrf_from
from tests.apiclient import api_client
from tests.factories import make_list, make_subscriber
from tests.test_cli import Cli


@pytest.fixture
def cli(committed_pg: str, tmp_path: Path) -> Cli:
    return Cli(committed_pg, tmp_path)


def entries(session: Session) -> list[tuple[str, str, str | None]]:
    return [(e.actor_kind.value, e.action, e.target) for e in reversed(audit.search(session, limit=500))]


def test_the_cli_records_list_import_export_subscriber_and_suppression_changes(cli: Cli) -> None:
    base = ("--name", "Weekly", "--from-email", "news@example.org")
    cli.run("lists", "create", "weekly", *base)
    cli.run("lists", "update", "weekly", "--cors-origin", "https://example.org", "--form-field", "city:City")
    people = cli.cwd / "people.csv"
    people.write_text("email,name\nada@example.com,Ada\n", encoding="utf-8")
    cli.run("subscribers", "import", "weekly", str(people), "--confirmed")
    cli.run("subscribers", "export", "weekly")
    cli.run("subscribers", "block", "ada@example.com")
    cli.run("subscribers", "unblock", "ada@example.com")
    cli.run("suppressions", "add", "spam@example.com")
    cli.run("suppressions", "remove", "spam@example.com")
    cli.run("suppressions", "block-domain", "*@mailinator.com")
    cli.run("suppressions", "unblock-domain", "mailinator.com")
    cli.run("subscribers", "erase", "ada@example.com", "--yes")
    assert cli.json("lists", "show", "weekly")["cors_origins"] == ["https://example.org"]
    actions = cli.sql("SELECT string_agg(action || ' ' || coalesce(target, '-'), ', ' ORDER BY id) FROM audit_log")
    assert actions.split(", ")[:3] == ["list.create list:weekly", "list.update list:weekly", "import.run list:weekly"]
    for expected in ("export.run list:weekly", "subscriber.block subscriber:", "subscriber.unblock subscriber:",
                     "suppression.add address:spam@example.com", "suppression.remove address:spam@example.com",
                     "blocked_domain.add domain:mailinator.com", "blocked_domain.remove domain:mailinator.com",
                     "subscriber.erase subscriber:"):  # fmt: skip
        assert expected in actions, expected
    assert cli.sql("SELECT count(*) FROM audit_log WHERE actor_kind <> 'cli'") == 0


def test_the_api_records_who_changed_what(
    make_settings: Callable[..., Settings], pg_url: str, pg_sessions: sessionmaker[Session]
) -> None:
    with api_client(make_settings(database_url=pg_url), pg_sessions) as api:
        admin = api.as_("admin")
        assert api.client.post("/api/v1/lists", json={"slug": "weekly", "name": "W", "from_email": "n@example.org"},
                               headers=admin).status_code == 201  # fmt: skip
        patched = api.client.patch(
            "/api/v1/lists/weekly", json={"cors_origins": ["https://example.org"]}, headers=admin
        )
        assert patched.status_code == 200 and patched.json()["cors_origins"] == ["https://example.org"]
        bad = api.client.patch("/api/v1/lists/weekly", json={"cors_origins": ["example.org/x"]}, headers=admin)
        assert bad.status_code == 422 and "is not an origin" in bad.text
        api.client.post("/api/v1/suppressions", json={"email": "spam@example.com"}, headers=admin)
        api.client.post("/api/v1/suppressions/domains", json={"domain": "mailinator.com"}, headers=admin)
        api.client.delete("/api/v1/lists/weekly", headers=admin)
    with pg_sessions() as session:
        assert entries(session) == [
            ("token", "list.create", "list:weekly"),
            ("token", "list.update", "list:weekly"),
            ("token", "suppression.add", "address:spam@example.com"),
            ("token", "blocked_domain.add", "domain:mailinator.com"),
            ("token", "list.delete", "list:weekly"),
        ]
        assert {e.actor for e in audit.search(session)} == {"root"}


def test_admin_pages_record_the_signed_in_admin(admin_web: AdminWeb) -> None:
    with admin_web.sessions.begin() as session:
        person = make_subscriber(session, make_list(session, slug="weekly"), "ada@example.com").id
    client = admin_web.signed_in(Role.admin, name="grace")
    token = csrf_from(client.get("/admin/suppressions").text)
    client.post(f"/admin/subscribers/{person}/block", data={"csrf_token": token})
    client.post("/admin/suppressions/domains", data={"csrf_token": token, "domain": "mailinator.com"})
    client.get("/admin/lists/weekly/export")
    client.post(f"/admin/subscribers/{person}/erase", data={"csrf_token": token})
    with admin_web.sessions() as session:
        found = [(e.actor, e.actor_kind, e.action, e.target) for e in reversed(audit.search(session, actor="grace"))]
    assert [row[2:] for row in found if row[2] != "sign_in.ok"] == [
        ("subscriber.block", f"subscriber:{person}"),
        ("blocked_domain.add", "domain:mailinator.com"),
        ("export.run", "list:weekly"),
        ("subscriber.erase", f"subscriber:{person}"),
    ]
    assert all(kind == ActorKind.user for _, kind, _, _ in found)
