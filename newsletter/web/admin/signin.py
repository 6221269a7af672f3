"""Sign-in and sign-out: the password form, its rate limits, the session cookie.

The sign-in form has no session to tie a CSRF token to, so it uses a signed double-submit cookie: the GET
sets `newsletter_signin` to a signed random value and puts the value in the form; the POST must bring
both, matching. Attempts are limited per user name and per client IP (`SIGN_IN_WINDOW`); a limited
attempt is refused before the password is looked at, even a right one.

With two-factor sign-in on, a right password leads to a second form asking for the code. What it knows
of the first step is a signed state (user id, where to go next, the double-submit value of this browser)
that expires after `CODE_STATE_SECONDS`; codes count against the same limits as passwords. Every
sign-in, and every wrong password or code, goes into the audit log with the client's address.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from itsdangerous import BadSignature, Signer, URLSafeTimedSerializer
from sqlalchemy.orm import Session

from newsletter import audit, passwords, twofactor, websessions
from newsletter.config import Settings
from newsletter.models import User
from newsletter.web.admin.auth import (
    SESSION_COOKIE,
    SIGN_IN,
    Editor,
    clear_session_cookie,
    set_session_cookie,
    timeouts,
)
from newsletter.web.admin.render import redirect, render
from newsletter.web.deps import SessionDep
from newsletter.web.pages import client_ip
from newsletter.web.throttle import Throttle, make_throttle, minutes_to_wait

router = APIRouter()

SIGN_IN_COOKIE = "newsletter_signin"
SIGN_IN_WINDOW = 900  # seconds: the rate limits' window, "try again in 15 minutes"
WRONG = "Wrong user name or password."
DASHBOARD = "/admin"
SIGN_IN_CODE = SIGN_IN + "/code"
CODE_STATE_SECONDS = 300
WRONG_CODE = "That code is not right, or was used already. Type the current code from your app."


class SignInThrottles:
    """The two limits of sign-in attempts (app.state.sign_in_throttles; tests swap in local ones)."""

    def __init__(self, account: Throttle, ip: Throttle) -> None:
        self.account = account
        self.ip = ip

    @classmethod
    def from_settings(cls, settings: Settings) -> SignInThrottles:
        redis = settings.effective_redis_url
        return cls(
            make_throttle(redis, settings.signin_account_limit, SIGN_IN_WINDOW, "newsletter:signin-account"),
            make_throttle(redis, settings.signin_ip_limit, SIGN_IN_WINDOW, "newsletter:signin-ip"),
        )


def safe_next(value: str | None) -> str:
    """Where to go after signing in: `value` when it is a local /admin path, else the dashboard."""
    if not value or len(value) > 2000 or "\\" in value or any(ord(ch) < 32 for ch in value):
        return DASHBOARD
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not (parts.path == "/admin" or parts.path.startswith("/admin/")):
        return DASHBOARD
    if parts.path.startswith(SIGN_IN) or value.startswith("//"):
        return DASHBOARD
    return value


def _signer(settings: Settings) -> Signer:
    return Signer(settings.secret_key, salt="newsletter.admin.sign-in-csrf")


def _form_token(request: Request, settings: Settings) -> tuple[str, str | None]:
    """The double-submit value for the form, and the cookie to set (None when the browser has a valid one)."""
    cookie = request.cookies.get(SIGN_IN_COOKIE, "")
    try:
        return _signer(settings).unsign(cookie).decode(), None
    except BadSignature:
        value = secrets.token_urlsafe(24)
        return value, _signer(settings).sign(value).decode()


def _form(
    request: Request, *, name: str = "", next_url: str = "", error: str | None = None, status_code: int = 200
) -> Response:
    settings: Settings = request.app.state.settings
    token, cookie = _form_token(request, settings)
    response = render(
        request, "sign_in.html", status_code=status_code, csrf_token=token, name=name, next=next_url, error=error
    )
    if cookie is not None:
        response.set_cookie(
            SIGN_IN_COOKIE, cookie, path=SIGN_IN, httponly=True, samesite="strict",
            secure=settings.base_url.startswith("https://"),
        )  # fmt: skip
    return response


@router.get(SIGN_IN)
def sign_in_form(request: Request, next: str = "") -> Response:
    return _form(request, next_url=safe_next(next) if next else "")


def _limited(throttles: SignInThrottles, name: str, ip: str | None) -> str | None:
    """Count this attempt; the sentence to show when a limit is used up."""
    account_ok = throttles.account.allow(name.casefold())
    ip_ok = throttles.ip.allow(ip or "unknown")
    if account_ok and ip_ok:
        return None
    limit, key = (throttles.account, name.casefold()) if not account_ok else (throttles.ip, ip or "unknown")
    minutes = minutes_to_wait(limit.retry_after(key))
    wait = f"{minutes} minute{'s' if minutes != 1 else ''}"
    if not account_ok:
        return f"Too many sign-in attempts for this account; try again in {wait}."
    return f"Too many sign-in attempts from your network; try again in {wait}."


@router.post(SIGN_IN)
def sign_in(
    request: Request,
    session: SessionDep,
    name: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=4096)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    settings: Settings = request.app.state.settings
    expected, fresh_cookie = _form_token(request, settings)
    if fresh_cookie is not None or not hmac.compare_digest(csrf_token.encode(), expected.encode()):
        return _form(
            request, name=name, next_url=next, status_code=403,
            error="The sign-in form had expired, so you were not signed in. Please enter your password again.",
        )  # fmt: skip
    ip = client_ip(request)
    refusal = _limited(request.app.state.sign_in_throttles, name.strip(), ip)
    if refusal is not None:
        return _form(request, name=name, next_url=next, error=refusal, status_code=429)
    user = passwords.user_for_sign_in(session, name.strip(), password)
    if user is None:
        _failed(session, name.strip(), ip, "password")
        return _form(request, name=name, next_url=next, error=WRONG, status_code=401)
    if twofactor.is_enabled(user):
        state = _state_serializer(settings).dumps({"user": user.id, "next": next, "browser": expected})
        return _code_form(request, state=state)
    return _start(request, session, user, ip, next, method="password")


def _failed(session: Session, name: str, ip: str | None, reason: str) -> None:
    """An audit entry for a wrong password or code. Limited attempts are not recorded: the limits bound
    how many rows a guesser can add."""
    audit.record(
        session, audit.Actor.web(name[:100] or "(empty)", ip), "sign_in.fail", f"user:{name[:100]}", reason=reason
    )


def _start(request: Request, session: Session, user: User, ip: str | None, next: str, *, method: str) -> Response:
    settings: Settings = request.app.state.settings
    previous = websessions.find(session, request.cookies.get(SESSION_COOKIE, ""), timeouts(settings))
    if previous is not None:  # signing in again (perhaps as someone else) ends this browser's old session
        websessions.revoke(session, previous.id)
    started = websessions.start(session, user, ip=ip, user_agent=request.headers.get("user-agent"))
    audit.record(session, audit.Actor.web(user.name, ip), "sign_in.ok", f"user:{user.name}", method=method)
    response = redirect(request, safe_next(next))
    set_session_cookie(response, settings, started.session_id)
    response.delete_cookie(SIGN_IN_COOKIE, path=SIGN_IN)
    return response


def _state_serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.secret_key, salt="newsletter.admin.sign-in-code")


def _code_form(request: Request, *, state: str, error: str | None = None, status_code: int = 200) -> Response:
    settings: Settings = request.app.state.settings
    token, _ = _form_token(request, settings)
    return render(
        request, "sign_in_code.html", title="Two-factor sign-in", status_code=status_code,
        csrf_token=token, state=state, error=error,
    )  # fmt: skip


@router.post(SIGN_IN_CODE)
def sign_in_code(
    request: Request,
    session: SessionDep,
    code: Annotated[str, Form(max_length=64)] = "",
    state: Annotated[str, Form(max_length=4096)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """The second step: a TOTP code (or a recovery code) for the user the signed state names."""
    settings: Settings = request.app.state.settings
    expected, fresh_cookie = _form_token(request, settings)
    expired = "The sign-in had expired or did not come from this browser, so you were not signed in. Start again."
    if fresh_cookie is not None or not hmac.compare_digest(csrf_token.encode(), expected.encode()):
        return _form(request, error=expired, status_code=403)
    try:
        data = _state_serializer(settings).loads(state, max_age=CODE_STATE_SECONDS)
    except BadSignature:
        return _form(request, error=expired, status_code=403)
    user = session.get(User, data.get("user")) if isinstance(data, dict) else None
    if user is None or user.deactivated_at is not None or data.get("browser") != expected:
        return _form(request, error=expired, status_code=403)
    ip = client_ip(request)
    refusal = _limited(request.app.state.sign_in_throttles, user.name, ip)
    if refusal is not None:
        return _code_form(request, state=state, error=refusal, status_code=429)
    method = twofactor.verify(session, settings, user, code)
    if method is None:
        _failed(session, user.name, ip, "code")
        return _code_form(request, state=state, error=WRONG_CODE, status_code=401)
    return _start(request, session, user, ip, str(data.get("next", "")), method=f"password+{method}")


@router.post("/admin/sign-out")
def sign_out(request: Request, session: SessionDep, me: Editor) -> Response:
    websessions.revoke(session, me.session_row_id)
    response = redirect(request, SIGN_IN, flash="You are signed out.", kind="info")
    clear_session_cookie(response, request.app.state.settings)
    return response
