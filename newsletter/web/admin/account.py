"""/admin/account: your own account — your password (changing it signs out your other browsers), your API
tokens (create: shown once; revoke), and the way into two-factor sign-in (`two_factor`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from newsletter import audit, passwords, twofactor, users
from newsletter.web.admin.auth import Editor, SignedIn, actor
from newsletter.web.admin.errors import AdminRoute
from newsletter.web.admin.render import redirect, render
from newsletter.web.deps import SessionDep

router = APIRouter(route_class=AdminRoute)
ACCOUNT = "/admin/account"
TokenPrefix = Annotated[str, Path(max_length=16)]
Purpose = Annotated[str, Form(max_length=200)]
TOKEN_FORM: dict[str, Any] = {"purpose": "", "new_token": None, "new_token_name": ""}  # _tokens.html's defaults


def _page(
    request: Request, session: Session, me: SignedIn, *, errors: dict[str, str] | None = None, **extra: Any
) -> Response:
    user = users.get_user(session, me.name)
    return render(
        request,
        "account.html",
        title="Your account",
        user=user,
        tokens=users.active_tokens(session, user),
        two_factor_on=twofactor.is_enabled(user),
        recovery_left=twofactor.remaining_recovery_codes(session, user),
        errors=errors or {},
        min_length=passwords.MIN_LENGTH,
        status_code=422 if errors else 200,
        **{**TOKEN_FORM, **extra},
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
    audit.record(session, actor(request, me), "user.password", f"user:{me.name}", sessions_ended=ended)
    others = f" {ended} other signed-in browser(s) were signed out." if ended else ""
    return redirect(request, ACCOUNT, flash=f"Your password was changed.{others}")


def issue_token(request: Request, session: Session, me: SignedIn, owner: str, purpose: str) -> users.IssuedToken | str:
    """A new token for `owner` with its audit entry, or the sentence that says why there is none."""
    try:
        issued = users.create_token(session, owner, purpose)
    except users.InvalidUser as exc:
        return str(exc).capitalize() + "."
    target = f"user:{owner}"
    audit.record(session, actor(request, me), "token.create", target, prefix=issued.prefix, purpose=purpose.strip())
    return issued


def revoke_token(request: Request, session: Session, me: SignedIn, owner: str, prefix: str) -> str | None:
    """Revoke `owner`'s token `prefix` (with its audit entry); the sentence saying why not, else None."""
    try:
        if users.token_owner(session, prefix).name != owner:
            raise users.TokenNotFound(prefix)
    except users.TokenNotFound:
        return f"No active token of {owner} starts with {prefix}: it may have been revoked already."
    users.revoke(session, prefix=prefix)
    audit.record(session, actor(request, me), "token.revoke", f"user:{owner}", prefix=prefix)
    return None


@router.post(ACCOUNT + "/tokens")
def create_own_token(request: Request, session: SessionDep, me: Editor, purpose: Purpose = "") -> Response:
    issued = issue_token(request, session, me, me.name, purpose)
    if isinstance(issued, str):
        return _page(request, session, me, errors={"purpose": issued}, purpose=purpose)
    return _page(
        request, session, me, new_token=issued, new_token_name=purpose.strip()
    )  # shown on this answer only, never stored


@router.post(ACCOUNT + "/tokens/{prefix}/revoke")
def revoke_own_token(request: Request, session: SessionDep, me: Editor, prefix: TokenPrefix) -> Response:
    refusal = revoke_token(request, session, me, me.name, prefix)
    if refusal is not None:
        return redirect(request, ACCOUNT, flash=refusal, kind="error")
    return redirect(request, ACCOUNT, flash=f"Token {prefix}… was revoked: requests that send it are refused now.")
