"""Admin sign-in, sessions, CSRF, rate limits and roles, over HTTP against both backends."""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Callable

import pytest
from fastapi import APIRouter, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker
from starlette.routing import BaseRoute

from newsletter import websessions
from newsletter.config import Settings
from newsletter.models import Role, User, WebSession
from newsletter.web import admin, create_app
from newsletter.web.admin.auth import SESSION_COOKIE, Admin, require_admin
from newsletter.web.admin.errors import AdminRoute
from tests.admin import PASSWORD, AdminWeb, csrf_from, make_user, sign_in

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient


def live_sessions(web: AdminWeb, name: str) -> int:
    with web.sessions() as session:
        count = session.scalar(
            select(func.count())
            .select_from(WebSession)
            .join(User)
            .where(User.name == name, WebSession.revoked_at.is_(None))
        )
        return int(count or 0)


def all_sessions(web: AdminWeb) -> list[tuple[int, object]]:
    with web.sessions() as session:
        return [(row.id, row.revoked_at) for row in session.scalars(select(WebSession).order_by(WebSession.id))]


def test_signing_in_lands_on_next_and_signing_out_revokes(admin_web: AdminWeb) -> None:
    admin_web.user("alice", Role.admin)
    client = admin_web.new_client()
    first = client.get("/admin/account?tab=password")
    assert first.status_code == 303
    assert first.headers["location"] == "/admin/sign-in?next=%2Fadmin%2Faccount%3Ftab%3Dpassword"
    answer = sign_in(client, "alice", next_url="/admin/account?tab=password")
    assert answer.status_code == 303 and answer.headers["location"] == "/admin/account?tab=password"
    cookie = client.cookies[SESSION_COOKIE]
    with admin_web.sessions() as session:
        row = session.scalars(select(WebSession)).one()
        assert row.id_hash == websessions.hash_id(cookie) and cookie not in row.id_hash
        assert row.ip == "203.0.113.10" and row.revoked_at is None and row.user_agent
    dashboard = client.get("/admin")
    assert dashboard.status_code == 200 and "alice" in dashboard.text
    signed_out = client.post("/admin/sign-out", data={"csrf_token": csrf_from(dashboard.text)})
    assert signed_out.status_code == 303 and signed_out.headers["location"] == "/admin/sign-in"
    assert live_sessions(admin_web, "alice") == 0
    assert "You are signed out" in client.get("/admin/sign-in").text
    # The old cookie, replayed, gets the sign-in page.
    replay = admin_web.new_client()
    replay.cookies.set(SESSION_COOKIE, cookie)
    assert replay.get("/admin").headers["location"].startswith("/admin/sign-in")


def test_wrong_password_unknown_and_api_only_users_read_alike(admin_web: AdminWeb) -> None:
    admin_web.user("alice", Role.admin)
    admin_web.user("apionly", Role.editor, password=None)
    pages = set()
    for name, password in (("alice", "not the password"), ("nobody", PASSWORD), ("apionly", PASSWORD)):
        client = admin_web.new_client()
        answer = sign_in(client, name, password)
        assert answer.status_code == 401
        assert "Wrong user name or password." in answer.text
        assert SESSION_COOKIE not in client.cookies
        pages.add(answer.text.replace(f'value="{name}"', "").split('name="csrf_token"')[0])
    assert len(pages) == 1
    assert all_sessions(admin_web) == []


@pytest.mark.parametrize(
    "target",
    ["https://evil.example", "//evil.example/admin", "/\\evil.example", "/archive", "/admin/sign-in", "javascript:x"],
)
def test_next_never_leaves_the_admin(admin_web: AdminWeb, target: str) -> None:
    admin_web.user("alice")
    client = admin_web.new_client()
    assert "evil.example" not in client.get("/admin/sign-in", params={"next": target}).text
    answer = sign_in(client, "alice", next_url=target)
    assert answer.status_code == 303 and answer.headers["location"] == "/admin"


def test_cookie_flags_under_https_and_http(
    admin_web: AdminWeb, make_settings: Callable[..., Settings], sessions: sessionmaker[Session]
) -> None:
    admin_web.user("alice")
    https = sign_in(admin_web.new_client(), "alice").headers["set-cookie"]
    session_cookie = next(part for part in https.split(", newsletter_") if part.startswith("newsletter_session="))
    for flag in ("HttpOnly", "Path=/", "SameSite=lax", "Secure"):
        assert flag in session_cookie
    app = create_app(make_settings(database_url=admin_web.settings.database_url, base_url="http://localhost:8000"))
    app.state.sessions = sessions
    with TestClient(app, base_url="http://localhost:8000", follow_redirects=False) as plain:
        http = sign_in(plain, "alice").headers["set-cookie"]
    session_cookie = next(part for part in http.split(", newsletter_") if part.startswith("newsletter_session="))
    assert "HttpOnly" in session_cookie and "SameSite=lax" in session_cookie and "Secure" not in session_cookie


def test_post_without_or_with_a_wrong_csrf_token_is_refused(admin_web: AdminWeb) -> None:
    client = admin_web.signed_in(Role.admin, name="alice")
    with admin_web.sessions() as session:
        before = session.scalar(select(User.password_hash).where(User.name == "alice"))
    change = {"current": PASSWORD, "new": "a brand new passphrase", "repeat": "a brand new passphrase"}
    for extra, headers in (({}, {}), ({"csrf_token": "0" * 64}, {}), ({}, {"X-CSRF-Token": "forged"})):
        answer = client.post("/admin/account/password", data={**change, **extra}, headers=headers)
        assert answer.status_code == 403
        assert "did not come from this site, so nothing was changed" in answer.text
    for path in ("/admin/sign-out", "/admin/account/password"):
        assert client.post(path, data={"csrf_token": ""}).status_code == 403
    with admin_web.sessions() as session:
        assert session.scalar(select(User.password_hash).where(User.name == "alice")) == before
    assert live_sessions(admin_web, "alice") == 1
    # Another session's token is no good either: tokens are tied to their session.
    other = admin_web.signed_in(Role.admin, name="alice")
    foreign_token = csrf_from(other.get("/admin").text)
    assert client.post("/admin/sign-out", data={"csrf_token": foreign_token}).status_code == 403
    # The header htmx sends works like the form field.
    token = csrf_from(client.get("/admin").text)
    assert client.post("/admin/sign-out", headers={"X-CSRF-Token": token}).status_code == 303


def test_sign_in_form_needs_its_double_submit_cookie(admin_web: AdminWeb) -> None:
    admin_web.user("alice")
    client = admin_web.new_client()
    token = csrf_from(client.get("/admin/sign-in").text)
    stranger = admin_web.new_client()  # a cross-site form post: the token, but not the browser's cookie
    answer = stranger.post("/admin/sign-in", data={"name": "alice", "password": PASSWORD, "csrf_token": token})
    assert answer.status_code == 403 and "sign-in form had expired" in answer.text
    client.cookies.clear()
    client.cookies.set("newsletter_signin", "tampered.value", domain="news.example.org", path="/admin/sign-in")
    answer = client.post("/admin/sign-in", data={"name": "alice", "password": PASSWORD, "csrf_token": token})
    assert answer.status_code == 403
    assert all_sessions(admin_web) == []


def _age(web: AdminWeb, **values: dt.timedelta) -> None:
    with web.sessions.begin() as session:
        row = session.scalars(select(WebSession)).one()
        session.execute(
            update(WebSession)
            .where(WebSession.id == row.id)
            .values({name: getattr(row, name) - delta for name, delta in values.items()})
        )


@pytest.mark.parametrize(
    ("aged", "ends"),
    [
        ({"last_seen_at": dt.timedelta(minutes=119)}, False),
        ({"last_seen_at": dt.timedelta(minutes=121)}, True),
        ({"created_at": dt.timedelta(hours=11, minutes=59)}, False),
        ({"created_at": dt.timedelta(hours=12, minutes=1)}, True),
    ],
)
def test_idle_and_absolute_timeouts(admin_web: AdminWeb, aged: dict[str, dt.timedelta], ends: bool) -> None:
    client = admin_web.signed_in(Role.editor, name="ed")
    _age(admin_web, **aged)
    answer = client.get("/admin")
    if ends:
        assert answer.status_code == 303 and answer.headers["location"] == "/admin/sign-in?next=%2Fadmin"
        assert SESSION_COOKIE not in client.cookies  # the ended session's cookie is cleared
    else:
        assert answer.status_code == 200


def test_last_seen_is_written_at_most_once_a_minute(admin_web: AdminWeb) -> None:
    client = admin_web.signed_in(Role.editor, name="ed")
    with admin_web.sessions() as session:
        first = session.scalars(select(WebSession)).one().last_seen_at
    client.get("/admin")
    with admin_web.sessions() as session:
        assert session.scalars(select(WebSession)).one().last_seen_at == first
    _age(admin_web, last_seen_at=dt.timedelta(minutes=2))
    client.get("/admin")
    with admin_web.sessions() as session:
        assert session.scalars(select(WebSession)).one().last_seen_at > first


def test_twenty_wrong_passwords_lock_the_account_even_for_the_right_one(admin_web: AdminWeb) -> None:
    admin_web.user("alice")
    limit = admin_web.settings.signin_account_limit
    statuses = []
    for attempt in range(20):
        client = admin_web.new_client(ip=f"198.51.100.{attempt}")  # a different address every time
        statuses.append(sign_in(client, "alice", "not the password").status_code)
    assert statuses == [401] * limit + [429] * (20 - limit)
    right = sign_in(admin_web.new_client(ip="198.51.100.200"), "alice")
    assert right.status_code == 429
    assert "Too many sign-in attempts for this account; try again in" in right.text
    assert all_sessions(admin_web) == []
    # Another account is not locked by it.
    admin_web.user("bob")
    assert sign_in(admin_web.new_client(ip="198.51.100.201"), "bob").status_code == 303


def test_one_address_trying_many_accounts_is_limited(admin_web: AdminWeb) -> None:
    limit = admin_web.settings.signin_ip_limit
    client = admin_web.new_client(ip="192.0.2.7")
    answers = [sign_in(client, f"guess{n}", "whatever password").status_code for n in range(limit + 1)]
    assert answers == [401] * limit + [429]
    admin_web.user("alice")
    refused = sign_in(client, "alice")
    assert refused.status_code == 429 and "from your network" in refused.text
    assert sign_in(admin_web.new_client(ip="192.0.2.8"), "alice").status_code == 303


def _needs_admin(dependant: Dependant) -> bool:
    return dependant.call is require_admin or any(_needs_admin(d) for d in dependant.dependencies)


def admin_routes(routes: list[BaseRoute]) -> list[tuple[str, str]]:
    """Every (method, path) of these routes that declares the admin-only dependency."""
    return [
        (method, route.path)
        for route in routes
        if isinstance(route, APIRoute) and _needs_admin(route.dependant)
        for method in sorted(route.methods)
    ]


def test_every_admin_only_route_refuses_an_editor(admin_web: AdminWeb) -> None:
    # One route of the test's own, so the walk has an admin-only route to try before any page declares one.
    probe = APIRouter(route_class=AdminRoute)

    @probe.post("/admin/test-probe/{item}")
    def admin_probe(item: str, me: Admin) -> Response:
        raise AssertionError("an editor reached an admin-only handler")

    admin_web.app.router.routes[:0] = probe.routes  # before the admin's catch-all 404
    editor = admin_web.signed_in(Role.editor, name="ed")
    token = csrf_from(editor.get("/admin").text)
    routes = admin_routes([*probe.routes, *admin.router.routes])
    assert ("POST", "/admin/test-probe/{item}") in routes
    for method, path in routes:
        concrete = path.replace("{", "").replace("}", "")  # any value: the role is checked first
        answer = editor.request(method, concrete, headers={"X-CSRF-Token": token})
        assert answer.status_code == 403, (method, path)
        assert "This page is for admins; ed is an editor" in answer.text
    assert live_sessions(admin_web, "ed") == 1


def test_editor_navigation_hides_admin_entries(admin_web: AdminWeb) -> None:
    from newsletter.web.admin import render

    editor = admin_web.signed_in(Role.editor, name="ed").get("/admin").text
    boss = admin_web.signed_in(Role.admin, name="boss").get("/admin").text
    for item in render.NAV:
        assert f'href="{item.href}"' in boss, item
        assert (f'href="{item.href}"' in editor) is not item.admin_only, item
    assert 'href="/admin/users"' not in editor and 'href="/admin/account"' in editor


def test_markup_in_names_shows_as_text(admin_web: AdminWeb) -> None:
    evil = "<script>alert(1)</script>"
    admin_web.user("x-script", Role.admin)
    with admin_web.sessions.begin() as session:
        session.execute(update(User).where(User.name == "x-script").values(name=evil))
    client = admin_web.signed_in(Role.admin, name=evil)
    for path in ("/admin", "/admin/account"):
        page = client.get(path).text
        assert evil not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    failed = sign_in(admin_web.new_client(), evil, "wrong password")
    assert evil not in failed.text and "&lt;script&gt;" in failed.text


def test_admin_pages_carry_the_security_headers(admin_web: AdminWeb) -> None:
    client = admin_web.signed_in(Role.admin, name="alice")
    for page in (client.get("/admin"), admin_web.new_client().get("/admin/sign-in"), client.get("/admin/nowhere")):
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "style-src 'self';" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "default-src 'none'" in csp
        assert page.headers["referrer-policy"] == "no-referrer"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["cache-control"] == "no-store"
        assert "<script>" not in page.text and " style=" not in page.text  # no inline script or style
    assert client.get("/admin/nowhere").status_code == 404


@pytest.mark.redis
@pytest.mark.usefixtures("cheap_hashes")
def test_sign_in_limits_are_shared_through_redis(
    make_settings: Callable[..., Settings], sessions: sessionmaker[Session], redis_url: str
) -> None:
    """Two web processes (two apps) with the same Redis count one account's attempts together."""
    settings = make_settings(redis_url=redis_url, signin_account_limit=3)
    apps = [create_app(settings), create_app(settings)]
    for app in apps:
        app.state.sessions = sessions
    with sessions.begin() as session:
        make_user(session, "alice")
    answers = []
    for attempt in range(4):
        app = apps[attempt % 2]
        with TestClient(
            app, base_url=settings.base_url, client=(f"198.51.100.{attempt}", 1), follow_redirects=False
        ) as c:
            answers.append(sign_in(c, "alice", "wrong password").status_code)
    assert answers == [401, 401, 401, 429]


def test_signing_in_again_ends_the_old_session_of_that_browser(admin_web: AdminWeb) -> None:
    admin_web.user("alice")
    admin_web.user("bob", Role.editor)
    client = admin_web.new_client()
    sign_in(client, "alice")
    first = client.cookies[SESSION_COOKIE]
    assert sign_in(client, "bob").status_code == 303
    assert client.cookies[SESSION_COOKIE] != first
    assert (live_sessions(admin_web, "alice"), live_sessions(admin_web, "bob")) == (0, 1)
    assert "bob" in client.get("/admin").text
