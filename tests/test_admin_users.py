"""Users, API tokens, two-factor sign-in and the audit log pages, over HTTP against both backends."""

from __future__ import annotations

import datetime as dt
import re
import warnings
from typing import Any

import pyotp
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter import users
from newsletter.models import ApiToken, AuditEntry, RecoveryCode, Role, User, WebSession
from newsletter.web.admin.signin import SignInThrottles
from newsletter.web.throttle import LocalThrottle
from tests.admin import CLIENT_IP, PASSWORD, AdminWeb, csrf_from, sign_in

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient

PAGES = [
    "/admin/users", "/admin/users/ada", "/admin/audit", "/admin/account/two-factor", "/admin/settings",
    "/admin/bounces", "/admin/templates", "/admin/templates/house", "/admin/templates/house/preview?digest=x",
]  # fmt: skip
_SECRET = re.compile(r'id="totp-secret">([A-Z2-7]+)<')
_STATE = re.compile(r'name="state" value="([^"]+)"')


def audit_rows(web: AdminWeb, action: str | None = None) -> list[AuditEntry]:
    with web.sessions() as session:
        query = select(AuditEntry).order_by(AuditEntry.id)
        if action:
            query = query.where(AuditEntry.action == action)
        rows = list(session.scalars(query))
        session.expunge_all()
        return rows


def snapshot(web: AdminWeb) -> dict[str, Any]:
    """What any of these forms could change."""
    with web.sessions() as session:
        return {
            "users": [
                (u.name, u.role, u.password_hash, u.totp_secret, u.totp_enabled_at, u.deactivated_at)
                for u in session.scalars(select(User).order_by(User.id))
            ],
            "tokens": [(t.prefix, t.revoked_at) for t in session.scalars(select(ApiToken).order_by(ApiToken.id))],
            "sessions": [(s.id, s.revoked_at) for s in session.scalars(select(WebSession).order_by(WebSession.id))],
            "codes": session.scalar(select(func.count()).select_from(RecoveryCode)),
            "audit": session.scalar(select(func.count()).select_from(AuditEntry)),
        }


def enrol(client: TestClient, now: dt.datetime | None = None) -> tuple[str, list[str]]:
    """Set up two-factor sign-in through the pages; returns the secret and the recovery codes shown."""
    token = csrf_from(client.get("/admin/account/two-factor").text)
    assert client.post("/admin/account/two-factor/start", data={"csrf_token": token}).status_code == 303
    page = client.get("/admin/account/two-factor")
    assert "<svg viewBox=" in page.text and "Scan this code" in page.text  # scales without cropping
    match = _SECRET.search(page.text)
    assert match
    secret = match[1]
    code = pyotp.TOTP(secret).at(now or dt.datetime.now(dt.UTC))
    done = client.post("/admin/account/two-factor/confirm", data={"csrf_token": token, "code": code})
    assert done.status_code == 200, done.text
    codes = re.findall(r"<li><code>([a-z2-7]{4}(?:-[a-z2-7]{4}){3})</code></li>", done.text)
    assert len(codes) == 10
    return secret, codes


def password_step(client: TestClient, name: str) -> str:
    """Sign in with the password; returns the signed state of the code step."""
    answer = sign_in(client, name)
    assert answer.status_code == 200 and "Code from your authenticator app" in answer.text, answer.text
    match = _STATE.search(answer.text)
    assert match
    return match[1]


def code_step(client: TestClient, state: str, code: str) -> Any:
    form_token = csrf_from(client.get("/admin/sign-in").text)
    return client.post("/admin/sign-in/code", data={"csrf_token": form_token, "state": state, "code": code})


def test_anonymous_visitors_are_sent_to_sign_in(admin_web: AdminWeb) -> None:
    for path in PAGES:
        answer = admin_web.client.get(path)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/admin/sign-in?next="), path


def roomy_limits(web: AdminWeb, limit: int = 100) -> None:
    web.app.state.sign_in_throttles = SignInThrottles(LocalThrottle(limit, 900), LocalThrottle(limit, 900))


def test_totp_sign_in_wrong_and_replayed_codes_and_recovery_codes(admin_web: AdminWeb) -> None:
    roomy_limits(admin_web)
    ada = admin_web.signed_in(Role.admin, name="ada")
    secret, codes = enrol(ada)
    account = ada.get("/admin/account").text
    assert "10 unused recovery code(s) left" in account
    with admin_web.sessions() as session:
        stored = session.scalar(select(User.totp_secret).where(User.name == "ada"))
    assert stored and secret not in stored  # kept encrypted

    browser = admin_web.new_client()
    state = password_step(browser, "ada")
    assert browser.get("/admin").status_code == 303  # the password alone signed nobody in
    wrong = code_step(browser, state, "000000" if pyotp.TOTP(secret).now() != "000000" else "111111")
    assert wrong.status_code == 401 and "That code is not right" in wrong.text
    code = pyotp.TOTP(secret).now()
    # The code that confirmed the enrolment may be this very one: it is refused as a replay then.
    answer = code_step(browser, state, code)
    replay_first = answer.status_code == 401
    if replay_first:
        later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
        code = pyotp.TOTP(secret).at(later)
        answer = code_step(browser, state, code)
    assert answer.status_code == 303 and answer.headers["location"] == "/admin"
    assert browser.get("/admin").status_code == 200

    replay = admin_web.new_client()
    replayed = code_step(replay, password_step(replay, "ada"), code)
    assert replayed.status_code == 401 and replay.get("/admin").status_code == 303

    rescue = admin_web.new_client()
    assert code_step(rescue, password_step(rescue, "ada"), codes[0].upper()).status_code == 303
    again = admin_web.new_client()
    assert code_step(again, password_step(again, "ada"), codes[0]).status_code == 401
    assert "9 unused recovery code(s) left" in ada.get("/admin/account").text

    methods = [(e.details["method"], e.ip) for e in audit_rows(admin_web, "sign_in.ok")]
    assert methods[-2:] == [("password+totp", CLIENT_IP), ("password+recovery", CLIENT_IP)]
    failures = [e.details["reason"] for e in audit_rows(admin_web, "sign_in.fail")]
    assert set(failures) == {"code"} and len(failures) == (4 if replay_first else 3)
    assert [e.action for e in audit_rows(admin_web, "two_factor.enable")] == ["two_factor.enable"]


def test_codes_count_against_the_sign_in_limit(admin_web: AdminWeb) -> None:
    roomy_limits(admin_web, limit=4)
    ada = admin_web.signed_in(Role.admin, name="ada")  # attempt 1
    secret, _ = enrol(ada)
    browser = admin_web.new_client()
    state = password_step(browser, "ada")  # 2
    assert code_step(browser, state, "12345x").status_code == 401  # 3
    assert code_step(browser, state, "12345y").status_code == 401  # 4
    later = pyotp.TOTP(secret).at(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30))
    limited = code_step(browser, state, later)
    assert limited.status_code == 429 and "Too many sign-in attempts for this account" in limited.text
    assert browser.get("/admin").status_code == 303


def test_code_step_needs_its_state_from_this_browser(admin_web: AdminWeb) -> None:
    ada = admin_web.signed_in(Role.admin, name="ada")
    secret, _ = enrol(ada)
    first = admin_web.new_client()
    state = password_step(first, "ada")
    thief = admin_web.new_client()
    later = pyotp.TOTP(secret).at(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30))
    stolen = code_step(thief, state, later)
    assert stolen.status_code == 403 and "Start again" in stolen.text
    forged = code_step(first, state[:-2] + ("AA" if not state.endswith("AA") else "BB"), later)
    assert forged.status_code == 403
    assert thief.get("/admin").status_code == 303 and first.get("/admin").status_code == 303


def test_disable_two_factor_asks_password_and_code(admin_web: AdminWeb) -> None:
    ada = admin_web.signed_in(Role.admin, name="ada")
    _, codes = enrol(ada)
    token = csrf_from(ada.get("/admin/account/two-factor").text)
    wrong = ada.post(
        "/admin/account/two-factor/disable", data={"csrf_token": token, "password": "nope", "code": codes[1]}
    )
    assert wrong.status_code == 422 and "This is not your password" in wrong.text
    missing = ada.post(
        "/admin/account/two-factor/disable", data={"csrf_token": token, "password": PASSWORD, "code": "1"}
    )
    assert missing.status_code == 422 and "That code is not right" in missing.text
    assert "Two-factor sign-in is on" in ada.get("/admin/account/two-factor").text
    done = ada.post(
        "/admin/account/two-factor/disable", data={"csrf_token": token, "password": PASSWORD, "code": codes[1]}
    )
    assert done.status_code == 303
    assert sign_in(admin_web.new_client(), "ada").status_code == 303  # the password alone again
    assert [e.action for e in audit_rows(admin_web, "two_factor.disable")] == ["two_factor.disable"]


def test_admins_must_enrol_when_the_setting_asks(admin_web: AdminWeb, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        admin_web.app.state, "settings", admin_web.settings.model_copy(update={"require_2fa_for_admins": True})
    )
    editor = admin_web.signed_in(Role.editor, name="ed")
    assert editor.get("/admin").status_code == 200
    ada = admin_web.signed_in(Role.admin, name="ada")
    for path in ("/admin", "/admin/users", "/admin/account"):
        answer = ada.get(path)
        assert answer.status_code == 303 and answer.headers["location"] == "/admin/account/two-factor", path
    assert "Set up two-factor sign-in" in ada.get("/admin/account/two-factor").text
    enrol(ada)
    assert ada.get("/admin/users").status_code == 200


def test_users_create_role_password_deactivate(admin_web: AdminWeb) -> None:
    boss = admin_web.signed_in(Role.admin, name="boss")
    token = csrf_from(boss.get("/admin/users").text)
    bad = boss.post(
        "/admin/users", data={"csrf_token": token, "name": "bad name", "role": "editor", "password": "short"}
    )
    assert bad.status_code == 422 and "Use letters, digits" in bad.text and 'value="bad name"' in bad.text
    made = boss.post(
        "/admin/users", data={"csrf_token": token, "name": "cleo", "email": "cleo@example.org", "role": "editor"}
    )
    assert made.status_code == 303 and made.headers["location"] == "/admin/users/cleo"
    page = boss.get("/admin/users/cleo").text
    assert "no password yet" in page and "cleo@example.org" in page
    with admin_web.sessions() as session:
        assert users.active_tokens(session, users.get_user(session, "cleo")) == []  # tokens only on purpose
    weak = boss.post("/admin/users/cleo/password", data={"csrf_token": token, "new": "x", "repeat": "x"})
    assert weak.status_code == 422
    new = "a long enough passphrase"
    assert (
        boss.post("/admin/users/cleo/password", data={"csrf_token": token, "new": new, "repeat": new}).status_code
        == 303
    )
    cleo = admin_web.new_client()
    assert sign_in(cleo, "cleo", new).status_code == 303
    assert cleo.get("/admin/users").status_code == 403
    assert boss.post("/admin/users/cleo/role", data={"csrf_token": token, "role": "admin"}).status_code == 303
    assert cleo.get("/admin/users").status_code == 200
    again = boss.post("/admin/users/cleo/password", data={"csrf_token": token, "new": new + "!", "repeat": new + "!"})
    assert "1 signed-in session(s) ended" in boss.get(again.headers["location"]).text
    assert cleo.get("/admin").status_code == 303
    refused = boss.post("/admin/users/boss/deactivate", data={"csrf_token": token})
    assert "You cannot deactivate yourself" in boss.get(refused.headers["location"]).text
    actions = [(e.action, e.target, e.actor) for e in audit_rows(admin_web) if e.action.startswith("user.")]
    assert actions == [
        ("user.create", "user:cleo", "boss"),
        ("user.password", "user:cleo", "boss"),
        ("user.role", "user:cleo", "boss"),
        ("user.password", "user:cleo", "boss"),
    ]


def test_deactivated_users_session_and_token_stop_working(admin_web: AdminWeb) -> None:
    boss = admin_web.signed_in(Role.admin, name="boss")
    dee = admin_web.signed_in(Role.editor, name="dee")
    own = dee.post(
        "/admin/account/tokens", data={"csrf_token": csrf_from(dee.get("/admin/account").text), "purpose": "CMS"}
    )
    token = re.search(r'id="new-token">(nl_[^<]+)<', own.text)
    assert own.status_code == 200 and token and "shown only this once" in own.text
    api = admin_web.new_client()
    assert api.get("/api/v1/me", headers={"Authorization": f"Bearer {token[1]}"}).status_code == 200
    form = csrf_from(boss.get("/admin/users/dee").text)
    answer = boss.post("/admin/users/dee/deactivate", data={"csrf_token": form})
    assert "dee is deactivated: signed out of 1 browser(s)" in boss.get(answer.headers["location"]).text
    assert dee.get("/admin").status_code == 303
    assert api.get("/api/v1/me", headers={"Authorization": f"Bearer {token[1]}"}).status_code == 401
    assert sign_in(admin_web.new_client(), "dee").status_code == 401
    assert boss.post("/admin/users/dee/reactivate", data={"csrf_token": form}).status_code == 303
    assert api.get("/api/v1/me", headers={"Authorization": f"Bearer {token[1]}"}).status_code == 200
    assert [e.action for e in audit_rows(admin_web) if e.target == "user:dee"][-4:] == [
        "token.create", "user.deactivate", "sign_in.fail", "user.reactivate",
    ]  # fmt: skip


def test_tokens_on_the_account_and_a_users_page(admin_web: AdminWeb) -> None:
    boss = admin_web.signed_in(Role.admin, name="boss")
    admin_web.user("eve", Role.editor)
    form = csrf_from(boss.get("/admin/users/eve").text)
    empty = boss.post("/admin/users/eve/tokens", data={"csrf_token": form, "purpose": "  "})
    assert empty.status_code == 422 and "say what the token is for" in empty.text.lower()
    made = boss.post("/admin/users/eve/tokens", data={"csrf_token": form, "purpose": "deploy script"})
    shown = re.search(r'id="new-token">((nl_.{9})[^<]+)<', made.text)
    prefix = shown and shown[2]
    assert prefix and f"<code>{prefix}…</code></td>\n        <td>deploy script</td>" in made.text
    # Someone else's token cannot be revoked through your account page.
    mine = boss.post(f"/admin/account/tokens/{prefix}/revoke", data={"csrf_token": form})
    assert "No active token of boss" in boss.get(mine.headers["location"]).text
    gone = boss.post(f"/admin/users/eve/tokens/{prefix}/revoke", data={"csrf_token": form})
    assert f"Token {prefix}… of eve was revoked" in boss.get(gone.headers["location"]).text
    assert prefix not in boss.get("/admin/users/eve").text
    assert [(e.action, e.details.get("prefix")) for e in audit_rows(admin_web) if e.action.startswith("token.")] == [
        ("token.create", prefix), ("token.revoke", prefix),
    ]  # fmt: skip


def test_every_form_refuses_a_missing_csrf_token(admin_web: AdminWeb) -> None:
    boss = admin_web.signed_in(Role.admin, name="boss")
    admin_web.user("fay", Role.editor)
    with admin_web.sessions.begin() as session:
        prefix = users.create_token(session, "fay", "CMS").prefix
    forms = {
        "/admin/users": {"name": "gus", "role": "editor"},
        "/admin/users/fay/role": {"role": "admin"},
        "/admin/users/fay/password": {"new": "a long enough passphrase", "repeat": "a long enough passphrase"},
        "/admin/users/fay/deactivate": {},
        "/admin/users/fay/reactivate": {},
        "/admin/users/fay/two-factor/reset": {},
        "/admin/users/fay/tokens": {"purpose": "x"},
        f"/admin/users/fay/tokens/{prefix}/revoke": {},
        "/admin/account/tokens": {"purpose": "x"},
        f"/admin/account/tokens/{prefix}/revoke": {},
        "/admin/account/two-factor/start": {},
        "/admin/account/two-factor/confirm": {"code": "123456"},
        "/admin/account/two-factor/disable": {"password": PASSWORD, "code": "123456"},
        "/admin/account/two-factor/recovery-codes": {"password": PASSWORD, "code": "123456"},
    }
    before = snapshot(admin_web)
    for path, data in forms.items():
        answer = boss.post(path, data=data)
        assert answer.status_code == 403 and "nothing was changed" in answer.text, path
    assert snapshot(admin_web) == before


@pytest.mark.usefixtures("session_for_audit")
def test_audit_page_filters_and_pages(admin_web: AdminWeb) -> None:
    boss = admin_web.signed_in(Role.admin, name="boss")
    page = boss.get("/admin/audit?action=campaign")
    assert page.status_code == 200
    assert page.text.count("<code>campaign.send</code>") == 50 and "Older →" in page.text
    older = re.search(r'href="(/admin/audit\?action=campaign&amp;before=\d+)"', page.text)
    assert older
    rest = boss.get(older[1].replace("&amp;", "&")).text
    assert rest.count("<code>campaign.send</code>") == 5 and "Older →" not in rest and "← Newest" in rest
    one = boss.get("/admin/audit?target=campaign:3&actor=ops").text
    assert one.count("<code>campaign.send</code>") == 1 and 'href="/admin/campaigns/3"' in one
    assert "sign_in.ok" in boss.get("/admin/audit?actor=boss").text
    bad = boss.get("/admin/audit?since=yesterday")
    assert bad.status_code == 422 and "Give a date as YYYY-MM-DD" in bad.text
    reversed_dates = boss.get("/admin/audit?since=2030-01-05&until=2030-01-01")
    assert reversed_dates.status_code == 422 and "since is after until" in reversed_dates.text.lower()
    future = boss.get("/admin/audit?since=2099-01-01").text
    assert "Nothing recorded that matches" in future


@pytest.fixture
def session_for_audit(admin_web: AdminWeb) -> None:
    from newsletter import audit

    with admin_web.sessions.begin() as session:
        fill(session, audit)


def fill(session: Session, audit: Any) -> None:
    for number in range(55):
        audit.record(
            session, audit.Actor.web("ops", "192.0.2.1"), "campaign.send", f"campaign:{number}", lists=["weekly"]
        )
