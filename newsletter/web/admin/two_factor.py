"""/admin/account/two-factor: set up TOTP sign-in (scan, confirm with a first code, keep the ten recovery
codes shown once), make new recovery codes, switch it off (password + code)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from markupsafe import Markup
from sqlalchemy.orm import Session

from newsletter import audit, passwords, twofactor, users
from newsletter.config import Settings
from newsletter.web.admin.auth import TWO_FACTOR, Editor, SignedIn, actor
from newsletter.web.admin.errors import AdminRoute
from newsletter.web.admin.render import redirect, render
from newsletter.web.deps import SessionDep, SettingsDep

router = APIRouter(route_class=AdminRoute)
Code = Annotated[str, Form(max_length=64)]
Password = Annotated[str, Form(max_length=4096)]


def _page(
    request: Request, session: Session, settings: Settings, me: SignedIn, *, status_code: int = 200, **extra: Any
) -> Response:
    user = users.get_user(session, me.name)
    enrolment = twofactor.pending(settings, user)
    context: dict[str, Any] = {"errors": {}, "recovery_codes": None, **extra}
    return render(
        request,
        "two_factor.html",
        title="Two-factor sign-in",
        status_code=status_code,
        user=user,
        on=twofactor.is_enabled(user),
        enrolment=enrolment,
        qr=Markup(enrolment.qr_svg()) if enrolment else None,  # noqa: S704 - our SVG of our own URI
        recovery_left=twofactor.remaining_recovery_codes(session, user),
        **context,
    )


@router.get(TWO_FACTOR)
def two_factor_page(request: Request, session: SessionDep, settings: SettingsDep, me: Editor) -> Response:
    return _page(request, session, settings, me)


@router.post(TWO_FACTOR + "/start")
def start(request: Request, session: SessionDep, settings: SettingsDep, me: Editor) -> Response:
    user = users.get_user(session, me.name)
    try:
        twofactor.begin(session, settings, user)
    except twofactor.TwoFactorError as exc:
        return redirect(request, TWO_FACTOR, flash=str(exc).capitalize() + ".", kind="error")
    return redirect(request, TWO_FACTOR)


@router.post(TWO_FACTOR + "/confirm")
def confirm(request: Request, session: SessionDep, settings: SettingsDep, me: Editor, code: Code = "") -> Response:
    user = users.get_user(session, me.name)
    try:
        codes = twofactor.confirm(session, settings, user, code)
    except twofactor.TwoFactorError as exc:
        return _page(request, session, settings, me, errors={"code": str(exc).capitalize() + "."}, status_code=422)
    audit.record(session, actor(request, me), "two_factor.enable", f"user:{me.name}")
    return _page(request, session, settings, me, recovery_codes=codes)  # shown on this answer only


def _password_and_code(
    session: Session, settings: Settings, me: SignedIn, password: str, code: str
) -> dict[str, str] | None:
    user = users.get_user(session, me.name)
    if not passwords.verify(user, password):
        return {"password": "This is not your password."}
    if twofactor.verify(session, settings, user, code) is None:
        return {"code": "That code is not right, or was used already: type the current one."}
    return None


def _refused(
    request: Request, session: Session, settings: Settings, me: SignedIn, password: str, code: str
) -> Response | None:
    """The answer to a change of two-factor settings that is not on, or whose password or code is wrong."""
    if not me.two_factor:
        return redirect(request, TWO_FACTOR, flash="Two-factor sign-in is not on.", kind="error")
    errors = _password_and_code(session, settings, me, password, code)
    if errors:
        return _page(request, session, settings, me, errors=errors, status_code=422)
    return None


@router.post(TWO_FACTOR + "/disable")
def disable(
    request: Request, session: SessionDep, settings: SettingsDep, me: Editor, password: Password = "", code: Code = ""
) -> Response:
    refused = _refused(request, session, settings, me, password, code)
    if refused is not None:
        return refused
    twofactor.reset(session, users.get_user(session, me.name))
    audit.record(session, actor(request, me), "two_factor.disable", f"user:{me.name}")
    return redirect(request, TWO_FACTOR, flash="Two-factor sign-in is off: your password alone signs you in now.")


@router.post(TWO_FACTOR + "/recovery-codes")
def new_recovery_codes(
    request: Request, session: SessionDep, settings: SettingsDep, me: Editor, password: Password = "", code: Code = ""
) -> Response:
    refused = _refused(request, session, settings, me, password, code)
    if refused is not None:
        return refused
    codes = twofactor.new_recovery_codes(session, users.get_user(session, me.name))
    audit.record(session, actor(request, me), "two_factor.recovery_codes", f"user:{me.name}")
    return _page(request, session, settings, me, recovery_codes=codes)
