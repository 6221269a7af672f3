"""The admin's shell over HTTP: static files by content hash, /docs and /redoc offline, `/`, the switch
that turns the admin off, flash messages and the account page."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from newsletter.config import Settings
from newsletter.models import Role, User
from newsletter.web import create_app
from newsletter.web.admin.render import EMAIL_PREVIEW_CSP, content_security_policy, html_response
from tests.admin import PASSWORD, AdminWeb, csrf_from, sign_in

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient

ASSET = re.compile(r'(?:href|src)="(/static/[0-9a-f]{12}/[^"]+)"')


def test_static_files_have_hashed_immutable_urls(admin_web: AdminWeb) -> None:
    page = admin_web.new_client().get("/admin/sign-in").text
    urls = ASSET.findall(page)
    assert any(u.endswith("/admin/admin.css") for u in urls) and any(u.endswith("htmx.min.js") for u in urls)
    for url in urls:
        answer = admin_web.client.get(url)
        assert answer.status_code == 200
        assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert answer.headers["content-type"].startswith(("text/css", "text/javascript"))
    css = next(u for u in urls if u.endswith(".css"))
    stale = css.replace(css.split("/")[2], "000000000000")
    assert admin_web.client.get(stale).status_code == 404
    assert admin_web.client.get("/static/" + css.split("/")[2] + "/../../config.py").status_code == 404


def test_docs_and_redoc_are_served_offline(admin_web: AdminWeb) -> None:
    for path, script in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        page = admin_web.client.get(path)
        assert page.status_code == 200
        assert "http://" not in page.text and "https://" not in page.text  # nothing from another host
        assets = ASSET.findall(page.text)
        assert any(a.endswith(script) for a in assets)
        assert all(admin_web.client.get(a).status_code == 200 for a in assets)
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "<script>" not in page.text
    assert admin_web.client.get("/openapi.json").status_code == 200


def test_root_leads_to_the_admin_or_the_archive(
    admin_web: AdminWeb, make_settings: Callable[..., Settings], sessions: sessionmaker[Session]
) -> None:
    assert admin_web.client.get("/").headers["location"] == "/admin"
    off = create_app(make_settings(database_url=admin_web.settings.database_url, admin_enabled=False))
    off.state.sessions = sessions
    with TestClient(off, follow_redirects=False) as client:
        assert client.get("/").headers["location"] == "/archive"
        for path in ("/admin", "/admin/sign-in", "/admin/account"):
            assert client.get(path).status_code == 404
        assert client.post("/admin/sign-in", data={"name": "a", "password": "b"}).status_code in (404, 405)
        assert client.get("/api/v1/users").status_code == 401  # the API is unaffected


def test_change_password_needs_the_current_one_and_signs_out_other_browsers(admin_web: AdminWeb) -> None:
    laptop = admin_web.signed_in(Role.editor, name="ed")
    phone = admin_web.signed_in(Role.editor, name="ed")
    page = laptop.get("/admin/account")
    assert page.status_code == 200 and "Change your password" in page.text
    token = csrf_from(page.text)
    with admin_web.sessions() as session:
        before = session.scalar(select(User.password_hash).where(User.name == "ed"))
    cases = [
        ({"current": "not my password", "new": "a fine new password", "repeat": "a fine new password"},
         "This is not your current password."),
        ({"current": PASSWORD, "new": "short", "repeat": "short"}, "use at least 10"),
        ({"current": PASSWORD, "new": "a fine new password", "repeat": "a fine new passw0rd"}, "differ"),
    ]  # fmt: skip
    for form, says in cases:
        answer = laptop.post("/admin/account/password", data={**form, "csrf_token": token})
        assert answer.status_code == 422 and says in answer.text and 'aria-invalid="true"' in answer.text
        with admin_web.sessions() as session:
            assert session.scalar(select(User.password_hash).where(User.name == "ed")) == before
        assert phone.get("/admin").status_code == 200
    done = laptop.post(
        "/admin/account/password",
        data={"current": PASSWORD, "new": "a fine new password", "repeat": "a fine new password", "csrf_token": token},
    )
    assert done.status_code == 303 and done.headers["location"] == "/admin/account"
    shown = laptop.get("/admin/account")
    assert "Your password was changed. 1 other signed-in browser(s) were signed out." in shown.text
    assert "Your password was changed" not in laptop.get("/admin/account").text  # a flash shows once
    assert phone.get("/admin").headers["location"].startswith("/admin/sign-in")
    assert sign_in(admin_web.new_client(), "ed", PASSWORD).status_code == 401
    assert sign_in(admin_web.new_client(), "ed", "a fine new password").status_code == 303


def test_forged_flash_cookies_are_ignored(admin_web: AdminWeb) -> None:
    client = admin_web.signed_in(Role.editor, name="ed")
    client.cookies.set("newsletter_flash", "W3sidGV4dCI6ICJoaSJ9XQ.forged", domain="news.example.org", path="/admin")
    page = client.get("/admin")
    assert page.status_code == 200 and 'class="flash' not in page.text


def test_policies_for_pages_that_need_another(admin_web: AdminWeb) -> None:
    relaxed = content_security_policy(style_src="'self' 'unsafe-inline'", frame_src=None)
    assert "style-src 'self' 'unsafe-inline'" in relaxed and "frame-src" not in relaxed
    assert "script-src 'self'" in relaxed
    preview = html_response("<p style='color:red'>hi</p>", csp=EMAIL_PREVIEW_CSP)
    assert "sandbox" in preview.headers["content-security-policy"]
    assert "script-src" not in preview.headers["content-security-policy"]  # default-src 'none' covers it
    assert "x-frame-options" not in preview.headers  # the admin's own pages may frame it
