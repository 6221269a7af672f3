"""Who is asking: the session cookie, the role dependencies every admin route declares, and CSRF.

A route that editors and admins may use takes `me: Editor`; one for admins only takes `me: Admin` (or
lists `dependencies=[Depends(require_admin)]`): the security tests find admin-only routes by that
dependency. Without a live session a GET is a 303 to /admin/sign-in?next=...; an editor on an admin page
gets the 403 page.

CSRF: for every request other than GET/HEAD/OPTIONS these dependencies check the token before the handler
runs — from the `X-CSRF-Token` header (htmx sends it: base.html puts it in `hx-headers` on <body>) or from
the form field `csrf_token` (`{{ csrf_field() }}` in the form). The token is an HMAC of the session id for
the purpose "admin-csrf", so it is worth nothing without the cookie, and nothing after sign-out. A missing
or wrong token is the 403 page, and the handler never runs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import Response

from newsletter import audit, websessions
from newsletter.config import Settings
from newsletter.models import Role
from newsletter.web.deps import SessionDep
from newsletter.web.pages import client_ip

SESSION_COOKIE = "newsletter_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SIGN_IN = "/admin/sign-in"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TWO_FACTOR = "/admin/account/two-factor"
# Where an admin who must set up two-factor sign-in may go before they have.
ENROLMENT_PATHS = (TWO_FACTOR, "/admin/sign-out")


class SignInRequired(Exception):
    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


class EnrolmentRequired(Exception):
    """An admin without two-factor sign-in where NEWSLETTER_REQUIRE_2FA_FOR_ADMINS asks for it."""


class PageForbidden(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class SignedIn:
    """The signed-in person of a request (also `request.state.admin`, and `me` in templates).

    Plain values, not ORM rows: they stay readable after the unit of work ended (on the error pages)."""

    user_id: int
    name: str
    role: Role
    email: str | None
    session_row_id: int  # the WebSession row: sign-out and password changes end it by this id
    csrf_token: str
    two_factor: bool = False  # TOTP is on for this user

    @property
    def is_admin(self) -> bool:
        return self.role == Role.admin


def csrf_token(secret_key: str, session_id: str) -> str:
    return hmac.new(secret_key.encode(), b"admin-csrf\x00" + session_id.encode(), hashlib.sha256).hexdigest()


def timeouts(settings: Settings) -> websessions.Timeouts:
    return websessions.Timeouts(
        idle=dt.timedelta(minutes=settings.session_idle_minutes),
        absolute=dt.timedelta(hours=settings.session_max_hours),
    )


def set_session_cookie(response: Response, settings: Settings, session_id: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=int(settings.session_max_hours * 3600),
        path="/",
        httponly=True,
        samesite="lax",
        secure=settings.base_url.startswith("https://"),
    )


def clear_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=settings.base_url.startswith("https://")
    )


def next_path(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


async def submitted_csrf_token(request: Request) -> str:
    """The token a state-changing request carries: the header, else the form field (form bodies only)."""
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get(CSRF_FIELD)
        return value if isinstance(value, str) else ""
    return ""


def _csrf_ok(submitted: str, expected: str) -> bool:
    return hmac.compare_digest(submitted.encode(), expected.encode())


def signed_in_session(request: Request, session: SessionDep) -> SignedIn:
    """The live session the cookie names (a plain function: FastAPI runs its queries in a worker thread)."""
    settings: Settings = request.app.state.settings
    session_id = request.cookies.get(SESSION_COOKIE, "")
    live = websessions.find(session, session_id, timeouts(settings))
    if live is None:
        raise SignInRequired(next_path(request))
    token = csrf_token(settings.secret_key, session_id)
    return SignedIn(live.user_id, live.name, live.role, live.email, live.id, token, live.two_factor)


async def current_admin(request: Request, me: Annotated[SignedIn, Depends(signed_in_session)]) -> SignedIn:
    """The signed-in user (editor or admin) of this request, with the CSRF check for unsafe methods."""
    request.state.admin = me
    settings: Settings = request.app.state.settings
    must_enrol = settings.require_2fa_for_admins and me.is_admin and not me.two_factor
    if must_enrol and not request.url.path.startswith(ENROLMENT_PATHS):
        raise EnrolmentRequired()
    if request.method not in SAFE_METHODS and not _csrf_ok(await submitted_csrf_token(request), me.csrf_token):
        raise PageForbidden(
            "This form has expired or did not come from this site, so nothing was changed. "
            "Go back, reload the page and try again."
        )
    return me


def require_admin(me: Annotated[SignedIn, Depends(current_admin)]) -> SignedIn:
    if not me.is_admin:
        raise PageForbidden(f"This page is for admins; {me.name} is an editor. Ask an admin if you need it.")
    return me


def actor(request: Request, me: SignedIn) -> audit.Actor:
    """The signed-in user as the audit log names them, with the client's address."""
    return audit.Actor.web(me.name, client_ip(request))


Editor = Annotated[SignedIn, Depends(current_admin)]  # editors and admins
Admin = Annotated[SignedIn, Depends(require_admin)]
