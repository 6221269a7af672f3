"""/admin/account: your own account — change your password (which signs out your other browsers)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from newsletter import passwords, users
from newsletter.web.admin.auth import Editor, SignedIn
from newsletter.web.admin.errors import AdminRoute
from newsletter.web.admin.render import redirect, render
from newsletter.web.deps import SessionDep

router = APIRouter(route_class=AdminRoute)
ACCOUNT = "/admin/account"


def _page(request: Request, session: Session, me: SignedIn, *, errors: dict[str, str] | None = None) -> Response:
    user = users.get_user(session, me.name)
    return render(
        request,
        "account.html",
        title="Your account",
        user=user,
        errors=errors or {},
        min_length=passwords.MIN_LENGTH,
        status_code=422 if errors else 200,
    )


@router.get(ACCOUNT)
def account(request: Request, session: SessionDep, me: Editor) -> Response:
    return _page(request, session, me)


@router.post(ACCOUNT + "/password")
def change_password(
    request: Request,
    session: SessionDep,
    me: Editor,
    current: Annotated[str, Form(max_length=4096)] = "",
    new: Annotated[str, Form(max_length=4096)] = "",
    repeat: Annotated[str, Form(max_length=4096)] = "",
) -> Response:
    user = users.get_user(session, me.name)
    if not passwords.verify(user, current):
        return _page(request, session, me, errors={"current": "This is not your current password."})
    try:
        passwords.check_rules(new, user_name=me.name)
    except passwords.InvalidPassword as exc:
        return _page(request, session, me, errors={"new": str(exc).capitalize() + "."})
    if new != repeat:
        return _page(request, session, me, errors={"repeat": "The two new passwords differ: type the same one twice."})
    ended = users.set_password(session, me.name, new, keep=me.session_row_id)
    others = f" {ended} other signed-in browser(s) were signed out." if ended else ""
    return redirect(request, ACCOUNT, flash=f"Your password was changed.{others}")
